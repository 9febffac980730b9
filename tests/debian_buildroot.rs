//! Debian packages as pinned store inputs, end to end through the binary: lock the C
//! build root's closure, fetch and unpack it, merge it; the same bytes from a second
//! store root fed only by the lock file and the fetched `.deb`s; tampered `.deb`s
//! refused.
//!
//! Fetching ~95 MB is slow, so every test shares one store root and one lock under
//! cargo's target tmp dir; content addressing makes that cache safe to reuse.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use buildit_lang::lockfile::LockFile;

const DEF: &str = "samples/recipes/build-roots/debian-12-c.yaml";

use common::build::{buildit, ok, shared};

/// The lock for the C build root, resolved once per test run.
fn lock() -> &'static PathBuf {
    static LOCK: OnceLock<PathBuf> = OnceLock::new();
    LOCK.get_or_init(|| {
        std::fs::create_dir_all(shared()).unwrap();
        let lock = shared().join(format!("buildit-{}.lock", std::process::id()));
        ok(buildit(
            &shared().join("root"),
            &[
                "debian",
                "lock",
                "--build-root",
                DEF,
                "--lock",
                lock.to_str().unwrap(),
            ],
        ));
        lock
    })
}

/// The build root built once in the shared store: (store path, physical path).
fn built_root() -> &'static (String, PathBuf) {
    static ROOT: OnceLock<(String, PathBuf)> = OnceLock::new();
    ROOT.get_or_init(|| {
        let link = shared().join(format!("result-{}", std::process::id()));
        let out = ok(buildit(
            &shared().join("root"),
            &[
                "debian",
                "build-root",
                DEF,
                "--lock",
                lock().to_str().unwrap(),
                "-o",
                link.to_str().unwrap(),
            ],
        ));
        let phys = std::fs::canonicalize(&link).unwrap();
        (out.trim().to_string(), phys)
    })
}

