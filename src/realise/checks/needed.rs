//! Whether the loader would find every ELF file's interpreter and needed
//! libraries in the runtime closure, and if not, which package has them.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::union::Union;
use super::{at, CheckError};
use crate::elf::{expand_origin, read_elf_deps, ElfAbi};

/// A tree of files laid out like `/`: a package's store path, or the output itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryTree {
    /// How reports name the tree, e.g. the store path name `libssl3-3.0.11-1`.
    pub label: String,
    /// Where the tree is on disk.
    pub root: PathBuf,
}

/// An ELF file's interpreter or needed library that the runtime closure lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingLibrary {
    /// The `DT_NEEDED` name (`libssl.so.3`), or the `PT_INTERP` path.
    pub library: String,
    /// The ELF file that needs it, as a path inside the output (`/usr/sbin/nginx`).
    pub needed_by: String,
    /// The label of the first of the `providers` that has it, if any.
    pub provider: Option<String>,
}

/// The ABI [`check_needed`] checks: x86-64, whose loader searches
/// [`DEFAULT_LIBRARY_DIRS`]. Files for other ABIs (the i386 helpers that valgrind
/// and perf ship) need a loader and libraries of their own, which nothing here
/// provides or looks for, so they are not checked.
pub const NATIVE_ABI: ElfAbi = ElfAbi {
    is64: true,
    big_endian: false,
    machine: 62, // EM_X86_64
};

/// Where the loader looks when a file's own search path does not have a library:
/// Debian's multiarch directories (from `ld.so.conf`), then the built-in ones.
pub const DEFAULT_LIBRARY_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
    "/usr/local/lib",
];

/// Checks every ELF executable and shared object in `output` (symlinks are not
/// followed): its interpreter and each `DT_NEEDED` library must exist in `output`
/// itself or in one of the `runtime` trees, where the loader would look for it.
///
/// The loader's search is mimicked over the union of those trees: the file's
/// `DT_RUNPATH` (or `DT_RPATH`) with `$ORIGIN` expanded, the directories named in
/// the trees' `/etc/ld.so.conf.d/*.conf`, then [`DEFAULT_LIBRARY_DIRS`]. Symlinks
/// in directories are followed across trees (a usrmerge `/lib -> usr/lib` from one
/// package, the libraries from another); the library itself only has to exist,
/// since its symlink may point into `/etc/alternatives`, which maintainer scripts
/// fill in. Names containing `/` are paths (`$ORIGIN` expanded); they and
/// relative search directories are taken relative to `/`.
///
/// Two kinds of files are let off. Shared libraries (no interpreter) whose needed
/// library is anywhere in the output by name: the program that loads them may
/// have loaded it already. Files for another ABI than [`NATIVE_ABI`]. A file
/// that starts with the ELF magic but does not parse is an error naming it: were
/// it skipped, a reader bug would look like "nothing missing".
///
/// Each missing library names the first of `providers` that has it in the same
/// places (and those of the providers' own `ld.so.conf.d`), looking at all the
/// trees as if installed together, as a build root's members are. The result is
/// sorted by `needed_by`, then `library`.
pub fn check_needed(
    output: &Path,
    runtime: &[LibraryTree],
    providers: &[LibraryTree],
) -> Result<Vec<MissingLibrary>, CheckError> {
    let mut roots = vec![output.to_path_buf()];
    roots.extend(runtime.iter().map(|t| t.root.clone()));
    let closure_len = roots.len();
    roots.extend(providers.iter().map(|t| t.root.clone()));
    let conf_dirs = ld_so_conf_dirs(&roots[..closure_len])?;
    let provider_conf_dirs = ld_so_conf_dirs(&roots[closure_len..])?;
    let union = Union::new(roots, closure_len);

    let (files, names) = files_below(output)?;
    let mut missing = Vec::new();
    for (logical, physical) in files {
        let deps = match read_elf_deps(&physical)? {
            Some(deps) if deps.abi == NATIVE_ABI => deps,
            _ => continue,
        };
        let origin = logical.parent().unwrap_or(Path::new("/"));
        let own_dirs = deps.search_path(origin);
        let defaults = DEFAULT_LIBRARY_DIRS.iter().map(PathBuf::from);
        let closure_dirs: Vec<PathBuf> = own_dirs
            .iter()
            .chain(&conf_dirs)
            .cloned()
            .chain(defaults.clone())
            .collect();
        let provider_dirs: Vec<PathBuf> = own_dirs
            .iter()
            .chain(&conf_dirs)
            .chain(&provider_conf_dirs)
            .cloned()
            .chain(defaults)
            .collect();
        let needed_by = logical.to_string_lossy().into_owned();

        let root = Path::new("/");
        let mut check = |library: &OsStr, closure: Vec<PathBuf>, provided: Vec<PathBuf>| {
            if closure.iter().any(|p| union.in_closure(p)) {
                return;
            }
            let provider = provided
                .iter()
                .filter_map(|p| union.provider_of(p))
                .min()
                .map(|i| providers[i].label.clone());
            missing.push(MissingLibrary {
                library: library.to_string_lossy().into_owned(),
                needed_by: needed_by.clone(),
                provider,
            });
        };
        if let Some(interp) = &deps.interpreter {
            check(interp, vec![root.join(interp)], vec![root.join(interp)]);
        }
        for lib in &deps.needed {
            if lib.as_bytes().contains(&b'/') {
                let path = root.join(expand_origin(lib.as_bytes(), origin));
                check(lib, vec![path.clone()], vec![path]);
            } else if deps.interpreter.is_none() && names.contains(lib.as_os_str()) {
                // A library's needs may be met by what the program that loads it
                // loaded first (java's libjvm.so, systemd's private
                // libsystemd-shared), which the loader matches by name. Only the
                // program's own search is checked, when the output has the name.
                continue;
            } else {
                let within = |dirs: &[PathBuf]| -> Vec<PathBuf> {
                    dirs.iter().map(|d| root.join(d).join(lib)).collect()
                };
                check(lib, within(&closure_dirs), within(&provider_dirs));
            }
        }
    }
    missing.sort_by(|a, b| (&a.needed_by, &a.library).cmp(&(&b.needed_by, &b.library)));
    missing.dedup();
    Ok(missing)
}

