//! Rootless build sandbox: runs a command in new user, mount, PID, network,
//! UTS and IPC namespaces, with no setuid helper and no bubblewrap.
//!
//! Process layout:
//!
//! ```text
//! caller ── fork ──> helper (host PID ns) ── unshare(user), id maps,
//!                      │                     unshare(mnt|pid|net|uts|ipc)
//!                      ├─ fork ──> mapper (root callers only): writes the
//!                      │            helper's id maps from outside, exits
//!                      └─ fork ──> init (PID 1 inside): builds the root on a
//!                                    │  tmpfs, masks /proc, pivot_root,
//!                                    │  hostname, `lo` up
//!                                    └─ fork ──> command (PID 2): stdio,
//!                                                 umask 022, ids, limits,
//!                                                 seccomp, cwd, execve
//! ```
//!
//! Host identity: the sandbox's uid/gid map to one host id. For an ordinary
//! user that is the user's own id. For root it is never 0: each run takes an
//! unprivileged id of its own ([`BuildUser`]), the writable binds are handed
//! to it (`chown` of their trees), and since a process cannot write
//! another id's map from inside its new namespace, a mapper child that stays
//! outside writes it. The kernel checks `/proc/sys` and friends against the
//! host id, so nothing in the sandbox holds host privilege; init keeps the
//! caller's host id but runs only this code, is not dumpable (no ptrace, no
//! `/proc/1/environ`) and wipes the caller's command line and environment
//! from its memory, so `/proc/1/cmdline` shows nothing of the host.
//!
//! What a build can still see of the host: the kernel version and CPU count
//! (`uname`, `/proc/cpuinfo`), `/proc/meminfo` and load figures, and in
//! `/proc/self/mountinfo` the host paths of the store paths bound in (the
//! kernel shows where each bind came from; only a copy would hide it).
//! `/proc/kcore`, `keys`, `timer_list`, `sched_debug`, `latency_stats`,
//! `acpi`, `asound`, `scsi` are masked and `/proc/sys`, `sysrq-trigger`,
//! `bus`, `fs`, `irq` read-only, as OCI runtimes do.
//!
//! System calls: see [`seccomp`] for the filter; `RLIMIT_NPROC`
//! ([`SandboxSpec::max_processes`]) bounds the processes (and threads) of one
//! sandbox: the kernel counts them per user namespace and id, so the limit is
//! the build's own, not shared with the user's other processes.
//!
//! Init reaps every process and, when the command exits, writes the command's
//! raw wait status to the caller and exits: the kernel then kills whatever is
//! left in the PID namespace (background daemons do not survive a build). The
//! timeout and the caller's cancel flag kill init with SIGKILL, which also
//! takes the whole namespace down; both also cover the setup before `execve`.
//! Errors before `execve` travel through a close-on-exec pipe as text, so the
//! caller gets "mount overlay …: EPERM: …" rather than an exit code.
//!
//! The root: a tmpfs; each top-level entry of the merged root layers is bound
//! into it read-only (directories and files) or copied (symlinks); then the
//! store paths, other read-only binds and writable binds at their logical
//! places; a minimal `/dev`, a tmpfs `/tmp`, a fresh `/proc`. Finally `/`
//! itself is made read-only. Inside, the command runs as `uid`/`gid` (default
//! 1000/1000, like Nix's build users) with no capabilities, even as uid 0.

mod build_user;
mod child;
mod seccomp;
mod skeleton;

pub use build_user::BuildUser;

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};

