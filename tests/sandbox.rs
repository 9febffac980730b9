//! The rootless build sandbox, run as root and as an ordinary user.
//!
//! Programs come from the host's `/usr`, bound read-only at `/usr` over a
//! small root layer holding merged-usr symlinks (`/bin -> usr/bin`, …).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use buildit::sandbox::{run, Outcome, SandboxError, SandboxSpec};

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("layer");
        fs::create_dir(&layer).unwrap();
        for (link, target) in [
            ("bin", "usr/bin"),
            ("sbin", "usr/sbin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
        ] {
            std::os::unix::fs::symlink(target, layer.join(link)).unwrap();
        }
        fs::create_dir(layer.join("etc")).unwrap();
        fs::write(layer.join("etc/layer-marker"), "from the layer\n").unwrap();
        fs::create_dir(dir.path().join("build")).unwrap();
        Fixture { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn spec(&self, argv: &[&str]) -> SandboxSpec {
        let mut s = SandboxSpec::new(argv.iter().copied());
        s.root_layers = vec![self.path("layer")];
        s.read_only = vec![("/usr".into(), "/usr".into())];
        s.writable = vec![(self.path("build"), "/build".into())];
        s.env = vec![
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("HOME".into(), "/homeless-shelter".into()),
        ];
        s.cwd = "/build".into();
        s.timeout = Some(Duration::from_secs(60));
        s
    }

    /// Runs `spec`, returning the outcome and the combined stdout/stderr.
    fn run(&self, mut spec: SandboxSpec) -> (Outcome, String) {
        let log = self.path("log");
        spec.log = Some(fs::File::create(&log).unwrap());
        let out = run(&spec).unwrap_or_else(|e| panic!("{:?}: {e}", spec.argv));
        (out, fs::read_to_string(&log).unwrap())
    }

    fn sh(&self, script: &str) -> (Outcome, String) {
        self.run(self.spec(&["sh", "-c", script]))
    }
}

fn code(o: &Outcome) -> Option<i32> {
    o.status.code()
}

/// Host processes whose command line is exactly `argv`.
fn processes(argv: &[&str]) -> Vec<String> {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| fs::read(e.path().join("cmdline")).ok().as_deref() == Some(&want[..]))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn exit_codes() {
    let f = Fixture::new();
    let (o, _) = f.run(f.spec(&["true"]));
    assert_eq!(code(&o), Some(0));
    assert!(!o.timed_out);
    let (o, _) = f.sh("exit 3");
    assert_eq!(code(&o), Some(3));
    let (o, _) = f.sh("kill -TERM $$");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&o.status),
        Some(15)
    );
}

#[test]
fn environment_is_exactly_the_given_one() {
    let f = Fixture::new();
    let mut spec = f.spec(&["env"]);
    spec.env.push(("FOO".into(), "bar baz".into()));
    let (o, out) = f.run(spec);
    assert_eq!(code(&o), Some(0), "{out}");
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "FOO=bar baz",
            "HOME=/homeless-shelter",
            "PATH=/usr/bin:/bin"
        ]
    );
}

#[test]
fn identity_hostname_umask_cwd() {
    let f = Fixture::new();
    let (o, out) = f.sh("id -u; id -g; uname -n; umask; pwd; grep CapEff /proc/self/status");
    assert_eq!(code(&o), Some(0), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..5], ["1000", "1000", "localhost", "0022", "/build"]);
    assert_eq!(lines[5].split_whitespace().nth(1), Some("0000000000000000"));

    // uid 0 inside still has no capabilities.
    let mut spec = f.spec(&[
        "sh",
        "-c",
        "id -u; grep CapEff /proc/self/status; mount -o remount,rw / 2>&1 || echo denied",
    ]);
    spec.uid = 0;
    spec.gid = 0;
    let (o, out) = f.run(spec);
    assert_eq!(code(&o), Some(0), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0");
    assert_eq!(lines[1].split_whitespace().nth(1), Some("0000000000000000"));
    assert_eq!(lines.last(), Some(&"denied"), "{out}");
}

#[test]
fn fresh_pid_namespace() {
    let f = Fixture::new();
    let (o, out) = f.run(f.spec(&["cat", "/proc/self/status"]));
    assert_eq!(code(&o), Some(0), "{out}");
    let field = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("{k} in {out}"))
    };
    assert_eq!(field("Pid:"), "2");
    assert_eq!(field("PPid:"), "1");
    // Only init and the command exist (the glob is expanded by sh itself).
    let (o, out) = f.sh("echo /proc/[0-9]*");
    assert_eq!(code(&o), Some(0), "{out}");
    assert_eq!(out.trim(), "/proc/1 /proc/2");
}

#[test]
fn filesystem_view() {
    let f = Fixture::new();
    let host_secret = tempfile::NamedTempFile::new().unwrap();
    let store = f.path("store-item");
    fs::create_dir(&store).unwrap();
    fs::write(store.join("data"), "stored\n").unwrap();
    let script = format!(
        "touch /x 2>/dev/null && echo root-writable; \
         touch /usr/x 2>/dev/null && echo usr-writable; \
         touch /etc/x 2>/dev/null && echo etc-writable; \
         touch /store/abc-item/x 2>/dev/null && echo store-writable; \
         test -e {secret} && echo secret-visible; \
         test -e {tmpdir} && echo host-tmpdir-visible; \
         cat /etc/layer-marker /store/abc-item/data; \
         echo out > /build/result; touch /tmp/ok && echo tmp-writable; \
         ls /dev | tr '\\n' ' '",
        secret = host_secret.path().display(),
        tmpdir = f.dir.path().display(),
    );
    let mut spec = f.spec(&["sh", "-c", &script]);
    spec.store_paths = vec![(store, "/store/abc-item".into())];
    let (o, out) = f.run(spec);
    assert_eq!(code(&o), Some(0), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..3],
        ["from the layer", "stored", "tmp-writable"],
        "{out}"
    );
    let mut dev: Vec<&str> = lines[3].split_whitespace().collect();
    dev.sort();
    assert_eq!(
        dev,
        [
            "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout",
            "tty", "urandom", "zero"
        ]
    );
    assert_eq!(fs::read_to_string(f.path("build/result")).unwrap(), "out\n");
}

