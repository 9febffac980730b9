//! Realising derivations: walk the graph from the requested `.drv`s, skip outputs
//! that are valid, and run what is missing, inputs first, several at a time.
//!
//! Today every builder is a builtin run by buildit itself (`builtin:fetchurl`,
//! `builtin:unpack-deb`, `builtin:buildroot`); sandboxed builds join them later.

pub mod buildroot;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;

use buildit_lang::buildroot::Fixups;
use buildit_lang::debian::{BUILDROOT, FETCHURL, UNPACK_DEB};
use buildit_store::{Derivation, Hash, LocalStore, PathInfo, StoreError, StorePath};
use thiserror::Error;

use crate::fetch::{FetchError, Fetcher};

#[derive(Debug, Error)]
pub enum BuildError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("{drv}: {message}")]
    Failed { drv: StorePath, message: String },
    #[error("{drv}: builder '{builder}' is not supported yet")]
    UnsupportedBuilder { drv: StorePath, builder: String },
    #[error("{count} of the derivations failed")]
    Several { count: usize },
    #[error("{0}")]
    Invalid(String),
}

/// What happened to each derivation of a realisation.
#[derive(Debug, Default)]
pub struct Report {
    pub built: Vec<StorePath>,
    pub already_valid: usize,
    pub failed: Vec<(StorePath, String)>,
}

pub struct Realiser<'a> {
    pub store: &'a LocalStore,
    pub fetcher: &'a Fetcher,
    pub jobs: usize,
    /// Called with a one-line status as each derivation starts or ends.
    pub progress: &'a (dyn Fn(&str) + Sync),
}

