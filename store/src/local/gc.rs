//! Garbage-collector roots and garbage collection.
//!
//! Roots are symlinks in `var/gcroots/`: explicit ones point at a store path;
//! indirect ones in `var/gcroots/auto/` point at a user's `result` link, which in
//! turn points into the store. A root whose `result` link is gone is dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{nix32, Hash, StorePath};

use super::fsutil::{disk_usage, remove_tree};
use super::{FileLock, LocalStore, StoreError};

#[derive(Debug, Clone, Serialize)]
pub struct GcRoot {
    /// The symlink that keeps the path alive (a `result` link for indirect roots).
    pub link: PathBuf,
    pub path: StorePath,
}

#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    pub deleted: Vec<StorePath>,
    pub bytes_freed: u64,
    pub live: usize,
    /// Paths on disk that were never registered (leftovers), removed as well.
    pub invalid_removed: Vec<String>,
}

impl LocalStore {
    fn gcroots_dir(&self) -> PathBuf {
        self.var_dir.join("gcroots")
    }

    /// Point `link` (e.g. `./result`) at `path` and register it as an indirect root.
    /// An existing symlink at `link` is replaced atomically; anything else is refused.
    pub fn add_indirect_root(&self, link: &Path, path: &StorePath) -> Result<(), StoreError> {
        let link = std::path::absolute(link).map_err(|e| StoreError::io(link, e))?;
        if let Ok(md) = link.symlink_metadata() {
            if !md.file_type().is_symlink() {
                return Err(StoreError::Invalid(format!(
                    "{} exists and is not a symlink; refusing to replace it",
                    link.display()
                )));
            }
        }
        replace_symlink(&self.physical_path(path), &link)?;
        let id = nix32::encode(&nix32::compress_hash(
            Hash::sha256(link.as_os_str().as_bytes()).digest(),
            20,
        ));
        replace_symlink(&link, &self.gcroots_dir().join("auto").join(id))
    }

    /// Register `var/gcroots/NAME` → `path`.
    pub fn add_named_root(&self, name: &str, path: &StorePath) -> Result<(), StoreError> {
        if name.is_empty() || name.contains('/') || name == "auto" || name.starts_with('.') {
            return Err(StoreError::Invalid(format!("bad root name '{name}'")));
        }
        replace_symlink(&self.physical_path(path), &self.gcroots_dir().join(name))
    }

