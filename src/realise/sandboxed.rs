//! Building one derivation whose builder runs in the sandbox: a package build's
//! build root merged as `/` (a plain derivation gets an empty `/`, as in Nix), the
//! closure of its inputs under `/store`, `/build` and its outputs writable, a
//! fixed environment. The outputs are checked (references,
//! ELF libraries against the runtime closure) and registered atomically.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use buildit_store::builtins::build_root::members_of;
use buildit_store::builtins::PackageBuild;
use buildit_store::references::scan_references;
use buildit_store::{Derivation, Hash, PathInfo, StorePath};

use super::checks::{check_needed, LibraryTree, MissingLibrary};
use super::events::Event;
use super::log::{create_log, tail, LogPump};
use super::{BuildError, Realiser};
use crate::sandbox::{self, SandboxSpec};

/// `SOURCE_DATE_EPOCH` unless the derivation sets it: 1980-01-01, the earliest
/// time zip and other formats can store (the store's own mtime, 1, is not).
const SOURCE_DATE_EPOCH: &str = "315532800";
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const LOG_TAIL: usize = 25;

/// What a successful build produced: per output, the registered info (or, in a
/// check, the NAR hash of the rebuilt tree).
pub enum Built {
    Registered,
    /// Registered, with something the user should know (e.g. layers merged).
    Noted(String),
    Checked(Vec<Compared>),
}

/// One output rebuilt in a check.
pub struct Compared {
    pub output: StorePath,
    pub expected: Hash,
    pub actual: Hash,
    pub rebuilt: Option<PathBuf>,
}

/// The outputs of `drv`: (output id, path).
fn outputs(drv_path: &StorePath, drv: &Derivation) -> Result<Vec<(String, StorePath)>, BuildError> {
    drv.outputs
        .iter()
        .map(|(id, o)| {
            o.path()
                .cloned()
                .map(|p| (id.clone(), p))
                .ok_or_else(|| BuildError::Failed {
                    drv: drv_path.clone(),
                    message: format!("output '{id}' has no path"),
                    log: None,
                })
        })
        .collect()
}