/// What to run and what the command sees.
#[derive(Debug)]
pub struct SandboxSpec {
    /// Trees merged read-only as `/`, first = bottom. One layer is bound
    /// directly; several are merged with overlayfs (`userxattr`), which needs
    /// kernel support for overlay in user namespaces (Linux >= 5.11).
    pub root_layers: Vec<PathBuf>,
    /// (physical path, logical path under `/store/`), bound read-only.
    pub store_paths: Vec<(PathBuf, String)>,
    /// Other read-only binds (physical, absolute logical path), e.g. a host
    /// `/usr` in tests.
    pub read_only: Vec<(PathBuf, String)>,
    /// Writable binds (physical, absolute logical path): the output dir, `/build`.
    /// When the caller is root, each tree is handed (`chown`, symlinks not
    /// followed) to the sandbox's unprivileged host id first.
    pub writable: Vec<(PathBuf, String)>,
    /// Absolute logical paths that get a fresh, empty, writable tmpfs (gone when
    /// the sandbox ends). `buildit check` builds in one to vary the filesystem,
    /// and with it the order `readdir` returns entries in.
    pub tmpfs: Vec<String>,
    /// Run on at most this many of the CPUs buildit may use (`nproc` inside
    /// shows it); `None` = all of them.
    pub cpus: Option<usize>,
    /// Report a 2.6 kernel version (`uname -r`), as `setarch --uname-2.6` does.
    pub uname26: bool,
    /// The complete environment: nothing is inherited.
    pub env: Vec<(String, String)>,
    /// Working directory inside.
    pub cwd: String,
    /// Command; `argv[0]` without a `/` is looked up in the `PATH` of `env`
    /// (default `/usr/bin:/bin`) inside the sandbox.
    pub argv: Vec<String>,
    /// Ids inside the sandbox; the caller's uid/gid map to them (for root: an
    /// unprivileged [`BuildUser`]'s, see [`SandboxSpec::host_ids`]).
    pub uid: u32,
    pub gid: u32,
    /// For a root caller, the host uid/gid the sandbox runs as (never 0);
    /// `None` takes a [`BuildUser`] for the run. An ordinary caller can only
    /// map its own ids and must leave this `None`.
    pub host_ids: Option<(u32, u32)>,
    /// `RLIMIT_NPROC` of the command: at most this many processes and
    /// threads at once in the sandbox (init included); `None` = inherited.
    pub max_processes: Option<u64>,
    pub hostname: String,
    /// Kill everything (SIGKILL) after this long, counted from the call to
    /// [`run`] (setup included).
    pub timeout: Option<Duration>,
    /// Kill everything (SIGKILL) once this becomes true, e.g. from a Ctrl-C
    /// handler or a thread watching the log for silence; checked at least
    /// every [`CANCEL_POLL`], setup included.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Receives the command's stdout and stderr; `None` = `/dev/null`.
    /// stdin is always `/dev/null`.
    pub log: Option<File>,
}

impl SandboxSpec {
    /// A spec with the defaults: uid/gid 1000, hostname `localhost`, cwd `/`,
    /// no layers, no binds, empty environment, no timeout, no cancel flag, no
    /// log.
    pub fn new<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> Self {
        SandboxSpec {
            root_layers: Vec::new(),
            store_paths: Vec::new(),
            read_only: Vec::new(),
            writable: Vec::new(),
            tmpfs: Vec::new(),
            cpus: None,
            uname26: false,
            env: Vec::new(),
            cwd: "/".into(),
            argv: argv.into_iter().map(Into::into).collect(),
            uid: 1000,
            gid: 1000,
            host_ids: None,
            max_processes: None,
            hostname: "localhost".into(),
            timeout: None,
            cancel: None,
            log: None,
        }
    }
}

/// How the command ended.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// The command's wait status (SIGKILL when the sandbox was killed first).
    pub status: ExitStatus,
    /// The timeout fired and the sandbox was killed.
    pub timed_out: bool,
    /// The cancel flag was seen set and the sandbox was killed.
    pub cancelled: bool,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("invalid sandbox spec: {0}")]
    Spec(String),
    /// Setting up the sandbox or exec'ing the command failed; the message
    /// comes from inside and names the failing step.
    #[error("sandbox setup failed: {0}")]
    Setup(String),
    #[error("sandbox: {context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(nix::Error) -> SandboxError {
    let context = context.into();
    move |e| SandboxError::Io {
        context,
        source: std::io::Error::from(e),
    }
}

/// A bind mount to make, in order.
#[derive(Debug)]
pub(crate) struct Bind {
    pub src: PathBuf,
    pub dst: String,
    pub writable: bool,
    /// A fresh tmpfs rather than a bind of `src`.
    pub tmpfs: bool,
}

/// Everything the children need, validated and converted before `fork`.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The root tree the caller made (see [`skeleton`]).
    pub skeleton: skeleton::Skeleton,
    pub layers: Vec<PathBuf>,
    pub binds: Vec<Bind>,
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    pub path_dirs: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    /// The host ids `uid`/`gid` map to.
    pub host_uid: u32,
    pub host_gid: u32,
    /// The caller is root: a mapper child writes the id maps, and the
    /// command switches to `uid`/`gid` (init keeps the caller's host id).
    pub privileged_map: bool,
    pub max_processes: Option<u64>,
    /// Installed by the command right before `execve`.
    pub filters: Vec<seccompiler::BpfProgram>,
    pub hostname: String,
    pub log_fd: RawFd,
    pub cpus: Option<usize>,
    pub uname26: bool,
    /// Host paths of device nodes bound into `/dev`.
    pub devices: Vec<&'static str>,
}

