//! `buildit log DRV|OUTPUT`: the log of the last build of a derivation.

use std::path::PathBuf;

use super::{CliError, CliResult, Global};
use crate::realise::log::log_path;

#[derive(clap::Args)]
pub struct Args {
    /// A `.drv`, or an output path (its deriver's log is shown).
    path: String,
}

pub fn exec(global: &Global, args: Args) -> CliResult<()> {
    let store = global.open_store()?;
    let (p, _) = store.resolve(&args.path)?;
    let drv = if p.is_derivation() {
        p
    } else {
        store
            .path_info(&p)?
            .and_then(|i| i.deriver)
            .ok_or_else(|| CliError::usage(format!("{p} has no known deriver"), None))?
    };
    let log: PathBuf = log_path(&store, &drv);
    let mut f = std::fs::File::open(&log).map_err(|_| {
        CliError::usage(
            format!("no build log for {drv}"),
            Some("logs are kept for derivations built on this machine"),
        )
    })?;
    std::io::copy(&mut f, &mut std::io::stdout().lock())?;
    Ok(())
}
