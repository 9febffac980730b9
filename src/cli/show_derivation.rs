//! `buildit show-derivation DRV…`: `.drv` files as JSON, in the shape of
//! `nix show-derivation`.

use std::path::PathBuf;

use buildit_store::{Derivation, StoreError};

use super::output::print_json;
use super::{CliError, CliResult, Global};

#[derive(clap::Args)]
pub struct Args {
    /// Also show every input derivation, transitively.
    #[arg(long, short = 'r')]
    recursive: bool,
    /// `.drv` store paths (logical or via a link), or `.drv` files anywhere.
    #[arg(required = true)]
    drvs: Vec<String>,
}

pub fn exec(global: &Global, args: Args) -> CliResult<()> {
    let store = global.open_store()?;
    let mut out = serde_json::Map::new();
    let mut queue: Vec<(buildit_store::StorePath, Derivation)> = Vec::new();
    for arg in &args.drvs {
        match store.resolve(arg) {
            Ok((path, sub)) if sub.as_os_str().is_empty() => {
                queue.push((path.clone(), store.read_derivation(&path)?));
            }
            _ => {
                // A .drv file outside the store: parse it and name it by its own path.
                let file = PathBuf::from(arg);
                let bytes = std::fs::read(&file).map_err(|e| StoreError::Io {
                    path: file.clone(),
                    error: e,
                })?;
                let drv = Derivation::from_aterm(&bytes)
                    .map_err(|e| CliError::usage(format!("{arg}: not a derivation: {e}"), None))?;
                let path = drv
                    .drv_path()
                    .map_err(|e| CliError::usage(format!("{arg}: {e}"), None))?;
                queue.push((path, drv));
            }
        }
    }
    while let Some((path, drv)) = queue.pop() {
        if out.contains_key(&path.to_string()) {
            continue;
        }
        if args.recursive {
            for input in drv.input_drvs.keys() {
                queue.push((input.clone(), store.read_derivation(input)?));
            }
        }
        out.insert(path.to_string(), drv.to_nix_json_body());
    }
    print_json(&serde_json::Value::Object(out))
}
