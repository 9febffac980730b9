//! The local store: store paths as files under `<root>/store`, their metadata in
//! SQLite under `<root>/var`, coordinated between processes with file locks.
//!
//! Layout of the physical root:
//! ```text
//! store/              the store paths (logical /store)
//! var/db/db.sqlite    metadata (ValidPaths, Refs, DerivationOutputs, Pending)
//! var/locks/          one lock file per store path hash
//! var/gc.lock         shared by writers, exclusive for garbage collection
//! var/gcroots/        explicit roots; var/gcroots/auto/ holds indirect roots
//! var/tmp/            paths being added, each beside a lock file while in use
//! var/log/            build logs
//! ```

mod add;
mod db;
mod derivations;
mod flock;
mod fsutil;
mod gc;
mod verify;

use std::collections::{BTreeSet, VecDeque};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use thiserror::Error;

use crate::nar::NarError;
use crate::path_info::PathInfo;
use crate::store_path::StorePathError;
use crate::{Hash, StorePath, STORE_DIR};

pub use add::TempTree;
pub use flock::FileLock;
pub use fsutil::{normalise, remove_tree, STORE_MTIME};
pub use gc::{GcReport, GcRoot};
pub use verify::{VerifyProblem, VerifyReport};

use db::Db;

#[derive(Debug, Error)]
pub enum StoreError {
    // `error` is not a `#[source]`: the message already says it, and renderers that
    // print the source chain would say it twice.
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: io::Error },
    #[error("store database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store is corrupt: {0}")]
    Corrupt(String),
    #[error("{0} is not a valid path in this store")]
    NotValid(StorePath),
    #[error("cannot register {path}: its reference {reference} is not valid")]
    MissingReference {
        path: StorePath,
        reference: StorePath,
    },
    #[error("{}: unsupported file type (only regular files, directories and symlinks may enter the store)", .0.display())]
    UnsupportedFileType(PathBuf),
    #[error("{0}")]
    Nar(#[from] NarError),
    #[error(transparent)]
    StorePath(#[from] StorePathError),
    #[error("'{0}' is neither a /store path nor inside this store's directory")]
    NotAStorePath(String),
    #[error("hash mismatch for {path}: expected {expected}, got {actual}")]
    HashMismatch {
        path: String,
        expected: Hash,
        actual: Hash,
    },
    #[error("size mismatch for {path}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        path: String,
        expected: u64,
        actual: u64,
    },
    #[error("flat (non-recursive) hashing needs a regular file, and {} is not one", .0.display())]
    FlatNeedsFile(PathBuf),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    FalseContentAddress(#[from] crate::path_info::FalseContentAddress),
}

impl StoreError {
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        StoreError::Io {
            path: path.to_path_buf(),
            error: source,
        }
    }
}

pub struct LocalStore {
    root: PathBuf,
    store_dir: PathBuf,
    var_dir: PathBuf,
    db: Mutex<Db>,
    /// Shared hold on `var/gc.lock`, taken at the first write so that a garbage
    /// collection never runs while this process is adding paths.
    write_guard: OnceLock<FileLock>,
}

