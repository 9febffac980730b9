//! The rootless build sandbox, run as root and as an ordinary user.
//!
//! Programs come from the host's `/usr`, bound read-only at `/usr` over a
//! small root layer holding merged-usr symlinks (`/bin -> usr/bin`, …).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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

fn killed(o: &Outcome) -> bool {
    std::os::unix::process::ExitStatusExt::signal(&o.status) == Some(9)
}

/// Waits up to 30 s for `p` to exist.
fn wait_for(p: &Path) {
    let start = Instant::now();
    while !p.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{p:?} never appeared"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts a daemon as a build might: double fork, new session, deaf to the
/// polite signals; `$1` is its unique `sleep` argument. Returns once it runs.
const DAEMON: &str = "(trap '' HUP INT TERM; \
    setsid sh -c 'touch /build/daemon-up; exec sleep \"$1\"' sh \"$1\" </dev/null >/dev/null 2>&1 &); \
    until [ -e /build/daemon-up ]; do sleep 0.01; done";

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

/// What `buildit check` varies: a tmpfs, one CPU, a 2.6 kernel in `uname`.
#[test]
fn check_variations_tmpfs_one_cpu_uname26() {
    let f = Fixture::new();
    let script = "stat -f -c %T /scratch; touch /scratch/w && echo writable; nproc; uname -r";
    let mut spec = f.spec(&["sh", "-c", script]);
    spec.tmpfs = vec!["/scratch".into()];
    spec.cpus = Some(1);
    spec.uname26 = true;
    let (o, log) = f.run(spec);
    assert_eq!(code(&o), Some(0), "{log}");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[0], "tmpfs", "{log}");
    assert_eq!(lines[1], "writable", "{log}");
    assert_eq!(lines[2], "1", "{log}");
    assert!(lines[3].starts_with("2.6."), "{log}");
    // Without them: the host's kernel, and the CPUs buildit may use.
    let (_, plain) = f.sh("nproc; uname -r");
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(
        plain.lines().next(),
        Some(cpus.to_string().as_str()),
        "{plain}"
    );
    assert!(
        !plain.lines().nth(1).unwrap().starts_with("2.6."),
        "{plain}"
    );
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
         test -e {cwd} && echo host-cwd-visible; \
         for p in /home /root /sys /var /etc/passwd /etc/hostname /run; do \
           test -e $p && echo $p-visible; done; \
         touch /dev/x 2>/dev/null && echo dev-writable; \
         touch /lib/x 2>/dev/null && echo lib-writable; \
         mkdir /newdir 2>/dev/null && echo root-mkdir; \
         ln -s x /newlink 2>/dev/null && echo root-symlink; \
         touch /store/abc-item 2>/dev/null && echo store-mtime; \
         rm -f /store/abc-item/data 2>/dev/null; \
         cat /etc/layer-marker /store/abc-item/data; \
         echo out > /build/result; touch /tmp/ok && echo tmp-writable; \
         ls /dev | tr '\\n' ' '",
        secret = host_secret.path().display(),
        tmpdir = f.dir.path().display(),
        cwd = std::env::current_dir().unwrap().display(),
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
    assert_eq!(
        fs::read_to_string(f.path("store-item/data")).unwrap(),
        "stored\n"
    );
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

/// What a build has of a network: its own namespace with `lo` alone and no
/// route, so nothing can leave; loopback works. No address outside this
/// machine is ever tried.
const NET_PROBE: &str = r#"
import socket
print(sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:]))
print("ipv4 routes", len(open("/proc/net/route").readlines()[1:]))
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen()
c = socket.create_connection(srv.getsockname())
a, _ = srv.accept()
c.sendall(b"hello")
print(a.recv(5).decode())
"#;

#[test]
fn network_is_loopback_only() {
    let f = Fixture::new();
    let (o, out) = f.run(f.spec(&["python3", "-c", NET_PROBE]));
    assert_eq!(code(&o), Some(0), "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["['lo']", "ipv4 routes 0", "hello"]
    );
}