impl Realiser<'_> {
    /// The input closure of a derivation: its sources and its inputs' outputs,
    /// with everything they reference.
    fn input_closure(&self, drv: &Derivation) -> Result<BTreeSet<StorePath>, BuildError> {
        let mut inputs: BTreeSet<StorePath> = drv.input_srcs.clone();
        for (input, wanted) in &drv.input_drvs {
            let d = self.store.read_derivation(input)?;
            for id in wanted {
                if let Some(p) = d.outputs.get(id).and_then(|o| o.path()) {
                    inputs.insert(p.clone());
                }
            }
        }
        Ok(self.store.closure(&inputs)?)
    }

    /// The Debian members behind a build root's layers, for naming the package
    /// that would provide a missing library.
    fn providers(&self, layers: &[StorePath]) -> Vec<LibraryTree> {
        let mut out = Vec::new();
        for layer in layers {
            let members = self
                .store
                .path_info(layer)
                .ok()
                .flatten()
                .and_then(|i| i.deriver)
                .and_then(|d| self.store.read_derivation(&d).ok())
                .and_then(|d| members_of(&d));
            match members {
                Some(m) => out.extend(m.iter().map(|p| LibraryTree {
                    label: p.name().to_string(),
                    root: self.store.physical_path(p),
                })),
                None => out.push(LibraryTree {
                    label: layer.name().to_string(),
                    root: self.store.physical_path(layer),
                }),
            }
        }
        out
    }

    /// Build (or, with `check`, rebuild and compare) a sandboxed derivation: a
    /// package build (`package`) over its build root, or a plain derivation.
    pub(super) fn build_sandboxed(
        &self,
        drv_path: &StorePath,
        drv: &Derivation,
        package: Option<&PackageBuild>,
        check: bool,
        cancel: &Arc<AtomicBool>,
    ) -> Result<Built, BuildError> {
        let failed = |message: String| BuildError::Failed {
            drv: drv_path.clone(),
            message,
            log: None,
        };
        let outs = outputs(drv_path, drv)?;
        // One lock per output, in path order so that two processes cannot deadlock.
        let mut locks = BTreeMap::new();
        for p in outs.iter().map(|(_, p)| p).collect::<BTreeSet<_>>() {
            locks.insert(p.clone(), self.store.lock_path(p)?);
        }
        let mut all_valid = true;
        for (_, p) in &outs {
            all_valid &= self.store.is_valid(p)?;
        }
        if all_valid && !check {
            // Another process built it while we waited for the lock.
            return Ok(Built::Registered);
        }

        let (layers, runtime): (&[StorePath], &[StorePath]) = match package {
            Some(p) => (&p.build_root, &p.runtime_deps),
            None => (&[], &[]),
        };
        let closure = self.input_closure(drv)?;

        // Output trees and the build dir live in the store's temp area (same
        // filesystem as the store, so registering is a rename).
        let mut out_trees = Vec::new();
        for (id, p) in &outs {
            let t = self.store.temp_tree()?;
            fs::create_dir(t.path()).map_err(|e| failed(format!("create output dir: {e}")))?;
            out_trees.push((id.clone(), p.clone(), t));
        }
        let build_dir = self.store.temp_tree()?;
        fs::create_dir(build_dir.path()).map_err(|e| failed(format!("create /build: {e}")))?;

        let mut spec =
            SandboxSpec::new(std::iter::once(drv.builder.clone()).chain(drv.args.iter().cloned()));
        // Layers that ship `/lib/…` over a merged-usr root would, in overlayfs,
        // hide the root's `lib -> usr/lib` link: such layers are seen through a
        // view with those files moved under `usr/` (hard links, made per build).
        let mut views = Vec::new();
        spec.root_layers = Vec::new();
        if layers.is_empty() {
            // A plain derivation sees no host tree and no build root: `/` holds
            // only what the sandbox adds (its inputs under /store, /build, /dev,
            // /proc, /tmp).
            let empty = self.store.temp_tree()?;
            fs::create_dir(empty.path()).map_err(|e| failed(format!("create empty root: {e}")))?;
            spec.root_layers.push(empty.path().to_path_buf());
            views.push(empty);
        }
        for l in layers {
            let phys = self.store.physical_path(l);
            let base = self.store.physical_path(&layers[0]);
            if l != &layers[0] && needs_usrmerge_view(&base, &phys) {
                let view = self.store.temp_tree()?;
                usrmerge_view(&base, &phys, view.path())
                    .map_err(|e| failed(format!("merged-usr view of {l}: {e}")))?;
                spec.root_layers.push(view.path().to_path_buf());
                views.push(view);
            } else {
                spec.root_layers.push(phys);
            }
        }
        spec.store_paths = closure
            .iter()
            .map(|p| (self.store.physical_path(p), p.to_absolute()))
            .collect();
        spec.writable = out_trees
            .iter()
            .map(|(_, p, t)| (t.path().to_path_buf(), p.to_absolute()))
            .collect();
        spec.cpus = self.options.variation.one_cpu.then_some(1);
        spec.uname26 = self.options.variation.uname26;
        if self.options.variation.build_dir_tmpfs {
            spec.tmpfs.push("/build".into());
        } else {
            spec.writable
                .push((build_dir.path().to_path_buf(), "/build".into()));
        }
        spec.cwd = "/build".into();
        spec.env = self.build_env(drv);
        spec.timeout = self.options.timeout;
        spec.max_processes = self.options.max_processes;
        spec.cancel = Some(cancel.clone());

        let (log_file, log_path) =
            create_log(self.store, drv_path).map_err(|e| failed(format!("create log: {e}")))?;
        let (pipe_r, pipe_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| failed(format!("pipe: {e}")))?;
        spec.log = Some(File::from(pipe_w));
        let pump = LogPump::new();
        let silent = AtomicBool::new(false);
        let done = AtomicBool::new(false);
        let outcome = std::thread::scope(|s| {
            let pump = &pump;
            s.spawn(move || {
                let _ = pump.run(File::from(pipe_r), log_file, &|line| {
                    self.progress.event(Event::Log {
                        drv: drv_path,
                        line,
                    })
                });
            });
            if let Some(limit) = self.options.max_silent_time {
                let (silent, done) = (&silent, &done);
                s.spawn(move || {
                    while !done.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(100));
                        let last =
                            Duration::from_millis(pump.last_output_ms.load(Ordering::Relaxed));
                        if pump.start.elapsed().saturating_sub(last) > limit {
                            silent.store(true, Ordering::Relaxed);
                            cancel.store(true, Ordering::Relaxed);
                            break;
                        }
                    }
                });
            }
            let outcome = sandbox::run(&spec);
            done.store(true, Ordering::Relaxed);
            // Closing our end of the pipe lets the pump see EOF.
            spec.log = None;
            outcome
        });
        let fail_with_log = |message: String| {
            let tail = tail(&log_path, LOG_TAIL).unwrap_or_default();
            BuildError::Failed {
                drv: drv_path.clone(),
                message,
                log: Some((log_path.clone(), tail)),
            }
        };
        let keep = |e: BuildError| -> BuildError {
            if self.options.keep_failed {
                if let Some(kept) = self.keep_build_dir(drv_path, build_dir.path()) {
                    return e.with_note(format!("build dir kept at {}", kept.display()));
                }
            }
            e
        };
        let outcome = outcome.map_err(|e| fail_with_log(e.to_string()))?;
        if !outcome.status.success() {
            let secs = |d: Option<Duration>| d.map(|d| d.as_secs()).unwrap_or(0);
            let why = if outcome.timed_out {
                format!("timed out after {} s", secs(self.options.timeout))
            } else if silent.load(Ordering::Relaxed) {
                format!(
                    "printed no output for {} s (--max-silent-time)",
                    secs(self.options.max_silent_time)
                )
            } else if outcome.cancelled {
                // Stopped by the scheduler (another failure, or an interrupt): not
                // this build's fault, so no failure and nothing kept.
                return Err(BuildError::Cancelled {
                    drv: drv_path.clone(),
                });
            } else {
                describe_status(outcome.status)
            };
            return Err(keep(fail_with_log(format!("builder {why}"))));
        }

        // The outputs: present, clean, referencing only what they may.
        let mut candidates = closure.clone();
        candidates.extend(outs.iter().map(|(_, p)| p.clone()));
        let merged_usr = self.store.temp_tree()?;
        make_merged_usr(merged_usr.path()).map_err(|e| failed(format!("merged-usr links: {e}")))?;
        let mut results = Vec::new();
        for (id, path, tree) in &out_trees {
            let t = tree.path();
            if fs::read_dir(t)
                .map(|mut d| d.next().is_none())
                .unwrap_or(true)
            {
                return Err(keep(fail_with_log(format!(
                    "the builder left output '{id}' ({path}) empty"
                ))));
            }
            reject_special_files(t).map_err(|m| keep(fail_with_log(m)))?;
            let mut references = scan_references(t, &candidates)
                .map_err(|e| fail_with_log(format!("scanning {path}: {e}")))?;
            references.extend(runtime.iter().cloned());
            let runtime_closure = self
                .store
                .closure(references.iter().filter(|r| *r != path))?;
            // Images and build roots are merged-usr, as Debian 12 is: `/lib64` is
            // `usr/lib64` and so on, whichever package ships the files.
            let mut trees = vec![LibraryTree {
                label: "merged-usr links".into(),
                root: merged_usr.path().to_path_buf(),
            }];
            trees.extend(runtime_closure.iter().map(|p| LibraryTree {
                label: p.name().to_string(),
                root: self.store.physical_path(p),
            }));
            // Libraries are checked for package builds only: a plain derivation
            // is held to Nix's rules, which do not look inside ELF files.
            let missing = match package {
                Some(_) => check_needed(t, &trees, &self.providers(layers))
                    .map_err(|e| fail_with_log(format!("reading ELF files of {path}: {e}")))?,
                None => Vec::new(),
            };
            if !missing.is_empty() {
                return Err(keep(fail_with_log(missing_message(path, &missing))));
            }
            let info = PathInfo {
                path: path.clone(),
                nar_hash: Hash::sha256(b""),
                nar_size: 0,
                references,
                deriver: Some(drv_path.clone()),
                sigs: vec![],
                registration_time: 0,
                ca: None,
            };
            results.push((path.clone(), info, t));
        }
        if check {
            let mut compared = Vec::new();
            for (path, _, t) in &results {
                compared.push(self.compare_rebuilt(drv_path, path, t)?);
            }
            return Ok(Built::Checked(compared));
        }
        for (path, info, t) in results {
            self.store.add_built_tree(t, info, &locks[&path])?;
        }
        Ok(Built::Registered)
    }
}