impl LocalStore {
    /// Open (creating if needed) the store whose physical root is `root`, and clean up
    /// what a killed process left behind.
    pub fn open(root: &Path) -> Result<LocalStore, StoreError> {
        let root = if root.is_absolute() {
            root.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| StoreError::io(root, e))?
                .join(root)
        };
        let store_dir = root.join("store");
        let var_dir = root.join("var");
        for d in [
            store_dir.clone(),
            var_dir.join("db"),
            var_dir.join("locks"),
            var_dir.join("gcroots/auto"),
            var_dir.join("tmp"),
            var_dir.join("log"),
        ] {
            fs::create_dir_all(&d).map_err(|e| StoreError::io(&d, e))?;
        }
        let db = Db::open(&var_dir.join("db/db.sqlite"))?;
        let store = LocalStore {
            root,
            store_dir,
            var_dir,
            db: Mutex::new(db),
            write_guard: OnceLock::new(),
        };
        store.clean_stale()?;
        Ok(store)
    }

    /// The default physical root: `$BUILDIT_ROOT`, else `/var/lib/buildit` for root and
    /// `$XDG_DATA_HOME/buildit` (or `~/.local/share/buildit`) for everyone else.
    pub fn default_root() -> PathBuf {
        if let Some(r) = std::env::var_os("BUILDIT_ROOT").filter(|r| !r.is_empty()) {
            return PathBuf::from(r);
        }
        if nix::unistd::geteuid().is_root() {
            return PathBuf::from("/var/lib/buildit");
        }
        let data = std::env::var_os("XDG_DATA_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("."));
        data.join("buildit")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the logical `/store` lives on this machine.
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    pub fn log_dir(&self) -> PathBuf {
        self.var_dir.join("log")
    }

    /// The physical location of a store path.
    pub fn physical_path(&self, path: &StorePath) -> PathBuf {
        self.store_dir.join(path.base_name())
    }

    fn db(&self) -> MutexGuard<'_, Db> {
        // A panic while holding the lock cannot leave the connection inconsistent
        // (transactions roll back on drop), so a poisoned lock is still usable.
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take the shared GC lock once per process, before the first write.
    fn begin_write(&self) -> Result<(), StoreError> {
        if self.write_guard.get().is_none() {
            let lock = FileLock::shared(&self.var_dir.join("gc.lock"))?;
            let _ = self.write_guard.set(lock);
        }
        Ok(())
    }

    /// The lock that serialises work on one store path across processes.
    pub fn lock_path(&self, path: &StorePath) -> Result<FileLock, StoreError> {
        FileLock::exclusive(&self.path_lock_file(path))
    }

    pub fn try_lock_path(&self, path: &StorePath) -> Result<Option<FileLock>, StoreError> {
        FileLock::try_exclusive(&self.path_lock_file(path))
    }

    fn path_lock_file(&self, path: &StorePath) -> PathBuf {
        self.var_dir
            .join("locks")
            .join(format!("{}.lock", path.hash_part()))
    }

    pub fn is_valid(&self, path: &StorePath) -> Result<bool, StoreError> {
        self.db().is_valid(path)
    }

    pub fn path_info(&self, path: &StorePath) -> Result<Option<PathInfo>, StoreError> {
        self.db().path_info(path)
    }

    /// Like `path_info`, but a missing path is an error.
    pub fn require_info(&self, path: &StorePath) -> Result<PathInfo, StoreError> {
        self.path_info(path)?
            .ok_or_else(|| StoreError::NotValid(path.clone()))
    }

    pub fn referrers(&self, path: &StorePath) -> Result<BTreeSet<StorePath>, StoreError> {
        self.db().referrers(path)
    }

    pub fn valid_paths(&self) -> Result<Vec<StorePath>, StoreError> {
        self.db().all_valid()
    }

    /// The outputs a valid `.drv` declares, by output name.
    pub fn derivation_outputs(
        &self,
        drv: &StorePath,
    ) -> Result<Vec<(String, StorePath)>, StoreError> {
        self.db().derivation_outputs(drv)
    }

    /// Everything reachable from `paths` through references, `paths` included.
    pub fn closure<'a>(
        &self,
        paths: impl IntoIterator<Item = &'a StorePath>,
    ) -> Result<BTreeSet<StorePath>, StoreError> {
        let db = self.db();
        let mut seen = BTreeSet::new();
        let mut queue: VecDeque<StorePath> = paths.into_iter().cloned().collect();
        while let Some(p) = queue.pop_front() {
            if seen.contains(&p) {
                continue;
            }
            let info = db
                .path_info(&p)?
                .ok_or_else(|| StoreError::NotValid(p.clone()))?;
            queue.extend(info.references.into_iter().filter(|r| !seen.contains(r)));
            seen.insert(p);
        }
        Ok(seen)
    }

    /// Add signatures to a valid path.
    pub fn add_signatures(&self, path: &StorePath, sigs: &[String]) -> Result<(), StoreError> {
        self.begin_write()?;
        self.db().add_signatures(path, sigs)
    }

    /// Turn what a user typed into a store path and a path inside it: a logical
    /// `/store/...` path, a physical path inside this store, or a symlink (such as a
    /// `result` link) that leads into it.
    pub fn resolve(&self, arg: &str) -> Result<(StorePath, PathBuf), StoreError> {
        if arg.starts_with(&format!("{STORE_DIR}/")) {
            let (p, sub) = StorePath::split_absolute(arg)?;
            return Ok((p, PathBuf::from(sub)));
        }
        let not_store = || StoreError::NotAStorePath(arg.to_string());
        let host = Path::new(arg);
        // Follow symlinks only up to the store path itself, so that a path inside a
        // store path which is a symlink is still named, not followed.
        let canon_store =
            fs::canonicalize(&self.store_dir).map_err(|e| StoreError::io(&self.store_dir, e))?;
        let canon = if host.is_symlink() || !host.exists() {
            fs::canonicalize(host).map_err(|_| not_store())?
        } else {
            let parent = host
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let parent = fs::canonicalize(parent).map_err(|_| not_store())?;
            parent.join(host.file_name().ok_or_else(not_store)?)
        };
        let rest = canon.strip_prefix(&canon_store).map_err(|_| not_store())?;
        let mut comps = rest.components();
        let base = comps.next().ok_or_else(not_store)?;
        let base = base.as_os_str().to_str().ok_or_else(not_store)?;
        Ok((
            StorePath::from_base_name(base)?,
            comps.as_path().to_path_buf(),
        ))
    }

    /// Remove leftovers of killed processes: temp trees nobody holds, and paths
    /// moved into the store whose registration never committed.
    fn clean_stale(&self) -> Result<(), StoreError> {
        let tmp = self.var_dir.join("tmp");
        let entries = fs::read_dir(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(&tmp, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(tree) = name.strip_suffix(".lock") {
                // A lock whose tree is gone (moved into the store, or never
                // made) is left by a process killed before it cleaned up. Held,
                // it is someone's: only an unheld one goes, removed while we
                // hold it (takers check they hold what is still there).
                let lock_file = entry.path();
                if fs::symlink_metadata(tmp.join(tree)).is_err() {
                    if let Some(_held) = FileLock::try_exclusive(&lock_file)? {
                        let _ = fs::remove_file(&lock_file);
                    }
                }
                continue;
            }
            let lock_file = tmp.join(format!("{name}.lock"));
            // The owner creates and holds the lock before creating the tree, so an
            // unheld (or absent) lock means the owner is gone.
            if let Some(_held) = FileLock::try_exclusive(&lock_file)? {
                remove_tree(&entry.path())?;
                let _ = fs::remove_file(&lock_file);
            }
        }
        let pending = self.db().pending()?;
        for path in pending {
            if let Some(_lock) = self.try_lock_path(&path)? {
                if !self.is_valid(&path)? {
                    remove_tree(&self.physical_path(&path))?;
                }
                self.db().clear_pending(&path)?;
            }
        }
        Ok(())
    }
}

/// Seconds since the epoch, for registration times.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
