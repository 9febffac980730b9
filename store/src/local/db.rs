//! The store's SQLite database: which paths are valid and what is known about them.
//!
//! WAL mode lets readers run while another process writes; a busy timeout makes
//! concurrent writers wait for each other instead of failing.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::path_info::PathInfo;
use crate::{ContentAddress, Hash, StorePath};

use super::StoreError;

const SCHEMA_VERSION: i32 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ValidPaths (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    path             TEXT UNIQUE NOT NULL,
    hash             TEXT NOT NULL,
    registrationTime INTEGER NOT NULL,
    deriver          TEXT,
    narSize          INTEGER NOT NULL,
    sigs             TEXT,
    ca               TEXT
);
CREATE TABLE IF NOT EXISTS Refs (
    referrer  INTEGER NOT NULL REFERENCES ValidPaths(id) ON DELETE CASCADE,
    reference INTEGER NOT NULL REFERENCES ValidPaths(id) ON DELETE RESTRICT,
    PRIMARY KEY (referrer, reference)
);
CREATE INDEX IF NOT EXISTS IndexReferrer ON Refs(referrer);
CREATE INDEX IF NOT EXISTS IndexReference ON Refs(reference);
CREATE TABLE IF NOT EXISTS DerivationOutputs (
    drv    INTEGER NOT NULL REFERENCES ValidPaths(id) ON DELETE CASCADE,
    id     TEXT NOT NULL,
    path   TEXT NOT NULL,
    PRIMARY KEY (drv, id)
);
CREATE INDEX IF NOT EXISTS IndexDerivationOutputs ON DerivationOutputs(path);
-- Paths being moved into the store: a row here whose path is not valid after a
-- crash marks a directory that must be removed.
CREATE TABLE IF NOT EXISTS Pending (
    path TEXT PRIMARY KEY NOT NULL
);
";

pub(crate) struct Db {
    conn: Connection,
}

fn parse_path(s: String) -> Result<StorePath, StoreError> {
    s.parse()
        .map_err(|e| StoreError::Corrupt(format!("bad path '{s}' in database: {e}")))
}

impl Db {
    pub fn open(file: &Path) -> Result<Db, StoreError> {
        // Switching a new database to WAL needs an exclusive lock, and SQLite does
        // not always call the busy handler for it: several processes opening a fresh
        // store at once retry here instead of failing.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut pause = Duration::from_millis(5);
        loop {
            match Self::try_open(file) {
                Err(StoreError::Sqlite(e))
                    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                other => return other,
            }
        }
    }

