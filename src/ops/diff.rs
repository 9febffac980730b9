//! `buildit diff A B`: what each operand is, and the diff that fits the pair.
//! Spec directories are loaded and lowered here; the audit gets their roots.

use std::path::{Path, PathBuf};

use buildit_lang::lockfile::{LockError, LockFile};
use buildit_store::{LocalStore, StoreError, StorePath};

use crate::audit::drv::{diff_derivations, diff_locks, DrvDiff, DrvDiffError};
use crate::audit::outputs::{self, DiffOptions, OutputDiff, OutputDiffError};
use crate::ops::load::{self, SpecOpError};

/// What an operand is, as far as choosing the kind of diff goes.
#[derive(Debug, Clone)]
pub enum Operand {
    Spec(PathBuf),
    Drv(StorePath),
    Lock(PathBuf),
    /// A store path (with its physical location) or anything on disk.
    Output {
        physical: PathBuf,
        store_path: Option<StorePath>,
    },
}

impl Operand {
    pub fn kind(&self) -> &'static str {
        match self {
            Operand::Spec(_) => "a spec directory",
            Operand::Drv(_) => "a derivation",
            Operand::Lock(_) => "a lock file",
            Operand::Output { .. } => "an output",
        }
    }
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum DiffError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}: no such file, directory or store path")]
    #[diagnostic(help(
        "diff takes two .drv paths, spec directories, lock files, store paths, NARs, directories or images"
    ))]
    NoSuchOperand(String),
    #[error("{a} and {b} are different kinds of thing")]
    #[diagnostic(help("compare two .drvs, two spec directories, two lock files, or two outputs"))]
    Mismatch { a: &'static str, b: &'static str },
    #[error(transparent)]
    Lock(#[from] LockError),
    /// A spec directory that does not load, lock or lower.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Spec(#[from] SpecOpError),
    #[error(transparent)]
    Derivations(#[from] DrvDiffError),
    #[error(transparent)]
    Outputs(#[from] OutputDiffError),
}

/// Which diff an operand calls for.
pub fn classify(store: &LocalStore, arg: &str) -> Result<Operand, DiffError> {
    let p = Path::new(arg);
    if load::is_spec_dir(p) {
        return Ok(Operand::Spec(p.to_path_buf()));
    }
    if arg.starts_with(buildit_store::STORE_DIR) || (arg.ends_with(".drv") && !p.exists()) {
        let (sp, sub) = store.resolve(arg)?;
        if sp.is_derivation() {
            return Ok(Operand::Drv(sp));
        }
        return Ok(output_in_store(store, sp, &sub));
    }
    if p.is_file() && (arg.ends_with(".lock") || arg.ends_with("buildit.lock")) {
        return Ok(Operand::Lock(p.to_path_buf()));
    }
    if arg.ends_with(".drv") {
        if let Ok((sp, _)) = store.resolve(arg) {
            return Ok(Operand::Drv(sp));
        }
    }
    if std::fs::symlink_metadata(p).is_err() {
        return Err(DiffError::NoSuchOperand(arg.to_string()));
    }
    // A link into the store (`result`) is the store path it names.
    if let Ok((sp, sub)) = store.resolve(arg) {
        return Ok(output_in_store(store, sp, &sub));
    }
    Ok(Operand::Output {
        physical: p.to_path_buf(),
        store_path: None,
    })
}

/// A store path, or (with `sub`) a path inside one, such as an image output's
/// `oci/`: either way the store path's deriver explains it.
fn output_in_store(store: &LocalStore, sp: StorePath, sub: &Path) -> Operand {
    Operand::Output {
        physical: store.physical_path(&sp).join(sub),
        store_path: Some(sp),
    }
}

/// How two operands differ.
#[derive(Debug)]
pub enum Diff {
    /// Two derivation graphs (from `.drv`s, spec directories or lock files).
    Derivations(DrvDiff),
    /// Two outputs file by file, after what changed in their derivations when
    /// both are store paths with different derivers.
    Outputs {
        causes: Option<DrvDiff>,
        files: OutputDiff,
        /// Where the two outputs are on disk.
        a: PathBuf,
        b: PathBuf,
    },
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        match self {
            Diff::Derivations(d) => d.is_empty(),
            Diff::Outputs { files, .. } => files.is_empty(),
        }
    }
}

/// Diff `a` and `b`, operands of the same kind.
pub fn diff(
    store: &LocalStore,
    a: &str,
    b: &str,
    options: &DiffOptions,
    warn: load::Warn<'_>,
) -> Result<Diff, DiffError> {
    let (a, b) = (classify(store, a)?, classify(store, b)?);
    match (a, b) {
        (Operand::Spec(a), Operand::Spec(b)) => {
            Ok(Diff::Derivations(diff_specs(store, &a, &b, warn)?))
        }
        (Operand::Drv(a), Operand::Drv(b)) => {
            Ok(Diff::Derivations(diff_derivations(store, &[a], &[b])?))
        }
        (Operand::Lock(a), Operand::Lock(b)) => {
            let la = LockFile::load(&a)?;
            let lb = LockFile::load(&b)?;
            Ok(Diff::Derivations(diff_locks(&la, &lb)))
        }
        (
            Operand::Output {
                physical: pa,
                store_path: sa,
            },
            Operand::Output {
                physical: pb,
                store_path: sb,
            },
        ) => {
            let mut causes = None;
            if let (Some(sa), Some(sb)) = (&sa, &sb) {
                // No deriver (or one gone from the store) leaves only the files
                // to compare: not an error.
                let deriver = |p: &StorePath| -> Option<StorePath> {
                    let d = store.path_info(p).ok()??.deriver?;
                    store.is_valid(&d).ok()?.then_some(d)
                };
                if let (Some(da), Some(db)) = (deriver(sa), deriver(sb)) {
                    if da != db {
                        causes = Some(diff_derivations(store, &[da], &[db])?);
                    }
                }
            }
            // A store path keeps only the executable bit; so does the comparison.
            let options = DiffOptions {
                nar_modes: sa.is_some() || sb.is_some(),
                ..options.clone()
            };
            let files = outputs::diff(&pa, &pb, &options)?;
            Ok(Diff::Outputs {
                causes,
                files,
                a: pa,
                b: pb,
            })
        }
        (a, b) => Err(DiffError::Mismatch {
            a: a.kind(),
            b: b.kind(),
        }),
    }
}

/// Two spec directories, each loaded with its own lock and lowered into `store`,
/// diffed from their roots ([`load::plan_roots`]).
pub fn diff_specs(
    store: &LocalStore,
    a: &Path,
    b: &Path,
    warn: load::Warn<'_>,
) -> Result<DrvDiff, DiffError> {
    let lower = |dir: &Path| -> Result<Vec<StorePath>, SpecOpError> {
        let spec = load::load(dir, warn)?;
        let plan = load::eval(&spec, store)?;
        Ok(load::plan_roots(&plan))
    };
    let ra = lower(a)?;
    let rb = lower(b)?;
    Ok(diff_derivations(store, &ra, &rb)?)
}
