//! Shared fixtures for tests that build real packages: one store root per user
//! (shared with the Debian tests, so the C build root is made once) and one
//! directory of upstream tarballs fetched with `apt-get source --download-only`.
//! Content addressing makes both safe to share between tests and runs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The tarballs the sample recipes need: GNU hello's (Debian's orig tarball has
/// the same bytes), zlib's dfsg repack and nginx's.
pub const SOURCES: [(&str, &str); 3] = [
    ("hello", "hello_2.10.orig.tar.gz"),
    ("zlib", "zlib_1.2.13.dfsg.orig.tar.bz2"),
    ("nginx", "nginx_1.22.1.orig.tar.gz"),
];

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Per user: the suite also runs as an unprivileged user, who cannot write root's.
pub fn shared() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("debian-shared-{}", nix::unistd::getuid()))
}

/// The shared store root.
pub fn shared_root() -> PathBuf {
    shared().join("root")
}

/// The directory of upstream tarballs, fetched once.
pub fn sources() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = shared().join("sources");
        fs::create_dir_all(&dir).unwrap();
        let missing: Vec<&str> = SOURCES
            .iter()
            .filter(|(_, f)| !dir.join(f).is_file())
            .map(|(p, _)| *p)
            .collect();
        if !missing.is_empty() {
            // apt-get also wants each package's Debian tarball; one of those may be
            // gone from the mirror while the orig tarball is there, so only the
            // files we need decide.
            let mut log = apt_source(&dir, &missing);
            // The newest version's files may be missing from the mirror (a
            // security update whose sources it does not carry): try the others,
            // which share the orig tarball.
            for (p, f) in SOURCES {
                if dir.join(f).is_file() {
                    continue;
                }
                for v in source_versions(p) {
                    log.push_str(&apt_source(&dir, &[&format!("{p}={v}")]));
                    if dir.join(f).is_file() {
                        break;
                    }
                }
            }
            for (p, f) in SOURCES {
                assert!(
                    dir.join(f).is_file(),
                    "apt-get source {p} did not give {f}:\n{log}"
                );
            }
        }
        dir
    })
}

/// `apt-get source --download-only ARGS…` in `dir`; its stderr.
fn apt_source(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("apt-get")
        .args(["source", "--download-only"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run apt-get source (needs a deb-src entry in the apt sources)");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The versions of source package `name` the apt sources know, newest first.
fn source_versions(name: &str) -> Vec<String> {
    let out = Command::new("apt-cache")
        .args(["showsrc", "--only-source", name])
        .output()
        .expect("run apt-cache showsrc");
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("Version: "))
        .map(str::to_string)
        .collect();
    v.dedup();
    v.reverse();
    v
}

/// `buildit --root ROOT ARGS…` in the repository, plain progress output.
pub fn buildit(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_buildit"));
    c.current_dir(repo()).arg("--root").arg(root).args(args);
    c.env_remove("BUILDIT_ROOT");
    c.env("BUILDIT_PROGRESS", "plain");
    c
}

/// Run; require success; stdout.
pub fn ok(mut c: Command) -> String {
    let out = c.output().expect("run buildit");
    assert!(
        out.status.success(),
        "{c:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Run; require failure; stderr.
pub fn fails(mut c: Command) -> String {
    let out = c.output().expect("run buildit");
    assert!(
        !out.status.success(),
        "{c:?} should have failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Copy a sample spec (e.g. `samples/hello`) into `dest`, without any lock in it.
pub fn copy_spec(sample: &str, dest: &Path) {
    copy_dir(&repo().join(sample), dest);
    let _ = fs::remove_file(dest.join("buildit.lock"));
}

fn copy_dir(src: &Path, dest: &Path) {
    fs::create_dir_all(dest).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dest.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// Write `files` (relative path → text) under `dir`.
pub fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (rel, text) in files {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
}

/// `buildit build DIR EXTRA…` in `root` with the tarballs of [`sources`] as a
/// source dir, not yet run.
pub fn build_cmd(root: &Path, dir: &Path, extra: &[&str]) -> Command {
    let mut args = vec![
        "build",
        dir.to_str().unwrap(),
        "--source-dir",
        sources().to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    buildit(root, &args)
}

/// `buildit lock DIR` then `buildit build DIR -j2 EXTRA…` in `root`; returns the
/// output paths printed.
pub fn lock_and_build(root: &Path, dir: &Path, extra: &[&str]) -> Vec<String> {
    ok(buildit(root, &["lock", dir.to_str().unwrap()]));
    let mut args = vec!["-j2"];
    args.extend_from_slice(extra);
    ok(build_cmd(root, dir, &args))
        .lines()
        .map(String::from)
        .collect()
}

/// `narHash` of a valid path, from `store path-info --json`.
pub fn nar_hash(root: &Path, path: &str) -> String {
    let out = ok(buildit(root, &["store", "path-info", "--json", path]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["narHash"].as_str().unwrap().to_string()
}

/// GNU hello and zlib: the two small real packages.
pub const HELLO_AND_ZLIB: &str = "---
- vars:
    name: hello-and-zlib
    version: '1'
- package:
    recipe: app-misc/hello-2.10
- package:
    recipe: sys-libs/zlib-1.2.13
";

/// A fresh signing key: (secret key file, public key).
pub fn signing_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let (sk, pk) = (
        dir.join(format!("{name}.sec")),
        dir.join(format!("{name}.pub")),
    );
    ok(buildit(
        &dir.join("keyroot"),
        &[
            "store",
            "key",
            "generate",
            name,
            "--secret-key-file",
            sk.to_str().unwrap(),
            "--public-key-file",
            pk.to_str().unwrap(),
        ],
    ));
    (sk, fs::read_to_string(pk).unwrap().trim().to_string())
}