/// Descriptors the children write to.
pub(crate) struct ChildFds {
    pub err_w: RawFd,
    pub pid_w: RawFd,
    pub status_w: RawFd,
    pub caller: Pid,
}

fn check_logical(p: &str, what: &str) -> Result<(), SandboxError> {
    let bad = !p.starts_with('/')
        || p == "/"
        || p.contains('\0')
        || p.split('/').any(|c| c == "." || c == "..");
    if bad {
        return Err(SandboxError::Spec(format!(
            "{what} target {p:?} must be an absolute normal path other than /"
        )));
    }
    let top = p.trim_start_matches('/').split('/').next().unwrap_or("");
    if matches!(top, "proc" | "dev") {
        return Err(SandboxError::Spec(format!(
            "{what} target {p:?}: /proc and /dev are provided by the sandbox"
        )));
    }
    Ok(())
}

fn cstring(s: &[u8], what: &str) -> Result<CString, SandboxError> {
    CString::new(s).map_err(|_| SandboxError::Spec(format!("{what} contains a NUL byte")))
}

/// Who the sandbox is on the host: (uid, gid, the caller is root).
struct HostIds {
    uid: u32,
    gid: u32,
    privileged: bool,
}

fn plan(
    spec: &SandboxSpec,
    scratch: PathBuf,
    log_fd: RawFd,
    host: &HostIds,
) -> Result<Plan, SandboxError> {
    if spec.argv.is_empty() {
        return Err(SandboxError::Spec("empty argv".into()));
    }
    if spec.root_layers.is_empty() {
        return Err(SandboxError::Spec("no root layer".into()));
    }
    for l in &spec.root_layers {
        let s = l.as_os_str().as_bytes();
        if !l.is_absolute()
            || (spec.root_layers.len() > 1 && (s.contains(&b':') || s.contains(&b',')))
        {
            return Err(SandboxError::Spec(format!(
                "root layer {l:?} must be absolute (and, for overlay, without ':' or ',')"
            )));
        }
        if !l.is_dir() {
            return Err(SandboxError::Spec(format!(
                "root layer {l:?} is not a directory"
            )));
        }
    }
    if !spec.cwd.starts_with('/') {
        return Err(SandboxError::Spec(format!(
            "cwd {:?} is not absolute",
            spec.cwd
        )));
    }
    let mut binds = Vec::new();
    let groups = [
        (&spec.store_paths, false, "store path"),
        (&spec.read_only, false, "read-only"),
        (&spec.writable, true, "writable"),
    ];
    for (list, writable, what) in groups {
        for (src, dst) in list {
            check_logical(dst, what)?;
            if what == "store path" && !dst.starts_with("/store/") {
                return Err(SandboxError::Spec(format!(
                    "store path target {dst:?} is not under /store/"
                )));
            }
            if !src.is_absolute() || std::fs::symlink_metadata(src).is_err() {
                return Err(SandboxError::Spec(format!(
                    "{what} source {src:?} is not an existing absolute path"
                )));
            }
            binds.push(Bind {
                src: src.clone(),
                dst: dst.trim_end_matches('/').to_string(),
                writable,
                tmpfs: false,
            });
        }
    }
    for dst in &spec.tmpfs {
        check_logical(dst, "tmpfs")?;
        binds.push(Bind {
            src: PathBuf::new(),
            dst: dst.trim_end_matches('/').to_string(),
            writable: true,
            tmpfs: true,
        });
    }
    // Parents before children; a read-only bind is made read-only right after
    // it is mounted, so a writable bind beneath it stays writable.
    binds.sort_by_key(|b| b.dst.matches('/').count());
    for w in binds.windows(2) {
        if w[0].dst == w[1].dst {
            return Err(SandboxError::Spec(format!("{:?} is bound twice", w[0].dst)));
        }
    }
    let argv = spec
        .argv
        .iter()
        .map(|a| cstring(a.as_bytes(), "argv"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut path_dirs = vec!["/usr/bin".to_string(), "/bin".to_string()];
    let mut env = Vec::new();
    for (k, v) in &spec.env {
        if k.is_empty() || k.contains('=') {
            return Err(SandboxError::Spec(format!(
                "bad environment variable name {k:?}"
            )));
        }
        if k == "PATH" {
            path_dirs = v
                .split(':')
                .filter(|d| !d.is_empty())
                .map(String::from)
                .collect();
        }
        env.push(cstring(format!("{k}={v}").as_bytes(), "environment")?);
    }
    let devices: Vec<&str> = [
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/random",
        "/dev/urandom",
        "/dev/tty",
    ]
    .into_iter()
    .filter(|d| Path::new(d).exists())
    .collect();
    let owner = host.privileged.then_some((host.uid, host.gid));
    let skeleton = skeleton::make(&scratch, &spec.root_layers, &binds, &devices, owner)?;
    Ok(Plan {
        skeleton,
        layers: spec.root_layers.clone(),
        binds,
        argv,
        env,
        path_dirs,
        cwd: spec.cwd.clone(),
        uid: spec.uid,
        gid: spec.gid,
        host_uid: host.uid,
        host_gid: host.gid,
        privileged_map: host.privileged,
        max_processes: spec.max_processes,
        filters: seccomp::filters()?,
        hostname: spec.hostname.clone(),
        log_fd,
        cpus: spec.cpus,
        uname26: spec.uname26,
        devices,
    })
}

/// Where the scratch dir (and the root tree in it) is made: a tmpfs when the
/// system has the usual one, since making and removing a few dozen entries on
/// a disk filesystem (with `discard`, say) costs milliseconds per build.
fn scratch_base() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let usable = std::fs::metadata(shm).is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        // World-writable and sticky, as a shared tmpfs is.
        m.is_dir() && m.mode() & 0o1777 == 0o1777
    }) && nix::sys::statfs::statfs(shm)
        .is_ok_and(|f| f.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
    if usable {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Removes the scratch dir and the root tree made in it (on the host side,
/// where nothing is mounted on it).
struct Scratch(PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn read_all(fd: OwnedFd) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = File::from(fd).read_to_end(&mut buf);
    buf
}

/// Longest wait between two looks at [`SandboxSpec::cancel`].
pub const CANCEL_POLL: Duration = Duration::from_millis(100);

/// Why the caller killed the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    TimedOut,
    Cancelled,
}

/// The deadline and the cancel flag, consulted by every wait of the caller.
struct Watch<'a> {
    deadline: Option<Instant>,
    cancel: Option<&'a AtomicBool>,
}

impl Watch<'_> {
    /// How long the next wait may block (`None`: indefinitely), or why to
    /// stop now.
    fn slice(&self) -> Result<Option<Duration>, Stop> {
        let cancel = self.cancel.map(|c| c.load(Ordering::Acquire));
        if cancel == Some(true) {
            return Err(Stop::Cancelled);
        }
        let mut slice = None;
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Stop::TimedOut);
            }
            slice = Some(left);
        }
        if cancel.is_some() {
            slice = Some(slice.map_or(CANCEL_POLL, |s| s.min(CANCEL_POLL)));
        }
        Ok(slice)
    }

    /// Blocks until `fd` is readable or hung up.
    fn readable(&self, fd: RawFd) -> Result<(), Stop> {
        loop {
            let ms = match self.slice()? {
                // Rounded up: a 0 ms poll would spin until the deadline.
                Some(s) => s.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32,
                None => -1,
            };
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut p, 1, ms) };
            if r > 0
                || (r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR))
            {
                // Ready, or poll itself failed: the caller's read or wait
                // then blocks or fails on its own.
                return Ok(());
            }
        }
    }
}

