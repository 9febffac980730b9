//! Builtin builders, run by buildit itself rather than in a sandbox: fixed-output
//! downloads, `.deb` unpacking and build-root merging.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use buildit_lang::lower::debian::{BUILDROOT, UNPACK_DEB};
use buildit_lang::model::build_root::Fixups;
use buildit_store::{Derivation, Hash, HashAlgo, PathInfo, StorePath};

use super::sandboxed::{Built, Compared};
use super::{buildroot, BuildError, Realiser};

impl Realiser<'_> {
    pub(super) fn fetch(
        &self,
        drv_path: &StorePath,
        drv: &Derivation,
    ) -> Result<Built, BuildError> {
        self.fetcher
            .fetch_reporting(self.store, drv, &|done, total| {
                self.progress.event(super::events::Event::Download {
                    drv: drv_path,
                    done,
                    total,
                })
            })?;
        Ok(Built::Registered)
    }

    /// `--check` of a download: the content must still hash to what is registered
    /// (the declared hash already pins it; refetching could only agree or fail).
    pub(super) fn check_fetch(
        &self,
        drv_path: &StorePath,
        drv: &Derivation,
    ) -> Result<Built, BuildError> {
        let mut out = Vec::new();
        for o in drv.outputs.values() {
            if let Some(p) = o.path() {
                let expected = self.store.require_info(p)?.nar_hash;
                let (actual, _) =
                    buildit_store::nar::hash_path(&self.store.physical_path(p), HashAlgo::Sha256)?;
                out.push(Compared {
                    output: p.clone(),
                    expected,
                    actual,
                    rebuilt: None,
                });
            }
        }
        let _ = drv_path;
        Ok(Built::Checked(out))
    }

    /// Compare a check rebuild of `out` (in `tree`) with the registered output;
    /// a differing one is moved to `var/check/` when the options say to keep it.
    pub(super) fn compare_rebuilt(
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
    fn make_tree(
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

    /// `builtin:unpack-deb` and `builtin:buildroot`.
    pub(super) fn build_tree(
        &self,
        drv_path: &StorePath,
        drv: &Derivation,
        check: bool,
    ) -> Result<Built, BuildError> {
        let failed = |message: String| failed(drv_path, message);
        self.make_tree(drv_path, drv, check, |tmp| {
            if drv.builder == UNPACK_DEB {
                let deb = self.env_path(drv, "deb", &failed)?;
                crate::debian::deb::unpack_deb(&self.store.physical_path(&deb), tmp)
                    .map_err(|e| failed(e.to_string()))?;
            } else if drv.builder == BUILDROOT {
                let members: Vec<(String, PathBuf)> = drv
                    .env
                    .get("members")
                    .map(String::as_str)
                    .unwrap_or("")
                    .split_whitespace()
                    .map(|m| {
                        let p: StorePath =
                            m.parse().map_err(|e| failed(format!("member {m}: {e}")))?;
                        Ok((p.name().to_string(), self.store.physical_path(&p)))
                    })
                    .collect::<Result<_, BuildError>>()?;
                let fixups: Fixups =
                    serde_json::from_str(drv.env.get("fixups").map(String::as_str).unwrap_or("{}"))
                        .map_err(|e| failed(format!("bad fixups: {e}")))?;
                buildroot::merge_trees(&members, tmp).map_err(|e| failed(e.to_string()))?;
                buildroot::apply_fixups(tmp, &fixups).map_err(|e| failed(e.to_string()))?;
            } else {
                return Err(BuildError::UnsupportedBuilder {
                    drv: drv_path.clone(),
                    builder: drv.builder.clone(),
                });
            }
            Ok(None)
        })
    }

    /// `builtin:image`; the note gives the image's ID.
    pub(super) fn build_image(
        &self,
        drv_path: &StorePath,
        drv: &Derivation,
        check: bool,
    ) -> Result<Built, BuildError> {
        self.make_tree(drv_path, drv, check, |tmp| {
            let scratch = self.store.temp_tree()?;
            let summary = crate::image::build::build_image(self.store, drv, tmp, scratch.path())
                .map_err(|e| failed(drv_path, e.to_string()))?;
            let id = match drv.env.get("format").map(String::as_str) {
                Some("aci") => format!("image ID {}", summary.id),
                _ => format!("manifest {}", summary.id),
            };
            Ok(Some(match summary.merged {
                0 => id,
                n => format!(
                    "{id}; {} layers after merging the smallest neighbours {n} time(s) to stay within max-layers (no file dropped)",
                    summary.layers
                ),
            }))
        })
    }

    fn env_path(
        &self,
        drv: &Derivation,
        key: &str,
        failed: &dyn Fn(String) -> BuildError,
    ) -> Result<StorePath, BuildError> {
        let v = drv
            .env
            .get(key)
            .ok_or_else(|| failed(format!("env '{key}' missing")))?;
        let p: StorePath = v.parse().map_err(|e| failed(format!("env '{key}': {e}")))?;
        if !self.store.is_valid(&p)? {
            return Err(failed(format!("input {p} is not valid")));
        }
        Ok(p)
    }
}

fn failed(drv: &StorePath, message: String) -> BuildError {
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
