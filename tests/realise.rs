//! Building real packages from upstream source, end to end through the binary:
//! GNU hello and zlib built in two store roots with identical bytes; the seed's
//! nginx-prod built with its patch and options, then run in a sandbox where it
//! refuses plain HTTP and serves HTTPS on loopback.
//!
//! The store root with the C build root and the tarballs are shared with the other
//! tests that build (see `common::build`).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use buildit::sandbox::{run, SandboxSpec};
use buildit_store::{LocalStore, StorePath};
use common::build::*;

fn physical(root: &Path, logical: &str) -> PathBuf {
    root.join("store")
        .join(logical.trim_start_matches("/store/"))
}

#[test]
fn hello_and_zlib_are_bit_for_bit_the_same_in_two_store_roots() {
    let t = tempfile::tempdir().unwrap();
    let spec = t.path().join("spec");
    write_files(&spec, &[("container.yaml", HELLO_AND_ZLIB)]);
    let shared = shared_root();
    let fresh = t.path().join("fresh-root");

    let link = t.path().join("result");
    let a = lock_and_build(&shared, &spec, &["-o", link.to_str().unwrap()]);
    let b = lock_and_build(&fresh, &spec, &["--no-link"]);
    assert_eq!(a.len(), 2, "{a:?}");
    assert_eq!(a, b, "same spec, same output paths");
    for out in &a {
        assert_eq!(
            nar_hash(&shared, out),
            nar_hash(&fresh, out),
            "{out} differs between the two store roots"
        );
    }
    let hello = a.iter().find(|p| p.ends_with("-hello-2.10")).unwrap();
    let zlib = a.iter().find(|p| p.ends_with("-zlib-1.2.13")).unwrap();

    // hello greets; the links are GC roots; zlib has its library and headers.
    let greeting = std::process::Command::new(link.join("usr/bin/hello"))
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&greeting.stdout), "Hello, world!\n");
    assert_eq!(
        fs::canonicalize(&link).unwrap(),
        fs::canonicalize(physical(&shared, hello)).unwrap()
    );
    let roots = ok(buildit(&shared, &["store", "roots"]));
    assert!(roots.contains(hello) && roots.contains(zlib), "{roots}");
    let z = physical(&fresh, zlib);
    assert!(z.join("usr/include/zlib.h").is_file());
    assert!(z.join("usr/lib/libz.so.1.2.13").is_file());

    // hello's references: its runtime dependencies, found or declared.
    let info = ok(buildit(&shared, &["store", "path-info", "--json", hello]));
    assert!(info.contains("-libc6-"), "{info}");

    // Nothing left to do the second time, and the check rebuild agrees.
    let again = buildit(&shared, &["build", spec.to_str().unwrap(), "--no-link"])
        .output()
        .unwrap();
    assert!(again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("0 built"), "{err}");

    let drv = info_field(&shared, hello, "deriver");
    let log = ok(buildit(&shared, &["log", &drv]));
    assert!(log.contains("=== buildit: configure phase"), "{log}");
    assert!(log.contains("checking for gcc"), "{log}");
    let check = ok(buildit(&fresh, &["realise", "--check", &drv]));
    assert!(check.contains("reproducible"), "{check}");

    for root in [&shared, &fresh] {
        ok(buildit(root, &["store", "verify", "--check-contents"]));
    }
}

