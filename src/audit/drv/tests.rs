//! Each kind of change, made with the real lowering functions into a scratch store,
//! explained by the walk: the typed reasons and the lines people read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use buildit_lang::lockfile::{DebianPackage, LockFile, LockedBuildRoot, LockedPackage};
use buildit_lang::lower::debian::{lower_build_root, lower_package, DrvSet};
use buildit_lang::lower::{lower_build, BuildSpec, Fetched, Patch};
use buildit_lang::model::build_root::BuildRootDef;
use buildit_lang::yaml::SourceFile;
use buildit_store::builtins::image::BUILDER as IMAGE;
use buildit_store::builtins::BUILTIN_SYSTEM;
use buildit_store::{Derivation, DerivationOutput, LocalStore, StorePath};

use super::*;

const NGINX_SHA: &str = "9ebb333a9e82b952acd3e2b4aeb1d4ff6406f72491bab6cd9fe69f0dea737f31";

fn deb(name: &str, version: &str, sha: &str) -> DebianPackage {
    DebianPackage {
        version: version.into(),
        architecture: "amd64".into(),
        sha256: sha.repeat(32),
        size: 1,
        filename: format!(
            "pool/main/{}/{name}/{name}_{}_amd64.deb",
            &name[..1],
            version.rsplit(':').next().unwrap_or(version)
        ),
    }
}

/// One side of a comparison: a lock (its build root `debian-12-c`), the package's
/// runtime Debian packages, and the package itself.
#[derive(Clone)]
struct Side {
    lock: LockFile,
    runtime: Vec<String>,
    build: BuildSpec,
}

impl Side {
    fn new(dir: &Path) -> Side {
        let mut lock = LockFile::default();
        lock.debian
            .insert("bash".into(), deb("bash", "5.2.15-2+b7", "ba"));
        lock.debian
            .insert("libssl3".into(), deb("libssl3", "3.0.15-1~deb12u1", "a1"));
        lock.build_roots.insert(
            "debian-12-c".into(),
            LockedBuildRoot {
                requested: vec!["bash".into(), "libssl3".into()],
                packages: vec!["bash".into(), "libssl3".into()],
            },
        );
        let patch = dir.join("https-only.patch");
        if !patch.exists() {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(&patch, "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n").unwrap();
        }
        Side {
            lock,
            runtime: vec!["libssl3".into()],
            build: BuildSpec {
                name: "nginx".into(),
                version: "1.22.1".into(),
                sources: vec![Fetched {
                    url: "https://nginx.org/download/nginx-1.22.1.tar.gz".into(),
                    sha256: NGINX_SHA.into(),
                }],
                patches: vec![Patch::Local(patch)],
                options: vec!["ssl".into()],
                configure_flags: vec!["--with-http_ssl_module".into()],
                phases: BTreeMap::from([
                    (
                        "configure".to_string(),
                        "./configure $configureFlags".to_string(),
                    ),
                    ("build".to_string(), "make".to_string()),
                ]),
                env: BTreeMap::new(),
                build_root: vec![],
                runtime: vec![],
            },
        }
    }

    /// Lower this side into `store` (derivations written); returns the package's
    /// `.drv` and output.
    fn lower(&self, store: &LocalStore) -> (StorePath, StorePath) {
        let root = &self.lock.build_roots["debian-12-c"];
        let def = BuildRootDef::parse(SourceFile {
            path: "debian-12-c.yaml".into(),
            text: format!(
                "name: debian-12-c\npackages: [{}]\n",
                root.requested.join(", ")
            ),
        })
        .unwrap();
        let mut set = DrvSet::default();
        let root = lower_build_root(&mut set, &def, &self.lock, "buildit.lock").unwrap();
        let mut build = self.build.clone();
        build.build_root = vec![root];
        for name in &self.runtime {
            build
                .runtime
                .push(lower_package(&mut set, name, &self.lock.debian[name]).unwrap());
        }
        let drv = lower_build(&mut set, store, &build).unwrap();
        for (_, d) in set.in_order() {
            store.add_derivation(d).unwrap();
        }
        let out = set.out(&drv).unwrap().clone();
        (drv, out)
    }
}

