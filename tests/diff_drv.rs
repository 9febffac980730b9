//! `buildit::audit::drv` on the seed's scenario: two copies of samples/nginx-prod,
//! one changed, lowered into one store and explained by their causes. The lock is
//! made up from the spec (every Debian package at a fake version), so nothing asks
//! apt or the network and the tests take a moment.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use buildit::audit::drv::{diff_locks, Reason};
use buildit::ops::diff::diff_specs;
use buildit_lang::lockfile::{DebianPackage, LockFile, LockedBuildRoot, LockedPackage};
use buildit_lang::lower::plan::{debian_names, package_key, remote_patches};
use buildit_store::LocalStore;

fn fake_deb(name: &str, version: &str) -> DebianPackage {
    // A hash that differs by name and version, as real ones do.
    let seed = format!("{name} {version}");
    let sha: String = (0..64)
        .map(|i| {
            let b = seed.as_bytes()[i % seed.len()] as usize + i;
            char::from_digit((b % 16) as u32, 16).unwrap()
        })
        .collect();
    DebianPackage {
        version: version.into(),
        architecture: "amd64".into(),
        sha256: sha,
        size: 1,
        filename: format!("pool/main/{}/{name}/{name}_{version}_amd64.deb", &name[..1]),
    }
}

/// A lock for the spec in `dir` whose closures are exactly what is asked for.
fn fake_lock(dir: &Path) -> LockFile {
    let spec = buildit::ops::load::load(dir, &|_| {}).unwrap();
    let mut lock = LockFile::default();
    for (name, root) in &spec.build_roots {
        let mut packages = root.def.packages.clone();
        packages.sort();
        for p in &packages {
            lock.debian.insert(p.clone(), fake_deb(p, "1.0-1"));
        }
        lock.build_roots.insert(
            name.clone(),
            LockedBuildRoot {
                requested: root.def.packages.clone(),
                packages,
            },
        );
    }
    for p in spec.packages().chain(spec.dependencies.values()) {
        let build = debian_names(&p.build_depends);
        let runtime = debian_names(&p.runtime_depends);
        for n in build.iter().chain(&runtime) {
            lock.debian
                .entry(n.clone())
                .or_insert_with(|| fake_deb(n, "1.0-1"));
        }
        let patches: BTreeMap<String, String> = remote_patches(p)
            .iter()
            .map(|u| (u.value.clone(), "ab".repeat(32)))
            .collect();
        lock.packages.insert(
            package_key(&spec, p),
            LockedPackage {
                recipe: p.id.to_string(),
                build_requested: build.clone(),
                build_closure: build,
                runtime_requested: runtime.clone(),
                runtime_closure: runtime,
                patches,
            },
        );
    }
    lock
}

/// A copy of nginx-prod under `parent` with a made-up lock.
fn nginx_prod(parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join(name);
    common::build::copy_spec("samples/nginx-prod", &dir);
    fake_lock(&dir).save(&dir.join("buildit.lock")).unwrap();
    dir
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

fn store(t: &Path) -> LocalStore {
    LocalStore::open(&t.join("root")).unwrap()
}

#[test]
fn copies_in_other_places_are_the_same() {
    let t = tempfile::tempdir().unwrap();
    let a = nginx_prod(t.path(), "a");
    let b = nginx_prod(&t.path().join("elsewhere"), "nginx-prod");
    let d = diff_specs(&store(t.path()), &a, &b, &|_| {}).unwrap();
    assert!(d.is_empty(), "{d}");
    assert!(d.unchanged > 20, "{d}");
}

#[test]
fn an_option_turned_on_rebuilds_the_images() {
    let t = tempfile::tempdir().unwrap();
    let a = nginx_prod(t.path(), "a");
    let b = nginx_prod(t.path(), "b");
    edit(
        &b.join("pkgs/nginx/pkg.yaml"),
        "    - http2\n",
        "    - http2\n    - stub-status\n",
    );
    let d = diff_specs(&store(t.path()), &a, &b, &|_| {}).unwrap();
    assert_eq!(
        d.causes,
        [Reason::OptionOn {
            package: "nginx".into(),
            option: "stub-status".into(),
            flags_added: vec!["--with-http_stub_status_module".into()],
            flags_removed: vec![],
            env: vec![],
        }]
    );
    let text = d.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..4],
        [
            "option stub-status turned on in nginx (configure flags +--with-http_stub_status_module)",
            "rebuilt because an input changed:",
            "  nginx-production-1.22.1-p1-aci (via nginx-1.22.1)",
            "  nginx-production-1.22.1-p1-oci (via nginx-1.22.1)",
        ],
        "{text}"
    );
    assert!(lines[4].ends_with(" derivations unchanged"), "{text}");
    assert_eq!(lines.len(), 5, "{text}");
}

