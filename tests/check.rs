//! `buildit check`: recipes made nondeterministic on purpose (the time, a random
//! number, the core count, readdir order, environment order) are each caught, and
//! the diff names the file and the differing bytes; a deterministic recipe, GNU
//! hello and zlib are reproducible. Exit status 0 / 1 / 2.

mod common;

use std::path::Path;

use common::build::*;

/// (package, install script): each writes one file that a rebuild changes.
const NONDETERMINISTIC: [(&str, &str); 7] = [
    ("nd-date", "date +%s.%N > $out/usr/share/nd/stamp"),
    (
        "nd-random",
        "od -An -N16 -tx1 /dev/urandom > $out/usr/share/nd/random",
    ),
    (
        "nd-cores",
        "echo \"built with $NIX_BUILD_CORES cores\" > $out/usr/share/nd/cores",
    ),
    (
        "nd-readdir",
        "mkdir d && for i in $(seq 1 40); do : > d/file$i; done\n    \
         ls -U d > $out/usr/share/nd/order",
    ),
    ("nd-env", "env | grep -v '^_=' > $out/usr/share/nd/env"),
    (
        "nd-nproc",
        "echo \"$(nproc) CPUs\" > $out/usr/share/nd/nproc",
    ),
    ("nd-uname", "uname -r > $out/usr/share/nd/kernel"),
];

/// The culprits this machine can show: one CPU is no variation on a machine
/// that has only one.
fn culprits() -> Vec<(&'static str, &'static str)> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    NONDETERMINISTIC
        .into_iter()
        .filter(|(n, _)| cpus > 1 || *n != "nd-nproc")
        .collect()
}

fn recipe(name: &str, install: &str) -> String {
    format!(
        "name: {name}\nversion: \"1\"\ndescription: a test recipe\n\
         sources:\n  - url: https://ftp.gnu.org/gnu/hello/hello-2.10.tar.gz\n    \
         sha256: 31e066137a962676e89f69d1b65382de95a7ef7d914b8cb956f41ea72e0f516b\n\
         build-root: debian-12-c\nbuild-depends: []\nruntime-depends: []\noptions: {{}}\n\
         phases:\n  configure: ':'\n  build: ':'\n  install: |\n    \
         mkdir -p $out/usr/share/nd\n    {install}\n"
    )
}

/// A spec directory with the given (name, install script) packages.
fn spec(dir: &Path, packages: &[(&str, &str)]) {
    let mut files: Vec<(String, String)> = vec![(
        ".buildit-config.yaml".into(),
        "recipe-paths: [recipes]\n".into(),
    )];
    let mut container = String::from("- vars:\n    name: nd\n");
    for (name, install) in packages {
        files.push((
            format!("recipes/test/{name}/{name}-1.yaml"),
            recipe(name, install),
        ));
        container.push_str(&format!("- package:\n    recipe: test/{name}-1\n"));
    }
    files.push(("container.yaml".into(), container));
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    write_files(dir, &refs);
}

fn check_cmd(root: &Path, dir: &Path, extra: &[&str]) -> std::process::Command {
    let mut args = vec![
        "check",
        dir.to_str().unwrap(),
        "--source-dir",
        sources().to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    buildit(root, &args)
}

/// The part of the check's report about `name`, up to the next package.
fn section<'a>(out: &'a str, name: &str) -> &'a str {
    let start = out
        .find(&format!("{name}-1: "))
        .unwrap_or_else(|| panic!("{name} is not in the report:\n{out}"));
    let rest = &out[start..];
    // Up to the next package's verdict (a line that starts with a name).
    let end = ["\nnd-", "\nsteady-", "\nuser-"]
        .iter()
        .filter_map(|m| rest[1..].find(m))
        .min()
        .map_or(rest.len(), |i| i + 2);
    &rest[..end]
}

