//! Binary caches end to end: the seed's nginx-prod pushed from one store root,
//! then built in a fresh root with no build at all (every path downloaded, the
//! same image IDs), over file:// and http://; interoperability with real Nix both
//! ways; faults (a flipped byte, no or a wrong signature, an untrusted key, a
//! truncated NAR, a cache that hangs or refuses, a push killed half-way), each
//! rejected with its reason and nothing registered.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::build::*;
use common::https::{make_cert, HttpsServer};

/// nginx-prod built in the shared root: (spec dir, [nginx, aci, oci] outputs).
fn built() -> &'static (PathBuf, Vec<String>) {
    static B: OnceLock<(PathBuf, Vec<String>)> = OnceLock::new();
    B.get_or_init(|| {
        let dir = shared().join(format!("cache-spec-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        copy_spec("samples/nginx-prod", &dir);
        let outs = lock_and_build(&shared_root(), &dir, &["--no-link"]);
        (
            dir,
            outs.iter()
                .map(|o| o.trim_end_matches("/oci").to_string())
                .collect(),
        )
    })
}

/// Push the runtime closures of nginx-prod's package and images to `cache`.
fn push(cache: &str, sk: &Path) {
    let (_, outs) = built();
    let mut args = vec!["push", cache];
    args.extend(outs.iter().map(String::as_str));
    args.extend(["--secret-key-file", sk.to_str().unwrap()]);
    ok(buildit(&shared_root(), &args));
}

/// `buildit build` of the spec in a fresh root from `cache` trusting `key`.
fn build_from(root: &Path, cache: &str, key: &str, extra: &[&str]) -> std::process::Output {
    let (dir, _) = built();
    ok(buildit(root, &["lock", dir.to_str().unwrap()]));
    let mut args = vec![
        "build",
        dir.to_str().unwrap(),
        "--no-link",
        "--cache",
        cache,
        "--trusted-public-key",
        key,
    ];
    args.extend_from_slice(extra);
    buildit(root, &args)
        .env("BUILDIT_HTTP_TIMEOUT", "3")
        .output()
        .unwrap()
}

fn show(o: &std::process::Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn image_id(root: &Path, aci_out: &str) -> String {
    let p = root
        .join("store")
        .join(aci_out.trim_start_matches("/store/"))
        .join("image-id");
    fs::read_to_string(p).unwrap()
}

#[test]
fn a_fresh_root_builds_nothing_with_a_file_cache() {
    let t = tempfile::tempdir().unwrap();
    let (sk, pk) = signing_key(t.path(), "test-cache-1");
    let cache = format!("file://{}", t.path().join("cache").display());
    push(&cache, &sk);
    let root = t.path().join("fresh");
    let out = build_from(&root, &cache, &pk, &["--offline"]);
    let all = show(&out);
    assert!(out.status.success(), "{all}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Found ") && err.contains(&format!("in {cache}")),
        "{all}"
    );
    assert!(err.contains("0 built, "), "no build at all: {all}");
    assert!(err.contains(" downloaded"), "{all}");
    let (_, outs) = built();
    assert_eq!(
        image_id(&root, &outs[1]),
        image_id(&shared_root(), &outs[1])
    );
    ok(buildit(&root, &["store", "verify", "--check-contents"]));
    // Pushing again uploads nothing.
    let again = buildit(
        &shared_root(),
        &[
            "push",
            &cache,
            &outs[0],
            "--secret-key-file",
            sk.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("0 paths uploaded"),
        "{}",
        show(&again)
    );
}

/// `python3 -m http.server` on a free loopback port, serving `dir`.
struct HttpServer {
    child: Child,
    port: u16,
}

impl HttpServer {
    fn start(dir: &Path) -> HttpServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        HttpServer { child, port }
    }
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_fresh_root_builds_nothing_with_an_http_cache() {
    let t = tempfile::tempdir().unwrap();
    let (sk, pk) = signing_key(t.path(), "test-cache-2");
    let dir = t.path().join("cache");
    push(&format!("file://{}", dir.display()), &sk);
    let server = HttpServer::start(&dir);
    let root = t.path().join("fresh");
    let out = build_from(&root, &server.url(), &pk, &[]);
    let all = show(&out);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stderr).contains("0 built, "),
        "{all}"
    );
    let (_, outs) = built();
    assert_eq!(
        image_id(&root, &outs[1]),
        image_id(&shared_root(), &outs[1])
    );
}