impl Realiser<'_> {
    /// Realise every output of `targets` (`.drv` paths that are valid in the store).
    pub fn realise(&self, targets: &[StorePath]) -> Result<Report, BuildError> {
        // Load the graph.
        let mut drvs: BTreeMap<StorePath, Derivation> = BTreeMap::new();
        let mut queue: VecDeque<StorePath> = targets.iter().cloned().collect();
        while let Some(p) = queue.pop_front() {
            if drvs.contains_key(&p) {
                continue;
            }
            let d = self.store.read_derivation(&p)?;
            queue.extend(d.input_drvs.keys().cloned());
            drvs.insert(p, d);
        }
        let mut report = Report::default();
        // Only what has an invalid output needs work.
        let mut needed: BTreeSet<StorePath> = BTreeSet::new();
        for (p, d) in &drvs {
            if !self.outputs_valid(d)? {
                needed.insert(p.clone());
            } else {
                report.already_valid += 1;
            }
        }
        // Kahn's algorithm over the needed subgraph, run in waves of ready nodes.
        let mut waiting: BTreeMap<StorePath, usize> = needed
            .iter()
            .map(|p| {
                let n = drvs[p]
                    .input_drvs
                    .keys()
                    .filter(|i| needed.contains(*i))
                    .count();
                (p.clone(), n)
            })
            .collect();
        let mut users: BTreeMap<&StorePath, Vec<&StorePath>> = BTreeMap::new();
        for p in &needed {
            for i in drvs[p].input_drvs.keys().filter(|i| needed.contains(*i)) {
                users.entry(i).or_default().push(p);
            }
        }
        let mut failed: BTreeSet<StorePath> = BTreeSet::new();
        loop {
            let ready: Vec<StorePath> = waiting
                .iter()
                .filter(|(_, n)| **n == 0)
                .map(|(p, _)| p.clone())
                .collect();
            if ready.is_empty() {
                break;
            }
            for p in &ready {
                waiting.remove(p);
            }
            let results = self.run_wave(&ready, &drvs);
            for (p, r) in ready.iter().zip(results) {
                match r {
                    Ok(()) => {
                        report.built.push(p.clone());
                        for u in users.get(p).into_iter().flatten() {
                            if let Some(n) = waiting.get_mut(*u) {
                                *n -= 1;
                            }
                        }
                    }
                    Err(e) => {
                        report.failed.push((p.clone(), e.to_string()));
                        failed.insert(p.clone());
                    }
                }
            }
        }
        // Whatever still waits depends on a failure.
        for p in waiting.keys() {
            report
                .failed
                .push((p.clone(), "a dependency failed".to_string()));
        }
        Ok(report)
    }

    fn outputs_valid(&self, d: &Derivation) -> Result<bool, StoreError> {
        for o in d.outputs.values() {
            match o.path() {
                Some(p) if self.store.is_valid(p)? => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    fn run_wave(
        &self,
        wave: &[StorePath],
        drvs: &BTreeMap<StorePath, Derivation>,
    ) -> Vec<Result<(), BuildError>> {
        let next = Mutex::new(0usize);
        let results: Vec<Mutex<Option<Result<(), BuildError>>>> =
            wave.iter().map(|_| Mutex::new(None)).collect();
        std::thread::scope(|s| {
            for _ in 0..self.jobs.max(1).min(wave.len()) {
                s.spawn(|| loop {
                    let i = {
                        let mut n = next.lock().unwrap_or_else(|p| p.into_inner());
                        let i = *n;
                        *n += 1;
                        i
                    };
                    let Some(p) = wave.get(i) else { break };
                    let r = self.build_one(p, &drvs[p]);
                    *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                });
            }
        });
        results
            .into_iter()
            .map(|m| {
                m.into_inner()
                    .unwrap_or_else(|p| p.into_inner())
                    .unwrap_or(Ok(()))
            })
            .collect()
    }

    fn build_one(&self, drv_path: &StorePath, drv: &Derivation) -> Result<(), BuildError> {
        let name = drv.env.get("name").map(String::as_str).unwrap_or("?");
        (self.progress)(&format!("building {name}"));
        let failed = |message: String| BuildError::Failed {
            drv: drv_path.clone(),
            message,
        };
        match drv.builder.as_str() {
            FETCHURL => {
                self.fetcher.fetch(self.store, drv)?;
            }
            UNPACK_DEB | BUILDROOT => {
                let out = drv
                    .outputs
                    .get("out")
                    .and_then(|o| o.path())
                    .ok_or_else(|| failed("no output 'out'".into()))?;
                let lock = self.store.lock_path(out)?;
                if self.store.is_valid(out)? {
                    return Ok(());
                }
                let tmp = self.store.temp_tree()?;
                if drv.builder == UNPACK_DEB {
                    let deb = self.env_path(drv, "deb", &failed)?;
                    crate::debian::deb::unpack_deb(&self.store.physical_path(&deb), tmp.path())
                        .map_err(|e| failed(e.to_string()))?;
                } else {
                    let members: Vec<(String, PathBuf)> = drv
                        .env
                        .get("members")
                        .map(String::as_str)
                        .unwrap_or("")
                        .split_whitespace()
                        .map(|m| {
                            let p: StorePath =
                                m.parse().map_err(|e| failed(format!("member {m}: {e}")))?;
                            Ok((p.name().to_string(), self.store.physical_path(&p)))
                        })
                        .collect::<Result<_, BuildError>>()?;
                    let fixups: Fixups = serde_json::from_str(
                        drv.env.get("fixups").map(String::as_str).unwrap_or("{}"),
                    )
                    .map_err(|e| failed(format!("bad fixups: {e}")))?;
                    buildroot::merge_trees(&members, tmp.path())
                        .map_err(|e| failed(e.to_string()))?;
                    buildroot::apply_fixups(tmp.path(), &fixups)
                        .map_err(|e| failed(e.to_string()))?;
                }
                let info = PathInfo {
                    path: out.clone(),
                    nar_hash: Hash::sha256(b""),
                    nar_size: 0,
                    references: BTreeSet::new(),
                    deriver: Some(drv_path.clone()),
                    sigs: vec![],
                    registration_time: 0,
                    ca: None,
                };
                self.store.add_built_tree(tmp.path(), info, &lock)?;
            }
            other => {
                return Err(BuildError::UnsupportedBuilder {
                    drv: drv_path.clone(),
                    builder: other.to_string(),
                })
            }
        }
        (self.progress)(&format!("built {name}"));
        Ok(())
    }

    fn env_path(
        &self,
        drv: &Derivation,
        key: &str,
        failed: &dyn Fn(String) -> BuildError,
    ) -> Result<StorePath, BuildError> {
        let v = drv
            .env
            .get(key)
            .ok_or_else(|| failed(format!("env '{key}' missing")))?;
        let p: StorePath = v.parse().map_err(|e| failed(format!("env '{key}': {e}")))?;
        if !self.store.is_valid(&p)? {
            return Err(failed(format!("input {p} is not valid")));
        }
        Ok(p)
    }
}
