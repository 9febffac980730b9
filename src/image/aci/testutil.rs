//! A small image tree and a manifest valid for it, shared by the manifest's and
//! the writer's tests.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::image::tree::{ImageTree, Kind};

pub(super) struct Fixture {
    _dir: tempfile::TempDir,
    pub(super) tree: ImageTree,
    pub(super) dir: PathBuf,
}

fn put(root: &Path, rel: &str, data: &[u8], mode: u32) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, data).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

pub(super) fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("pkg");
    put(&pkg, "usr/sbin/nginx", b"\x7fELF not really", 0o755);
    put(&pkg, "usr/bin/dash", b"\x7fELF not really", 0o755);
    put(&pkg, "usr/bin/start", b"#!/bin/sh -e\nexec nginx\n", 0o755);
    put(&pkg, "usr/bin/pyscript", b"#!/usr/bin/python3\n", 0o755);
    put(&pkg, "usr/lib/libfoo.so", b"lib", 0o644);
    put(
        &pkg,
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33::/var/www:/usr/sbin/nologin\n",
        0o644,
    );
    put(&pkg, "etc/group", b"root:x:0:\nwww-data:x:33:\n", 0o644);
    put(&pkg, "etc/nginx/nginx.conf", b"events {}\n", 0o644);
    fs::create_dir_all(pkg.join("var/www")).unwrap();
    std::os::unix::fs::symlink("dash", pkg.join("usr/bin/sh")).unwrap();
    let mut tree = ImageTree::new();
    // Merged-usr, as every image has: programs are reached through /bin.
    for (link, target) in [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")] {
        let target = PathBuf::from(target);
        tree.add_base(link, Kind::Symlink { target }, 0o777);
    }
    tree.add_base("tmp", Kind::Dir, 0o1777);
    tree.add_tree("pkg", &pkg).unwrap();
    Fixture {
        dir: dir.path().to_path_buf(),
        _dir: dir,
        tree,
    }
}

pub(super) fn valid() -> Value {
    json!({
        "acKind": "ImageManifest",
        "acVersion": "0.8.11",
        "name": "example.com/nginx-production-1.22.1-p1",
        "labels": [
            {"name": "os", "value": "linux"},
            {"name": "arch", "value": "amd64"},
            {"name": "version", "value": "1.22.1"}
        ],
        "app": {
            "exec": ["/usr/sbin/nginx", "-e", "stderr", "-g", "daemon off;"],
            "user": "www-data",
            "group": "33",
            "workingDirectory": "/var/www",
            "eventHandlers": [{"name": "pre-start", "exec": ["/bin/start"]}],
            "environment": [{"name": "NGINX_ENV", "value": "prod"}],
            "mountPoints": [{"name": "cache", "path": "/var/cache/nginx", "readOnly": false}],
            "ports": [{"name": "https", "protocol": "tcp", "port": 443, "count": 1}],
            "isolators": [{"name": "resource/memory", "value": {"limit": "1G"}}]
        },
        "annotations": [
            {"name": "authors", "value": "Sysadmin42"},
            {"name": "created", "value": "2024-01-31T12:00:00.5+01:00"},
            {"name": "homepage", "value": "https://example.com"}
        ]
    })
}