struct World {
    t: tempfile::TempDir,
    store: LocalStore,
}

impl World {
    fn new() -> World {
        let t = tempfile::tempdir().unwrap();
        let store = LocalStore::open(&t.path().join("root")).unwrap();
        World { t, store }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.t.path().join(name)
    }

    fn diff(&self, a: &Side, b: &Side) -> DrvDiff {
        let (da, _) = a.lower(&self.store);
        let (db, _) = b.lower(&self.store);
        diff_derivations(&self.store, &[da], &[db]).unwrap()
    }
}

fn lines(d: &DrvDiff) -> Vec<String> {
    d.to_string().lines().map(String::from).collect()
}

#[test]
fn identical_graphs_have_no_differences() {
    let w = World::new();
    let a = Side::new(&w.dir("a"));
    let d = w.diff(&a, &a);
    assert!(d.is_empty(), "{d}");
    // nginx, the source fetch, the build root, 2 × (fetch + unpack).
    assert_eq!(d.unchanged, 7);
    assert_eq!(lines(&d), ["no differences", "7 derivations unchanged"]);
}

#[test]
fn source_hash_changed() {
    let w = World::new();
    let a = Side::new(&w.dir("a"));
    let mut b = a.clone();
    b.build.sources[0].sha256 = "ab".repeat(32);
    let d = w.diff(&a, &b);
    assert_eq!(
        d.causes,
        [Reason::SourceChanged {
            package: "nginx".into(),
            url_old: "https://nginx.org/download/nginx-1.22.1.tar.gz".into(),
            url_new: "https://nginx.org/download/nginx-1.22.1.tar.gz".into(),
            sha256_old: NGINX_SHA.into(),
            sha256_new: "ab".repeat(32),
        }]
    );
    assert!(d.consequences.is_empty(), "nginx has a cause of its own");
    assert_eq!(d.unchanged, 5, "the build root's 5 derivations");
    assert_eq!(
        lines(&d),
        [
            "the source of nginx changed (sha256 9ebb333a9e82… → abababababab…)",
            "5 derivations unchanged"
        ]
    );
}

#[test]
fn source_added_and_url_changed() {
    let w = World::new();
    let a = Side::new(&w.dir("a"));
    let mut b = a.clone();
    b.build.sources[0].url = "https://mirror.example/nginx-1.22.1.tar.gz".into();
    b.build.sources.push(Fetched {
        url: "https://example.org/extra.tar.gz".into(),
        sha256: "cd".repeat(32),
    });
    let d = w.diff(&a, &b);
    let text = lines(&d);
    assert_eq!(
        text[..2],
        [
            "the source of nginx changed: https://nginx.org/download/nginx-1.22.1.tar.gz → https://mirror.example/nginx-1.22.1.tar.gz",
            "nginx gained a source: https://example.org/extra.tar.gz (sha256 cdcdcdcdcdcd…)",
        ]
    );
}

#[test]
fn local_patch_changed() {
    let w = World::new();
    let a = Side::new(&w.dir("a"));
    let b = Side::new(&w.dir("b"));
    std::fs::write(
        w.dir("b").join("https-only.patch"),
        "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+c\n",
    )
    .unwrap();
    let (da, _) = a.lower(&w.store);
    let (db, _) = b.lower(&w.store);
    let d = diff_derivations(
        &w.store,
        std::slice::from_ref(&da),
        std::slice::from_ref(&db),
    )
    .unwrap();
    let patch_of = |drv: &StorePath| {
        let d = w.store.read_derivation(drv).unwrap();
        StorePath::from_absolute(&d.env["patches"]).unwrap()
    };
    let (pa, pb) = (patch_of(&da), patch_of(&db));
    assert_eq!(
        d.causes,
        [Reason::PatchChanged {
            package: "nginx".into(),
            patch: "https-only.patch".into(),
            old: pa.hash_part().into(),
            new: pb.hash_part().into(),
            lines: Some("+1 -1 lines".into()),
        }]
    );
    assert_eq!(
        lines(&d)[0],
        format!(
            "patch https-only.patch of nginx changed ({} → {}, +1 -1 lines)",
            &pa.hash_part()[..12],
            &pb.hash_part()[..12]
        )
    );
}