#[test]
fn the_c_build_root_is_complete() {
    let lock = LockFile::load(lock()).unwrap();
    let locked = &lock.build_roots["debian-12-c"];
    assert!(locked.packages.len() > 60, "{}", locked.packages.len());
    for p in [
        "gcc-12",
        "libc6",
        "libc6-dev",
        "make",
        "bash",
        "coreutils",
        "binutils",
    ] {
        assert!(locked.packages.iter().any(|x| x == p), "{p} locked");
    }
    let (path, root) = built_root();
    assert!(path.starts_with("/store/") && path.ends_with("-buildroot-debian-12-c"));
    // Merged-usr, the toolchain and the fix-ups.
    assert_eq!(
        std::fs::read_link(root.join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    assert_eq!(
        std::fs::read_link(root.join("usr/bin/cc")).unwrap(),
        Path::new("gcc")
    );
    for f in [
        "usr/bin/gcc-12",
        "usr/bin/make",
        "usr/bin/bash",
        "usr/include/stdio.h",
        "usr/bin/which.debianutils",
    ] {
        assert!(root.join(f).exists(), "{f}");
    }
    assert!(std::fs::read_to_string(root.join("etc/passwd"))
        .unwrap()
        .starts_with("root:x:0:0"));
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    for p in &locked.packages {
        assert!(
            status.contains(&format!("Package: {p}\nStatus: install ok installed\n")),
            "{p} in dpkg status"
        );
    }
    // The store verifies with its contents.
    ok(buildit(
        &shared().join("root"),
        &["store", "verify", "--check-contents"],
    ));
    // The root's derivation, shown as Nix shows derivations: its members are its
    // inputs.
    let info: serde_json::Value = serde_json::from_str(&ok(buildit(
        &shared().join("root"),
        &["store", "path-info", "--json", path],
    )))
    .unwrap();
    let drv = format!(
        "/store/{}",
        info[0]["deriver"]
            .as_str()
            .unwrap()
            .trim_start_matches("/store/")
    );
    let shown: serde_json::Value = serde_json::from_str(&ok(buildit(
        &shared().join("root"),
        &["show-derivation", "-r", &drv],
    )))
    .unwrap();
    let root_drv = &shown[&drv];
    assert_eq!(root_drv["builder"], "builtin:buildroot");
    assert_eq!(root_drv["outputs"]["out"]["path"], path.as_str());
    assert_eq!(
        root_drv["inputDrvs"].as_object().unwrap().len(),
        locked.packages.len()
    );
    // -r also shows every unpack and fetch below it.
    assert_eq!(
        shown.as_object().unwrap().len(),
        1 + 2 * locked.packages.len()
    );
}

/// A second store root, with no apt lists and no network, rebuilds the same root
/// from the lock file and the `.deb`s alone, bit for bit.
#[test]
fn the_lock_alone_reproduces_the_same_paths() {
    let (path, _) = built_root();
    let lock = LockFile::load(lock()).unwrap();
    let t = tempfile::tempdir().unwrap();
    // The .debs, named as on the mirror, taken from the first store.
    let debs = t.path().join("debs");
    std::fs::create_dir(&debs).unwrap();
    let fetched = ok(buildit(
        &shared().join("root"),
        &[
            "debian",
            "fetch",
            "--lock",
            self::lock().to_str().unwrap(),
            "--json",
        ],
    ));
    let fetched: serde_json::Value = serde_json::from_str(&fetched).unwrap();
    for entry in fetched.as_array().unwrap() {
        let name = entry["name"].as_str().unwrap();
        let store_path = entry["path"].as_str().unwrap();
        let phys = shared()
            .join("root/store")
            .join(store_path.strip_prefix("/store/").unwrap());
        std::os::unix::fs::symlink(phys, debs.join(lock.debian[name].file_name())).unwrap();
    }
    // apt sees no lists and no sources: nothing but the lock can name a version.
    let apt = t.path().join("apt");
    std::fs::create_dir_all(apt.join("lists")).unwrap();
    std::fs::write(apt.join("sources.list"), "").unwrap();
    std::fs::write(
        apt.join("apt.conf"),
        format!(
            "Dir::State::Lists \"{0}/lists\";\nDir::Etc::SourceList \"{0}/sources.list\";\nDir::Etc::SourceParts \"{0}/none\";\n",
            apt.display()
        ),
    )
    .unwrap();
    let root2 = t.path().join("root2");
    let mut c = buildit(
        &root2,
        &[
            "debian",
            "build-root",
            DEF,
            "--lock",
            self::lock().to_str().unwrap(),
            "--offline",
            "--deb-dir",
            debs.to_str().unwrap(),
        ],
    );
    c.env("APT_CONFIG", apt.join("apt.conf"));
    let path2 = ok(c);
    assert_eq!(path2.trim(), path);
    let info = |root: &Path| -> serde_json::Value {
        serde_json::from_str(&ok(buildit(root, &["store", "path-info", "--json", path]))).unwrap()
    };
    assert_eq!(
        info(&shared().join("root"))[0]["narHash"],
        info(&root2)[0]["narHash"]
    );
}

#[test]
fn a_tampered_deb_is_refused() {
    let lock = LockFile::load(lock()).unwrap();
    let t = tempfile::tempdir().unwrap();
    // Take the real hello .deb (fetched into a scratch store), flip one byte.
    let scratch = t.path().join("scratch");
    let fetched = ok(buildit(
        &scratch,
        &[
            "debian",
            "fetch",
            "--lock",
            self::lock().to_str().unwrap(),
            "--json",
            "bash",
        ],
    ));
    let fetched: serde_json::Value = serde_json::from_str(&fetched).unwrap();
    let store_path = fetched[0]["path"].as_str().unwrap();
    let phys = scratch
        .join("store")
        .join(store_path.strip_prefix("/store/").unwrap());
    let mut bytes = std::fs::read(phys).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    let debs = t.path().join("debs");
    std::fs::create_dir(&debs).unwrap();
    std::fs::write(debs.join(lock.debian["bash"].file_name()), &bytes).unwrap();

    let root = t.path().join("root");
    let out = buildit(
        &root,
        &[
            "debian",
            "fetch",
            "--lock",
            self::lock().to_str().unwrap(),
            "--offline",
            "--deb-dir",
            debs.to_str().unwrap(),
            "bash",
        ],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hash mismatch"), "{err}");
    assert!(
        err.contains(&format!("expected sha256:{}", lock.debian["bash"].sha256)),
        "{err}"
    );
    // Nothing of it was kept.
    let store = buildit_store::LocalStore::open(&root).unwrap();
    let p: buildit_store::StorePath = store_path.parse().unwrap();
    assert!(!store.is_valid(&p).unwrap());
    assert!(!store.physical_path(&p).exists());
}