/// Regular files as their path inside a tree (`/usr/bin/x`) and on disk; and the
/// names of all files and symlinks.
type Files = (Vec<(PathBuf, PathBuf)>, HashSet<OsString>);

/// The [`Files`] below `root` (symlinks not followed), files in sorted order.
fn files_below(root: &Path) -> Result<Files, CheckError> {
    let mut files = Vec::new();
    let mut names = HashSet::new();
    let mut stack = vec![PathBuf::from("/")];
    while let Some(logical) = stack.pop() {
        let dir = root.join(
            logical
                .strip_prefix("/")
                .expect("logical paths are absolute"),
        );
        for entry in fs::read_dir(&dir).map_err(at(&dir))? {
            let entry = entry.map_err(at(&dir))?;
            let kind = entry.file_type().map_err(at(&entry.path()))?;
            let path = logical.join(entry.file_name());
            if kind.is_dir() {
                stack.push(path);
                continue;
            }
            if kind.is_file() {
                files.push((path, entry.path()));
            }
            names.insert(entry.file_name());
        }
    }
    files.sort();
    Ok((files, names))
}

/// The absolute directories listed in `etc/ld.so.conf.d/*.conf` of the `roots`,
/// each once. `include` lines are not followed: Debian's only one is in
/// `/etc/ld.so.conf` and includes this very directory.
fn ld_so_conf_dirs(roots: &[PathBuf]) -> Result<Vec<PathBuf>, CheckError> {
    let mut dirs = Vec::new();
    for root in roots {
        ld_so_conf_d(root, &mut dirs)?;
    }
    Ok(dirs)
}