fn info_field(root: &Path, path: &str, field: &str) -> String {
    let out = ok(buildit(root, &["store", "path-info", "--json", path]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0][field].as_str().unwrap().to_string()
}

#[test]
fn nginx_prod_builds_and_serves_https_only() {
    let t = tempfile::tempdir().unwrap();
    let spec = t.path().join("nginx-prod");
    copy_spec("samples/nginx-prod", &spec);
    let root = shared_root();
    let outs = lock_and_build(&root, &spec, &["--no-link"]);
    // The package, then the sample's two images.
    assert_eq!(outs.len(), 3, "{outs:?}");
    let nginx: StorePath = StorePath::from_absolute(&outs[0]).unwrap();
    assert!(nginx.name().starts_with("nginx-1.22.1"));

    let store = LocalStore::open(&root).unwrap();
    let info = store.require_info(&nginx).unwrap();
    let refs: Vec<&str> = info.references.iter().map(|r| r.name()).collect();
    for dep in ["libssl3", "libpcre2-8-0", "zlib1g", "libc6"] {
        assert!(
            refs.iter().any(|r| r.starts_with(dep)),
            "{dep} is a runtime dependency: {refs:?}"
        );
    }
    // The build saw the patch and the options.
    let drv = store
        .read_derivation(info.deriver.as_ref().unwrap())
        .unwrap();
    assert!(drv.env["patches"].contains("https-only.patch"));
    assert!(drv.env["configureFlags"].contains("--with-http_ssl_module"));
    assert!(drv.env["configureFlags"].contains("--with-http_v2_module"));

    // Run it: the build root for a shell and libraries, the output on top, the
    // sample config moved to unprivileged ports.
    let build_root = drv.env["buildRoot"].split_whitespace().next().unwrap();
    let build_root = StorePath::from_absolute(build_root).unwrap();
    let work = t.path().join("work");
    fs::create_dir(&work).unwrap();
    let conf = fs::read_to_string(spec.join("files/nginx.conf"))
        .unwrap()
        .replace("user nobody nogroup;", "")
        .replace("pid /run/nginx.pid;", "pid /build/nginx.pid;")
        .replace("listen 443 ssl http2;", "listen 127.0.0.1:8443 ssl http2;")
        .replace("listen 80;", "listen 127.0.0.1:8080;")
        .replace("/etc/nginx/tls/", "/build/");
    fs::write(work.join("nginx.conf"), conf).unwrap();
    fs::copy(
        store.physical_path(&nginx).join("etc/nginx/mime.types"),
        work.join("mime.types"),
    )
    .unwrap();
    let openssl = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(work.join("key.pem"))
        .arg("-out")
        .arg(work.join("cert.pem"))
        .output()
        .expect("openssl (the test command installs it)");
    assert!(openssl.status.success(), "{openssl:?}");
    // The client for HTTPS: the host's openssl (Debian 12, like the build root).
    fs::copy("/usr/bin/openssl", work.join("openssl")).unwrap();

    let script = r#"
        /usr/sbin/nginx -c /build/nginx.conf -p /build/ -e stderr -g 'daemon off;' &
        for i in $(seq 100); do
            (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && break
            sleep 0.1
        done
        exec 3<>/dev/tcp/127.0.0.1/8080
        printf 'GET / HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
        echo "--- plain:"; cat <&3
        echo "--- tls:"
        printf 'GET / HTTP/1.0\r\nHost: localhost\r\n\r\n' |
            /build/openssl s_client -quiet -connect 127.0.0.1:8443 2>/dev/null
        echo "--- end"
    "#;
    let mut s = SandboxSpec::new(["/bin/bash", "-c", script]);
    s.root_layers = vec![
        store.physical_path(&build_root),
        store.physical_path(&nginx),
    ];
    s.writable = vec![(work.clone(), "/build".into())];
    s.env = vec![("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into())];
    s.cwd = "/build".into();
    s.timeout = Some(Duration::from_secs(60));
    let log = t.path().join("run.log");
    s.log = Some(fs::File::create(&log).unwrap());
    let outcome = run(&s).unwrap();
    let out = fs::read_to_string(&log).unwrap();
    assert!(outcome.status.success(), "{outcome:?}\n{out}");
    let plain = out
        .split("--- plain:")
        .nth(1)
        .unwrap()
        .split("--- tls:")
        .next()
        .unwrap();
    let tls = out
        .split("--- tls:")
        .nth(1)
        .unwrap()
        .split("--- end")
        .next()
        .unwrap();
    // nginx's access log (on /dev/stdout) shares the output with the response.
    assert!(plain.contains("\nHTTP/1.1 403 Forbidden"), "{out}");
    assert!(!plain.contains("hello from nginx-prod"), "{out}");
    assert!(tls.contains("HTTP/1.1 200 OK"), "{out}");
    assert!(tls.contains("hello from nginx-prod"), "{out}");
}

/// A recipe repository of one quick package whose build sleeps, in `dir`.
fn sleepy_spec(dir: &Path, version: &str, seconds: u32) {
    let recipe = format!(
        "name: sleepy\nversion: \"{version}\"\ndescription: sleeps, then installs one file\n\
         sources:\n  - url: https://ftp.gnu.org/gnu/hello/hello-2.10.tar.gz\n    \
         sha256: 31e066137a962676e89f69d1b65382de95a7ef7d914b8cb956f41ea72e0f516b\n\
         build-root: debian-12-c\nbuild-depends: []\nruntime-depends: []\noptions: {{}}\n\
         phases:\n  configure: ':'\n  build: |\n    echo sleepy-build-ran\n    sleep {seconds}\n  \
         install: |\n    mkdir -p $out/usr/share/sleepy\n    echo {version} > $out/usr/share/sleepy/v\n"
    );
    write_files(
        dir,
        &[
            (".buildit-config.yaml", "recipe-paths: [recipes]\n"),
            (
                &format!("recipes/test/sleepy/sleepy-{version}.yaml"),
                &recipe,
            ),
            (
                "container.yaml",
                &format!(
                    "- vars:\n    name: sleepy\n- package:\n    recipe: test/sleepy-{version}\n"
                ),
            ),
        ],
    );
}

#[test]
fn two_processes_build_one_path_once() {
    let t = tempfile::tempdir().unwrap();
    let spec = t.path().join("spec");
    // Unique per run, so that the build really happens.
    let version = format!("1.{}", std::process::id());
    sleepy_spec(&spec, &version, 3);
    let root = shared_root();
    ok(buildit(&root, &["lock", spec.to_str().unwrap()]));
    let start = |n: u32| {
        build_cmd(&root, &spec, &["-L", "--no-link"])
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .env("N", n.to_string())
            .spawn()
            .unwrap()
    };
    let (a, b) = (start(1), start(2));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success());
    assert_eq!(a.stdout, b.stdout, "both name the same output");
    let ran = [&a, &b]
        .iter()
        .filter(|o| String::from_utf8_lossy(&o.stderr).contains("> sleepy-build-ran"))
        .count();
    assert_eq!(
        ran,
        1,
        "exactly one process ran the build:\n--- a:\n{}\n--- b:\n{}",
        String::from_utf8_lossy(&a.stderr),
        String::from_utf8_lossy(&b.stderr)
    );
}

#[test]
fn an_interrupt_stops_the_build_and_leaves_the_store_clean() {
    let t = tempfile::tempdir().unwrap();
    let spec = t.path().join("spec");
    let version = format!("2.{}", std::process::id());
    sleepy_spec(&spec, &version, 60);
    let root = shared_root();
    ok(buildit(&root, &["lock", spec.to_str().unwrap()]));
    let mut child = build_cmd(&root, &spec, &["-L", "--no-link"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the build to print its first line, then interrupt buildit alone.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(n > 0, "buildit ended before the build started:\n{seen}");
        seen.push_str(&line);
        if line.contains("> sleepy-build-ran") {
            break;
        }
    }
    let started = std::time::Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}{rest}");
    assert!(rest.contains("interrupted"), "{rest}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "stopped promptly"
    );
    // The sandbox went down with the build: no `sleep 60` is left.
    std::thread::sleep(Duration::from_millis(300));
    let sleepers = fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| c.as_slice() == b"sleep\x0060\x00")
        .count();
    assert_eq!(sleepers, 0, "a build process survived the interrupt");
    ok(buildit(&root, &["store", "verify", "--check-contents"]));
    let out = ok(buildit(&root, &["eval", spec.to_str().unwrap(), "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let path = v["packages"][0]["out"].as_str().unwrap();
    assert!(
        !buildit(&root, &["store", "path-info", path])
            .output()
            .unwrap()
            .status
            .success(),
        "{path} must not be valid"
    );
}

#[test]
fn the_config_feeds_sources_from_source_dirs_and_mirrors_on_disk() {
    let t = tempfile::tempdir().unwrap();
    let version = format!("3.{}", std::process::id());
    // A mirror on disk holding the tarball under its upstream name, and a source dir
    // holding it under Debian's name: each spec finds it through its config alone.
    let mirror = t.path().join("mirror/gnu/hello");
    fs::create_dir_all(&mirror).unwrap();
    fs::copy(
        sources().join("hello_2.10.orig.tar.gz"),
        mirror.join("hello-2.10.tar.gz"),
    )
    .unwrap();
    let recipe = |url: &str| {
        format!(
            "name: fed\nversion: \"{version}\"\ndescription: sources from the config\n\
             sources:\n  - url: {url}\n    \
             sha256: 31e066137a962676e89f69d1b65382de95a7ef7d914b8cb956f41ea72e0f516b\n\
             build-root: debian-12-c\nbuild-depends: []\nruntime-depends: []\noptions: {{}}\n\
             phases:\n  configure: ':'\n  build: ':'\n  install: |\n    \
             mkdir -p $out/usr/share/fed && cp README $out/usr/share/fed/\n"
        )
    };
    let container = format!("- vars:\n    name: fed\n- package:\n    recipe: test/fed-{version}\n");
    let by_dir = t.path().join("by-dir");
    write_files(
        &by_dir,
        &[
            (
                ".buildit-config.yaml",
                &format!(
                    "recipe-paths: [recipes]\nsource-dirs: [{}]\n",
                    sources().display()
                ),
            ),
            (
                &format!("recipes/test/fed/fed-{version}.yaml"),
                &recipe("https://ftp.gnu.org/gnu/hello/hello-2.10.tar.gz"),
            ),
            ("container.yaml", &container),
        ],
    );
    let by_mirror = t.path().join("by-mirror");
    write_files(
        &by_mirror,
        &[
            (
                ".buildit-config.yaml",
                &format!(
                    "recipe-paths: [recipes]\nmirrors:\n  gnu: [file://{}]\n",
                    t.path().join("mirror/gnu").display()
                ),
            ),
            (
                &format!("recipes/test/fed/fed-{version}.yaml"),
                &recipe("mirror://gnu/hello/hello-2.10.tar.gz"),
            ),
            ("container.yaml", &container),
        ],
    );
    // Each in a fresh root, realising only the source's fixed-output derivation (no
    // build root needed): offline, so the config is the only way to the tarball.
    for (spec, what) in [(&by_dir, "source-dirs"), (&by_mirror, "mirrors")] {
        let root = t.path().join(format!("root-{what}"));
        ok(buildit(&root, &["lock", spec.to_str().unwrap()]));
        let out = ok(buildit(&root, &["eval", spec.to_str().unwrap(), "--json"]));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let drv = StorePath::from_absolute(v["packages"][0]["drv"].as_str().unwrap()).unwrap();
        let store = LocalStore::open(&root).unwrap();
        let d = store.read_derivation(&drv).unwrap();
        let src = StorePath::from_absolute(&d.env["src"]).unwrap();
        let fetch = d
            .input_drvs
            .keys()
            .find(|i| {
                let f = store.read_derivation(i).unwrap();
                f.outputs["out"].path() == Some(&src)
            })
            .unwrap();
        assert!(!store.is_valid(&src).unwrap());
        // Run where the config applies, as a user in the spec directory would.
        let out = buildit(
            &root,
            &["realise", &fetch.to_absolute(), "--offline", "--no-link"],
        )
        .current_dir(spec)
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(store.is_valid(&src).unwrap(), "{what}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            src.to_absolute(),
            "{what}"
        );
    }
}
