//! `buildit store …` end to end, through the binary.

mod common;

use std::process::Stdio;

use common::{sample_tree, Env};

#[test]
fn add_inspect_dump_restore() {
    let env = Env::new();
    let src = env.path("pkg");
    sample_tree(&src);
    let path = env.ok(&["store", "add", src.to_str().unwrap()]);
    let path = path.trim();
    assert!(
        path.starts_with("/store/") && path.ends_with("-pkg"),
        "{path}"
    );

    let info: serde_json::Value =
        serde_json::from_str(&env.ok(&["store", "path-info", "--json", path])).unwrap();
    let hash = env.ok(&["store", "hash-path", src.to_str().unwrap()]);
    assert_eq!(info[0]["narHash"], hash.trim());
    assert_eq!(info[0]["path"], path);
    assert!(info[0]["ca"]
        .as_str()
        .unwrap()
        .starts_with("fixed:r:sha256:"));

    let ls = env.ok(&["store", "ls", "-R", path]);
    assert_eq!(ls, "bin\nbin/run\netc\netc/motd\nlink\n");
    let ls = env.ok(&["store", "ls", "-l", &format!("{path}/bin")]);
    assert!(ls.contains("-r-xr-xr-x"), "{ls}");
    assert_eq!(
        env.ok(&["store", "cat", &format!("{path}/etc/motd")]),
        "hello\n"
    );
    let err = env.fails(&["store", "cat", &format!("{path}/etc")]);
    assert!(err.contains("not a regular file"), "{err}");

    // dump | restore | hash-path gives the same hash.
    let nar = env.cmd(&["store", "dump", path]).output().unwrap();
    assert!(nar.status.success());
    let mut restore = env
        .cmd(&["store", "restore", env.path("out").to_str().unwrap()])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    restore
        .stdin
        .take()
        .unwrap()
        .write_all(&nar.stdout)
        .unwrap();
    assert!(restore.wait().unwrap().success());
    assert_eq!(
        env.ok(&["store", "hash-path", env.path("out").to_str().unwrap()]),
        hash
    );

    // A second store root gives the same path.
    let other = Env::new();
    assert_eq!(
        other.ok(&["store", "add", src.to_str().unwrap()]).trim(),
        path
    );
}

#[test]
fn flat_and_fixed_adds() {
    let env = Env::new();
    let f = env.path("hello.txt");
    std::fs::write(&f, "hello\n").unwrap();
    // Paths printed by real Nix 2.8 for these commands (store-paths.json).
    let flat = env.ok(&[
        "store",
        "add",
        "--flat",
        "--fixed",
        "sha256",
        f.to_str().unwrap(),
    ]);
    assert_eq!(
        flat.trim(),
        "/store/4ing4x8kprbhgy6knya50wq463alq5vb-hello.txt"
    );
    let md5 = env.ok(&[
        "store",
        "add",
        "--flat",
        "--fixed",
        "md5",
        f.to_str().unwrap(),
    ]);
    assert_eq!(
        md5.trim(),
        "/store/6faydm8nqf6pmv18xd8pwdhiz9fdb344-hello.txt"
    );
    let err = env.fails(&["store", "add", "--fixed", "sha3", f.to_str().unwrap()]);
    assert!(err.contains("sha3"), "{err}");
}

#[test]
fn errors_are_clear() {
    let env = Env::new();
    let err = env.fails(&[
        "store",
        "path-info",
        "/store/00000000000000000000000000000000-x",
    ]);
    assert!(err.contains("is not a valid path"), "{err}");
    let err = env.fails(&["store", "path-info", "/store/not-a-path"]);
    assert!(err.contains("not a store path"), "{err}");
    let err = env.fails(&["store", "add", "/nonexistent/thing"]);
    assert!(err.contains("/nonexistent/thing"), "{err}");
    let err = env.fails(&["store", "ls", "/etc"]);
    assert!(err.contains("neither a /store path"), "{err}");
}

#[test]
fn gc_with_out_link_roots() {
    let env = Env::new();
    let a = env.path("a");
    let b = env.path("b");
    sample_tree(&a);
    std::fs::create_dir(&b).unwrap();
    std::fs::write(b.join("x"), "x").unwrap();
    let link = env.path("result");
    let pa = env.ok(&[
        "store",
        "add",
        "-o",
        link.to_str().unwrap(),
        a.to_str().unwrap(),
    ]);
    let pb = env.ok(&["store", "add", b.to_str().unwrap()]);
    let roots = env.ok(&["store", "roots"]);
    assert!(roots.contains(pa.trim()), "{roots}");
    let dry = env.ok(&["store", "gc", "--dry-run"]);
    assert_eq!(dry, pb);
    assert_eq!(env.ok(&["store", "gc"]), pb);
    env.ok(&["store", "path-info", pa.trim()]);
    env.fails(&["store", "path-info", pb.trim()]);
    // The result link resolves to the store path too.
    let via_link = env.ok(&["store", "path-info", link.to_str().unwrap()]);
    assert!(via_link.starts_with(pa.trim()));
    std::fs::remove_file(&link).unwrap();
    assert_eq!(env.ok(&["store", "gc"]), pa);
    env.ok(&["store", "verify", "--check-contents"]);
}

#[test]
fn verify_reports_corruption() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let a = env.path("a");
    sample_tree(&a);
    let p = env.ok(&["store", "add", a.to_str().unwrap()]);
    let phys = env
        .root()
        .join("store")
        .join(p.trim().strip_prefix("/store/").unwrap());
    env.ok(&["store", "verify", "--check-contents"]);
    std::fs::set_permissions(phys.join("etc"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_file(phys.join("etc/motd")).unwrap();
    let out = env.run(&["store", "verify", "--check-contents"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(p.trim()) && err.contains("contents changed"),
        "{err}"
    );
    let json: serde_json::Value = serde_json::from_slice(
        &env.run(&["store", "verify", "--check-contents", "--json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(json["problems"][0]["kind"], "hash-mismatch");
}

#[test]
fn key_generate_writes_a_usable_pair() {
    let env = Env::new();
    let sk = env.path("k.sec");
    let pk = env.path("k.pub");
    let out = env.ok(&[
        "store",
        "key",
        "generate",
        "cache.example-1",
        "--secret-key-file",
        sk.to_str().unwrap(),
        "--public-key-file",
        pk.to_str().unwrap(),
    ]);
    assert!(out.starts_with("cache.example-1:"));
    assert_eq!(std::fs::read_to_string(&pk).unwrap(), out);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&sk).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let secret = std::fs::read_to_string(&sk).unwrap();
    let parsed: buildit_store::signing::SecretKey = secret.trim().parse().unwrap();
    assert_eq!(parsed.to_public().to_string(), out.trim());
    // Never overwrites.
    let err = env.fails(&[
        "store",
        "key",
        "generate",
        "x",
        "--secret-key-file",
        sk.to_str().unwrap(),
    ]);
    assert!(err.contains("never overwritten"), "{err}");
}
