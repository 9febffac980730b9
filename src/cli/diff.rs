//! `buildit diff A B`: why two builds differ. Derivations (two `.drv`s, two spec
//! directories, two lock files) are explained by their causes; outputs (store
//! paths, NARs, directories, images) file by file. Exit status as diff(1): 0 the
//! same, 1 different, 2 trouble.

use std::io::Write;
use std::path::Path;

use serde_json::json;

use super::output::{note, print_json, warn_untrusted};
use super::{CliError, CliResult, Global};
use crate::audit::drv::DrvDiff;
use crate::audit::outputs::{self, DiffOptions};
use crate::ops::diff::{self as ops_diff, Diff, DiffError};

#[derive(clap::Args)]
pub struct Args {
    /// Print the explanation as JSON.
    #[arg(long)]
    json: bool,
    /// Then hand the pair to diffoscope (when it is installed) for its view.
    #[arg(long)]
    diffoscope: bool,
    /// Lines of a text diff shown per file (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 200)]
    max_lines: usize,
    /// Old: a .drv, spec directory, lock file, store path, NAR, directory or image.
    a: String,
    /// New: the same kind of thing as A.
    b: String,
}

pub fn exec(global: &Global, args: Args) -> CliResult<()> {
    match run(global, &args) {
        Ok(true) => Ok(()),
        Ok(false) => Err(CliError::Reported(1)),
        Err(CliError::Reported(c)) => Err(CliError::Reported(c.max(2))),
        Err(e) if super::output::is_broken_pipe(&e) => Ok(()),
        Err(e) => {
            note!("{:?}", miette::Report::new(e));
            Err(CliError::Reported(2))
        }
    }
}

/// Ok(true) when A and B are the same.
fn run(global: &Global, args: &Args) -> CliResult<bool> {
    let store = global.open_store()?;
    let options = DiffOptions {
        max_text_lines: if args.max_lines == 0 {
            usize::MAX
        } else {
            args.max_lines
        },
        ..DiffOptions::default()
    };
    let d =
        ops_diff::diff(&store, &args.a, &args.b, &options, &warn_untrusted).map_err(rendered)?;
    match &d {
        Diff::Derivations(d) => show_drv(d, args.json)?,
        Diff::Outputs {
            causes,
            files,
            a,
            b,
        } => {
            if args.json {
                print_json(&json!({ "derivations": causes, "outputs": files }))?;
            } else {
                let mut out = std::io::stdout().lock();
                // Two outputs of different derivations: first what changed in the
                // recipe, then what changed in the files.
                if let Some(c) = causes.as_ref().filter(|c| !c.is_empty()) {
                    writeln!(out, "The derivations differ:")?;
                    write!(out, "{}", indent(&c.to_string()))?;
                    writeln!(out, "The outputs differ:")?;
                    write!(out, "{}", indent(&files.to_string()))?;
                } else {
                    write!(out, "{files}")?;
                }
            }
            if args.diffoscope {
                diffoscope(a, b)?;
            }
        }
    }
    Ok(d.is_empty())
}

/// As the command always showed them: store and lock errors as such, the
/// operands' mistakes with a hint, a failed diff by its message alone.
fn rendered(e: DiffError) -> CliError {
    match e {
        DiffError::Store(e) => e.into(),
        DiffError::Lock(e) => e.into(),
        DiffError::NoSuchOperand(_) => CliError::usage(
            e.to_string(),
            Some(
                "diff takes two .drv paths, spec directories, lock files, store paths, \
                 NARs, directories or images",
            ),
        ),
        DiffError::Mismatch { .. } => CliError::usage(
            e.to_string(),
            Some("compare two .drvs, two spec directories, two lock files, or two outputs"),
        ),
        DiffError::Spec(_) | DiffError::Derivations(_) | DiffError::Outputs(_) => failed(e),
    }
}

fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::Usage {
        message: e.to_string(),
        help: None,
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

fn show_drv(d: &DrvDiff, json: bool) -> CliResult<()> {
    if json {
        print_json(&serde_json::to_value(d).map_err(std::io::Error::other)?)?;
    } else {
        write!(std::io::stdout().lock(), "{d}")?;
    }
    Ok(())
}

fn diffoscope(a: &Path, b: &Path) -> CliResult<()> {
    match outputs::run_diffoscope(a, b).map_err(failed)? {
        None => note!("note: diffoscope is not installed; nothing more to show"),
        Some(status) if status.code().is_some_and(|c| c > 1) => {
            note!("note: diffoscope ended with {status}")
        }
        Some(_) => {}
    }
    Ok(())
}