/// A Nix 2.8 with a private store whose logical dir is /store.
fn nix(dir: &Path) -> impl Fn(&[&str]) -> std::process::Output + '_ {
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::create_dir_all(dir.join("home")).unwrap();
    let store = format!("local?root={}&store=/store", dir.join("root").display());
    fs::write(
        dir.join("etc/nix.conf"),
        format!("store = {store}\nexperimental-features = nix-command\nsandbox = false\nsubstituters =\nbuild-users-group =\n"),
    )
    .unwrap();
    move |args: &[&str]| {
        Command::new("nix")
            .args(args)
            .env("NIX_CONF_DIR", dir.join("etc"))
            .env("HOME", dir.join("home"))
            .env("NIX_REMOTE", &store)
            .env_remove("NIX_PATH")
            .output()
            .expect("nix (nix-bin)")
    }
}

#[test]
fn nix_reads_a_buildit_cache_and_buildit_reads_a_nix_cache() {
    if common::skip::require_tool("nix", "scripts/test.sh installs nix-bin").is_none() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (sk, pk) = signing_key(t.path(), "test-cache-3");
    let ours = t.path().join("ours");
    push(&format!("file://{}", ours.display()), &sk);
    let (_, outs) = built();
    let nginx = &outs[0];
    let nix_dir = t.path().join("nix");
    let nix = nix(&nix_dir);
    let from = format!("file://{}?store=/store", ours.display());
    // Nix checks our signatures: an untrusted key is refused, ours accepted.
    let refused = nix(&[
        "copy",
        "--from",
        &from,
        "--trusted-public-keys",
        "other-1:WZPRaxO7wnahiz1e5FHbt7Zcnt0AlDnkwWAFL9B04D4=",
        nginx,
    ]);
    assert!(!refused.status.success(), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("lacks a valid signature"),
        "{refused:?}"
    );
    let copied = nix(&["copy", "--from", &from, "--trusted-public-keys", &pk, nginx]);
    assert!(copied.status.success(), "{copied:?}");
    let info = nix(&["path-info", "--json", nginx]);
    let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(
        v[0]["narHash"],
        nar_hash(&shared_root(), nginx),
        "Nix agrees on the NAR hash"
    );

    // Nix writes a cache (xz) and signs it with a key of its own; buildit takes
    // nginx's closure from it.
    let theirs = t.path().join("theirs");
    let to = format!("file://{}?store=/store&compression=xz", theirs.display());
    let pushed = nix(&["copy", "--to", &to, nginx]);
    assert!(pushed.status.success(), "{pushed:?}");
    let nix_sk = nix(&["key", "generate-secret", "--key-name", "nix-made-1"]);
    fs::write(t.path().join("nix.sec"), &nix_sk.stdout).unwrap();
    let mut conv = Command::new("nix")
        .args(["key", "convert-secret-to-public"])
        .env("NIX_CONF_DIR", t.path().join("nix/etc"))
        .env("HOME", t.path().join("nix/home"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    conv.stdin
        .take()
        .unwrap()
        .write_all(&nix_sk.stdout)
        .unwrap();
    let nix_pk = String::from_utf8(conv.wait_with_output().unwrap().stdout).unwrap();
    let signed = nix(&[
        "store",
        "sign",
        "-r",
        "-k",
        t.path().join("nix.sec").to_str().unwrap(),
        "--store",
        &format!("file://{}?store=/store", theirs.display()),
        nginx,
    ]);
    assert!(signed.status.success(), "{signed:?}");
    let root = t.path().join("fresh");
    let out = build_from(
        &root,
        &format!("file://{}", theirs.display()),
        nix_pk.trim(),
        &["--offline", "--format", "aci"],
    );
    let all = show(&out);
    assert!(out.status.success(), "{all}");
    // nginx came from Nix's cache; only the image was built here.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 built, "),
        "{all}"
    );
    assert_eq!(nar_hash(&root, nginx), nar_hash(&shared_root(), nginx));
    assert_eq!(
        image_id(&root, &outs[1]),
        image_id(&shared_root(), &outs[1])
    );
}

/// A copy of a pushed cache with `damage` applied to nginx's entry.
fn damaged(t: &Path, name: &str, sk: &Path, damage: impl FnOnce(&Path, &str)) -> PathBuf {
    let dir = t.join(name);
    push(&format!("file://{}", dir.display()), sk);
    let (_, outs) = built();
    let hash = outs[0]
        .trim_start_matches("/store/")
        .split('-')
        .next()
        .unwrap()
        .to_string();
    damage(&dir, &hash);
    dir
}

fn nar_of(dir: &Path, hash: &str) -> PathBuf {
    let info = fs::read_to_string(dir.join(format!("{hash}.narinfo"))).unwrap();
    let url = info.lines().find_map(|l| l.strip_prefix("URL: ")).unwrap();
    dir.join(url)
}

#[test]
fn a_bad_cache_entry_is_refused_with_its_reason_and_never_registered() {
    let t = tempfile::tempdir().unwrap();
    let (sk, pk) = signing_key(t.path(), "test-cache-4");
    let (_, other_pk) = signing_key(t.path(), "someone-else-1");
    let (_, outs) = built();
    let nginx = outs[0].clone();
    let cases: Vec<(&str, PathBuf, String, &str)> = vec![
        (
            "a flipped byte",
            damaged(t.path(), "flipped", &sk, |d, h| {
                let nar = nar_of(d, h);
                let mut b = fs::read(&nar).unwrap();
                let i = b.len() / 2;
                b[i] ^= 0x55;
                fs::write(&nar, b).unwrap();
            }),
            pk.clone(),
            "",
        ),
        (
            "a truncated NAR",
            damaged(t.path(), "truncated", &sk, |d, h| {
                let nar = nar_of(d, h);
                let b = fs::read(&nar).unwrap();
                fs::write(&nar, &b[..b.len() / 3]).unwrap();
            }),
            pk.clone(),
            "",
        ),
        (
            "no signature",
            damaged(t.path(), "unsigned", &sk, |d, h| {
                let p = d.join(format!("{h}.narinfo"));
                let text: String = fs::read_to_string(&p)
                    .unwrap()
                    .lines()
                    .filter(|l| !l.starts_with("Sig:"))
                    .map(|l| format!("{l}\n"))
                    .collect();
                fs::write(p, text).unwrap();
            }),
            pk.clone(),
            "not signed",
        ),
        (
            "a wrong signature",
            damaged(t.path(), "forged", &sk, |d, h| {
                let p = d.join(format!("{h}.narinfo"));
                let text = fs::read_to_string(&p)
                    .unwrap()
                    .replace("NarSize: ", "NarSize: 1");
                fs::write(p, text).unwrap();
            }),
            pk.clone(),
            "no valid signature",
        ),
        (
            "an untrusted key",
            damaged(t.path(), "untrusted", &sk, |_, _| {}),
            other_pk.clone(),
            "no valid signature",
        ),
    ];
    for (what, dir, trusted, reason) in cases {
        let root = t.path().join(format!("root-{}", what.replace(' ', "-")));
        // The cache holds runtime closures only, so once nginx's entry is refused
        // the offline fallback build cannot fetch its sources: the run fails after
        // saying why the entry was refused, which is what is checked here.
        let out = build_from(
            &root,
            &format!("file://{}", dir.display()),
            &trusted,
            &["--offline", "--format", "aci"],
        );
        let all = show(&out);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("not from a cache: "),
            "{what}: the reason is given\n{all}"
        );
        assert!(err.contains(reason), "{what}: {reason}\n{all}");
        assert!(
            err.lines().any(|l| l.starts_with("not from a cache: ")
                && l.contains(nginx.trim_start_matches("/store/"))),
            "{what}: the refused path is named\n{all}"
        );
        let valid = buildit(&root, &["store", "path-info", &nginx])
            .output()
            .unwrap();
        assert!(
            !valid.status.success(),
            "{what}: nginx must not be registered\n{all}"
        );
        ok(buildit(&root, &["store", "verify", "--check-contents"]));
    }
}