#[test]
fn a_patch_and_a_synced_file_changed() {
    let t = tempfile::tempdir().unwrap();
    let a = nginx_prod(t.path(), "a");
    let b = nginx_prod(t.path(), "b");
    let patch = b.join("pkgs/nginx/patches/https-only.patch");
    let mut text = std::fs::read_to_string(&patch).unwrap();
    text.push_str("# one more line\n");
    std::fs::write(&patch, text).unwrap();
    let conf = b.join("files/nginx.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("# tuned\n");
    std::fs::write(&conf, text).unwrap();

    let d = diff_specs(&store(t.path()), &a, &b, &|_| {}).unwrap();
    let kinds: Vec<String> = d
        .causes
        .iter()
        .map(|c| {
            serde_json::to_value(c).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        kinds,
        ["patch-changed", "sync-file-changed", "sync-file-changed"],
        "{d}"
    );
    let Reason::PatchChanged { patch, lines, .. } = &d.causes[0] else {
        unreachable!()
    };
    assert_eq!(patch, "https-only.patch");
    assert_eq!(lines.as_deref(), Some("+1 -0 lines"));
    for (c, format) in d.causes[1..].iter().zip(["aci", "oci"]) {
        let Reason::SyncFileChanged {
            image, dest, diff, ..
        } = c
        else {
            unreachable!()
        };
        assert_eq!(
            image,
            &format!("Sysadmin42/nginx-production-1.22.1-p1 ({format})")
        );
        assert_eq!(dest, "/etc/nginx/nginx.conf");
        assert!(diff.as_deref().unwrap().ends_with("+# tuned"), "{d}");
    }
    assert!(d.consequences.is_empty(), "{d}");
}

#[test]
fn a_debian_update_in_the_lock_is_one_cause() {
    let t = tempfile::tempdir().unwrap();
    let a = nginx_prod(t.path(), "a");
    let b = nginx_prod(t.path(), "b");
    let mut lock = LockFile::load(&b.join("buildit.lock")).unwrap();
    lock.debian
        .insert("libssl3".into(), fake_deb("libssl3", "3.0.16-1~deb12u1"));
    lock.save(&b.join("buildit.lock")).unwrap();

    let d = diff_specs(&store(t.path()), &a, &b, &|_| {}).unwrap();
    assert_eq!(d.causes.len(), 1, "{d}");
    assert!(
        matches!(&d.causes[0], Reason::DebianPackageChanged { package, old_version, new_version, .. }
            if package == "libssl3" && old_version == "1.0-1" && new_version == "3.0.16-1~deb12u1"),
        "{d}"
    );
    let names: Vec<&str> = d.consequences.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "nginx-1.22.1",
            "nginx-production-1.22.1-p1-aci",
            "nginx-production-1.22.1-p1-oci"
        ],
        "{d}"
    );
    assert!(d
        .to_string()
        .starts_with("Debian package libssl3 1.0-1 → 3.0.16-1~deb12u1\n"));

    // The locks alone say the same, without derivations.
    let la = LockFile::load(&a.join("buildit.lock")).unwrap();
    let lb = LockFile::load(&b.join("buildit.lock")).unwrap();
    let l = diff_locks(&la, &lb);
    assert_eq!(l.causes, d.causes);

    // The same through the command line: lock files, .drv files, --json; exit 1.
    let root = t.path().join("root");
    let cli = |args: &[&str]| {
        let out = common::build::buildit(&root, args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let (la, lb) = (a.join("buildit.lock"), b.join("buildit.lock"));
    let text = cli(&["diff", la.to_str().unwrap(), lb.to_str().unwrap()]);
    assert!(
        text.starts_with("Debian package libssl3 1.0-1 → 3.0.16-1~deb12u1\n"),
        "{text}"
    );
    let drv = |dir: &Path| {
        let out = common::build::ok(common::build::buildit(
            &root,
            &["eval", dir.to_str().unwrap(), "--json"],
        ));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["packages"][0]["drv"].as_str().unwrap().to_string()
    };
    let json = cli(&["diff", "--json", &drv(&a), &drv(&b)]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["causes"][0]["kind"], "debian-package-changed", "{v}");
    assert_eq!(v["causes"][0]["package"], "libssl3", "{v}");
    let same = common::build::buildit(&root, &["diff", &drv(&a), &drv(&a)])
        .output()
        .unwrap();
    assert_eq!(same.status.code(), Some(0));
}
