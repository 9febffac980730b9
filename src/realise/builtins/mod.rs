//! Builders buildit runs itself rather than in a sandbox, one file each behind
//! [`Builtin`], as `src/cache` has one file per backend: fixed-output downloads,
//! `.deb` unpacking, build-root merging, image writing.

mod build_root;
mod fetchurl;
mod image;
mod unpack_deb;

use std::collections::BTreeSet;
use std::path::Path;

use buildit_store::builtins::Builder;
use buildit_store::{Derivation, Hash, HashAlgo, PathInfo, StorePath};

use super::sandboxed::{Built, Compared};
use super::{BuildError, Realiser};

/// One builtin: builds (or, with `check`, rebuilds and compares) the output of
/// its derivation.
pub(super) trait Builtin {
    fn build(
        &self,
        r: &Realiser<'_>,
        drv_path: &StorePath,
        drv: &Derivation,
        check: bool,
    ) -> Result<Built, BuildError>;
}

/// The builtin that runs a derivation of this kind; `None` for kinds that run
/// in the sandbox.
pub(super) fn builtin_of(b: &Builder) -> Option<&dyn Builtin> {
    match b {
        Builder::FetchUrl(x) => Some(x),
        Builder::UnpackDeb(x) => Some(x),
        Builder::BuildRoot(x) => Some(x),
        Builder::Image(x) => Some(x),
        Builder::Package(_) | Builder::Plain(_) => None,
    }
}

impl Realiser<'_> {
    /// Compare a check rebuild of `out` (in `tree`) with the registered output;
    /// a differing one is moved to `var/check/` when the options say to keep it.
    pub(in crate::realise) fn compare_rebuilt(
        &self,
        drv_path: &StorePath,
        out: &StorePath,
        tree: &Path,
    ) -> Result<Compared, BuildError> {
        buildit_store::local::normalise(tree)?;
        let (actual, _) = buildit_store::nar::hash_path(tree, HashAlgo::Sha256)?;
        let expected = self.store.require_info(out)?.nar_hash;
        let mut rebuilt = None;
        if actual != expected && self.options.keep_differing {
            let dir = self.store.root().join("var/check");
            let kept = std::fs::create_dir_all(&dir).and_then(|()| {
                let mut n = 1;
                loop {
                    let dest = dir.join(format!("{}.check-{n}", out.base_name()));
                    match std::fs::symlink_metadata(&dest) {
                        Ok(_) => n += 1,
                        Err(_) => return move_read_only(tree, &dest).map(|()| dest),
                    }
                }
            });
            rebuilt = Some(kept.map_err(|e| BuildError::Failed {
                drv: drv_path.clone(),
                message: format!("keep the differing rebuild of {out}: {e}"),
                log: None,
            })?);
        }
        Ok(Compared {
            output: out.clone(),
            expected,
            actual,
            rebuilt,
        })
    }

    /// The frame of every builtin that makes a tree: lock `out`, let `make` write
    /// the tree into a temp dir, then register it (or, with `check`, compare its
    /// NAR hash with the registered one). `make` may return a note for the user.
    pub(super) fn make_tree(
        &self,
        drv_path: &StorePath,
        drv: &Derivation,
        check: bool,
        make: impl FnOnce(&Path) -> Result<Option<String>, BuildError>,
    ) -> Result<Built, BuildError> {
        let out = drv
            .outputs
            .get("out")
            .and_then(|o| o.path())
            .ok_or_else(|| failed(drv_path, "no output 'out'".into()))?;
        let lock = self.store.lock_path(out)?;
        if !check && self.store.is_valid(out)? {
            return Ok(Built::Registered);
        }
        let tmp = self.store.temp_tree()?;
        let note = make(tmp.path())?;
        if check {
            return Ok(Built::Checked(vec![self.compare_rebuilt(
                drv_path,
                out,
                tmp.path(),
            )?]));
        }
        let info = PathInfo {
            path: out.clone(),
            nar_hash: Hash::sha256(b""),
            nar_size: 0,
            references: BTreeSet::new(),
            deriver: Some(drv_path.clone()),
            sigs: vec![],
            registration_time: 0,
            ca: None,
        };
        self.store.add_built_tree(tmp.path(), info, &lock)?;
        Ok(match note {
            Some(n) => Built::Noted(n),
            None => Built::Registered,
        })
    }
}

pub(super) fn failed(drv: &StorePath, message: String) -> BuildError {
    BuildError::Failed {
        drv: drv.clone(),
        message,
        log: None,
    }
}

/// Rename a normalised (read-only) tree to another directory. Moving a directory
/// to a new parent rewrites its `..`, which needs write permission on it unless
/// one is root: it is made writable for the move, then read-only again.
fn move_read_only(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::symlink_metadata(from)?;
    if !mode.is_dir() {
        return std::fs::rename(from, to);
    }
    let mode = mode.permissions().mode();
    std::fs::set_permissions(from, std::fs::Permissions::from_mode(mode | 0o200))?;
    let moved = std::fs::rename(from, to);
    let back = if moved.is_ok() { to } else { from };
    std::fs::set_permissions(back, std::fs::Permissions::from_mode(mode))?;
    moved
}