/// Reads `fd` to EOF into `buf`, unless the watch says stop first.
fn read_watched(fd: &OwnedFd, watch: &Watch, buf: &mut Vec<u8>) -> Result<(), Stop> {
    let mut chunk = [0u8; 4096];
    loop {
        watch.readable(fd.as_raw_fd())?;
        // SAFETY: valid buffer of the length passed.
        let n = unsafe { libc::read(fd.as_raw_fd(), chunk.as_mut_ptr().cast(), chunk.len()) };
        if n > 0 {
            buf.extend_from_slice(&chunk[..n as usize]);
        } else if n == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Ok(());
        }
    }
}

/// Waits for `pid` to exit, unless the watch says stop first.
fn wait_exit(pidfd: Option<&OwnedFd>, pid: Pid, watch: &Watch) -> Result<(), Stop> {
    if let Some(fd) = pidfd {
        return watch.readable(fd.as_raw_fd());
    }
    if watch.deadline.is_none() && watch.cancel.is_none() {
        // The caller's waitpid does the waiting.
        return Ok(());
    }
    // No pidfd (Linux < 5.3): peek with waitid(WNOWAIT) every 5 ms.
    loop {
        let slice = watch.slice()?;
        // SAFETY: siginfo_t is plain old data, valid when all zeros.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid siginfo buffer; WNOWAIT leaves the child waitable.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid.as_raw() as _,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: si_pid is valid for waitid results.
        if r != 0 || unsafe { info.si_pid() } != 0 {
            return Ok(());
        }
        let nap = Duration::from_millis(5);
        std::thread::sleep(slice.map_or(nap, |s| s.min(nap)));
    }
}