/// The host ids the sandbox's uid 1000 / gid 1000 map to: never root's.
fn host_ids_of(out: &str) -> (u32, u32) {
    let field = |prefix: &str| -> u32 {
        let l = out
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("{prefix} in {out}"));
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!((f[0], f[2]), ("1000", "1"), "{out}");
        f[1].parse().unwrap()
    };
    (field("uid_map "), field("gid_map "))
}

const PRIVILEGE_PROBE: &str = r#"
echo "uid_map $(cat /proc/self/uid_map)"
echo "gid_map $(cat /proc/self/gid_map)"
v=$(cat /proc/sys/kernel/printk_ratelimit)
if (echo "$v" > /proc/sys/kernel/printk_ratelimit) 2>/dev/null; then echo "sysctl written"; else echo "sysctl refused"; fi
for p in /proc/sysrq-trigger /proc/sys/kernel/core_pattern /proc/sys/fs/protected_symlinks; do
  test -w $p && echo "$p writable"
done
for p in kcore keys timer_list timer_stats sched_debug latency_stats; do
  test -e /proc/$p && stat -c "masked $p %F %t:%T" /proc/$p
done
for p in acpi asound scsi; do
  test -e /proc/$p && echo "masked $p $(ls -A /proc/$p | wc -l) entries"
done
echo "init cmdline $(tr -d '\0' < /proc/1/cmdline | wc -c)"
echo "init environ $(cat /proc/1/environ 2>/dev/null | wc -c)"
echo "init exe $(readlink /proc/1/exe 2>/dev/null | wc -c)"
echo "groups $(id -G)"
"#;

/// Run as root, the sandbox maps its ids to an unprivileged host id; as an
/// ordinary user, to the user's own. Either way the kernel's knobs under
/// `/proc` stay out of reach, and init shows nothing of the caller.
#[test]
fn no_host_privilege_and_a_masked_proc() {
    let f = Fixture::new();
    let before = fs::read_to_string("/proc/sys/kernel/printk_ratelimit").unwrap();
    let (o, out) = f.sh(PRIVILEGE_PROBE);
    assert_eq!(code(&o), Some(0), "{out}");
    let (uid, gid) = host_ids_of(&out);
    if nix::unistd::geteuid().is_root() {
        assert!(uid != 0 && gid != 0, "{out}");
        // The writable bind was handed to that id.
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fs::metadata(f.path("build")).unwrap().uid(), uid);
    } else {
        assert_eq!(uid, nix::unistd::geteuid().as_raw(), "{out}");
        assert_eq!(gid, nix::unistd::getegid().as_raw(), "{out}");
    }
    let groups = out.lines().find_map(|l| l.strip_prefix("groups ")).unwrap();
    if nix::unistd::geteuid().is_root() {
        // Root's supplementary groups were dropped.
        assert_eq!(groups, "1000", "{out}");
    } else {
        // A user's other groups have no name inside.
        assert!(
            groups.split(' ').all(|g| g == "1000" || g == "65534"),
            "{out}"
        );
    }
    // Whichever of them this kernel has: /dev/null, or an empty directory.
    let masked: Vec<&str> = out.lines().filter(|l| l.starts_with("masked ")).collect();
    assert!(out.contains("masked keys "), "{out}");
    for m in &masked {
        assert!(
            m.ends_with(" character special file 1:3") || m.ends_with(" 0 entries"),
            "{out}"
        );
    }
    let rest: Vec<&str> = out
        .lines()
        .skip(2)
        .filter(|l| !l.starts_with("groups ") && !l.starts_with("masked "))
        .collect();
    assert_eq!(
        rest,
        [
            "sysctl refused",
            "init cmdline 0",
            "init environ 0",
            "init exe 0",
        ],
        "{out}"
    );
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/printk_ratelimit").unwrap(),
        before
    );
}