#[test]
fn remote_patch_changed_added_and_reordered() {
    let w = World::new();
    let mut a = Side::new(&w.dir("a"));
    let remote = |sha: &str| {
        Patch::Remote(Fetched {
            url: "https://example.org/fix-overrun.patch".into(),
            sha256: sha.repeat(32),
        })
    };
    a.build.patches.push(remote("01"));
    let mut b = a.clone();
    b.build.patches = vec![remote("02"), a.build.patches[0].clone()];
    let d = w.diff(&a, &b);
    assert_eq!(
        d.causes,
        [
            Reason::PatchChanged {
                package: "nginx".into(),
                patch: "fix-overrun.patch".into(),
                old: "01".repeat(32),
                new: "02".repeat(32),
                lines: None,
            },
            Reason::PatchesReordered {
                package: "nginx".into(),
                old: vec!["https-only.patch".into(), "fix-overrun.patch".into()],
                new: vec!["fix-overrun.patch".into(), "https-only.patch".into()],
            }
        ]
    );
    let mut c = a.clone();
    c.build.patches.pop();
    let d = w.diff(&a, &c);
    assert_eq!(
        d.causes,
        [Reason::PatchRemoved {
            package: "nginx".into(),
            patch: "fix-overrun.patch".into()
        }]
    );
    assert_eq!(lines(&d)[0], "nginx lost patch fix-overrun.patch");
}

#[test]
fn option_turned_on_with_its_flags() {
    let w = World::new();
    let a = Side::new(&w.dir("a"));
    let mut b = a.clone();
    b.build.options = vec!["http2".into(), "ssl".into()];
    b.build.configure_flags.push("--with-http_v2_module".into());
    let d = w.diff(&a, &b);
    assert_eq!(
        d.causes,
        [Reason::OptionOn {
            package: "nginx".into(),
            option: "http2".into(),
            flags_added: vec!["--with-http_v2_module".into()],
            flags_removed: vec![],
            env: vec![],
        }]
    );
    assert_eq!(
        lines(&d),
        [
            "option http2 turned on in nginx (configure flags +--with-http_v2_module)",
            "6 derivations unchanged"
        ]
    );
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["causes"][0]["kind"], "option-on");
    assert_eq!(json["causes"][0]["option"], "http2");
    assert_eq!(json["unchanged"], 6);

    // Two options at once: each flag and variable goes to the option it names.
    let mut c = a.clone();
    c.build.options = vec!["gzip".into()];
    c.build.configure_flags = vec!["--with-gzip-static".into()];
    c.build.env.insert("withGzip".into(), "1".into());
    let d = w.diff(&a, &c);
    assert_eq!(
        lines(&d)[..2],
        [
            "option gzip turned on in nginx (configure flags +--with-gzip-static; env +withGzip=1)",
            "option ssl turned off in nginx (configure flags ---with-http_ssl_module)",
        ]
    );

    // Flags alone.
    let mut e = a.clone();
    e.build.configure_flags = vec!["--with-http_ssl_module".into(), "--with-debug".into()];
    let d = w.diff(&a, &e);
    assert_eq!(
        d.causes,
        [Reason::ConfigureFlagsChanged {
            package: "nginx".into(),
            added: vec!["--with-debug".into()],
            removed: vec![],
        }]
    );
}

