//! What buildit reads from others, end to end through the binary (issue 12, items
//! 6 and 7): hostile OCI layouts and archives are read by digest and inside
//! themselves; a closed pipe ends a command quietly; a narinfo's unsigned `CA:`
//! claim is checked; a refused `store restore` leaves nothing; stale lock files
//! go at the next start. Nothing here needs root or the network.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use buildit_store::Hash;
use common::build::signing_key;
use common::Env;

// ---------------------------------------------------------------------------
// OCI layouts

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", Hash::sha256(b).to_hex())
}

/// A tar holding empty files of these names.
fn tar_of(names: &[&str]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for n in names {
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, n, &[][..]).unwrap();
    }
    b.into_inner().unwrap()
}

fn descriptor(media_type: &str, bytes: &[u8], package: Option<&str>) -> serde_json::Value {
    let mut d = serde_json::json!({
        "mediaType": media_type,
        "digest": sha256(bytes),
        "size": bytes.len(),
    });
    if let Some(p) = package {
        d["annotations"] = serde_json::json!({ "io.buildit.package": p });
    }
    d
}

/// A manifest naming `layer` (as package `package`) and a minimal config.
fn manifest_for(layer: &[u8], package: &str) -> (Vec<u8>, Vec<u8>) {
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [sha256(layer)] },
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config, None),
        "layers": [descriptor(LAYER_TYPE, layer, Some(package))],
    }))
    .unwrap();
    (manifest, config)
}

fn put_blob(layout: &Path, bytes: &[u8]) -> PathBuf {
    let p = layout
        .join("blobs/sha256")
        .join(&sha256(bytes)["sha256:".len()..]);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, bytes).unwrap();
    p
}

fn write_index(layout: &Path, manifest: serde_json::Value) {
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": [manifest] });
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
}

fn manifest_descriptor(digest: &str, size: usize) -> serde_json::Value {
    serde_json::json!({
        "mediaType": MANIFEST_TYPE,
        "digest": digest,
        "size": size,
        "annotations": { "org.opencontainers.image.ref.name": "demo" },
    })
}

/// A sound layout at `dir` with one layer holding `etc/hello`; its layer bytes.
fn good_layout(dir: &Path) -> Vec<u8> {
    let layer = tar_of(&["etc/hello"]);
    let (manifest, config) = manifest_for(&layer, "hello-1.0");
    put_blob(dir, &layer);
    put_blob(dir, &config);
    put_blob(dir, &manifest);
    write_index(dir, manifest_descriptor(&sha256(&manifest), manifest.len()));
    layer
}

/// `buildit image inspect [--files] PATH`: (success, stdout, stderr).
fn inspect(env: &Env, path: &Path, files: bool) -> (bool, String, String) {
    let mut args = vec!["image", "inspect"];
    if files {
        args.push("--files");
    }
    args.push(path.to_str().unwrap());
    let out = env.run(&args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Without whitespace and miette's margins: the message is wrapped to the width.
fn squeezed(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '│' | '|'))
        .collect()
}

