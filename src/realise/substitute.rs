//! Substitution: before building, ask the binary caches (priority order) for the
//! missing outputs; a path comes from a cache only with a trusted signature, and only
//! when everything it references is valid or available too. Whatever cannot be
//! substituted, or fails on the way, is built instead.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use buildit_store::narinfo::NarInfo;
use buildit_store::{LocalStore, StorePath};

use crate::cache::BinaryCache;

/// Where a path can come from: the cache's index and its (trusted) narinfo.
type Source = (usize, NarInfo);

pub struct Substituter<'a> {
    pub caches: &'a [BinaryCache],
    memo: Mutex<BTreeMap<StorePath, Option<Source>>>,
    /// Why paths were not taken from a cache (bad signature, unreachable, …).
    pub reasons: Mutex<Vec<String>>,
}

impl<'a> Substituter<'a> {
    pub fn new(caches: &'a [BinaryCache]) -> Substituter<'a> {
        Substituter {
            caches,
            memo: Mutex::new(BTreeMap::new()),
            reasons: Mutex::new(Vec::new()),
        }
    }

    fn note(&self, reason: String) {
        self.reasons
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(reason);
    }

    /// Ask the caches about `path`, in priority order; the first trusted narinfo
    /// wins. Failures are remembered as reasons, not errors.
    fn query(&self, path: &StorePath) -> Option<Source> {
        for (i, c) in self.caches.iter().enumerate() {
            match c.trusted_narinfo(path) {
                Ok(Some(info)) => return Some((i, info)),
                Ok(None) => {}
                Err(e) => self.note(e.to_string()),
            }
        }
        None
    }

    /// Look up many paths at once, `threads` queries in flight.
    pub fn prefetch(&self, paths: &[StorePath], threads: usize) {
        if self.caches.is_empty() || paths.is_empty() {
            return;
        }
        let next = Mutex::new(0usize);
        std::thread::scope(|s| {
            for _ in 0..threads.clamp(1, 32).min(paths.len()) {
                s.spawn(|| loop {
                    let i = {
                        let mut n = next.lock().unwrap_or_else(|p| p.into_inner());
                        *n += 1;
                        *n - 1
                    };
                    let Some(p) = paths.get(i) else { break };
                    if self
                        .memo
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .contains_key(p)
                    {
                        continue;
                    }
                    let found = self.query(p);
                    self.memo
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(p.clone(), found);
                });
            }
        });
    }

    pub fn lookup(&self, path: &StorePath) -> Option<Source> {
        if let Some(v) = self
            .memo
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
        {
            return v.clone();
        }
        let found = self.query(path);
        self.memo
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.clone(), found.clone());
        found
    }

    /// Never take `path` from a cache again in this run.
    pub fn forget(&self, path: &StorePath, reason: String) {
        self.note(reason);
        self.memo
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.clone(), None);
    }

    /// The paths to download so that all of `paths` become valid, references
    /// first; `None` if some path (or something it references) is neither valid
    /// nor available.
    pub fn plan(
        &self,
        store: &LocalStore,
        paths: &[StorePath],
    ) -> Option<Vec<(StorePath, Source)>> {
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        for p in paths {
            self.visit(store, p, &mut seen, &mut order)?;
        }
        Some(order)
    }

    fn visit(
        &self,
        store: &LocalStore,
        p: &StorePath,
        seen: &mut BTreeSet<StorePath>,
        order: &mut Vec<(StorePath, Source)>,
    ) -> Option<()> {
        if !seen.insert(p.clone()) || store.is_valid(p).unwrap_or(false) {
            return Some(());
        }
        let (cache, info) = self.lookup(p)?;
        for r in info.references.iter().filter(|r| *r != p) {
            self.visit(store, r, seen, order)?;
        }
        order.push((p.clone(), (cache, info)));
        Some(())
    }
}
