//! `buildit image inspect PATH`: the layers of an image, the package each holds,
//! and (with `--files`) every path.

use std::io::Write;
use std::path::PathBuf;

use super::output::print_json;
use super::{CliError, CliResult, Global};
use crate::ops::image::{inspect, InspectOptions, LayoutError};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// List an image's layers and the packages they hold.
    Inspect {
        /// An image output (`result-oci`, `result-aci`), an OCI layout directory,
        /// an `oci-archive` or an `.aci` file.
        path: PathBuf,
        /// List every file of every layer.
        #[arg(long)]
        files: bool,
        #[arg(long)]
        json: bool,
    },
}

pub fn exec(_global: &Global, args: Args) -> CliResult<()> {
    match args.command {
        Command::Inspect { path, files, json } => {
            let infos = inspect(&path, InspectOptions { files }).map_err(|e| {
                // Only "what is this?" needs the hint; a refused image says why.
                let hint = matches!(e, LayoutError::Invalid { .. }).then_some(
                    "give the result link of an image, an OCI layout directory, an oci-archive or an .aci file",
                );
                CliError::usage(e.to_string(), hint)
            })?;
            if json {
                return print_json(&serde_json::to_value(&infos).map_err(std::io::Error::from)?);
            }
            let mut out = std::io::stdout().lock();
            for i in &infos {
                writeln!(out, "{} {}\n  id: {}", i.format, i.name, i.id)?;
                for l in &i.layers {
                    writeln!(out, "  {:>10}  {}  {}", l.size, l.digest, l.package)?;
                    for f in &l.files {
                        writeln!(out, "      {f}")?;
                    }
                }
            }
            Ok(())
        }
    }
}