#[test]
fn devices_work() {
    let f = Fixture::new();
    let (o, out) = f.sh(
        "echo x > /dev/null && head -c 4 /dev/zero | od -An -tx1 && head -c 8 /dev/urandom | wc -c \
         && echo y > /dev/shm/y && cat /dev/shm/y && python3 -c 'import os; m, s = os.openpty(); print(os.ttyname(s))'",
    );
    assert_eq!(code(&o), Some(0), "{out}");
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines, ["00 00 00 00", "8", "y", "/dev/pts/0"]);
}

const NET_PROBE: &str = r#"
import errno, socket
for addr in ("10.255.255.1", "1.1.1.1"):
    s = socket.socket()
    try:
        s.connect((addr, 9))
        print(addr, "connected")
    except OSError as e:
        print(addr, errno.errorcode[e.errno])
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen()
c = socket.create_connection(srv.getsockname())
a, _ = srv.accept()
c.sendall(b"hello")
print(a.recv(5).decode())
print(sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:]))
"#;

#[test]
fn network_is_loopback_only() {
    let f = Fixture::new();
    let start = Instant::now();
    let (o, out) = f.run(f.spec(&["python3", "-c", NET_PROBE]));
    assert_eq!(code(&o), Some(0), "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "10.255.255.1 ENETUNREACH",
            "1.1.1.1 ENETUNREACH",
            "hello",
            "['lo']"
        ]
    );
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "connect must fail immediately"
    );
}

#[test]
fn background_processes_do_not_survive() {
    let f = Fixture::new();
    let (o, out) = f.sh("sleep 987651 & (sleep 1; touch /build/marker) & echo started");
    assert_eq!(code(&o), Some(0), "{out}");
    assert_eq!(out.trim(), "started");
    assert!(
        processes(&["sleep", "987651"]).is_empty(),
        "daemon survived"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !f.path("build/marker").exists(),
        "background job kept running"
    );
}

#[test]
fn timeout_kills_everything() {
    let f = Fixture::new();
    let mut spec = f.spec(&["sh", "-c", "sleep 987652 & sleep 987653"]);
    spec.timeout = Some(Duration::from_millis(500));
    let (o, _) = f.run(spec);
    assert!(o.timed_out);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&o.status),
        Some(9)
    );
    assert!(o.elapsed < Duration::from_secs(10), "{:?}", o.elapsed);
    assert!(processes(&["sleep", "987652"]).is_empty());
    assert!(processes(&["sleep", "987653"]).is_empty());
}

#[test]
fn overlay_root_layers() {
    let f = Fixture::new();
    let top = f.path("top");
    fs::create_dir_all(top.join("etc")).unwrap();
    fs::write(top.join("etc/layer-marker"), "from the top layer\n").unwrap();
    fs::write(top.join("etc/only-top"), "top only\n").unwrap();
    let mut spec = f.spec(&["cat", "/etc/layer-marker", "/etc/only-top"]);
    spec.root_layers.push(top);
    let (o, out) = f.run(spec);
    assert_eq!(code(&o), Some(0), "{out}");
    assert_eq!(out, "from the top layer\ntop only\n");
}

#[test]
fn setup_errors_are_reported() {
    let f = Fixture::new();
    let err = run(&f.spec(&["no-such-command"])).unwrap_err();
    assert!(matches!(err, SandboxError::Setup(_)), "{err}");
    assert!(err.to_string().contains("exec no-such-command"), "{err}");
    assert!(err.to_string().contains("ENOENT"), "{err}");

    let mut spec = f.spec(&["true"]);
    spec.writable.push((f.path("build"), "/usr/new-dir".into()));
    let err = run(&spec).unwrap_err().to_string();
    assert!(
        err.contains("/usr/new-dir") && err.contains("EROFS"),
        "{err}"
    );

    let mut spec = f.spec(&["true"]);
    spec.cwd = "/nowhere".into();
    let err = run(&spec).unwrap_err().to_string();
    assert!(err.contains("chdir /nowhere"), "{err}");

    let mut spec = f.spec(&["true"]);
    spec.store_paths
        .push((f.path("build"), "/elsewhere".into()));
    assert!(matches!(run(&spec), Err(SandboxError::Spec(_))));
    let mut spec = f.spec(&["true"]);
    spec.root_layers = vec![Path::new("/nonexistent-layer").into()];
    assert!(matches!(run(&spec), Err(SandboxError::Spec(_))));
}

/// Not a test: `cargo test --test sandbox -- --ignored bench_true` spawns
/// `true` N times (env BENCH_N, default 200) and prints the mean time.
#[test]
#[ignore]
fn bench_true() {
    let f = Fixture::new();
    let n: u32 = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let start = Instant::now();
    for _ in 0..n {
        let (o, _) = f.run(f.spec(&["true"]));
        assert_eq!(code(&o), Some(0));
    }
    let sandboxed = start.elapsed() / n;
    let start = Instant::now();
    for _ in 0..n {
        assert!(std::process::Command::new("/usr/bin/true")
            .status()
            .unwrap()
            .success());
    }
    let plain = start.elapsed() / n;
    println!("sandboxed true: {sandboxed:?}/run; plain fork/exec: {plain:?}/run");
}