#[test]
fn debian_package_in_build_root_and_runtime_is_reported_once() {
    let w = World::new();
    let a = Side::new(&w.dir("a"));
    let mut b = a.clone();
    b.lock
        .debian
        .insert("libssl3".into(), deb("libssl3", "3.0.16-1~deb12u1", "a2"));
    let d = w.diff(&a, &b);
    assert_eq!(
        d.causes,
        [Reason::DebianPackageChanged {
            package: "libssl3".into(),
            old_version: "3.0.15-1~deb12u1".into(),
            new_version: "3.0.16-1~deb12u1".into(),
            old_sha256: "a1".repeat(32),
            new_sha256: "a2".repeat(32),
        }]
    );
    let names: Vec<&str> = d.consequences.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["buildroot-debian-12-c", "nginx-1.22.1"]);
    assert_eq!(
        lines(&d),
        [
            "Debian package libssl3 3.0.15-1~deb12u1 → 3.0.16-1~deb12u1",
            "rebuilt because an input changed:",
            "  buildroot-debian-12-c (via libssl3-3.0.16-1_deb12u1)",
            "  nginx-1.22.1 (via buildroot-debian-12-c, libssl3-3.0.16-1_deb12u1)",
            "3 derivations unchanged",
        ]
    );
}

#[test]
fn build_root_gained_a_package() {
    let w = World::new();
    let a = Side::new(&w.dir("a"));
    let mut b = a.clone();
    b.lock
        .debian
        .insert("gawk".into(), deb("gawk", "1:5.2.1-2", "9a"));
    let root = b.lock.build_roots.get_mut("debian-12-c").unwrap();
    root.requested.push("gawk".into());
    root.packages.push("gawk".into());
    let d = w.diff(&a, &b);
    assert_eq!(
        d.causes,
        [Reason::BuildRootGained {
            build_root: "debian-12-c".into(),
            package: "gawk".into(),
        }]
    );
    assert_eq!(
        lines(&d),
        [
            "build root debian-12-c gained gawk",
            "rebuilt because an input changed:",
            "  nginx-1.22.1 (via buildroot-debian-12-c)",
            "5 derivations unchanged",
        ]
    );
}

#[test]
fn phase_script_changed() {
    let w = World::new();
    let a = Side::new(&w.dir("a"));
    let mut b = a.clone();
    b.build
        .phases
        .insert("build".into(), "make -j4\nmake check".into());
    b.build
        .phases
        .insert("install".into(), "make install".into());
    let d = w.diff(&a, &b);
    assert_eq!(
        d.causes,
        [
            Reason::PhaseChanged {
                package: "nginx".into(),
                phase: "build".into(),
                diff: "-make\n+make -j4\n+make check".into(),
            },
            Reason::PhaseChanged {
                package: "nginx".into(),
                phase: "install".into(),
                diff: "+make install".into(),
            }
        ]
    );
    assert_eq!(
        lines(&d)[..4],
        [
            "build phase of nginx changed",
            "    -make",
            "    +make -j4",
            "    +make check"
        ]
    );
}

#[test]
fn version_and_recipe_env_changed() {
    let w = World::new();
    let a = Side::new(&w.dir("a"));
    let mut b = a.clone();
    b.build.version = "1.24.0".into();
    let mut a2 = a.clone();
    a2.build.env.insert("CFLAGS".into(), "-O2".into());
    b.build.env.insert("CFLAGS".into(), "-O3".into());
    let d = w.diff(&a2, &b);
    assert_eq!(
        lines(&d)[..2],
        [
            "version of nginx changed: 1.22.1 → 1.24.0",
            "variable CFLAGS of nginx changed: '-O2' → '-O3'",
        ]
    );
}