/// Refused, naming `what`, and nothing of the outside (`LEAKED`) shown.
fn refused(env: &Env, path: &Path, files: bool, what: &str) -> String {
    let (ok, out, err) = inspect(env, path, files);
    assert!(!ok, "{} should be refused:\n{out}", path.display());
    assert!(
        squeezed(&err).contains(&squeezed(what)),
        "the error names {what}:\n{err}"
    );
    assert!(
        !out.contains("LEAKED") && !err.contains("LEAKED"),
        "something outside the layout was read:\n{out}\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn a_sound_layout_and_its_archive_are_inspected() {
    let env = Env::new();
    let dir = env.path("good");
    good_layout(&dir);
    let (ok, out, err) = inspect(&env, &dir, true);
    assert!(ok, "{err}");
    assert!(out.starts_with("oci demo\n"), "{out}");
    assert!(
        out.contains("hello-1.0") && out.contains("etc/hello"),
        "{out}"
    );
    // The same layout as an oci-archive (it used to be taken for an ACI).
    let archive = env.path("good.oci.tar");
    let mut b = tar::Builder::new(fs::File::create(&archive).unwrap());
    b.append_dir_all(".", &dir).unwrap();
    b.finish().unwrap();
    drop(b);
    let (ok, from_archive, err) = inspect(&env, &archive, true);
    assert!(ok, "{err}");
    assert_eq!(from_archive, out);
}

#[test]
fn a_digest_that_walks_out_of_the_layout_is_refused() {
    let env = Env::new();
    let dir = env.path("evil");
    let layer = good_layout(&dir);
    // Beside the layout: a manifest an old reader would have shown.
    let (outside, _) = manifest_for(&layer, "LEAKED-outside-the-layout");
    fs::write(env.path("secret.json"), &outside).unwrap();
    write_index(
        &dir,
        manifest_descriptor("sha256:../../../secret.json", outside.len()),
    );
    refused(&env, &dir, false, "../../../secret.json");
    write_index(
        &dir,
        manifest_descriptor("sha256:../../../../etc/passwd", 10),
    );
    refused(&env, &dir, false, "../../../../etc/passwd");
    // Other algorithms and spellings are not names of blobs either.
    let hex = "a".repeat(64);
    for d in [
        format!("sha256:{}", hex.to_uppercase()),
        format!("sha512:{hex}"),
        format!("md5:{}", &hex[..32]),
    ] {
        write_index(&dir, manifest_descriptor(&d, 10));
        refused(&env, &dir, false, &d);
    }
    // `buildit diff` reads layouts through the same reader.
    let good = env.path("good");
    good_layout(&good);
    write_index(
        &dir,
        manifest_descriptor("sha256:../../../secret.json", outside.len()),
    );
    let out = env.run(&["diff", good.to_str().unwrap(), dir.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(squeezed(&err).contains("../../../secret.json"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("LEAKED"));
}

#[test]
fn a_blob_that_is_a_symlink_out_of_the_layout_is_refused() {
    let env = Env::new();
    let dir = env.path("evil");
    let layer = good_layout(&dir);
    // The layer named by its true digest, but its blob a symlink to a file
    // outside with that very content, whose member names would be listed.
    let outside = tar_of(&["LEAKED-outside"]);
    let (manifest, config) = manifest_for(&outside, "x");
    put_blob(&dir, &config);
    put_blob(&dir, &manifest);
    write_index(
        &dir,
        manifest_descriptor(&sha256(&manifest), manifest.len()),
    );
    fs::write(env.path("outside.tar"), &outside).unwrap();
    let blob = dir
        .join("blobs/sha256")
        .join(&sha256(&outside)["sha256:".len()..]);
    symlink("../../../outside.tar", &blob).unwrap();
    let err = refused(&env, &dir, true, "is a symlink");
    assert!(
        squeezed(&err).contains(&sha256(&outside)["sha256:".len()..]),
        "{err}"
    );

    // A symlinked blobs/sha256 directory leading to good blobs elsewhere.
    let dir2 = env.path("evil2");
    let elsewhere = env.path("elsewhere");
    good_layout(&elsewhere);
    fs::create_dir_all(dir2.join("blobs")).unwrap();
    fs::copy(elsewhere.join("index.json"), dir2.join("index.json")).unwrap();
    fs::copy(elsewhere.join("oci-layout"), dir2.join("oci-layout")).unwrap();
    symlink(elsewhere.join("blobs/sha256"), dir2.join("blobs/sha256")).unwrap();
    refused(&env, &dir2, false, "blobs/sha256 is a symlink");

    // In an oci-archive, a blob member that is a symlink is not a blob.
    let archive = env.path("evil.oci.tar");
    let mut b = tar::Builder::new(fs::File::create(&archive).unwrap());
    b.follow_symlinks(false);
    b.append_dir_all(".", &dir).unwrap();
    b.finish().unwrap();
    drop(b);
    refused(&env, &archive, true, "is a symlink");
    let _ = layer;
}

#[test]
fn a_blob_that_does_not_match_its_descriptor_is_refused() {
    let env = Env::new();
    let dir = env.path("tampered");
    let layer = good_layout(&dir);
    let blob = dir
        .join("blobs/sha256")
        .join(&sha256(&layer)["sha256:".len()..]);
    // Same size, other bytes: a member renamed.
    let mut other = tar_of(&["etc/LEAKED"]);
    other.resize(layer.len(), 0);
    fs::write(&blob, &other).unwrap();
    refused(&env, &dir, true, "does not match its digest");
    // Another size: refused even without reading the layer.
    fs::write(&blob, &layer[..layer.len() - 512]).unwrap();
    refused(&env, &dir, false, "its descriptor says");
    // A document claiming a gigabyte is not read at all.
    write_index(&dir, manifest_descriptor(&sha256(b"x"), 1 << 30));
    refused(&env, &dir, false, "is larger than");
}

// ---------------------------------------------------------------------------
// Closed pipes

/// `sh -c SCRIPT` with the buildit binary as `$B` and the store root as `$R`.
fn sh(env: &Env, script: &str) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .env("B", env!("CARGO_BIN_EXE_buildit"))
        .env("R", env.root())
        .env_remove("BUILDIT_ROOT")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_closed_pipe_ends_a_command_quietly() {
    let env = Env::new();
    let big = env.path("big");
    // 4 MiB that no pipe buffer holds.
    let mut f = fs::File::create(&big).unwrap();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for _ in 0..(4 << 20) / 8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        f.write_all(&x.to_le_bytes()).unwrap();
    }
    drop(f);
    let path = env.ok(&["store", "add", big.to_str().unwrap()]);
    let path = path.trim();
    // stdout and stderr both into the closed pipe, as in the issue.
    let status = sh(
        &env,
        &format!("\"$B\" --root \"$R\" store dump {path} 2>&1 | head -c 10 >/dev/null; echo ${{PIPESTATUS[0]}}"),
    );
    assert!(
        matches!(status.trim(), "0" | "141"),
        "store dump | head: status {status}"
    );
    // stderr kept: nothing said, nothing panicked.
    let err = env.path("err");
    let status = sh(
        &env,
        &format!(
            "\"$B\" --root \"$R\" store dump {path} 2>{} | head -c 10 >/dev/null; echo ${{PIPESTATUS[0]}}",
            err.display()
        ),
    );
    assert!(matches!(status.trim(), "0" | "141"), "status {status}");
    let said = fs::read_to_string(&err).unwrap();
    assert!(said.is_empty(), "{said}");

    // An error rendered (miette) into a closed stderr does not panic either.
    let mut child = env
        .cmd(&["store", "cat", "/store/00000000000000000000000000000000-x"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{status}");
}

// ---------------------------------------------------------------------------
// A narinfo's CA claim

/// An input-addressed output (of a derivation whose builder does not exist, so
/// that it can only come from a cache) pushed to a file cache from another root;
/// returns (victim env, drv path, output path, cache dir, public key).
fn cache_with_output(t: &Path) -> (Env, String, String, PathBuf, String) {
    use buildit_store::{Derivation, DerivationOutput, LocalStore, PathInfo, StorePath};
    let victim = Env::new();
    let mut drv = Derivation {
        system: "x86_64-linux".into(),
        builder: "/nonexistent/builder".into(),
        ..Default::default()
    };
    drv.outputs.insert("out".into(), DerivationOutput::Deferred);
    for (k, v) in [
        ("name", "demo-1.0"),
        ("builder", "/nonexistent/builder"),
        ("system", "x86_64-linux"),
    ] {
        drv.env.insert(k.into(), v.into());
    }
    drv.fill_output_paths(
        |_: &StorePath| -> Result<_, buildit_store::derivation::DerivationError> {
            unreachable!("no input derivations")
        },
    )
    .unwrap();
    let drv_path = LocalStore::open(&victim.root())
        .unwrap()
        .add_derivation(&drv)
        .unwrap();
    let out = drv.outputs["out"].path().unwrap().clone();

    // The output, made in another root and pushed from there.
    let src_root = t.join("producer");
    let content = t.join("content");
    fs::create_dir_all(content.join("bin")).unwrap();
    fs::write(content.join("bin/demo"), "demo\n").unwrap();
    let mut nar = Vec::new();
    buildit_store::nar::dump_path(&content, &mut nar).unwrap();
    let (nar_hash, nar_size) =
        buildit_store::nar::hash_path(&content, buildit_store::HashAlgo::Sha256).unwrap();
    LocalStore::open(&src_root)
        .unwrap()
        .add_nar(
            &PathInfo {
                path: out.clone(),
                nar_hash,
                nar_size,
                references: Default::default(),
                deriver: Some(drv_path.clone()),
                sigs: vec![],
                registration_time: 0,
                ca: None,
            },
            &mut &nar[..],
        )
        .unwrap();
    let (sk, pk) = signing_key(t, "test-cache-1");
    let cache = t.join("cache");
    let push = Command::new(env!("CARGO_BIN_EXE_buildit"))
        .arg("--root")
        .arg(&src_root)
        .args(["push", &format!("file://{}", cache.display())])
        .arg(out.to_string())
        .arg("--secret-key-file")
        .arg(&sk)
        .output()
        .unwrap();
    assert!(
        push.status.success(),
        "{}",
        String::from_utf8_lossy(&push.stderr)
    );
    (victim, drv_path.to_string(), out.to_string(), cache, pk)
}

fn realise_from(env: &Env, drv: &str, cache: &Path, pk: &str) -> std::process::Output {
    env.cmd(&[
        "realise",
        drv,
        "--no-link",
        "--cache",
        &format!("file://{}", cache.display()),
        "--trusted-public-key",
        pk,
    ])
    .env("BUILDIT_PROGRESS", "plain")
    .output()
    .unwrap()
}

#[test]
fn a_narinfo_with_a_false_ca_is_refused_and_nothing_registered() {
    let t = tempfile::tempdir().unwrap();
    let (victim, drv, out, cache, pk) = cache_with_output(t.path());
    let hash = out.trim_start_matches("/store/").split('-').next().unwrap();
    let narinfo = cache.join(format!("{hash}.narinfo"));
    let signed = fs::read_to_string(&narinfo).unwrap();
    let nar_hash = signed
        .lines()
        .find_map(|l| l.strip_prefix("NarHash: "))
        .unwrap()
        .to_string();
    // The claim is not signed: adding it keeps the signature valid. It says the
    // path is the content's recursive sha256 (true of the NAR, false of the path).
    fs::write(&narinfo, format!("{signed}CA: fixed:r:{nar_hash}\n")).unwrap();
    let o = realise_from(&victim, &drv, &cache, &pk);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    let refusal = err
        .lines()
        .find(|l| l.starts_with("not from a cache: "))
        .unwrap_or_else(|| panic!("the refusal is reported:\n{err}"));
    assert!(
        refusal.contains(&format!("file://{}", cache.display()))
            && refusal.contains(&out)
            && refusal.contains("content address")
            && refusal.contains("is false"),
        "names the cache, the path and why: {refusal}"
    );
    let info = victim.run(&["store", "path-info", &out]);
    assert!(!info.status.success(), "{out} must not be registered");

    // The same entry without the false claim is taken (the test can fail).
    fs::write(&narinfo, &signed).unwrap();
    let o = realise_from(&victim, &drv, &cache, &pk);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let info: serde_json::Value =
        serde_json::from_str(&victim.ok(&["store", "path-info", "--json", &out])).unwrap();
    assert!(info[0].get("ca").is_none(), "{info}");
    victim.ok(&["store", "verify", "--check-contents"]);
}

// ---------------------------------------------------------------------------
// store restore, stale locks

#[test]
fn a_refused_restore_leaves_no_target() {
    let env = Env::new();
    let src = env.path("tree");
    common::sample_tree(&src);
    let dump = env.run(&["store", "dump", src.to_str().unwrap()]);
    assert!(dump.status.success());
    let nar = dump.stdout;
    let restore = |target: &Path, bytes: &[u8]| {
        let mut c = env
            .cmd(&["store", "restore", target.to_str().unwrap()])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The NAR may be refused before it is all written.
        let _ = c.stdin.take().unwrap().write_all(bytes);
        c.wait_with_output().unwrap()
    };
    let parent = env.path("out");
    fs::create_dir(&parent).unwrap();
    let target = parent.join("restored");
    // Cut inside the second entry: the first was written by then.
    let o = restore(&target, &nar[..nar.len() * 2 / 3]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("truncated"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!target.exists(), "no partial tree at the target");
    assert_eq!(
        fs::read_dir(&parent).unwrap().count(),
        0,
        "nothing left beside it"
    );
    let o = restore(&target, &nar);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        fs::read_to_string(target.join("etc/motd")).unwrap(),
        "hello\n"
    );
    assert_eq!(fs::read_dir(&parent).unwrap().count(), 1);
}

#[test]
fn a_stale_lock_file_in_var_tmp_is_removed_at_the_next_start() {
    let env = Env::new();
    env.ok(&["store", "verify"]);
    let tmp = env.root().join("var/tmp");
    let stale = tmp.join("add-4242-0-0123456789abcdef.lock");
    let held = tmp.join("add-4243-0-0123456789abcdef.lock");
    fs::write(&stale, "").unwrap();
    let holder = buildit_store::local::FileLock::exclusive(&held).unwrap();
    env.ok(&["store", "verify"]);
    assert!(!stale.exists(), "the stale lock is removed");
    assert!(held.exists(), "a held lock is someone's and stays");
    drop(holder);
    env.ok(&["store", "verify"]);
    assert!(!held.exists());
}