    pub fn remove_named_root(&self, name: &str) -> Result<bool, StoreError> {
        let p = self.gcroots_dir().join(name);
        match fs::remove_file(&p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::io(&p, e)),
        }
    }

    /// All current roots. Stale indirect roots (their link is gone or points
    /// elsewhere) are removed as a side effect.
    pub fn roots(&self) -> Result<Vec<GcRoot>, StoreError> {
        let mut roots = Vec::new();
        let dir = self.gcroots_dir();
        for entry in fs::read_dir(&dir).map_err(|e| StoreError::io(&dir, e))? {
            let entry = entry.map_err(|e| StoreError::io(&dir, e))?;
            let link = entry.path();
            if entry.file_name() == "auto" {
                continue;
            }
            if let Some(path) = self.store_path_of_link(&link) {
                roots.push(GcRoot { link, path });
            }
        }
        let auto = dir.join("auto");
        for entry in fs::read_dir(&auto).map_err(|e| StoreError::io(&auto, e))? {
            let entry = entry.map_err(|e| StoreError::io(&auto, e))?;
            let Ok(target) = fs::read_link(entry.path()) else {
                continue;
            };
            match self.store_path_of_link(&target) {
                Some(path) => roots.push(GcRoot { link: target, path }),
                None => {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        roots.sort_by(|a, b| a.link.cmp(&b.link));
        Ok(roots)
    }

    /// The store path a symlink points at, if it points into this store.
    fn store_path_of_link(&self, link: &Path) -> Option<StorePath> {
        let target = fs::read_link(link).ok()?;
        let rest = target.strip_prefix(&self.store_dir).ok()?;
        let base = rest.components().next()?.as_os_str().to_str()?;
        StorePath::from_base_name(base).ok()
    }

    /// Delete every valid path not reachable from a root (or, with `dry_run`, only
    /// say which). Waits until no other process is writing to the store, and keeps
    /// it that way until done.
    pub fn gc(&self, dry_run: bool) -> Result<GcReport, StoreError> {
        // Exclusive: writers hold the lock shared from their first write until they
        // exit, so nothing is half-added or being built while we decide.
        let _gc = if dry_run {
            None
        } else {
            if self.write_guard.get().is_some() {
                return Err(StoreError::Invalid(
                    "this process is writing to the store; it cannot also collect garbage".into(),
                ));
            }
            Some(FileLock::exclusive(&self.var_dir.join("gc.lock"))?)
        };
        let roots = self.roots()?;
        // A root to a path that is not valid (yet) keeps nothing alive.
        let mut valid_roots = Vec::new();
        for r in &roots {
            if self.is_valid(&r.path)? {
                valid_roots.push(&r.path);
            }
        }
        let live = self.closure(valid_roots)?;
        let all = self.valid_paths()?;
        let dead: BTreeSet<StorePath> =
            all.iter().filter(|p| !live.contains(*p)).cloned().collect();
        let order = referrers_first(&dead, &self.db().all_edges()?);
        let mut report = GcReport {
            live: live.len(),
            ..Default::default()
        };
        for path in order {
            report.bytes_freed += disk_usage(&self.physical_path(&path));
            report.deleted.push(path);
        }
        if dry_run {
            return Ok(report);
        }
        // Invalidate first: a crash between the two steps leaves an unregistered
        // directory, which the next collection (or re-add) removes.
        self.db().invalidate(&report.deleted)?;
        for path in &report.deleted {
            remove_tree(&self.physical_path(path))?;
            let _ = fs::remove_file(self.path_lock_file(path));
        }
        report.invalid_removed = self.remove_invalid_on_disk()?;
        Ok(report)
    }

    /// Entries in the store directory that are not valid paths: leftovers.
    pub(crate) fn invalid_on_disk(&self) -> Result<Vec<String>, StoreError> {
        let valid: BTreeSet<String> = self
            .valid_paths()?
            .into_iter()
            .map(|p| p.base_name().to_string())
            .collect();
        let mut out = Vec::new();
        let dir = &self.store_dir;
        for entry in fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
            let entry = entry.map_err(|e| StoreError::io(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !valid.contains(&name) {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    fn remove_invalid_on_disk(&self) -> Result<Vec<String>, StoreError> {
        let mut removed = Vec::new();
        for name in self.invalid_on_disk()? {
            // A path being added right now is locked by its writer; leave it.
            let lock = match StorePath::from_base_name(&name) {
                Ok(p) => match self.try_lock_path(&p)? {
                    Some(l) => Some(l),
                    None => continue,
                },
                Err(_) => None,
            };
            remove_tree(&self.store_dir.join(&name))?;
            drop(lock);
            removed.push(name);
        }
        Ok(removed)
    }
}

/// Order `dead` so that every path comes before the paths it refers to.
fn referrers_first(dead: &BTreeSet<StorePath>, edges: &[(StorePath, StorePath)]) -> Vec<StorePath> {
    // Count, for each dead path, how many other dead paths still refer to it.
    let mut referrer_count: BTreeMap<&StorePath, usize> = dead.iter().map(|p| (p, 0)).collect();
    let mut refs: BTreeMap<&StorePath, Vec<&StorePath>> = BTreeMap::new();
    for (from, to) in edges {
        if from != to && dead.contains(from) && dead.contains(to) {
            *referrer_count.get_mut(to).expect("dead") += 1;
            refs.entry(from).or_default().push(to);
        }
    }
    let mut ready: Vec<&StorePath> = referrer_count
        .iter()
        .filter(|(_, c)| **c == 0)
        .map(|(p, _)| *p)
        .collect();
    let mut order = Vec::with_capacity(dead.len());
    while let Some(p) = ready.pop() {
        order.push(p.clone());
        for r in refs.get(p).into_iter().flatten() {
            let c = referrer_count.get_mut(r).expect("dead");
            *c -= 1;
            if *c == 0 {
                ready.push(r);
            }
        }
    }
    order
}

/// Create or replace a symlink atomically (new link under a temp name, then rename).
fn replace_symlink(target: &Path, link: &Path) -> Result<(), StoreError> {
    let parent = link.parent().unwrap_or(Path::new("."));
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        link.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let _ = fs::remove_file(&tmp);
    symlink(target, &tmp).map_err(|e| StoreError::io(&tmp, e))?;
    fs::rename(&tmp, link).map_err(|e| StoreError::io(link, e))
}
