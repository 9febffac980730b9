//! The samples' derivations, pinned. With a fixed lock (`tests/fixtures/pinned/`),
//! `buildit eval` of `samples/hello` and `samples/nginx-prod` gives exactly these
//! `.drv` and output paths, in any store root and from any spec location. A
//! change here changes every user's hashes and so every cached build: make it on
//! purpose and say so; a refactoring must leave these alone.

mod common;

use std::fs;
use std::path::Path;

use common::build::*;

/// (what, path) pairs read from `buildit eval --json`.
fn pinned(sample: &str) -> Vec<(String, String)> {
    let t = tempfile::tempdir().unwrap();
    // A spec location and a store root of their own: neither may show in a hash.
    let dir = t.path().join("somewhere/else").join(sample);
    copy_spec(&format!("samples/{sample}"), &dir);
    fs::copy(
        repo().join(format!("tests/fixtures/pinned/{sample}.lock")),
        dir.join("buildit.lock"),
    )
    .unwrap();
    let root = t.path().join("root");
    let json = ok(buildit(&root, &["eval", "--json", dir.to_str().unwrap()]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mut out = Vec::new();
    for (name, drv) in v["build-roots"].as_object().unwrap() {
        out.push((
            format!("build root {name}"),
            drv.as_str().unwrap().to_string(),
        ));
    }
    for p in v["packages"].as_array().unwrap() {
        let key = p["key"].as_str().unwrap();
        out.push((format!("{key} drv"), p["drv"].as_str().unwrap().to_string()));
        out.push((format!("{key} out"), p["out"].as_str().unwrap().to_string()));
    }
    for i in v["images"].as_array().unwrap() {
        let ty = i["type"].as_str().unwrap();
        out.push((
            format!("{ty} image drv"),
            i["drv"].as_str().unwrap().to_string(),
        ));
        out.push((
            format!("{ty} image out"),
            i["out"].as_str().unwrap().to_string(),
        ));
    }
    out.push((
        "derivations".into(),
        v["derivations"].as_u64().unwrap().to_string(),
    ));
    // Every .drv named is in the store root, as written.
    for (_, p) in out.iter().filter(|(_, p)| p.ends_with(".drv")) {
        let physical = root.join("store").join(p.trim_start_matches("/store/"));
        assert!(Path::new(&physical).is_file(), "{p} was not written");
    }
    out
}

fn expect(got: Vec<(String, String)>, want: &[(&str, &str)]) {
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn hello_derivations_are_pinned() {
    expect(
        pinned("hello"),
        &[
            (
                "build root debian-12-c",
                "/store/g05a5kabi2rli55yw7fnj92y2xln9kz8-buildroot-debian-12-c.drv",
            ),
            (
                "app-misc/hello-2.10 drv",
                "/store/nnn408bic2kib25ild968bs2z7k18h24-hello-2.10.drv",
            ),
            (
                "app-misc/hello-2.10 out",
                "/store/9xz43mqbxajpraz5lmngx33q7wis829c-hello-2.10",
            ),
            ("derivations", "229"),
        ],
    );
}

#[test]
fn nginx_prod_derivations_are_pinned() {
    expect(
        pinned("nginx-prod"),
        &[
            (
                "build root debian-12-c",
                "/store/g05a5kabi2rli55yw7fnj92y2xln9kz8-buildroot-debian-12-c.drv",
            ),
            (
                "pkgs/nginx drv",
                "/store/w4x8r4wr1s1gy5qldg4r6gqcf3hl477p-nginx-1.22.1.drv",
            ),
            (
                "pkgs/nginx out",
                "/store/mzb0zrq8rbbhb46ds45qqhlkhkkrm34m-nginx-1.22.1",
            ),
            (
                "aci image drv",
                "/store/q03cxcxn8yklhvc8xy7mg4rjlxkp4ar0-nginx-production-1.22.1-p1-aci.drv",
            ),
            (
                "aci image out",
                "/store/5yk1g8q9p88ia0s1933nkb5zp9gdsa12-nginx-production-1.22.1-p1-aci",
            ),
            (
                "oci image drv",
                "/store/jldc1b40b41ba095pmcmdics721xbp5z-nginx-production-1.22.1-p1-oci.drv",
            ),
            (
                "oci image out",
                "/store/r3sjjpccm64k4n4bbyrmylsj2d4ri2lj-nginx-production-1.22.1-p1-oci",
            ),
            ("derivations", "243"),
        ],
    );
}
