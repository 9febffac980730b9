//! A remote patch end to end, over real HTTPS on the loopback: a self-signed
//! certificate trusted through `SSL_CERT_FILE`, `buildit lock` pinning the patch's
//! sha256 (and keeping the download), `buildit eval` turning it into a
//! `builtin:fetchurl` input applied after the local patch; a current lock entry
//! needing no network, and the failures (server gone, certificate not trusted, bad
//! bundle) naming the URL or the file.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use buildit_store::Hash;
use common::https::{make_cert, HttpsServer};
use common::Env;

const PATCH_NAME: &str = "extra-hardening.patch";
const PATCH: &str = "--- a/src/http/ngx_http_core_module.c\n\
                     +++ b/src/http/ngx_http_core_module.c\n\
                     @@ -1 +1 @@\n\
                     -/* server tokens on */\n\
                     +/* server tokens off */\n";

/// `buildit ARGS…` trusting `cert` (None: the built-in roots), with no proxy.
fn buildit(env: &Env, cert: Option<&Path>, args: &[&str]) -> Output {
    let mut c = env.cmd(args);
    for v in [
        "SSL_CERT_FILE",
        "ALL_PROXY",
        "all_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
    ] {
        c.env_remove(v);
    }
    if let Some(cert) = cert {
        c.env("SSL_CERT_FILE", cert);
    }
    c.output().expect("run buildit")
}

fn ok(env: &Env, cert: Option<&Path>, args: &[&str]) -> String {
    let out = buildit(env, cert, args);
    assert!(
        out.status.success(),
        "buildit {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(env: &Env, cert: Option<&Path>, args: &[&str]) -> String {
    let out = buildit(env, cert, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "buildit {args:?} should fail");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The report is wrapped to the terminal's width: one line, without the frame.
    stderr
        .lines()
        .map(|l| l.trim_start_matches([' ', '│', '×']).trim_end())
        .collect::<Vec<_>>()
        .join(" ")
}

fn lock_json(spec: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(spec.join("buildit.lock")).unwrap()).unwrap()
}

/// The remote patch's sha256 as locked.
fn locked_sha(spec: &Path, url: &str) -> String {
    let lock = lock_json(spec);
    let patches = &lock["packages"]["pkgs/nginx"]["patches"];
    assert_eq!(patches.as_object().unwrap().len(), 1, "{patches}");
    patches[url].as_str().expect("url in the lock").to_string()
}