/// A build that reopens `/dev/stdout` or `/dev/stderr` writes on after what
/// it printed, whoever runs the sandbox (the log is a pipe the build may reopen).
#[test]
fn reopening_stdout_keeps_the_log() {
    let f = Fixture::new();
    let (o, out) = f.sh("echo one; echo two > /dev/stdout; echo three > /dev/stderr; echo four");
    assert_eq!(code(&o), Some(0), "{out}");
    assert_eq!(out, "one\ntwo\nthree\nfour\n");
}

/// What the caller put in a writable bind stays the build's to use, even a
/// file only its owner may read (root's, when root runs the sandbox).
#[test]
fn files_put_in_a_writable_bind_stay_usable() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    fs::create_dir(f.path("build/sub")).unwrap();
    fs::write(f.path("build/sub/private"), "mine\n").unwrap();
    fs::set_permissions(
        f.path("build/sub/private"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::set_permissions(f.path("build/sub"), fs::Permissions::from_mode(0o700)).unwrap();
    let (o, out) =
        f.sh("cat /build/sub/private && echo more >> /build/sub/private && touch /build/sub/new");
    assert_eq!(code(&o), Some(0), "{out}");
    assert_eq!(out, "mine\n");
    assert_eq!(
        fs::read_to_string(f.path("build/sub/private")).unwrap(),
        "mine\nmore\n"
    );
}

/// Root may name the host ids; 0 is refused, and so is an ordinary user's
/// attempt to map anything but its own.
#[test]
fn host_ids_are_never_root() {
    let f = Fixture::new();
    let mut spec = f.spec(&["true"]);
    spec.host_ids = Some((0, 0));
    let err = run(&spec).unwrap_err();
    assert!(matches!(err, SandboxError::Spec(_)), "{err}");
    let mut spec = f.spec(&["true"]);
    spec.host_ids = Some((4242, 4242));
    if nix::unistd::geteuid().is_root() {
        let (o, out) = f.run(spec);
        assert_eq!(code(&o), Some(0), "{out}");
        let (o, out) = f.sh("cat /proc/self/uid_map");
        assert_eq!(code(&o), Some(0), "{out}");
    } else {
        assert!(matches!(run(&spec), Err(SandboxError::Spec(_))));
    }
}

fn seccomp_probe() -> String {
    format!(
        r#"
import ctypes, errno, os, stat
libc = ctypes.CDLL(None, use_errno=True)
def name(e):
    return "ENOTSUP" if e == errno.ENOTSUP else errno.errorcode[e]
def err(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return name(e.errno)
def sc(nr, *args):
    r = libc.syscall(nr, *[ctypes.c_long(a) for a in args])
    return "ok" if r >= 0 else name(ctypes.get_errno())
open("f", "w").close()
print("chmod u+s", err(lambda: os.chmod("f", 0o4755)))
print("chmod g+s", err(lambda: os.chmod("f", 0o2755)))
print("chmod 755", err(lambda: os.chmod("f", 0o755)))
print("fchmod u+s", err(lambda: os.fchmod(os.open("f", os.O_RDONLY), 0o4755)))
print("open u+s", err(lambda: os.close(os.open("g", os.O_CREAT | os.O_WRONLY, 0o4755))))
print("open 644", err(lambda: os.close(os.open("h", os.O_CREAT | os.O_WRONLY, 0o644))))
print("mknod u+s", err(lambda: os.mknod("i", 0o4644 | stat.S_IFREG)))
print("setxattr", err(lambda: os.setxattr("f", "user.x", b"1")))
print("security xattr", err(lambda: os.setxattr("f", "security.capability", b"\1\0\0\2")))
print("add_key", sc({add_key}, 0, 0, 0, 0, 0))
print("keyctl", sc({keyctl}, 0, 0, 0))
print("bpf", sc({bpf}, 0, 0, 0))
print("init_module", sc({init_module}, 0, 0, 0))
print("reboot", sc({reboot}, 0, 0, 0, 0))
print("x32 getpid", sc(0x40000000 | {getpid}) if {x86_64} else "x32 none")
print("getpid", sc({getpid}))
"#,
        add_key = libc::SYS_add_key,
        keyctl = libc::SYS_keyctl,
        bpf = libc::SYS_bpf,
        init_module = libc::SYS_init_module,
        reboot = libc::SYS_reboot,
        getpid = libc::SYS_getpid,
        x86_64 = if cfg!(target_arch = "x86_64") {
            "True"
        } else {
            "False"
        },
    )
}

/// The system-call filter: no set-id bits, no extended attributes, none of
/// the kernel's privileged interfaces; everything else as usual.
#[test]
fn seccomp_refuses_set_id_bits_xattrs_and_kernel_interfaces() {
    let f = Fixture::new();
    let (o, out) = f.run(f.spec(&["python3", "-c", &seccomp_probe()]));
    assert_eq!(code(&o), Some(0), "{out}");
    let x32 = if cfg!(target_arch = "x86_64") {
        "x32 getpid ENOSYS"
    } else {
        "x32 none"
    };
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "chmod u+s EPERM",
            "chmod g+s EPERM",
            "chmod 755 ok",
            "fchmod u+s EPERM",
            "open u+s EPERM",
            "open 644 ok",
            "mknod u+s EPERM",
            "setxattr ENOTSUP",
            "security xattr ENOTSUP",
            "add_key EPERM",
            "keyctl EPERM",
            "bpf EPERM",
            "init_module EPERM",
            "reboot EPERM",
            x32,
            "getpid ok",
        ],
        "{out}"
    );
}