impl Realiser<'_> {
    /// The fixed environment, then the derivation's, then what the sandbox layout
    /// dictates (a derivation cannot move `/build`).
    fn build_env(&self, drv: &Derivation) -> Vec<(String, String)> {
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in [
            ("PATH", PATH),
            ("HOME", "/homeless-shelter"),
            ("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH),
            ("TZ", "UTC"),
            ("LC_ALL", "C.UTF-8"),
            ("NIX_STORE", "/store"),
            ("TERM", "dumb"),
        ] {
            env.insert(k.into(), v.into());
        }
        env.insert(
            "NIX_BUILD_CORES".into(),
            self.options.cores.max(1).to_string(),
        );
        env.extend(drv.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        for k in ["TMPDIR", "TEMPDIR", "TMP", "TEMP", "NIX_BUILD_TOP", "PWD"] {
            env.insert(k.into(), "/build".into());
        }
        let mut env: Vec<_> = env.into_iter().collect();
        if self.options.variation.reverse_env {
            env.reverse();
        }
        env
    }

    /// Move a failed build's directory out of the temp area (which is cleaned on
    /// the next start) to `var/kept/`; returns where it went.
    fn keep_build_dir(&self, drv_path: &StorePath, dir: &Path) -> Option<PathBuf> {
        let kept = self.store.root().join("var/kept");
        fs::create_dir_all(&kept).ok()?;
        let mut dest = kept.join(drv_path.name().trim_end_matches(".drv"));
        let mut n = 1;
        while dest.exists() {
            n += 1;
            dest = kept.join(format!("{}-{n}", drv_path.name().trim_end_matches(".drv")));
        }
        fs::rename(dir, &dest).ok()?;
        Some(dest)
    }
}

fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("failed with exit code {c}"),
        (None, Some(s)) => format!(
            "was killed by signal {s} ({})",
            nix::sys::signal::Signal::try_from(s)
                .map(|s| s.as_str())
                .unwrap_or("unknown")
        ),
        _ => format!("ended with {status}"),
    }
}

