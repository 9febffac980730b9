//! Lowering one package build to derivations, in the contract of ARCHITECTURE.md:
//! every source and remote patch a fixed-output derivation; the build itself one
//! derivation run by `/bin/bash` with buildit's phase runner, whose environment carries
//! the sources, patches, options, phases, build root and runtime dependencies.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use buildit_store::builtins::package::{self, PackageBuild};
use buildit_store::{Derivation, FileIngestion, Hash, HashAlgo, LocalStore, StorePath};
use thiserror::Error;

pub mod debian;
pub mod image;
pub mod plan;
pub mod planned;

use crate::lower::debian::{fetchurl, store_name, DrvSet};

/// The phase runner every source build runs; a text store path named in `args`.
pub const PHASE_RUNNER: &str = include_str!("phases.sh");
pub const PHASE_RUNNER_NAME: &str = "buildit-phases.sh";

/// Phases a recipe may set; each becomes the env var `<name>Phase`.
pub use buildit_store::builtins::package::PHASES;

/// The system of source builds (the only one for now).
pub use buildit_store::builtins::package::SYSTEM;

#[derive(Debug, Error)]
pub enum LowerError {
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error(transparent)]
    Store(#[from] buildit_store::StoreError),
    #[error(transparent)]
    Derivation(#[from] buildit_store::derivation::DerivationError),
}

/// Something fetched by URL and pinned by hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub url: String,
    /// Lowercase hex sha256 of the file.
    pub sha256: String,
}

/// One patch, local (a file beside pkg.yaml) or remote (pinned in the lock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Patch {
    Local(PathBuf),
    Remote(Fetched),
}

/// Everything that decides a package build, already checked and resolved.
#[derive(Debug, Clone)]
pub struct BuildSpec {
    pub name: String,
    pub version: String,
    pub sources: Vec<Fetched>,
    /// In the order they are applied.
    pub patches: Vec<Patch>,
    /// Enabled build options, sorted.
    pub options: Vec<String>,
    pub configure_flags: Vec<String>,
    /// Phase name (`configure`, …) → shell snippet.
    pub phases: BTreeMap<String, String>,
    pub env: BTreeMap<String, String>,
    /// `.drv`s whose `out` trees, merged in order, form `/`: the build root first, then
    /// build dependencies.
    pub build_root: Vec<StorePath>,
    /// `.drv`s whose `out` becomes a reference of the output.
    pub runtime: Vec<StorePath>,
}

/// A fixed-output derivation for a URL pinned by sha256.
pub fn fetch_url(f: &Fetched) -> Result<Derivation, LowerError> {
    let hash = Hash::parse_bare(&f.sha256, HashAlgo::Sha256).map_err(|e| LowerError::Invalid {
        what: f.url.clone(),
        reason: e.to_string(),
    })?;
    let file = f
        .url
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("source");
    Ok(fetchurl(&store_name(file), &f.url, hash))
}

/// Make `drv`'s `out` an input of `d`; returns that output path.
fn input(set: &DrvSet, d: &mut Derivation, drv: &StorePath) -> Result<StorePath, LowerError> {
    d.input_drvs
        .entry(drv.clone())
        .or_default()
        .insert("out".to_string());
    out_of(set, drv)
}

fn out_of(set: &DrvSet, drv: &StorePath) -> Result<StorePath, LowerError> {
    set.out(drv).cloned().ok_or_else(|| LowerError::Invalid {
        what: drv.to_string(),
        reason: "not lowered yet (inputs must be lowered first)".into(),
    })
}