/// `max_processes` stops a fork loop at the limit, counted in the sandbox
/// alone (the caller's own processes and threads do not use it up).
#[test]
fn a_fork_loop_stops_at_the_process_limit() {
    let f = Fixture::new();
    let mut spec = f.spec(&[
        "sh",
        "-c",
        "i=0; while [ $i -lt 500 ]; do sleep 60 >/dev/null 2>&1 & i=$((i+1)); echo $i > /build/n; done",
    ]);
    spec.max_processes = Some(40);
    let start = Instant::now();
    let (o, out) = f.run(spec);
    assert_ne!(code(&o), Some(0), "the loop must be stopped: {out}");
    assert!(out.contains("fork"), "{out}");
    let n: u32 = fs::read_to_string(f.path("build/n"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // init, sh and the sleeps: the limit less those two, give or take one.
    assert!(
        (35..=39).contains(&n),
        "{n} sleeps started under a limit of 40"
    );
    assert!(start.elapsed() < Duration::from_secs(30));
}

/// A `sleep` argument unique to this test process and `tag`: the sleeper
/// can then be looked for among all the host's processes, even while other
/// test runs (as another user) do the same.
fn secs(tag: u32) -> String {
    format!("{}{tag:02}", 10_000_000 + std::process::id())
}

/// `sh -c script` with positional parameters.
fn sh_args(script: &str, args: &[&str]) -> Vec<String> {
    let mut v = vec!["sh".to_string(), "-c".into(), script.into(), "sh".into()];
    v.extend(args.iter().map(|a| a.to_string()));
    v
}

fn spec_of(f: &Fixture, argv: &[String]) -> SandboxSpec {
    f.spec(&argv.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn background_processes_do_not_survive() {
    let f = Fixture::new();
    let (daemon, job) = (secs(0), secs(1));
    let script = format!("{DAEMON}; sleep \"$2\" & (sleep 1; touch /build/marker) & echo started");
    let (o, out) = f.run(spec_of(&f, &sh_args(&script, &[&daemon, &job])));
    assert_eq!(code(&o), Some(0), "{out}");
    assert_eq!(out.trim(), "started");
    assert!(processes(&["sleep", &daemon]).is_empty(), "daemon survived");
    assert!(
        processes(&["sleep", &job]).is_empty(),
        "background job survived"
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
    let (daemon, job, cmd) = (secs(2), secs(3), secs(4));
    let script = format!("{DAEMON}; sleep \"$2\" & sleep \"$3\"");
    let mut spec = spec_of(&f, &sh_args(&script, &[&daemon, &job, &cmd]));
    spec.timeout = Some(Duration::from_millis(500));
    let (o, _) = f.run(spec);
    assert!(o.timed_out && !o.cancelled, "{o:?}");
    assert!(killed(&o), "{o:?}");
    assert!(o.elapsed < Duration::from_secs(10), "{:?}", o.elapsed);
    for n in [&daemon, &job, &cmd] {
        assert!(processes(&["sleep", n]).is_empty(), "sleep {n} survived");
    }

    // A deadline that has passed before setup ends kills the sandbox during
    // setup (whatever the step) instead of waiting for the command.
    let cmd = secs(5);
    let mut spec = f.spec(&["sleep", &cmd]);
    spec.timeout = Some(Duration::ZERO);
    let (o, _) = f.run(spec);
    assert!(o.timed_out && killed(&o), "{o:?}");
    assert!(o.elapsed < Duration::from_secs(10), "{:?}", o.elapsed);
    assert!(processes(&["sleep", &cmd]).is_empty());
}

#[test]
fn cancel_flag_kills_everything() {
    let f = Fixture::new();
    let cancel = Arc::new(AtomicBool::new(false));
    let (daemon, cmd) = (secs(6), secs(7));
    let script = format!("{DAEMON}; touch /build/started; sleep \"$2\"");
    let mut spec = spec_of(&f, &sh_args(&script, &[&daemon, &cmd]));
    spec.cancel = Some(cancel.clone());
    let started = f.path("build/started");
    let (d, c) = (daemon.clone(), cmd.clone());
    let canceller = std::thread::spawn(move || {
        wait_for(&started);
        // Both must be running, or the checks below prove nothing.
        let start = Instant::now();
        while processes(&["sleep", &d]).is_empty() || processes(&["sleep", &c]).is_empty() {
            assert!(start.elapsed() < Duration::from_secs(30), "never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        cancel.store(true, Ordering::Relaxed);
        Instant::now()
    });
    let (o, _) = f.run(spec);
    let returned = Instant::now();
    let cancelled_at = canceller.join().unwrap();
    assert!(o.cancelled && !o.timed_out, "{o:?}");
    assert!(killed(&o), "{o:?}");
    let took = returned - cancelled_at;
    assert!(took < Duration::from_secs(1), "took {took:?} to cancel");
    assert!(processes(&["sleep", &cmd]).is_empty(), "command survived");
    assert!(processes(&["sleep", &daemon]).is_empty(), "daemon survived");

    // A flag already set stops the sandbox during setup.
    let cmd = secs(8);
    let mut spec = f.spec(&["sleep", &cmd]);
    spec.cancel = Some(Arc::new(AtomicBool::new(true)));
    spec.timeout = None;
    let (o, _) = f.run(spec);
    assert!(o.cancelled && killed(&o), "{o:?}");
    assert!(o.elapsed < Duration::from_secs(1), "{:?}", o.elapsed);
    assert!(processes(&["sleep", &cmd]).is_empty());

    // An unset flag changes nothing.
    let mut spec = f.spec(&["sh", "-c", "sleep 0.3; exit 4"]);
    spec.cancel = Some(Arc::new(AtomicBool::new(false)));
    spec.timeout = None;
    let (o, _) = f.run(spec);
    assert_eq!(code(&o), Some(4), "{o:?}");
    assert!(!o.cancelled && !o.timed_out, "{o:?}");
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
        err.contains("/usr/new-dir") && err.contains("read-only layer or bind"),
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

/// The one child of thread `tid` of process `pid`.
fn only_child(pid: u32, tid: u32) -> i32 {
    let list = fs::read_to_string(format!("/proc/{pid}/task/{tid}/children")).unwrap();
    let kids: Vec<i32> = list
        .split_whitespace()
        .map(|k| k.parse().unwrap())
        .collect();
    assert_eq!(kids.len(), 1, "children of {pid}/{tid}: {list:?}");
    kids[0]
}

#[test]
fn group_signals_leave_the_sandbox_to_the_caller() {
    use nix::sys::signal::{kill, Signal};
    let f = Fixture::new();
    let spec = f.spec(&["sh", "-c", "touch /build/started; sleep 1; exit 7"]);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let runner = s.spawn(|| {
            // SAFETY: plain syscall.
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
            f.run(spec)
        });
        let tid = rx.recv().unwrap();
        wait_for(&f.path("build/started"));
        // What Ctrl-C, Ctrl-Z or a service manager's stop sends to the
        // caller's process group: the helper and init are in it (the
        // command has its own session).
        let helper = only_child(std::process::id(), tid);
        let init = only_child(helper as u32, helper as u32);
        for pid in [helper, init] {
            for sig in [
                Signal::SIGINT,
                Signal::SIGQUIT,
                Signal::SIGTERM,
                Signal::SIGHUP,
                Signal::SIGTSTP,
            ] {
                kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
            }
        }
        let (o, out) = runner.join().unwrap();
        assert_eq!(code(&o), Some(7), "{o:?} {out}");
        assert!(!o.cancelled && !o.timed_out, "{o:?}");
    });
}

/// `mean ± σ` of `samples`.
fn mean_sd(samples: &[Duration]) -> String {
    let n = samples.len() as f64;
    let ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    let mean = ms.iter().sum::<f64>() / n;
    let var = ms.iter().map(|m| (m - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    format!("{mean:.3} ms ± {:.3} ms", var.sqrt())
}

/// Not a test: `cargo test --test sandbox -- --ignored bench_true` starts
/// `true` N times (env BENCH_N, default 200) in the sandbox, with a plain
/// fork/exec and, if env BENCH_BWRAP holds a bwrap command line (one argument
/// per line), with bwrap; the three alternate, so that drift hits all alike.
/// bench/sandbox.sh runs it.
#[test]
#[ignore]
fn bench_true() {
    let f = Fixture::new();
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let bwrap: Option<Vec<String>> = std::env::var("BENCH_BWRAP")
        .ok()
        .map(|v| v.lines().map(String::from).collect());
    let timed = |run: &mut dyn FnMut()| {
        let start = Instant::now();
        run();
        start.elapsed()
    };
    let (mut sandboxed, mut wrapped, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n + n / 10 {
        // The first tenth warms caches up and is not counted.
        let keep = i >= n / 10;
        let t = timed(&mut || assert_eq!(code(&f.run(f.spec(&["true"])).0), Some(0)));
        if keep {
            sandboxed.push(t);
        }
        if let Some(argv) = &bwrap {
            let t = timed(&mut || {
                let st = std::process::Command::new(&argv[0])
                    .args(&argv[1..])
                    .status()
                    .unwrap();
                assert!(st.success(), "{argv:?}: {st}");
            });
            if keep {
                wrapped.push(t);
            }
        }
        let t = timed(&mut || {
            assert!(std::process::Command::new("/usr/bin/true")
                .status()
                .unwrap()
                .success())
        });
        if keep {
            plain.push(t);
        }
    }
    println!("sandboxed true: {}", mean_sd(&sandboxed));
    if bwrap.is_some() {
        println!("bwrap true:     {}", mean_sd(&wrapped));
    }
    println!("plain true:     {}", mean_sd(&plain));
}

/// Not a test: one sandboxed `true`, for timing whole processes (hyperfine
/// in bench/sandbox.sh); [`bench_one_noop`] is the same minus the sandbox.
#[test]
#[ignore]
fn bench_one_sandbox() {
    let f = Fixture::new();
    assert_eq!(code(&f.run(f.spec(&["true"])).0), Some(0));
}

/// Not a test: the test harness and fixture cost of [`bench_one_sandbox`].
#[test]
#[ignore]
fn bench_one_noop() {
    let f = Fixture::new();
    let spec = f.spec(&["true"]);
    fs::File::create(f.path("log")).unwrap();
    assert!(!spec.argv.is_empty());
}