/// The host ids the sandbox maps to, and the [`BuildUser`] to hold while it
/// runs (see the module docs).
fn host_ids(spec: &SandboxSpec) -> Result<(HostIds, Option<BuildUser>), SandboxError> {
    let (euid, egid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    if euid != 0 {
        if spec.host_ids.is_some_and(|ids| ids != (euid, egid)) {
            return Err(SandboxError::Spec(format!(
                "host ids {:?}: an unprivileged caller can only map its own ids",
                spec.host_ids
            )));
        }
        let host = HostIds {
            uid: euid,
            gid: egid,
            privileged: false,
        };
        return Ok((host, None));
    }
    let (user, (uid, gid)) = match spec.host_ids {
        Some(ids) => (None, ids),
        None => {
            let u = BuildUser::acquire()?;
            let ids = (u.uid, u.gid);
            (Some(u), ids)
        }
    };
    if uid == 0 || gid == 0 {
        return Err(SandboxError::Spec(
            "a sandbox never runs as host root: host ids must not be 0".into(),
        ));
    }
    for (src, _) in &spec.writable {
        hand_over(src, uid, gid)?;
    }
    let host = HostIds {
        uid,
        gid,
        privileged: true,
    };
    Ok((host, user))
}

fn is_fifo(f: &File) -> bool {
    use std::os::unix::fs::FileTypeExt;
    f.metadata().is_ok_and(|m| m.file_type().is_fifo())
}

/// Copies what the sandbox writes to a pipe into the caller's log file.
struct LogRelay {
    write_end: OwnedFd,
    thread: std::thread::JoinHandle<std::io::Result<u64>>,
}

impl LogRelay {
    fn start(log: &File) -> Result<LogRelay, SandboxError> {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io_err("pipe"))?;
        let mut out = log.try_clone().map_err(|e| SandboxError::Io {
            context: "duplicate the log descriptor".into(),
            source: e,
        })?;
        let thread = std::thread::spawn(move || std::io::copy(&mut File::from(r), &mut out));
        Ok(LogRelay {
            write_end: w,
            thread,
        })
    }

    /// Closes our writing end; the thread runs until the sandbox's close.
    fn detach(self) -> std::thread::JoinHandle<std::io::Result<u64>> {
        drop(self.write_end);
        self.thread
    }
}

/// Gives the tree at `root` to the build ids, as an ordinary user's own
/// files are the sandbox's: what the caller put there stays usable. Symlinks
/// are not followed.
fn hand_over(root: &Path, uid: u32, gid: u32) -> Result<(), SandboxError> {
    let err = |p: &Path| {
        let context = format!("hand {} to the build user {uid}", p.display());
        move |source| SandboxError::Io { context, source }
    };
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        std::os::unix::fs::lchown(&p, Some(uid), Some(gid)).map_err(err(&p))?;
        let md = std::fs::symlink_metadata(&p).map_err(err(&p))?;
        if md.is_dir() {
            for e in std::fs::read_dir(&p).map_err(err(&p))? {
                stack.push(e.map_err(err(&p))?.path());
            }
        }
    }
    Ok(())
}

