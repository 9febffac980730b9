//! `buildit lock DIR [--update]`: pin what the spec does not pin by hash itself
//! (build roots' and packages' Debian closures, remote patches) in DIR/buildit.lock.

use std::path::PathBuf;

use super::output::{note, warn_untrusted};
use super::{CliResult, Global};
use crate::ops::load;

#[derive(clap::Args)]
pub struct Args {
    /// Re-resolve and re-fetch everything, not only what is missing or stale.
    #[arg(long)]
    update: bool,
    /// The spec directory (holding container.yaml).
    dir: PathBuf,
}

pub fn exec(global: &Global, args: Args) -> CliResult<()> {
    let loaded = load::load(&args.dir, &warn_untrusted)?;
    let path = loaded.dir.join(load::LOCK_FILE);
    let mut lock = buildit_lang::lockfile::LockFile::load(&path)?;
    let before = lock.to_text();
    let store = global.open_store()?;
    let changes = load::lock(&loaded, &mut lock, args.update, &store, &|l| note!("{l}"))?;
    for c in &changes {
        note!("~ {c}");
    }
    if lock.to_text() != before {
        lock.save(&path)?;
        note!("wrote {}", path.display());
    } else {
        note!("{} is up to date", path.display());
    }
    Ok(())
}