/// A TCP server that accepts and then says nothing.
fn silent_server() -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().take(64) {
            match s {
                Ok(s) => held.push(s),
                Err(_) => break,
            }
        }
    });
    (port, h)
}

#[test]
fn a_cache_that_hangs_or_refuses_is_skipped_and_the_build_goes_on() {
    let t = tempfile::tempdir().unwrap();
    let (sk, pk) = signing_key(t.path(), "test-cache-5");
    let good = t.path().join("good");
    push(&format!("file://{}", good.display()), &sk);
    let (port, _h) = silent_server();
    let refused = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let root = t.path().join("fresh");
    let (dir, _) = built();
    ok(buildit(&root, &["lock", dir.to_str().unwrap()]));
    let started = std::time::Instant::now();
    let out = buildit(
        &root,
        &[
            "build",
            dir.to_str().unwrap(),
            "--no-link",
            "--cache",
            &format!("http://127.0.0.1:{port}"),
            "--cache",
            &format!("http://127.0.0.1:{refused}"),
            "--cache",
            &format!("file://{}", good.display()),
            "--trusted-public-key",
            &pk,
        ],
    )
    .env("BUILDIT_HTTP_TIMEOUT", "2")
    .output()
    .unwrap();
    let all = show(&out);
    assert!(out.status.success(), "{all}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("0 built, "), "{all}");
    assert!(
        err.contains(&format!("127.0.0.1:{port}")),
        "the hanging cache is named: {all}"
    );
    assert!(started.elapsed() < Duration::from_secs(120), "{all}");
}

#[test]
fn a_push_killed_half_way_leaves_a_consistent_cache() {
    let t = tempfile::tempdir().unwrap();
    let (sk, pk) = signing_key(t.path(), "test-cache-6");
    let cache = t.path().join("cache");
    let (dir, _) = built();
    // The whole spec (sources, .debs, build root…): hundreds of paths, so the kill
    // lands in the middle.
    let mut child = buildit(
        &shared_root(),
        &[
            "push",
            &format!("file://{}", cache.display()),
            dir.to_str().unwrap(),
            "--secret-key-file",
            sk.to_str().unwrap(),
        ],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = 0;
    while let Some(Ok(l)) = lines.next() {
        if l.starts_with("uploading ") {
            seen += 1;
            if seen == 40 {
                break;
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Every narinfo names a NAR that is there, whole.
    let mut narinfos = 0;
    for e in fs::read_dir(&cache).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(h) = name.strip_suffix(".narinfo") {
            narinfos += 1;
            let nar = nar_of(&cache, h);
            let info = fs::read_to_string(e.path()).unwrap();
            let size: u64 = info
                .lines()
                .find_map(|l| l.strip_prefix("FileSize: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(fs::metadata(&nar).unwrap().len(), size, "{name}");
        }
    }
    assert!(narinfos >= 30, "{narinfos}");
    // A reader takes what is there; a second push completes the cache.
    let mut b = Vec::new();
    fs::File::open(cache.join("nix-cache-info"))
        .unwrap()
        .read_to_end(&mut b)
        .unwrap();
    assert!(String::from_utf8_lossy(&b).contains("StoreDir: /store"));
    ok(buildit(
        &shared_root(),
        &[
            "push",
            &format!("file://{}", cache.display()),
            dir.to_str().unwrap(),
            "--secret-key-file",
            sk.to_str().unwrap(),
        ],
    ));
    let root = t.path().join("fresh");
    let out = build_from(
        &root,
        &format!("file://{}", cache.display()),
        &pk,
        &["--offline"],
    );
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stderr).contains("0 built, "),
        "{}",
        show(&out)
    );
}

/// moto's S3 server on a free loopback port with one bucket; killed on drop.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    /// A running moto, or `None` after `skip` says why (a failure under CI).
    fn start(bucket: &str) -> Option<Moto> {
        let exe = common::skip::tools_dir().join("venv/bin/moto_server");
        if !exe.is_file() {
            common::skip::skip("moto_server is not installed (scripts/cache-tools.sh installs it)");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&exe)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..600 {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                // moto creates a bucket on an unsigned PUT.
                write!(s, "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
                let mut reply = String::new();
                let _ = s.read_to_string(&mut reply);
                assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
                return Some(moto);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("moto_server did not start");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_fresh_root_builds_nothing_with_an_s3_cache() {
    let Some(moto) = Moto::start("buildit-cache") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let (sk, pk) = signing_key(t.path(), "test-cache-7");
    let cache = format!(
        "s3://buildit-cache/nginx-prod?endpoint={}&region=us-east-1",
        moto.endpoint
    );
    let (dir, outs) = built();
    let mut args = vec!["push", cache.as_str()];
    args.extend(outs.iter().map(String::as_str));
    args.extend(["--secret-key-file", sk.to_str().unwrap()]);
    let creds = |c: &mut Command| {
        c.env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing");
    };
    let mut push = buildit(&shared_root(), &args);
    creds(&mut push);
    ok(push);
    let root = t.path().join("fresh");
    ok(buildit(&root, &["lock", dir.to_str().unwrap()]));
    let mut build = buildit(
        &root,
        &[
            "build",
            dir.to_str().unwrap(),
            "--no-link",
            "--cache",
            &cache,
            "--trusted-public-key",
            &pk,
        ],
    );
    creds(&mut build);
    let out = build.output().unwrap();
    let all = show(&out);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stderr).contains("0 built, "),
        "{all}"
    );
    assert_eq!(
        image_id(&root, &outs[1]),
        image_id(&shared_root(), &outs[1])
    );
}

/// Push nginx-prod's runtime closures to `cache`, then build the spec in a fresh
/// root from it: nothing may be built, and the image is the same.
fn round_trip(cache: &str, what: &str) {
    let t = tempfile::tempdir().unwrap();
    let (sk, pk) = signing_key(t.path(), &format!("test-{what}-1"));
    push(cache, &sk);
    let root = t.path().join("fresh");
    let out = build_from(&root, cache, &pk, &[]);
    let all = show(&out);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stderr).contains("0 built, "),
        "{what}: {all}"
    );
    let (_, outs) = built();
    assert_eq!(
        image_id(&root, &outs[1]),
        image_id(&shared_root(), &outs[1]),
        "{what}"
    );
}

#[test]
fn a_fresh_root_builds_nothing_with_an_ssh_cache() {
    let Some(sshd) = common::sshd::Sshd::start() else {
        return;
    };
    round_trip(&sshd.url(), "ssh");
    assert!(
        sshd.cache_dir().join("nix-cache-info").is_file(),
        "{}",
        sshd.log()
    );
}

#[test]
fn a_fresh_root_builds_nothing_with_an_oci_registry_cache() {
    let Some(registry) = common::images::Registry::require() else {
        return;
    };
    round_trip(&format!("oci://{}/buildit/cache", registry.addr()), "oci");
}

#[test]
fn the_seeds_discover_and_push_flow() {
    let t = tempfile::tempdir().unwrap();
    let (sk, pk) = signing_key(t.path(), "sysadmin42-1");
    let cache = t.path().join("cache");
    push(&format!("file://{}", cache.display()), &sk);
    // A certificate for 127.0.0.1, trusted through SSL_CERT_FILE.
    let tls = t.path().join("tls");
    make_cert(&tls);
    let www = t.path().join("www");
    fs::create_dir_all(www.join("containers")).unwrap();
    let server = HttpsServer::start(&www, &tls);
    let port = server.port;
    // The appc discovery page: where the cache is and which key signs it.
    fs::write(
        www.join("containers/index.html"),
        format!(
            "<html><head>\n<meta name=\"ac-discovery\" content=\"127.0.0.1 file://{}/{{name}}-{{version}}.{{ext}}\">\n\
             <meta name=\"ac-discovery-pubkeys\" content=\"127.0.0.1 https://127.0.0.1:{port}/keys.txt\">\n</head></html>\n",
            cache.display()
        ),
    )
    .unwrap();
    fs::write(www.join("keys.txt"), format!("{pk}\n")).unwrap();
    // The seed's config: a repository to upload to after the build.
    let (dir, _) = built();
    let spec = t.path().join("nginx-prod");
    copy_spec(
        dir.strip_prefix(repo())
            .map(|p| p.to_str().unwrap())
            .unwrap_or("samples/nginx-prod"),
        &spec,
    );
    let upload = t.path().join("upload");
    write_files(
        &spec,
        &[(
            ".buildit-config.yaml",
            &format!(
                "repository:\n  name: mysuperbinhost\n  upload-type: file\n  upload-path: {}\n  download-type: file\n  download-path: {}\nsecret-key-file: {}\n",
                upload.display(),
                upload.display(),
                sk.display()
            ),
        )],
    );
    let root = t.path().join("fresh");
    ok(buildit(&root, &["lock", spec.to_str().unwrap()]));
    let out = buildit(
        &root,
        &[
            spec.to_str().unwrap(),
            &format!("--discover=127.0.0.1:{port}/containers,push=True"),
            "--no-link",
        ],
    )
    .env("SSL_CERT_FILE", tls.join("cert.pem"))
    .output()
    .unwrap();
    drop(server);
    let all = show(&out);
    assert!(out.status.success(), "{all}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Building Sysadmin42/nginx-production-1.22.1-p1"),
        "{all}"
    );
    assert!(
        err.contains(&format!("in file://{}.", cache.display())),
        "found through discovery: {all}"
    );
    assert!(err.contains("0 built, "), "{all}");
    assert!(
        err.contains("Uploading packages to 'mysuperbinhost'") && err.contains("[OK]"),
        "{all}"
    );
    assert!(upload.join("nix-cache-info").is_file());
    let narinfos = fs::read_dir(&upload)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".narinfo"))
        .count();
    assert!(narinfos >= 10, "{narinfos}");
}

/// Benchmark (bench/cache.sh runs it): looking up 1,000 paths a loopback HTTP cache
/// does not have, 16 at a time as the substituter does (goal: under 1 s).
#[test]
#[ignore]
fn bench_lookup_1000_missing_paths() {
    let t = tempfile::tempdir().unwrap();
    fs::write(t.path().join("nix-cache-info"), "StoreDir: /store\n").unwrap();
    let server = HttpServer::start(t.path());
    let cache = buildit::cache::BinaryCache::new(
        buildit::cache::open(&server.url()).unwrap(),
        0,
        Default::default(),
    );
    let paths: Vec<buildit_store::StorePath> = (0..1000u32)
        .map(|i| {
            let h = buildit_store::Hash::sha256(&i.to_le_bytes());
            let part =
                buildit_store::nix32::encode(&buildit_store::nix32::compress_hash(h.digest(), 20));
            format!("/store/{part}-missing-{i}").parse().unwrap()
        })
        .collect();
    let start = std::time::Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(p) = paths.get(i) else { break };
                assert!(cache.narinfo(p).unwrap().is_none());
            });
        }
    });
    println!("looked up 1000 missing paths in {:?}", start.elapsed());
}