#[test]
fn check_finds_each_kind_of_nondeterminism_and_shows_the_bytes() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("spec");
    let mut packages = culprits();
    packages.push((
        "steady",
        "echo the same every time > $out/usr/share/nd/steady",
    ));
    spec(&dir, &packages);
    let root = shared_root();
    ok(buildit(&root, &["lock", dir.to_str().unwrap()]));
    let out = check_cmd(&root, &dir, &["--rounds", "1", "-j2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let n = culprits().len();
    assert!(
        stderr.contains(&format!(
            "{} outputs checked: 1 reproducible, {n} not",
            n + 1
        )),
        "{stderr}"
    );
    assert!(
        section(&stdout, "steady").contains("reproducible (1 rebuild"),
        "{stdout}"
    );

    // Each culprit: not reproducible, its one file named, the bytes shown.
    let file_of = |name: &str| match name {
        "nd-date" => "usr/share/nd/stamp",
        "nd-random" => "usr/share/nd/random",
        "nd-cores" => "usr/share/nd/cores",
        "nd-readdir" => "usr/share/nd/order",
        "nd-nproc" => "usr/share/nd/nproc",
        "nd-uname" => "usr/share/nd/kernel",
        _ => "usr/share/nd/env",
    };
    for (name, _) in culprits() {
        let s = section(&stdout, name);
        assert!(s.contains("NOT reproducible"), "{s}");
        assert!(s.contains(file_of(name)), "{name}: the file is named:\n{s}");
        assert!(s.contains("rebuild kept at"), "{s}");
    }
    let cores = section(&stdout, "nd-cores");
    assert!(
        cores.contains("-built with 2 cores") || cores.contains("-built with 1 cores"),
        "{cores}"
    );
    assert!(cores.contains("+built with "), "{cores}");
    let readdir = section(&stdout, "nd-readdir");
    assert!(readdir.contains("/build on tmpfs"), "{readdir}");
    assert!(
        readdir.contains("+file") && readdir.contains("-file"),
        "{readdir}"
    );
    let env = section(&stdout, "nd-env");
    assert!(env.contains("environment reversed"), "{env}");
    let kernel = section(&stdout, "nd-uname");
    assert!(kernel.contains("+2.6."), "{kernel}");

    // The kept rebuild is outside the store and `buildit diff` explains it too.
    let kept = section(&stdout, "nd-cores")
        .lines()
        .find_map(|l| l.trim().strip_prefix("rebuild kept at "))
        .unwrap()
        .to_string();
    assert!(kept.contains("/var/check/"), "{kept}");
    let v: serde_json::Value = serde_json::from_str(&ok(buildit(
        &root,
        &["eval", dir.to_str().unwrap(), "--json"],
    )))
    .unwrap();
    let cores_out = v["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "nd-cores")
        .unwrap()["out"]
        .as_str()
        .unwrap()
        .to_string();
    let diff = buildit(&root, &["diff", &cores_out, &kept])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&diff.stdout);
    assert_eq!(diff.status.code(), Some(1), "{text}");
    assert!(text.contains("usr/share/nd/cores"), "{text}");
    // An output path stands for its derivation.
    let again = buildit(&root, &["check", &cores_out, "--rounds", "1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&again.stdout);
    assert_eq!(again.status.code(), Some(1), "{text}");
    assert!(text.contains("nd-cores-1: NOT reproducible"), "{text}");
    // Only the latest check's rebuild is kept.
    let base = cores_out.trim_start_matches("/store/");
    let kept: Vec<_> = std::fs::read_dir(root.join("var/check"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(base))
        .collect();
    assert_eq!(kept, [format!("{base}.check-1")]);
    ok(buildit(&root, &["store", "verify", "--check-contents"]));
}

#[test]
fn check_says_reproducible_with_status_0_and_errors_with_status_2() {
    let t = tempfile::tempdir().unwrap();
    let good = t.path().join("good");
    spec(
        &good,
        &[(
            "steady",
            "echo the same every time > $out/usr/share/nd/steady",
        )],
    );
    // An image of the package: checked after the package it is made of.
    let mut container = std::fs::read_to_string(good.join("container.yaml")).unwrap();
    container.push_str("- image:\n    type: oci\n    config:\n      cmd: [/bin/true]\n");
    std::fs::write(good.join("container.yaml"), container).unwrap();
    let root = shared_root();
    ok(buildit(&root, &["lock", good.to_str().unwrap()]));
    let out = check_cmd(&root, &good, &["--rounds", "2", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let outputs = v["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 2, "the package and its image: {v}");
    for o in outputs {
        assert_eq!(o["reproducible"], true, "{v}");
        assert_eq!(o["rounds"].as_array().unwrap().len(), 2, "{v}");
    }
    assert!(outputs.iter().any(|o| o["name"] == "nd as OCI"), "{v}");

    // A build that fails: nothing can be said, status 2.
    let bad = t.path().join("bad");
    spec(&bad, &[("broken", "echo no; exit 3")]);
    ok(buildit(&root, &["lock", bad.to_str().unwrap()]));
    let out = check_cmd(&root, &bad, &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("broken-1 failed"), "{stderr}");
}

#[test]
fn gnu_hello_and_zlib_are_reproducible() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("spec");
    write_files(&dir, &[("container.yaml", HELLO_AND_ZLIB)]);
    let root = shared_root();
    ok(buildit(&root, &["lock", dir.to_str().unwrap()]));
    let out = check_cmd(&root, &dir, &["--rounds", "2", "-j2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("hello-2.10: reproducible (2 rebuilds"),
        "{stdout}"
    );
    assert!(
        stdout.contains("zlib-1.2.13: reproducible (2 rebuilds"),
        "{stdout}"
    );
}

#[test]
fn check_against_a_cache_tells_its_builds_apart_from_ours() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("spec");
    spec(
        &dir,
        &[
            NONDETERMINISTIC[0],
            (
                "steady",
                "echo the same every time > $out/usr/share/nd/steady",
            ),
        ],
    );
    let shared = shared_root();
    ok(buildit(&shared, &["lock", dir.to_str().unwrap()]));
    let outs: Vec<String> = ok(build_cmd(&shared, &dir, &["--no-link"]))
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(outs.len(), 2, "{outs:?}");

    // Their builds go to one cache; the build root (so that a fresh root need not
    // make it) to another.
    let (sk, pk) = signing_key(t.path(), "audit-test-1");
    let theirs = format!("file://{}", t.path().join("theirs").display());
    let inputs = format!("file://{}", t.path().join("inputs").display());
    let mut push = vec!["push", theirs.as_str()];
    push.extend(outs.iter().map(String::as_str));
    push.extend(["--secret-key-file", sk.to_str().unwrap()]);
    ok(buildit(&shared, &push));
    let eval: serde_json::Value = serde_json::from_str(&ok(buildit(
        &shared,
        &["eval", dir.to_str().unwrap(), "--json"],
    )))
    .unwrap();
    let root_drv = eval["build-roots"]["debian-12-c"].as_str().unwrap();
    let shown: serde_json::Value =
        serde_json::from_str(&ok(buildit(&shared, &["show-derivation", root_drv]))).unwrap();
    let build_root = shown[root_drv]["env"]["out"].as_str().unwrap();
    ok(buildit(
        &shared,
        &[
            "push",
            &inputs,
            build_root,
            "--secret-key-file",
            sk.to_str().unwrap(),
        ],
    ));

    // A fresh root builds both itself and challenges the cache.
    let fresh = t.path().join("fresh");
    let out = check_cmd(
        &fresh,
        &dir,
        &[
            "--rounds",
            "1",
            "--cache",
            &inputs,
            "--trusted-public-key",
            &pk,
            "--against",
            &theirs,
        ],
    )
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let date = outs.iter().find(|o| o.ends_with("-nd-date-1")).unwrap();
    let steady = outs.iter().find(|o| o.ends_with("-steady-1")).unwrap();
    assert!(
        stdout.contains(&format!("{steady}: {theirs} holds the same build")),
        "{stdout}"
    );
    let differs = stdout
        .split(&format!("{date}: {theirs} holds a DIFFERENT build"))
        .nth(1)
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(differs.contains("usr/share/nd/stamp"), "{stdout}");
    assert!(
        section(&stdout, "steady").contains("reproducible"),
        "{stdout}"
    );
}

#[test]
fn deep_check_reaches_packages_built_below_the_targets() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("spec");
    // `user` is the spec's only package; it is built on nd-cores, which is not.
    let user = recipe("user", "echo user > $out/usr/share/nd/user")
        .replace("build-depends: []", "build-depends: [test/nd-cores-1]");
    write_files(
        &dir,
        &[
            (".buildit-config.yaml", "recipe-paths: [recipes]\n"),
            ("recipes/test/user/user-1.yaml", &user),
            (
                "recipes/test/nd-cores/nd-cores-1.yaml",
                &recipe("nd-cores", NONDETERMINISTIC[2].1),
            ),
            (
                "container.yaml",
                "- vars:\n    name: deep\n- package:\n    recipe: test/user-1\n",
            ),
        ],
    );
    let root = shared_root();
    ok(buildit(&root, &["lock", dir.to_str().unwrap()]));
    let shallow = check_cmd(&root, &dir, &["--rounds", "1"]).output().unwrap();
    let text = String::from_utf8_lossy(&shallow.stdout);
    assert_eq!(shallow.status.code(), Some(0), "{text}");
    assert!(!text.contains("nd-cores"), "only the target: {text}");

    let deep = check_cmd(&root, &dir, &["--rounds", "1", "--deep"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&deep.stdout);
    assert_eq!(deep.status.code(), Some(1), "{text}");
    assert!(
        section(&text, "nd-cores").contains("NOT reproducible"),
        "{text}"
    );
    assert!(section(&text, "user").contains("reproducible"), "{text}");
}
