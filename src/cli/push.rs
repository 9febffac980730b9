//! `buildit push CACHE PATH…|DIR`: upload closures to a binary cache, signed,
//! skipping what the cache already has.

use std::io::Write;
use std::path::{Path, PathBuf};

use buildit_store::StorePath;

use super::output::note;
use super::{CliError, CliResult, Global};
use crate::cache::BinaryCache;
use crate::ops::{cache as cache_ops, load};

#[derive(clap::Args)]
pub struct Args {
    /// The cache: file:///dir, s3://bucket/prefix, ssh://user@host/path, oci://host/repo.
    cache: String,
    /// Store paths (with their closures), or a spec directory: its derivations,
    /// packages, sources and images.
    #[arg(required = true, value_name = "PATH|DIR")]
    paths: Vec<String>,
    /// The signing key (default: the config's `secret-key-file`).
    #[arg(long, value_name = "FILE")]
    secret_key_file: Option<PathBuf>,
}

pub fn exec(global: &Global, args: Args) -> CliResult<()> {
    let store = global.open_store()?;
    let mut paths: Vec<StorePath> = Vec::new();
    let mut config = None;
    for p in &args.paths {
        if Path::new(p).join("container.yaml").is_file() {
            let loaded = load::load(Path::new(p))?;
            let plan = load::eval(&loaded, &store)?;
            let mut drvs: Vec<StorePath> = plan.packages.iter().map(|p| p.drv.clone()).collect();
            drvs.extend(plan.images.iter().map(|i| i.drv.clone()));
            paths.extend(cache_ops::spec_paths(&store, &drvs)?);
            config = config.or(loaded.config);
        } else {
            let (sp, _) = store.resolve(p)?;
            if !store.is_valid(&sp)? {
                return Err(CliError::usage(
                    format!("{sp} is not valid in this store"),
                    None,
                ));
            }
            paths.push(sp);
        }
    }
    let config = match config {
        Some(c) => Some(c),
        None => match std::env::current_dir() {
            Ok(d) => crate::ops::load::config_for(&d)?,
            Err(_) => None,
        },
    };
    let key = cache_ops::secret_key(args.secret_key_file.as_deref(), config.as_ref())?;
    let cache = BinaryCache::new(crate::cache::open(&args.cache)?, 0, Default::default());
    let pushed = cache.push(&store, &paths, &key, &|p| note!("uploading {p}"))?;
    let mut out = std::io::stdout().lock();
    for p in &pushed {
        writeln!(out, "{p}")?;
    }
    note!(
        "{} paths uploaded to {} ({} already there)",
        pushed.len(),
        args.cache,
        store.closure(&paths)?.len() - pushed.len()
    );
    Ok(())
}
