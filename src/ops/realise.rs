//! `buildit realise`, `buildit build`: realise derivations (or a spec directory,
//! evaluated first), leave `result` links as GC roots, and say what happened.

use std::path::{Path, PathBuf};

use buildit_lang::model::{Config, Spec};
use buildit_store::{LocalStore, StorePath};

use crate::fetch::Fetcher;
use crate::ops::debian::FetchOptions;
use crate::ops::load::{self, SpecOpError};
use crate::realise::events::Progress;
use crate::realise::{BuildError, Options, Realiser, Report};

/// Where sources may come from, beyond the URLs in the derivations.
#[derive(Debug, Clone, Default)]
pub struct SourceOptions {
    pub fetch: FetchOptions,
    /// Directories whose files are matched by hash (`--source-dir`).
    pub source_dirs: Vec<PathBuf>,
}

impl SourceOptions {
    /// The fetcher for a realisation, with what the configuration adds:
    /// its `source-dirs` (after the command line's) and `mirrors` (before the
    /// host's apt sources).
    pub fn fetcher(&self, config: Option<&Config>) -> Fetcher {
        let mut f = self.fetch.fetcher();
        f.source_dirs = self.source_dirs.clone();
        if let Some(config) = config {
            let base = config.path.parent().unwrap_or(Path::new("."));
            f.source_dirs
                .extend(config.source_dirs.iter().map(|d| base.join(&d.value)));
            for (name, urls) in &config.mirrors {
                let mut roots: Vec<String> = urls.iter().map(|u| u.value.clone()).collect();
                if let Some(host) = f.mirrors.remove(name) {
                    roots.extend(host);
                }
                f.mirrors.insert(name.clone(), roots);
            }
        }
        f
    }
}

/// Realise `targets`; the report says what was built, what failed and why.
pub fn realise(
    store: &LocalStore,
    targets: &[StorePath],
    options: &Options,
    fetcher: &Fetcher,
    caches: &[crate::cache::BinaryCache],
    progress: &dyn Progress,
) -> Result<Report, BuildError> {
    let realiser = Realiser {
        store,
        fetcher,
        caches,
        options: options.clone(),
        progress,
    };
    realiser.realise(targets)
}

/// The `out` paths of `drvs`, in order; an output that is not valid is an error.
pub fn outputs(
    store: &LocalStore,
    drvs: &[StorePath],
) -> Result<Vec<(StorePath, StorePath)>, BuildError> {
    let mut out = Vec::new();
    for d in drvs {
        let drv = store.read_derivation(d)?;
        for o in drv.outputs.values() {
            if let Some(p) = o.path() {
                out.push((d.clone(), p.clone()));
            }
        }
    }
    Ok(out)
}

/// Point `link` (and `link-1`, `link-2`, … for the rest) at the outputs and
/// register each link as an indirect GC root; returns the links made.
pub fn link_results(
    store: &LocalStore,
    link: &Path,
    outputs: &[StorePath],
) -> Result<Vec<PathBuf>, BuildError> {
    let mut made = Vec::new();
    for (i, p) in outputs.iter().enumerate() {
        let l = if i == 0 {
            link.to_path_buf()
        } else {
            let mut s = link.as_os_str().to_owned();
            s.push(format!("-{i}"));
            PathBuf::from(s)
        };
        store.add_indirect_root(&l, p)?;
        made.push(l);
    }
    Ok(made)
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum TargetError {
    #[error("{0} is not a derivation (.drv) or a spec directory")]
    #[diagnostic(help("`buildit eval DIR` prints the derivations of a spec"))]
    NotADerivation(String),
    #[error("{0} is not in the store")]
    NotInStore(StorePath),
    #[error(transparent)]
    Store(#[from] buildit_store::StoreError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Load(#[from] buildit_lang::yaml::SpecError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Spec(#[from] SpecOpError),
}

/// `.drv` paths, or spec directories (evaluated: their roots), and the
/// configuration that applies: the last spec's, else the one where buildit runs.
pub fn resolve_targets(
    store: &LocalStore,
    args: &[String],
    warn: load::Warn<'_>,
) -> Result<(Vec<StorePath>, Option<Config>), TargetError> {
    let mut drvs = Vec::new();
    let mut spec_loaded: Option<Spec> = None;
    for t in args {
        if load::is_spec_dir(Path::new(t)) {
            let loaded = load::load(Path::new(t), warn)?;
            let plan = load::eval(&loaded, store)?;
            drvs.extend(load::plan_roots(&plan));
            spec_loaded = Some(loaded);
        } else {
            let (p, _) = store.resolve(t)?;
            if !p.is_derivation() {
                return Err(TargetError::NotADerivation(t.clone()));
            }
            if !store.is_valid(&p)? {
                return Err(TargetError::NotInStore(p));
            }
            drvs.push(p);
        }
    }
    let config = load::config_or_here(spec_loaded.and_then(|s| s.config), warn)?;
    Ok((drvs, config))
}
