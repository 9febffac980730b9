//! `buildit push CACHE PATH…|DIR`: upload closures to a binary cache, signed,
//! skipping what the cache already has.

use std::path::{Path, PathBuf};

use buildit_store::{LocalStore, StoreError, StorePath};

use crate::cache::{BinaryCache, CacheError};
use crate::ops::cache as cache_ops;
use crate::ops::load::{self, SpecOpError};

#[derive(Debug, Clone)]
pub struct PushRequest {
    /// The cache's URL.
    pub cache: String,
    /// Store paths (with their closures), or spec directories: their derivations,
    /// packages, sources and images.
    pub paths: Vec<String>,
    /// The signing key; `None`: the configuration's `secret-key-file`.
    pub secret_key_file: Option<PathBuf>,
}

#[derive(Debug)]
pub struct PushOutcome {
    /// Uploaded, in the order they went (inputs first).
    pub pushed: Vec<StorePath>,
    /// Paths of the closure the cache already had.
    pub already_there: usize,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PushError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Load(#[from] buildit_lang::yaml::SpecError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Spec(#[from] SpecOpError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("{0} is not valid in this store")]
    NotValid(StorePath),
}

/// Push what `request` names; `progress` hears of each path before it goes.
pub fn push(
    store: &LocalStore,
    request: &PushRequest,
    progress: &dyn Fn(&StorePath),
    warn: load::Warn<'_>,
) -> Result<PushOutcome, PushError> {
    let mut paths: Vec<StorePath> = Vec::new();
    let mut config = None;
    for p in &request.paths {
        if load::is_spec_dir(Path::new(p)) {
            let loaded = load::load(Path::new(p), warn)?;
            let plan = load::eval(&loaded, store)?;
            paths.extend(cache_ops::spec_paths(
                store,
                &load::plan_derivations(&plan),
            )?);
            config = config.or(loaded.config);
        } else {
            let (sp, _) = store.resolve(p)?;
            if !store.is_valid(&sp)? {
                return Err(PushError::NotValid(sp));
            }
            paths.push(sp);
        }
    }
    let config = load::config_or_here(config, warn)?;
    let key = cache_ops::secret_key(request.secret_key_file.as_deref(), config.as_ref())?;
    let cache = BinaryCache::new(crate::cache::open(&request.cache)?, 0, Default::default());
    let pushed = cache.push(store, &paths, &key, progress)?;
    let already_there = store.closure(&paths)?.len() - pushed.len();
    Ok(PushOutcome {
        pushed,
        already_there,
    })
}