/// Runs `spec.argv` in a fresh sandbox and waits for it (and everything it
/// started) to end.
pub fn run(spec: &SandboxSpec) -> Result<Outcome, SandboxError> {
    let start = Instant::now();
    let mut template = scratch_base();
    template.push("buildit-sandbox-XXXXXX");
    let scratch =
        Scratch(nix::unistd::mkdtemp(&template).map_err(io_err(format!("mkdtemp {template:?}")))?);
    let (host, _build_user) = host_ids(spec)?;
    // The command's stdout and stderr are always a pipe: a build that reopens
    // `/dev/stdout` (nginx, `echo >/dev/stderr`) gets the pipe again rather
    // than the caller's file from offset 0, and a build id can reopen a pipe
    // handed to it, where a root-owned file would refuse it.
    let devnull;
    let mut relay = None;
    let log_fd =
        match &spec.log {
            Some(f) if is_fifo(f) => f.as_raw_fd(),
            Some(f) => {
                let r = LogRelay::start(f)?;
                let fd = r.write_end.as_raw_fd();
                relay = Some(r);
                fd
            }
            None => {
                devnull = File::options().write(true).open("/dev/null").map_err(|e| {
                    SandboxError::Io {
                        context: "open /dev/null".into(),
                        source: e,
                    }
                })?;
                devnull.as_raw_fd()
            }
        };
    if host.privileged && spec.log.is_some() {
        // SAFETY: a valid descriptor we hold (the caller's pipe or ours).
        let r = unsafe { libc::fchown(log_fd, host.uid, host.gid) };
        if r != 0 {
            return Err(SandboxError::Io {
                context: "hand the log pipe to the build user".into(),
                source: std::io::Error::last_os_error(),
            });
        }
    }
    let plan = plan(spec, scratch.0.clone(), log_fd, &host)?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io_err("pipe"))?;
    let (pid_r, pid_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io_err("pipe"))?;
    let (status_r, status_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io_err("pipe"))?;
    let fds = ChildFds {
        err_w: err_w.as_raw_fd(),
        pid_w: pid_w.as_raw_fd(),
        status_w: status_w.as_raw_fd(),
        caller: nix::unistd::getpid(),
    };
    // SAFETY: the child only runs `child::helper`, which never returns; it
    // allocates, which glibc's fork handlers make safe in the child.
    let helper = match unsafe { fork() }.map_err(io_err("fork"))? {
        ForkResult::Child => child::helper(&plan, &fds),
        ForkResult::Parent { child } => child,
    };
    drop((err_w, pid_w, status_w));
    // Only the sandbox holds the relay's writing end now: EOF ends the relay.
    let relay = relay.map(LogRelay::detach);
    // SAFETY: plain syscall; returns a new fd or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, helper.as_raw(), 0) };
    // SAFETY: a non-negative result is a fresh fd we own.
    let pidfd = (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) });

    // The helper writes init's pid right after forking it, before anything
    // that could block (mounts happen in init), so this read is short and
    // the kill below can always target init.
    let init = read_all(pid_r);
    let init =
        (init.len() == 4).then(|| Pid::from_raw(i32::from_ne_bytes(init[..4].try_into().unwrap())));
    let watch = Watch {
        deadline: spec.timeout.map(|t| start + t),
        cancel: spec.cancel.as_deref(),
    };
    // The error pipe reaches EOF once the command has exec'd (or everything
    // died); a setup step that hangs (a mount of a dead network filesystem)
    // is cut short by the timeout and the cancel flag like the command.
    let mut err = Vec::new();
    let mut stop = read_watched(&err_r, &watch, &mut err).err();
    if stop.is_none() && err.is_empty() {
        stop = wait_exit(pidfd.as_ref(), helper, &watch).err();
    }
    if !err.is_empty() || stop.is_some() {
        // Killing PID 1 kills the whole namespace. A process in an
        // uninterruptible sleep (a hard NFS mount) only dies when that ends,
        // and the waitpid below waits for it: nothing is left behind.
        let _ = kill(init.unwrap_or(helper), Signal::SIGKILL);
    }
    let helper_status = waitpid(helper, None).map_err(io_err("waitpid"))?;
    if let Some(r) = relay {
        // Everything in the sandbox is gone, so the pipe is at EOF.
        let _ = r.join();
    }
    if stop.is_some() {
        // Everything that held the write end is gone: this cannot block.
        err.extend(read_all(err_r));
    }
    if !err.is_empty() {
        return Err(SandboxError::Setup(
            String::from_utf8_lossy(&err).trim_end().to_string(),
        ));
    }
    let status = read_all(status_r);
    let status = if status.len() == 4 {
        ExitStatus::from_raw(i32::from_ne_bytes(status[..4].try_into().unwrap()))
    } else if stop.is_some() {
        ExitStatus::from_raw(libc::SIGKILL)
    } else {
        return Err(SandboxError::Setup(format!(
            "sandbox init ended without reporting the command's status ({helper_status:?})"
        )));
    };
    Ok(Outcome {
        status,
        timed_out: stop == Some(Stop::TimedOut),
        cancelled: stop == Some(Stop::Cancelled),
        elapsed: start.elapsed(),
    })
}
