//! `buildit lock` and `buildit eval` on the seed's scenario (samples/nginx-prod), end
//! to end through the binary: the same `.drv` paths from any store root and any
//! copy of the directory, exactly the dependents of a changed patch change, and the
//! user's mistakes reported with file, line and column.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn copy_dir(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

fn buildit(root: &Path, args: &[&str]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_buildit"));
    c.arg("--root")
        .arg(root)
        .args(args)
        .env_remove("BUILDIT_ROOT");
    c.output().unwrap()
}

fn ok(root: &Path, args: &[&str]) -> String {
    let out = buildit(root, args);
    assert!(
        out.status.success(),
        "buildit {args:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(root: &Path, args: &[&str]) -> String {
    let out = buildit(root, args);
    assert!(!out.status.success(), "buildit {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// nginx-prod's lock, made once (it asks apt) and copied into every test's spec.
fn lock_text() -> &'static String {
    static LOCK: OnceLock<String> = OnceLock::new();
    LOCK.get_or_init(|| {
        let t = tempfile::tempdir().unwrap();
        let spec = t.path().join("nginx-prod");
        copy_dir(&repo().join("samples/nginx-prod"), &spec);
        ok(&t.path().join("root"), &["lock", spec.to_str().unwrap()]);
        std::fs::read_to_string(spec.join("buildit.lock")).unwrap()
    })
}

/// A fresh copy of nginx-prod with its lock, under `parent`.
fn spec_copy(parent: &Path, name: &str) -> PathBuf {
    let spec = parent.join(name);
    std::fs::create_dir_all(parent).unwrap();
    copy_dir(&repo().join("samples/nginx-prod"), &spec);
    std::fs::write(spec.join("buildit.lock"), lock_text()).unwrap();
    spec
}

fn eval_json(root: &Path, spec: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(root, &["eval", "--json", spec.to_str().unwrap()])).unwrap()
}

/// Every `.drv` in the closure of the package derivations.
fn closure(root: &Path, plan: &serde_json::Value) -> std::collections::BTreeSet<String> {
    let mut args = vec!["show-derivation", "-r"];
    let drvs: Vec<String> = plan["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["drv"].as_str().unwrap().to_string())
        .collect();
    args.extend(drvs.iter().map(String::as_str));
    let shown: serde_json::Value = serde_json::from_str(&ok(root, &args)).unwrap();
    shown.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn same_drv_paths_from_any_root_and_any_copy() {
    let t = tempfile::tempdir().unwrap();
    let a = spec_copy(t.path(), "a");
    let b = spec_copy(&t.path().join("elsewhere/deeper"), "nginx-prod");
    let pa = eval_json(&t.path().join("root1"), &a);
    let pb = eval_json(&t.path().join("root2"), &b);
    assert_eq!(pa["packages"], pb["packages"]);
    assert_eq!(pa["build-roots"], pb["build-roots"]);
    let nginx = &pa["packages"][0];
    assert_eq!(nginx["name"], "nginx");
    assert_eq!(nginx["version"], "1.22.1");
    assert_eq!(
        nginx["options"],
        serde_json::json!(["gzip", "http2", "ipv6", "pcre", "ssl"])
    );
    assert!(nginx["drv"]
        .as_str()
        .unwrap()
        .ends_with("-nginx-1.22.1.drv"));
    // The images are part of the plan, rendered from the templates.
    assert_eq!(pa["images"][0]["type"], "aci");
    assert_eq!(
        pa["images"][0]["manifest"]["name"],
        "nginx-production-1.22.1-p1"
    );
    // Evaluating again changes nothing, whatever way the directory is written.
    assert_eq!(
        eval_json(&t.path().join("root1"), &a)["packages"],
        pa["packages"]
    );
    let out = Command::new(env!("CARGO_BIN_EXE_buildit"))
        .current_dir(t.path())
        .args(["--root", "root1", "eval", "--json", "./a/"])
        .env_remove("BUILDIT_ROOT")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rel: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rel["packages"], pa["packages"]);
}

#[test]
fn one_patch_byte_changes_exactly_its_dependents() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let a = spec_copy(t.path(), "a");
    let b = spec_copy(t.path(), "b");
    let patch = b.join("pkgs/nginx/patches/https-only.patch");
    let mut bytes = std::fs::read(&patch).unwrap();
    let i = bytes.iter().position(|&c| c == b'S').unwrap();
    bytes[i] = b's';
    std::fs::write(&patch, bytes).unwrap();
    let pa = eval_json(&root, &a);
    let pb = eval_json(&root, &b);
    let (ca, cb) = (closure(&root, &pa), closure(&root, &pb));
    let only_a: Vec<_> = ca.difference(&cb).collect();
    let only_b: Vec<_> = cb.difference(&ca).collect();
    // Only nginx's own build depends on the patch; its sources, the build root and
    // every Debian package stay.
    assert_eq!(only_a, vec![pa["packages"][0]["drv"].as_str().unwrap()]);
    assert_eq!(only_b, vec![pb["packages"][0]["drv"].as_str().unwrap()]);
    assert!(ca.len() > 200, "{}", ca.len());
}

#[test]
fn the_seeds_own_pkg_yaml_is_invalid_yaml_with_line_and_column() {
    let t = tempfile::tempdir().unwrap();
    let spec = spec_copy(t.path(), "s");
    std::fs::copy(
        repo().join("samples/invalid/seed-pkg.yaml"),
        spec.join("pkgs/nginx/pkg.yaml"),
    )
    .unwrap();
    let err = fails(&t.path().join("root"), &["eval", spec.to_str().unwrap()]);
    assert!(err.contains("not valid YAML"), "{err}");
    assert!(err.contains("pkg.yaml:6:"), "{err}");
}

#[test]
fn a_missing_or_stale_lock_says_what_to_run() {
    let t = tempfile::tempdir().unwrap();
    let spec = spec_copy(t.path(), "s");
    std::fs::remove_file(spec.join("buildit.lock")).unwrap();
    let err = fails(&t.path().join("root"), &["eval", spec.to_str().unwrap()]);
    assert!(
        err.contains("buildit.lock does not exist") && err.contains("buildit lock"),
        "{err}"
    );

    // Turning ssl off drops libssl-dev from the build: the lock entry is stale.
    std::fs::write(spec.join("buildit.lock"), lock_text()).unwrap();
    let pkg = spec.join("pkgs/nginx/pkg.yaml");
    let text = std::fs::read_to_string(&pkg).unwrap();
    std::fs::write(
        &pkg,
        text.replace("  with:\n    - ssl\n    - http2", "  without: [ssl]"),
    )
    .unwrap();
    let err = fails(&t.path().join("root"), &["eval", spec.to_str().unwrap()]);
    assert!(
        err.contains("lock entry of package 'pkgs/nginx' is stale"),
        "{err}"
    );
    assert!(
        err.contains("container.yaml:"),
        "points at the package step: {err}"
    );
    // `buildit lock` brings it up to date, and eval passes again.
    ok(&t.path().join("root"), &["lock", spec.to_str().unwrap()]);
    let plan = eval_json(&t.path().join("root"), &spec);
    assert_eq!(
        plan["packages"][0]["options"],
        serde_json::json!(["gzip", "ipv6", "pcre"])
    );
}
