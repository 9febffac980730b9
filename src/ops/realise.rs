//! `buildit realise`, `buildit build`: realise derivations (or a spec directory,
//! evaluated first), leave `result` links as GC roots, and say what happened.

use std::path::{Path, PathBuf};

use buildit_lang::model::Config;
use buildit_store::{LocalStore, StorePath};

use crate::fetch::Fetcher;
use crate::ops::debian::FetchOptions;
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