/// `eval` the spec; nginx's `.drv` and its shown derivation.
fn nginx_drv(env: &Env, spec: &Path) -> (String, serde_json::Value) {
    let plan: serde_json::Value =
        serde_json::from_str(&ok(env, None, &["eval", "--json", spec.to_str().unwrap()])).unwrap();
    let drv = plan["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "nginx")
        .expect("nginx in the plan")["drv"]
        .as_str()
        .unwrap()
        .to_string();
    let shown = show(env, &drv);
    (drv, shown)
}

fn show(env: &Env, drv: &str) -> serde_json::Value {
    let all: serde_json::Value =
        serde_json::from_str(&ok(env, None, &["show-derivation", drv])).unwrap();
    all[drv].clone()
}

/// Checks nginx's derivation: the local patch, then the remote one from a
/// `builtin:fetchurl` input pinned to `sha`, whose output the lock already stored
/// with the served bytes.
fn check_patches(env: &Env, nginx: &serde_json::Value, url: &str, sha: &str, body: &[u8]) {
    let patches: Vec<&str> = nginx["env"]["patches"]
        .as_str()
        .unwrap()
        .split(' ')
        .collect();
    assert_eq!(patches.len(), 2, "{patches:?}");
    assert!(patches[0].ends_with("-https-only.patch"), "{patches:?}");
    assert!(
        patches[1].ends_with(&format!("-{PATCH_NAME}")),
        "{patches:?}"
    );

    let fetches: Vec<serde_json::Value> = nginx["inputDrvs"]
        .as_object()
        .unwrap()
        .keys()
        .map(|d| show(env, d))
        .filter(|d| d["builder"] == "builtin:fetchurl" && d["env"]["urls"] == url)
        .collect();
    assert_eq!(fetches.len(), 1, "one fetch of {url} among the inputs");
    let fetch = &fetches[0];
    assert_eq!(fetch["env"]["outputHash"], sha);
    assert_eq!(fetch["env"]["outputHashMode"], "flat");
    assert_eq!(fetch["outputs"]["out"]["path"], patches[1]);

    // `lock` kept the download: the fetch's output is already valid, with those bytes.
    ok(env, None, &["store", "path-info", patches[1]]);
    let physical = env.root().join(patches[1].trim_start_matches('/'));
    assert_eq!(std::fs::read(physical).unwrap(), body);
}

#[test]
fn remote_patch_over_https_is_locked_fetched_and_lowered() {
    let env = Env::new();
    let tls = env.path("tls");
    make_cert(&tls);
    let cert = tls.join("cert.pem");
    let www = env.path("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join(PATCH_NAME), PATCH).unwrap();
    let server = HttpsServer::start(&www, &tls);
    let url = format!("https://127.0.0.1:{}/{PATCH_NAME}", server.port);

    // nginx-prod with the remote patch after the local one.
    let spec = env.path("nginx-prod");
    let st = Command::new("cp")
        .arg("-r")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/nginx-prod"))
        .arg(&spec)
        .status()
        .unwrap();
    assert!(st.success());
    let pkg_yaml = spec.join("pkgs/nginx/pkg.yaml");
    let local = "  patches/https-only.patch: \"This patch denies all plain http requests\"\n";
    let yaml = std::fs::read_to_string(&pkg_yaml).unwrap();
    assert!(yaml.contains(local), "{yaml}");
    let yaml = yaml.replace(
        local,
        &format!("{local}  {url}: \"Hides the server version\"\n"),
    );
    std::fs::write(&pkg_yaml, yaml).unwrap();
    let dir = spec.to_str().unwrap();

    // lock pins the served file's sha256.
    ok(&env, Some(&cert), &["lock", dir]);
    let sha = locked_sha(&spec, &url);
    assert_eq!(sha, Hash::sha256(PATCH.as_bytes()).to_hex());

    // eval: local patch first, then the fetch's output; the download is in the store.
    let (drv1, nginx) = nginx_drv(&env, &spec);
    check_patches(&env, &nginx, &url, &sha, PATCH.as_bytes());

    // Failures to fetch, with the server up: made to fetch by dropping the entry.
    let good_lock = std::fs::read_to_string(spec.join("buildit.lock")).unwrap();
    let mut lock = lock_json(&spec);
    lock["packages"]["pkgs/nginx"]["patches"]
        .as_object_mut()
        .unwrap()
        .clear();
    let unpinned = serde_json::to_string_pretty(&lock).unwrap();
    std::fs::write(spec.join("buildit.lock"), &unpinned).unwrap();
    // Only the built-in roots: the self-signed certificate is refused.
    let e = fails(&env, None, &["lock", dir]);
    assert!(e.contains(&url), "{e}");
    assert!(e.contains("TLS") && e.contains("certificate"), "{e}");
    assert!(e.contains("SSL_CERT_FILE"), "says how to trust it: {e}");
    // A bundle that is missing, or holds no certificate.
    let missing = tls.join("missing.pem");
    let e = fails(&env, Some(&missing), &["lock", dir]);
    assert!(e.contains(&url) && e.contains("missing.pem"), "{e}");
    let e = fails(&env, Some(&tls.join("key.pem")), &["lock", dir]);
    assert!(e.contains("key.pem") && e.contains("no certificate"), "{e}");
    // Failed locks write nothing.
    assert_eq!(
        std::fs::read_to_string(spec.join("buildit.lock")).unwrap(),
        unpinned
    );
    std::fs::write(spec.join("buildit.lock"), &good_lock).unwrap();

    // One byte changed upstream: `lock --update` pins the new hash, nginx changes.
    let changed = PATCH.replace("tokens off", "tokens 0ff");
    assert_eq!(changed.len(), PATCH.len());
    std::fs::write(www.join(PATCH_NAME), &changed).unwrap();
    ok(&env, Some(&cert), &["lock", "--update", dir]);
    let sha2 = locked_sha(&spec, &url);
    assert_eq!(sha2, Hash::sha256(changed.as_bytes()).to_hex());
    assert_ne!(sha2, sha);
    let (drv2, nginx2) = nginx_drv(&env, &spec);
    assert_ne!(drv2, drv1, "the patch's hash is part of nginx's derivation");
    check_patches(&env, &nginx2, &url, &sha2, changed.as_bytes());

    // Server gone: a current entry needs no download…
    drop(server);
    let pinned = std::fs::read_to_string(spec.join("buildit.lock")).unwrap();
    ok(&env, Some(&cert), &["lock", dir]);
    assert_eq!(
        std::fs::read_to_string(spec.join("buildit.lock")).unwrap(),
        pinned
    );
    // …but `--update` does, and says which URL failed, leaving the lock alone.
    let e = fails(&env, Some(&cert), &["lock", "--update", dir]);
    assert!(e.contains(&format!("remote patch {url}")), "{e}");
    assert_eq!(
        std::fs::read_to_string(spec.join("buildit.lock")).unwrap(),
        pinned
    );
    assert_eq!(nginx_drv(&env, &spec).0, drv2);
}