    fn try_open(file: &Path) -> Result<Db, StoreError> {
        let conn = Connection::open(file)?;
        conn.busy_timeout(Duration::from_secs(600))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut db = Db { conn };
        db.migrate()?;
        Ok(db)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let version: i32 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        if version > SCHEMA_VERSION {
            return Err(StoreError::Corrupt(format!(
                "store database has schema version {version}, newer than this buildit ({SCHEMA_VERSION})"
            )));
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(SCHEMA)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
        Ok(())
    }

    pub fn is_valid(&self, path: &StorePath) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM ValidPaths WHERE path = ?")?
            .exists([path.to_absolute()])?)
    }

    pub fn path_info(&self, path: &StorePath) -> Result<Option<PathInfo>, StoreError> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT id, hash, registrationTime, deriver, narSize, sigs, ca
                 FROM ValidPaths WHERE path = ?",
            )?
            .query_row([path.to_absolute()], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                ))
            })
            .optional()?;
        let Some((id, hash, time, deriver, size, sigs, ca)) = row else {
            return Ok(None);
        };
        let corrupt = |what: &str, e: String| {
            StoreError::Corrupt(format!("bad {what} for {path} in database: {e}"))
        };
        Ok(Some(PathInfo {
            path: path.clone(),
            nar_hash: Hash::parse(&hash, None).map_err(|e| corrupt("hash", e.to_string()))?,
            nar_size: size as u64,
            references: self.references_of_id(id)?,
            deriver: deriver.map(parse_path).transpose()?,
            sigs: sigs
                .map(|s| {
                    s.split(' ')
                        .filter(|x| !x.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
            registration_time: time,
            ca: ca
                .map(|c| c.parse::<ContentAddress>())
                .transpose()
                .map_err(|e| corrupt("content address", e.to_string()))?,
        }))
    }

    fn references_of_id(&self, id: i64) -> Result<BTreeSet<StorePath>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT v.path FROM Refs r JOIN ValidPaths v ON r.reference = v.id WHERE r.referrer = ?",
        )?;
        let rows = stmt.query_map([id], |r| r.get::<_, String>(0))?;
        rows.map(|r| parse_path(r?)).collect()
    }

    pub fn referrers(&self, path: &StorePath) -> Result<BTreeSet<StorePath>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT v.path FROM Refs r JOIN ValidPaths v ON r.referrer = v.id
             WHERE r.reference = (SELECT id FROM ValidPaths WHERE path = ?)",
        )?;
        let rows = stmt.query_map([path.to_absolute()], |r| r.get::<_, String>(0))?;
        rows.map(|r| parse_path(r?)).collect()
    }

    pub fn all_valid(&self) -> Result<Vec<StorePath>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT path FROM ValidPaths ORDER BY path")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.map(|r| parse_path(r?)).collect()
    }

    /// All reference edges `(referrer, reference)` among valid paths.
    pub fn all_edges(&self) -> Result<Vec<(StorePath, StorePath)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT a.path, b.path FROM Refs r
             JOIN ValidPaths a ON r.referrer = a.id JOIN ValidPaths b ON r.reference = b.id",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        rows.map(|r| {
            let (a, b) = r?;
            Ok((parse_path(a)?, parse_path(b)?))
        })
        .collect()
    }

    pub fn derivation_outputs(
        &self,
        drv: &StorePath,
    ) -> Result<Vec<(String, StorePath)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT o.id, o.path FROM DerivationOutputs o JOIN ValidPaths v ON o.drv = v.id
             WHERE v.path = ? ORDER BY o.id",
        )?;
        let rows = stmt.query_map([drv.to_absolute()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        rows.map(|r| {
            let (id, p) = r?;
            Ok((id, parse_path(p)?))
        })
        .collect()
    }

    pub fn mark_pending(&self, path: &StorePath) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO Pending (path) VALUES (?)")?
            .execute([path.to_absolute()])?;
        Ok(())
    }

    pub fn pending(&self) -> Result<Vec<StorePath>, StoreError> {
        let mut stmt = self.conn.prepare_cached("SELECT path FROM Pending")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.map(|r| parse_path(r?)).collect()
    }

    pub fn clear_pending(&self, path: &StorePath) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("DELETE FROM Pending WHERE path = ?")?
            .execute([path.to_absolute()])?;
        Ok(())
    }

    /// Make `info` valid in one transaction, with its references (which must all be
    /// valid already, or be the path itself) and, for a derivation, its outputs.
    pub fn register(
        &mut self,
        info: &PathInfo,
        drv_outputs: &[(String, StorePath)],
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let sigs = (!info.sigs.is_empty()).then(|| info.sigs.join(" "));
        tx.prepare_cached(
            "INSERT INTO ValidPaths (path, hash, registrationTime, deriver, narSize, sigs, ca)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )?
        .execute(params![
            info.path.to_absolute(),
            info.nar_hash.to_prefixed_nix32(),
            info.registration_time,
            info.deriver.as_ref().map(|d| d.to_absolute()),
            info.nar_size as i64,
            sigs,
            info.ca.as_ref().map(|c| c.to_string()),
        ])?;
        let id = tx.last_insert_rowid();
        for r in &info.references {
            let n = tx
                .prepare_cached(
                    "INSERT INTO Refs (referrer, reference)
                     SELECT ?, id FROM ValidPaths WHERE path = ?",
                )?
                .execute(params![id, r.to_absolute()])?;
            if n == 0 {
                return Err(StoreError::MissingReference {
                    path: info.path.clone(),
                    reference: r.clone(),
                });
            }
        }
        for (name, out) in drv_outputs {
            tx.prepare_cached("INSERT INTO DerivationOutputs (drv, id, path) VALUES (?, ?, ?)")?
                .execute(params![id, name, out.to_absolute()])?;
        }
        tx.prepare_cached("DELETE FROM Pending WHERE path = ?")?
            .execute([info.path.to_absolute()])?;
        tx.commit()?;
        Ok(())
    }

    /// Add signatures to a valid path (keeps existing ones, no duplicates).
    pub fn add_signatures(&mut self, path: &StorePath, new: &[String]) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let old: Option<Option<String>> = tx
            .query_row(
                "SELECT sigs FROM ValidPaths WHERE path = ?",
                [path.to_absolute()],
                |r| r.get(0),
            )
            .optional()?;
        let Some(old) = old else {
            return Err(StoreError::NotValid(path.clone()));
        };
        let mut sigs: Vec<String> = old
            .unwrap_or_default()
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        for s in new {
            if !sigs.contains(s) {
                sigs.push(s.clone());
            }
        }
        tx.execute(
            "UPDATE ValidPaths SET sigs = ? WHERE path = ?",
            params![sigs.join(" "), path.to_absolute()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Remove paths from the database, referrers first. Fails (and changes nothing)
    /// if a path outside the set still refers to one inside it.
    pub fn invalidate(&mut self, paths: &[StorePath]) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for p in paths {
            // A path's own edges go first, so that a self-reference does not trip the
            // RESTRICT on the reference side.
            tx.prepare_cached(
                "DELETE FROM Refs WHERE referrer = (SELECT id FROM ValidPaths WHERE path = ?)",
            )?
            .execute([p.to_absolute()])?;
            tx.prepare_cached("DELETE FROM ValidPaths WHERE path = ?")?
                .execute([p.to_absolute()])?;
        }
        tx.commit()?;
        Ok(())
    }
}
