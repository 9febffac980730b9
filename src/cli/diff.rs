//! `buildit diff A B`: why two builds differ. Derivations (two `.drv`s, two spec
//! directories, two lock files) are explained by their causes; outputs (store
//! paths, NARs, directories, images) file by file. Exit status as diff(1): 0 the
//! same, 1 different, 2 trouble.

use std::io::Write;
use std::path::{Path, PathBuf};

use buildit_lang::lockfile::LockFile;
use buildit_store::{LocalStore, StorePath};
use serde_json::json;

use super::output::{note, print_json};
use super::{CliError, CliResult, Global};
use crate::audit::drv::{diff_derivations, diff_locks, diff_specs, DrvDiff};
use crate::audit::outputs::{self, DiffOptions};

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

/// What an operand is, as far as choosing the kind of diff goes.
enum Side {
    Spec(PathBuf),
    Drv(StorePath),
    Lock(PathBuf),
    /// A store path (with its physical location) or anything on disk.
    Output {
        physical: PathBuf,
        store_path: Option<StorePath>,
    },
}

fn classify(store: &LocalStore, arg: &str) -> CliResult<Side> {
    let p = Path::new(arg);
    if p.join("container.yaml").is_file() {
        return Ok(Side::Spec(p.to_path_buf()));
    }
    if arg.starts_with(buildit_store::STORE_DIR) || (arg.ends_with(".drv") && !p.exists()) {
        let (sp, sub) = store.resolve(arg)?;
        if sp.is_derivation() {
            return Ok(Side::Drv(sp));
        }
        return Ok(output_in_store(store, sp, &sub));
    }
    if p.is_file() && (arg.ends_with(".lock") || arg.ends_with("buildit.lock")) {
        return Ok(Side::Lock(p.to_path_buf()));
    }
    if arg.ends_with(".drv") {
        if let Ok((sp, _)) = store.resolve(arg) {
            return Ok(Side::Drv(sp));
        }
    }
    if std::fs::symlink_metadata(p).is_err() {
        return Err(CliError::usage(
            format!("{arg}: no such file, directory or store path"),
            Some(
                "diff takes two .drv paths, spec directories, lock files, store paths, \
                 NARs, directories or images",
            ),
        ));
    }
    // A link into the store (`result`) is the store path it names.
    if let Ok((sp, sub)) = store.resolve(arg) {
        return Ok(output_in_store(store, sp, &sub));
    }
    Ok(Side::Output {
        physical: p.to_path_buf(),
        store_path: None,
    })
}

/// A store path, or (with `sub`) a path inside one, such as an image output's
/// `oci/`: either way the store path's deriver explains it.
fn output_in_store(store: &LocalStore, sp: StorePath, sub: &Path) -> Side {
    Side::Output {
        physical: store.physical_path(&sp).join(sub),
        store_path: Some(sp),
    }
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

fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::Usage {
        message: e.to_string(),
        help: None,
    }
}

/// Ok(true) when A and B are the same.
fn run(global: &Global, args: &Args) -> CliResult<bool> {
    let store = global.open_store()?;
    let (a, b) = (classify(&store, &args.a)?, classify(&store, &args.b)?);
    let options = DiffOptions {
        max_text_lines: if args.max_lines == 0 {
            usize::MAX
        } else {
            args.max_lines
        },
        ..DiffOptions::default()
    };
    match (a, b) {
        (Side::Spec(a), Side::Spec(b)) => {
            let d = diff_specs(&store, &a, &b).map_err(failed)?;
            show_drv(&d, args.json)
        }
        (Side::Drv(a), Side::Drv(b)) => {
            let d = diff_derivations(&store, &[a], &[b]).map_err(failed)?;
            show_drv(&d, args.json)
        }
        (Side::Lock(a), Side::Lock(b)) => {
            let la = LockFile::load(&a)?;
            let lb = LockFile::load(&b)?;
            show_drv(&diff_locks(&la, &lb), args.json)
        }
        (
            Side::Output {
                physical: pa,
                store_path: sa,
            },
            Side::Output {
                physical: pb,
                store_path: sb,
            },
        ) => {
            // Two outputs of different derivations: say first what changed in
            // the recipe, then what changed in the files.
            let mut causes = None;
            if let (Some(sa), Some(sb)) = (&sa, &sb) {
                let deriver = |p: &StorePath| -> Option<StorePath> {
                    let d = store.path_info(p).ok()??.deriver?;
                    store.is_valid(&d).ok()?.then_some(d)
                };
                if let (Some(da), Some(db)) = (deriver(sa), deriver(sb)) {
                    if da != db {
                        causes = Some(diff_derivations(&store, &[da], &[db]).map_err(failed)?);
                    }
                }
            }
            // A store path keeps only the executable bit; so does the comparison.
            let options = DiffOptions {
                nar_modes: sa.is_some() || sb.is_some(),
                ..options
            };
            let files = outputs::diff(&pa, &pb, &options).map_err(failed)?;
            let same = files.is_empty();
            if args.json {
                print_json(&json!({ "derivations": causes, "outputs": files }))?;
            } else {
                let mut out = std::io::stdout().lock();
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
                diffoscope(&pa, &pb)?;
            }
            Ok(same)
        }
        (a, b) => Err(CliError::usage(
            format!("{} and {} are different kinds of thing", kind(&a), kind(&b)),
            Some("compare two .drvs, two spec directories, two lock files, or two outputs"),
        )),
    }
}

fn kind(s: &Side) -> &'static str {
    match s {
        Side::Spec(_) => "a spec directory",
        Side::Drv(_) => "a derivation",
        Side::Lock(_) => "a lock file",
        Side::Output { .. } => "an output",
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

fn show_drv(d: &DrvDiff, json: bool) -> CliResult<bool> {
    if json {
        print_json(&serde_json::to_value(d).map_err(std::io::Error::other)?)?;
    } else {
        write!(std::io::stdout().lock(), "{d}")?;
    }
    Ok(d.is_empty())
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