/// A `builtin:image` derivation over `pkg` with one synced file.
fn image(store: &LocalStore, pkg: (&StorePath, &StorePath), conf: &str) -> StorePath {
    let sync = store
        .add_text("nginx.conf", conf.as_bytes(), &BTreeSet::new())
        .unwrap();
    let mut d = Derivation {
        system: BUILTIN_SYSTEM.into(),
        builder: IMAGE.into(),
        ..Default::default()
    };
    for (k, v) in [
        ("name", "nginx-production-1.0-aci".to_string()),
        ("builder", IMAGE.into()),
        ("system", BUILTIN_SYSTEM.into()),
        ("format", "aci".into()),
        ("title", "Sysadmin42/nginx-production-1.0".into()),
        ("packages", pkg.1.to_absolute()),
        (
            "syncs",
            serde_json::json!([{
                "src": sync.to_absolute(), "dest": "/etc/nginx/nginx.conf",
                "recursive": true, "mode": 420, "uid": 0, "gid": 0
            }])
            .to_string(),
        ),
        (
            "manifest",
            r#"{"acKind":"ImageManifest","app":{"user":"0"}}"#.into(),
        ),
    ] {
        d.env.insert(k.into(), v);
    }
    d.input_drvs
        .insert(pkg.0.clone(), BTreeSet::from(["out".to_string()]));
    d.input_srcs.insert(sync);
    d.outputs.insert("out".into(), DerivationOutput::Deferred);
    fill_and_add(store, d)
}

/// Fill in the output path of `d` (its inputs read from `store`) and write it.
fn fill_and_add(store: &LocalStore, mut d: Derivation) -> StorePath {
    let mut hasher = buildit_store::derivation::DerivationHasher::new(|p: &StorePath| {
        store
            .read_derivation(p)
            .map_err(|_| buildit_store::derivation::DerivationError::UnknownInput(p.clone()))
    });
    hasher.fill_output_paths(&mut d).unwrap();
    store.add_derivation(&d).unwrap()
}

#[test]
fn image_sync_and_manifest_changed() {
    let w = World::new();
    let a = Side::new(&w.dir("a"));
    let (pkg, out) = a.lower(&w.store);
    let ia = image(&w.store, (&pkg, &out), "worker_processes 1;\n");
    let ib = image(&w.store, (&pkg, &out), "worker_processes 2;\n");
    let d = diff_derivations(
        &w.store,
        std::slice::from_ref(&ia),
        std::slice::from_ref(&ib),
    )
    .unwrap();
    let src = |i: &StorePath| {
        let d = w.store.read_derivation(i).unwrap();
        d.input_srcs.iter().next().unwrap().to_absolute()
    };
    assert_eq!(
        d.causes,
        [Reason::SyncFileChanged {
            image: "Sysadmin42/nginx-production-1.0 (aci)".into(),
            dest: "/etc/nginx/nginx.conf".into(),
            old: src(&ia),
            new: src(&ib),
            diff: Some("-worker_processes 1;\n+worker_processes 2;".into()),
        }]
    );
    assert_eq!(d.unchanged, 7, "nginx and everything below it");
    assert_eq!(
        lines(&d)[..3],
        [
            "image Sysadmin42/nginx-production-1.0 (aci): synced file /etc/nginx/nginx.conf changed",
            "    -worker_processes 1;",
            "    +worker_processes 2;",
        ],
        "{d}"
    );

    // A JSON field is named by its path.
    let mut drv = w.store.read_derivation(&ia).unwrap();
    drv.env.insert(
        "manifest".into(),
        r#"{"acKind":"ImageManifest","app":{"user":"101"}}"#.into(),
    );
    for o in drv.outputs.values_mut() {
        *o = DerivationOutput::Deferred;
    }
    let ic = fill_and_add(&w.store, drv);
    let d = diff_derivations(&w.store, &[ia], &[ic]).unwrap();
    assert_eq!(
        lines(&d)[0],
        "image Sysadmin42/nginx-production-1.0 (aci): manifest.app.user changed: '0' → '101'"
    );
}