/// Device nodes, fifos and sockets have no place in an output; a character device
/// 0/0 is an overlayfs whiteout, which means the build deleted a file of its root.
fn reject_special_files(root: &Path) -> Result<(), String> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for e in entries {
            let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
            let md = e.metadata().map_err(|e| format!("{}: {e}", e))?;
            let ft = md.file_type();
            let rel = e.path();
            let rel = rel.strip_prefix(root).unwrap_or(&rel).display().to_string();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_char_device() && md.rdev() == 0 {
                return Err(format!(
                    "output holds an overlay whiteout at /{rel} (the build deleted a file it does not own)"
                ));
            } else if ft.is_char_device() || ft.is_block_device() {
                return Err(format!("output holds a device node at /{rel}"));
            } else if ft.is_fifo() || ft.is_socket() {
                return Err(format!("output holds a fifo or socket at /{rel}"));
            }
        }
    }
    Ok(())
}

fn missing_message(path: &StorePath, missing: &[MissingLibrary]) -> String {
    let mut m = format!(
        "{} needs libraries that nothing in its runtime closure provides:",
        path.name()
    );
    for x in missing {
        m.push_str(&format!("\n  {} needs {}", x.needed_by, x.library));
        match &x.provider {
            Some(p) => m.push_str(&format!(
                " (provided by {p} in the build root: add it to runtime-depends)"
            )),
            None => m.push_str(" (no package in the build root provides it)"),
        }
    }
    m
}