fn ld_so_conf_d(root: &Path, dirs: &mut Vec<PathBuf>) -> Result<(), CheckError> {
    let conf_d = root.join("etc/ld.so.conf.d");
    // Only real directories: a symlinked `etc` could lead out of the tree.
    let real_dir = |p: &Path| fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    if !real_dir(&root.join("etc")) || !real_dir(&conf_d) {
        return Ok(());
    }
    let mut confs: Vec<PathBuf> = fs::read_dir(&conf_d)
        .and_then(|entries| {
            entries
                .map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<Vec<_>>>()
        })
        .map_err(at(&conf_d))?
        .into_iter()
        .filter(|p| p.extension() == Some(OsStr::new("conf")))
        .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
        .collect();
    confs.sort();
    for conf in confs {
        let text = fs::read(&conf).map_err(at(&conf))?;
        for line in text.split(|&b| b == b'\n') {
            let line = line.split(|&b| b == b'#').next().unwrap_or_default();
            let line = line.trim_ascii();
            let dir = PathBuf::from(OsStr::from_bytes(line));
            if dir.is_absolute() && !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::fixtures::{build_with_search_paths, cc, copy, demo, link, put, Synth};
    use crate::elf::{ElfDeps, ElfError};
    use crate::test_skip::skip;

    fn tree(label: &str, root: &Path) -> LibraryTree {
        LibraryTree {
            label: label.to_string(),
            root: root.to_path_buf(),
        }
    }

    fn libc_trees(dir: &Path, deps: &ElfDeps) -> Vec<LibraryTree> {
        let base = dir.join("base-files");
        let libc = dir.join("libc6");
        for top in ["lib", "lib64"] {
            link(&base, top, &format!("usr/{top}"));
        }
        for lib in &deps.needed {
            let lib = lib.to_str().unwrap();
            if lib != "libdemo.so.1" {
                put(&libc, &format!("usr/lib/x86_64-linux-gnu/{lib}"), b"");
            }
        }
        let interp = deps.interpreter.as_ref().expect("a dynamic executable");
        let interp = interp.to_str().unwrap();
        let rel = interp.trim_start_matches('/');
        let under_usr = rel.starts_with("lib/") || rel.starts_with("lib64/");
        put(
            &libc,
            &if under_usr {
                format!("usr/{rel}")
            } else {
                rel.to_string()
            },
            b"",
        );
        vec![tree("base-files", &base), tree("libc6", &libc)]
    }

    fn missing(library: &str, needed_by: &str, provider: Option<&str>) -> MissingLibrary {
        MissingLibrary {
            library: library.to_string(),
            needed_by: needed_by.to_string(),
            provider: provider.map(str::to_string),
        }
    }

    #[test]
    fn needed_libraries_in_the_closure_or_from_a_provider() {
        let Some(d) = demo() else { return };
        let out = d.dir.path().join("out");
        copy(&d.exe, &out, "usr/bin/demo");
        let mut runtime = libc_trees(d.dir.path(), &d.deps);
        let libdemo = d.dir.path().join("libdemo1");
        copy(&d.lib, &libdemo, "usr/lib/x86_64-linux-gnu/libdemo.so.1.0");
        link(
            &libdemo,
            "usr/lib/x86_64-linux-gnu/libdemo.so.1",
            "libdemo.so.1.0",
        );
        let empty = d.dir.path().join("empty");
        put(&empty, "usr/share/doc/empty/copyright", b"");
        let libdemo = tree("libdemo1", &libdemo);
        let empty = tree("empty", &empty);

        // Found in a runtime tree.
        let mut with_libdemo = runtime.clone();
        with_libdemo.push(libdemo.clone());
        assert_eq!(check_needed(&out, &with_libdemo, &[]).unwrap(), vec![]);

        // Missing, and a provider has it.
        assert_eq!(
            check_needed(&out, &runtime, &[empty.clone(), libdemo.clone()]).unwrap(),
            vec![missing("libdemo.so.1", "/usr/bin/demo", Some("libdemo1"))]
        );
        // Missing, and no provider has it.
        assert_eq!(
            check_needed(&out, &runtime, std::slice::from_ref(&empty)).unwrap(),
            vec![missing("libdemo.so.1", "/usr/bin/demo", None)]
        );

        // No C library at all: the interpreter is missing too; sorted by library.
        runtime.push(libdemo);
        let libc_only = runtime[1].clone();
        let found =
            check_needed(&out, &runtime[2..], &[empty, runtime[0].clone(), libc_only]).unwrap();
        let mut want: Vec<MissingLibrary> = d
            .deps
            .needed
            .iter()
            .filter(|l| *l != "libdemo.so.1")
            .map(|l| missing(l.to_str().unwrap(), "/usr/bin/demo", Some("libc6")))
            .collect();
        want.push(missing(
            d.deps.interpreter.as_ref().unwrap().to_str().unwrap(),
            "/usr/bin/demo",
            Some("libc6"),
        ));
        want.sort_by(|a, b| a.library.cmp(&b.library));
        assert_eq!(found, want);
    }

    #[test]
    fn ld_so_conf_directories_and_symlinks_in_the_output() {
        let Some(d) = demo() else { return };
        let dir = d.dir.path();
        let out = dir.join("out");
        copy(&d.exe, &out, "usr/bin/demo");
        // Not followed: it would bring in whatever /bin/ls needs.
        link(&out, "usr/bin/ls", "/bin/ls");
        let special = dir.join("libdemo-special");
        copy(
            &d.lib,
            &special,
            "usr/lib/x86_64-linux-gnu/special/libdemo.so.1",
        );
        put(
            &special,
            "etc/ld.so.conf.d/special.conf",
            b"# where libdemo lives\n  /usr/lib/x86_64-linux-gnu/special  # really\n",
        );
        let mut runtime = libc_trees(dir, &d.deps);
        let special = tree("libdemo-special", &special);

        // Neither in the default directories nor configured: missing; the
        // provider's own configuration finds it.
        assert_eq!(
            check_needed(&out, &runtime, std::slice::from_ref(&special)).unwrap(),
            vec![missing(
                "libdemo.so.1",
                "/usr/bin/demo",
                Some("libdemo-special")
            )]
        );
        runtime.push(special);
        assert_eq!(check_needed(&out, &runtime, &[]).unwrap(), vec![]);
    }

    #[test]
    fn runpath_and_rpath_with_origin() {
        let Some(d) = demo() else { return };
        let dir = d.dir.path();
        build_with_search_paths(dir);
        // Outside the default directories: only the files with a search path find
        // the library next to them.
        let out = dir.join("out");
        copy(&d.lib, &out, "opt/demo/lib/libdemo.so.1");
        copy(&d.exe, &out, "opt/demo/bin/demo");
        copy(&dir.join("demo-runpath"), &out, "opt/demo/bin/demo-runpath");
        copy(&dir.join("demo-rpath"), &out, "opt/demo/bin/demo-rpath");
        let runtime = libc_trees(dir, &d.deps);
        assert_eq!(
            check_needed(&out, &runtime, &[]).unwrap(),
            vec![missing("libdemo.so.1", "/opt/demo/bin/demo", None)]
        );
    }

    #[test]
    fn static_binary_needs_nothing() {
        let Some(d) = demo() else { return };
        let dir = d.dir.path();
        put(dir, "static.c", b"int main(void) { return 0; }\n");
        if cc(dir, &["-static", "-o", "static", "static.c"]) != Some(true) {
            return skip("no static C library (scripts/test.sh installs libc6-dev)");
        }
        let deps = read_elf_deps(&dir.join("static")).unwrap().unwrap();
        assert_eq!(deps.interpreter, None);
        assert!(deps.needed.is_empty(), "{deps:?}");
        let out = dir.join("out");
        copy(&dir.join("static"), &out, "bin/static");
        assert_eq!(check_needed(&out, &[], &[]).unwrap(), vec![]);
    }

    /// Text files are not ELF and pass; a file with the ELF magic that does not
    /// parse fails the check, naming the file: skipped, a reader bug would pass
    /// for "nothing missing".
    #[test]
    fn malformed_elf_files_are_errors_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        put(&out, "bin/script", b"#!/bin/sh\necho hi\n");
        put(&out, "share/tiny", b"\x7fEL");
        assert_eq!(check_needed(&out, &[], &[]).unwrap(), vec![]);

        let whole = Synth::new(true, false).build();
        for (name, bytes) in [
            ("magic-only", &whole[..4]),
            ("truncated", &whole[..whole.len() - 8]),
            ("header-only", &whole[..64]),
        ] {
            let bad = put(&out, &format!("lib/{name}"), bytes);
            let err = check_needed(&out, &[], &[]).unwrap_err();
            assert!(
                matches!(&err, CheckError::Elf(ElfError::Malformed { path, .. }) if *path == bad),
                "{name}: {err}"
            );
            assert!(err.to_string().contains(&format!("lib/{name}")), "{err}");
            fs::remove_file(bad).unwrap();
        }

        // A truncated copy of a real program, from the C compiler.
        let Some(d) = demo() else { return };
        let bytes = fs::read(&d.exe).unwrap();
        let bad = put(&out, "bin/truncated", &bytes[..1000]);
        let err = check_needed(&out, &[], &[]).unwrap_err();
        assert!(err.to_string().contains(bad.to_str().unwrap()), "{err}");
    }

    #[test]
    fn paths_private_libraries_and_foreign_abis() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let program = |needed: Vec<&'static str>| Synth {
            needed,
            runpath: None,
            ..Synth::new(true, false)
        };
        let library = |needed: Vec<&'static str>| Synth {
            interp: None,
            ..program(needed)
        };
        // `$ORIGIN` in a needed path.
        let by_path = program(vec!["$ORIGIN/../lib/libx.so.1", "libc.so.6"]).build();
        put(&out, "opt/x/bin/x", &by_path);
        put(&out, "opt/x/lib/libx.so.1", b"");
        put(&out, "opt/y/bin/y", &by_path);
        // A private library: a plugin may count on its program having loaded it,
        // the program may not.
        put(&out, "usr/lib/app/private/libapp.so", b"");
        put(
            &out,
            "usr/lib/app/plugins/libplugin.so",
            &library(vec!["libapp.so", "libc.so.6"]).build(),
        );
        put(&out, "usr/bin/app", &program(vec!["libapp.so"]).build());
        // An i386 helper: neither its loader nor its libraries are looked for.
        let helper = Synth {
            machine: 3,
            interp: Some("/lib/ld-linux.so.2"),
            ..Synth::new(false, false)
        };
        put(&out, "usr/libexec/helper", &helper.build());

        let libc = dir.path().join("libc");
        put(&libc, "lib/ld.so.1", b"");
        put(&libc, "lib/x86_64-linux-gnu/libc.so.6", b"");
        assert_eq!(
            check_needed(&out, &[tree("libc", &libc)], &[]).unwrap(),
            vec![
                missing("$ORIGIN/../lib/libx.so.1", "/opt/y/bin/y", None),
                missing("libapp.so", "/usr/bin/app", None),
            ]
        );
    }
}