#[test]
fn roots_pair_by_identity_and_odd_derivations_do_not_panic() {
    let w = World::new();
    let a = Side::new(&w.dir("a"));
    let (pkg, _) = a.lower(&w.store);
    let odd = |v: &str| {
        let mut d = Derivation {
            system: "x86_64-linux".into(),
            builder: "/bin/sh".into(),
            args: vec!["-c".into(), "true".into()],
            ..Default::default()
        };
        d.env.insert("name".into(), "odd".into());
        d.env.insert("FOO".into(), v.into());
        d.outputs.insert("out".into(), DerivationOutput::Deferred);
        fill_and_add(&w.store, d)
    };
    let (o1, o2) = (odd("1"), odd("2"));
    // Root order does not matter; nginx is on one side only.
    let d = diff_derivations(&w.store, std::slice::from_ref(&o1), &[pkg.clone(), o2]).unwrap();
    assert_eq!(
        d.causes,
        [
            Reason::RootAdded {
                name: "nginx-1.22.1".into(),
                drv: pkg
            },
            Reason::EnvChanged {
                package: "odd".into(),
                var: "FOO".into(),
                old: Some("1".into()),
                new: Some("2".into()),
            },
        ]
    );
    assert_eq!(
        lines(&d)[..2],
        [
            "new top-level derivation nginx-1.22.1",
            "variable FOO of odd changed: '1' → '2'"
        ]
    );
    // A root that is not in the store is an error, not a panic.
    let missing: StorePath = "/store/00000000000000000000000000000000-gone.drv"
        .parse()
        .unwrap();
    let e = diff_derivations(&w.store, std::slice::from_ref(&missing), &[o1]).unwrap_err();
    assert!(e.to_string().contains("gone.drv"), "{e}");
}

#[test]
fn lock_files_compare_by_what_they_pin() {
    let w = World::new();
    let a = Side::new(&w.dir("a")).lock;
    let mut b = a.clone();
    b.debian
        .insert("libssl3".into(), deb("libssl3", "3.0.16-1~deb12u1", "a2"));
    b.debian
        .insert("gawk".into(), deb("gawk", "1:5.2.1-2", "9a"));
    b.build_roots
        .get_mut("debian-12-c")
        .unwrap()
        .packages
        .push("gawk".into());
    let mut a = a;
    a.packages.insert(
        "pkgs/nginx".into(),
        LockedPackage {
            recipe: "www-servers/nginx-1.22.1".into(),
            runtime_requested: vec!["libc6".into()],
            runtime_closure: vec!["libc6".into()],
            patches: BTreeMap::from([(
                "https://example.org/fix.patch".to_string(),
                "01".repeat(32),
            )]),
            ..Default::default()
        },
    );
    let mut entry = a.packages["pkgs/nginx"].clone();
    entry.runtime_closure.push("libssl3".into());
    entry
        .patches
        .insert("https://example.org/fix.patch".into(), "02".repeat(32));
    b.packages.insert("pkgs/nginx".into(), entry);
    let d = diff_locks(&a, &b);
    assert_eq!(
        d.causes,
        [
            Reason::PatchChanged {
                package: "pkgs/nginx".into(),
                patch: "https://example.org/fix.patch".into(),
                old: "01".repeat(32),
                new: "02".repeat(32),
                lines: None,
            },
            Reason::DebianPackageAdded {
                package: "gawk".into(),
                version: "1:5.2.1-2".into(),
                sha256: "9a".repeat(32),
            },
            Reason::DebianPackageChanged {
                package: "libssl3".into(),
                old_version: "3.0.15-1~deb12u1".into(),
                new_version: "3.0.16-1~deb12u1".into(),
                old_sha256: "a1".repeat(32),
                new_sha256: "a2".repeat(32),
            },
            Reason::BuildRootGained {
                build_root: "debian-12-c".into(),
                package: "gawk".into(),
            },
            Reason::RuntimeDependsChanged {
                package: "pkgs/nginx".into(),
                added: vec!["libssl3".into()],
                removed: vec![],
            },
        ]
    );
    assert_eq!(d.unchanged, 1, "bash");
    assert_eq!(
        lines(&d),
        [
            "patch https://example.org/fix.patch of pkgs/nginx changed (010101010101 → 020202020202)",
            "Debian package gawk 1:5.2.1-2 added",
            "Debian package libssl3 3.0.15-1~deb12u1 → 3.0.16-1~deb12u1",
            "build root debian-12-c gained gawk",
            "runtime dependencies of pkgs/nginx changed: +libssl3",
            "1 lock entry unchanged",
        ]
    );
    assert!(diff_locks(&a, &a).is_empty());
}