/// Lower `spec` (its build-root and runtime `.drv`s must already be in `set`). Local
/// patches and the phase runner are added to `store` as source paths. Returns the
/// build's `.drv` path.
pub fn lower_build(
    set: &mut DrvSet,
    store: &LocalStore,
    spec: &BuildSpec,
) -> Result<StorePath, LowerError> {
    let runner = store.add_text(PHASE_RUNNER_NAME, PHASE_RUNNER.as_bytes(), &BTreeSet::new())?;
    // Inputs are gathered on a scratch derivation, then moved onto the typed one.
    let mut d = Derivation::default();
    d.input_srcs.insert(runner.clone());

    let mut fetched = Vec::new();
    for s in &spec.sources {
        fetched.push(fetch_url(s)?);
    }
    let mut patch_drvs = Vec::new();
    for p in &spec.patches {
        if let Patch::Remote(f) = p {
            patch_drvs.push(fetch_url(f)?);
        }
    }
    // Fetches go into the set first, then become inputs.
    let fetched: Vec<StorePath> = fetched
        .into_iter()
        .map(|f| set.add(f))
        .collect::<Result<_, _>>()?;
    let mut remote: Vec<StorePath> = patch_drvs
        .into_iter()
        .map(|f| set.add(f))
        .collect::<Result<_, _>>()?;
    remote.reverse();
    let mut srcs = Vec::new();
    for f in &fetched {
        srcs.push(input(set, &mut d, f)?);
    }
    let mut patches = Vec::new();
    for p in &spec.patches {
        match p {
            Patch::Local(path) => {
                let file = path.file_name().and_then(|n| n.to_str()).unwrap_or("patch");
                let sp = store.add_path(
                    path,
                    &store_name(file),
                    FileIngestion::Recursive,
                    HashAlgo::Sha256,
                )?;
                patches.push(sp.clone());
                d.input_srcs.insert(sp);
            }
            Patch::Remote(_) => {
                let drv = remote.pop().expect("one drv per remote patch");
                patches.push(input(set, &mut d, &drv)?);
            }
        }
    }
    let mut root = Vec::new();
    for r in &spec.build_root {
        root.push(input(set, &mut d, r)?);
    }
    let mut runtime = Vec::new();
    for r in &spec.runtime {
        runtime.push(input(set, &mut d, r)?);
    }
    for phase in spec.phases.keys() {
        if !PHASES.contains(&phase.as_str()) {
            return Err(LowerError::Invalid {
                what: format!("{}-{}", spec.name, spec.version),
                reason: format!("unknown phase '{phase}' (phases: {})", PHASES.join(", ")),
            });
        }
    }

    let build = PackageBuild {
        name: store_name(&format!("{}-{}", spec.name, spec.version)),
        builder: package::BUILDER.to_string(),
        system: SYSTEM.to_string(),
        args: vec![runner.to_string()],
        pname: spec.name.clone(),
        version: spec.version.clone(),
        src: srcs,
        patches,
        build_options: spec.options.clone(),
        configure_flags: spec.configure_flags.clone(),
        build_root: root,
        runtime_deps: runtime,
        phases: spec.phases.clone(),
        env: spec.env.clone(),
    };
    let mut drv = build.to_derivation();
    drv.input_drvs = d.input_drvs;
    drv.input_srcs = d.input_srcs;
    Ok(set.add(drv)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(patch: &std::path::Path) -> BuildSpec {
        BuildSpec {
            name: "hello".into(),
            version: "2.10".into(),
            sources: vec![Fetched {
                url: "https://example.invalid/hello-2.10.tar.gz".into(),
                sha256: "31e066137a962676e89f69d1b65382de95a7ef7d914b8cb956f41ea72e0f516b".into(),
            }],
            patches: vec![Patch::Local(patch.to_path_buf())],
            options: vec![],
            configure_flags: vec!["--disable-nls".into()],
            phases: BTreeMap::from([("build".to_string(), "make".to_string())]),
            env: BTreeMap::new(),
            build_root: vec![],
            runtime: vec![],
        }
    }

    #[test]
    fn lowering_is_stable_and_sensitive() {
        let t = tempfile::tempdir().unwrap();
        let patch = t.path().join("fix.patch");
        std::fs::write(&patch, "--- a/x\n+++ b/x\n").unwrap();
        let store = LocalStore::open(&t.path().join("a")).unwrap();
        let other = LocalStore::open(&t.path().join("b")).unwrap();
        let mut s1 = DrvSet::default();
        let d1 = lower_build(&mut s1, &store, &spec(&patch)).unwrap();
        let mut s2 = DrvSet::default();
        let d2 = lower_build(&mut s2, &other, &spec(&patch)).unwrap();
        assert_eq!(d1, d2, "same inputs, same .drv, whatever the store root");
        let drv = s1.get(&d1).unwrap();
        assert_eq!(drv.env["name"], "hello-2.10");
        assert!(drv.env["patches"].ends_with("-fix.patch"));
        assert_eq!(drv.env["buildPhase"], "make");
        assert_eq!(drv.input_drvs.len(), 1, "the source fetch");

        std::fs::write(&patch, "--- a/x\n+++ b/y\n").unwrap();
        let d3 = lower_build(&mut DrvSet::default(), &store, &spec(&patch)).unwrap();
        assert_ne!(d1, d3, "one patch byte changes the build");

        // A remote patch is a fixed-output fetch, applied in its place in the order.
        let mut remote = spec(&patch);
        remote.patches.insert(
            0,
            Patch::Remote(Fetched {
                url: "https://example.invalid/fix-overrun.patch".into(),
                sha256: "ab".repeat(32),
            }),
        );
        let mut s4 = DrvSet::default();
        let d4 = lower_build(&mut s4, &store, &remote).unwrap();
        let drv4 = s4.get(&d4).unwrap();
        assert_eq!(drv4.input_drvs.len(), 2, "source and patch fetches");
        let order: Vec<&str> = drv4.env["patches"].split(' ').collect();
        assert!(order[0].ends_with("-fix-overrun.patch") && order[1].ends_with("-fix.patch"));

        let mut bad = spec(&patch);
        bad.phases.insert("compile".into(), "x".into());
        let e = lower_build(&mut DrvSet::default(), &store, &bad).unwrap_err();
        assert!(e.to_string().contains("unknown phase 'compile'"), "{e}");
    }
}