/// The top-level links of a merged-usr system (`/bin` → `usr/bin`, …).
pub const MERGED_USR: [(&str, &str); 4] = buildit_store::usrmerge::MERGED_USR_LINKS;

fn make_merged_usr(dir: &Path) -> std::io::Result<()> {
    fs::create_dir(dir)?;
    for (link, target) in MERGED_USR {
        std::os::unix::fs::symlink(target, dir.join(link))?;
    }
    Ok(())
}

/// Whether `layer` has a top-level directory where `base` has a merged-usr link.
fn needs_usrmerge_view(base: &Path, layer: &Path) -> bool {
    MERGED_USR.iter().any(|(name, _)| {
        let in_base = fs::symlink_metadata(base.join(name));
        let in_layer = fs::symlink_metadata(layer.join(name));
        matches!((in_base, in_layer), (Ok(b), Ok(l)) if b.file_type().is_symlink() && l.is_dir())
    })
}

/// `layer` copied to `dest` as hard links, with each top-level directory that is a
/// merged-usr link in `base` moved under `usr/`.
fn usrmerge_view(base: &Path, layer: &Path, dest: &Path) -> std::io::Result<()> {
    fs::create_dir(dest)?;
    let mut stack: Vec<(PathBuf, PathBuf)> = Vec::new();
    for e in fs::read_dir(layer)? {
        let e = e?;
        let name = e.file_name();
        let merged = MERGED_USR.iter().any(|(n, _)| name == *n)
            && fs::symlink_metadata(base.join(&name)).is_ok_and(|m| m.file_type().is_symlink())
            && e.file_type()?.is_dir();
        let to = if merged {
            Path::new("usr").join(&name)
        } else {
            PathBuf::from(&name)
        };
        stack.push((PathBuf::from(&name), to));
    }
    while let Some((from, to)) = stack.pop() {
        let src = layer.join(&from);
        let dst = dest.join(&to);
        let md = fs::symlink_metadata(&src)?;
        if md.is_dir() {
            fs::create_dir_all(&dst)?;
            for e in fs::read_dir(&src)? {
                let n = e?.file_name();
                stack.push((from.join(&n), to.join(&n)));
            }
        } else {
            if let Some(parent) = dst.parent() {
                fs::create_dir_all(parent)?;
            }
            if md.file_type().is_symlink() {
                std::os::unix::fs::symlink(fs::read_link(&src)?, &dst)?;
            } else if fs::hard_link(&src, &dst).is_err() {
                fs::copy(&src, &dst)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_with_lib_is_seen_under_usr_over_a_merged_usr_root() {
        let t = tempfile::tempdir().unwrap();
        let (base, layer, view) = (t.path().join("b"), t.path().join("l"), t.path().join("v"));
        make_merged_usr(&base).unwrap();
        fs::create_dir_all(layer.join("lib/x86_64-linux-gnu")).unwrap();
        fs::write(layer.join("lib/x86_64-linux-gnu/libq.so.1"), "q").unwrap();
        fs::create_dir_all(layer.join("usr/include")).unwrap();
        fs::write(layer.join("usr/include/q.h"), "h").unwrap();
        std::os::unix::fs::symlink("libq.so.1", layer.join("lib/x86_64-linux-gnu/libq.so"))
            .unwrap();
        assert!(needs_usrmerge_view(&base, &layer));
        assert!(!needs_usrmerge_view(&base, &layer.join("usr")));
        usrmerge_view(&base, &layer, &view).unwrap();
        assert_eq!(
            fs::read_to_string(view.join("usr/lib/x86_64-linux-gnu/libq.so.1")).unwrap(),
            "q"
        );
        assert_eq!(
            fs::read_link(view.join("usr/lib/x86_64-linux-gnu/libq.so")).unwrap(),
            Path::new("libq.so.1")
        );
        assert!(view.join("usr/include/q.h").is_file());
        assert!(!view.join("lib").exists());
    }
}
