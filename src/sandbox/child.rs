//! The forked side of the sandbox: never returns, reports errors as text on
//! `err_w` and exits.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::Mode;
use nix::unistd::{chdir, fork, pivot_root, sethostname, ForkResult};

use super::{ChildFds, Plan};

type Res = Result<(), String>;

fn ctx(what: impl FnOnce() -> String) -> impl FnOnce(nix::Error) -> String {
    move |e| format!("{}: {e}", what())
}

fn write_fd(fd: RawFd, data: &[u8]) {
    let mut off = 0;
    while off < data.len() {
        // SAFETY: valid buffer slice.
        let n = unsafe { libc::write(fd, data[off..].as_ptr().cast(), data.len() - off) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return;
        }
        off += n as usize;
    }
}

fn die(fds: &ChildFds, msg: &str, code: i32) -> ! {
    write_fd(fds.err_w, msg.as_bytes());
    // SAFETY: _exit is always safe; skips atexit handlers inherited from the caller.
    unsafe { libc::_exit(code) }
}

fn set_pdeathsig() {
    // SAFETY: plain prctl.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
}

/// Closes every descriptor >= 3 except `keep`, so that other threads' pipes
/// (inherited by this fork) do not stay open for the sandbox's lifetime.
fn close_other_fds(keep: &mut [RawFd]) {
    keep.sort_unstable();
    let mut lo: u32 = 3;
    for &k in keep.iter() {
        let k = k as u32;
        if k >= lo {
            if k > lo {
                // SAFETY: closing descriptors we do not use.
                unsafe { libc::close_range(lo, k - 1, 0) };
            }
            lo = k + 1;
        }
    }
    // SAFETY: as above.
    unsafe { libc::close_range(lo, u32::MAX, 0) };
}

/// Signals for the whole process group or session (the terminal's Ctrl-C
/// and Ctrl-Z, hang-up, a service manager's SIGTERM to every process) also
/// reach the helper and init, which would run the caller's handlers or die,
/// ending the build behind the caller's back. The caller decides instead: it
/// sets the cancel flag, or it dies and the parent-death signals end the
/// sandbox. The command gets default dispositions back before exec.
fn ignore_job_control_signals() {
    for sig in [
        libc::SIGHUP,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGTERM,
        libc::SIGTSTP,
        libc::SIGTTIN,
        libc::SIGTTOU,
    ] {
        // SAFETY: plain disposition change in a single-threaded child.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
}

/// First child: creates the namespaces, forks init, relays init's pid.
pub(crate) fn helper(plan: &Plan, fds: &ChildFds) -> ! {
    ignore_job_control_signals();
    set_pdeathsig();
    if nix::unistd::getppid() != fds.caller {
        // SAFETY: as in die.
        unsafe { libc::_exit(1) };
    }
    close_other_fds(&mut [fds.err_w, fds.pid_w, fds.status_w, plan.log_fd]);
    if let Err(e) = namespaces(plan) {
        die(fds, &e, 1);
    }
    // SAFETY: single-threaded child.
    match unsafe { fork() } {
        Err(e) => die(fds, &format!("fork init: {e}"), 1),
        Ok(ForkResult::Child) => init(plan, fds),
        Ok(ForkResult::Parent { child }) => {
            write_fd(fds.pid_w, &child.as_raw().to_ne_bytes());
            // SAFETY: closing our copies; init and the command hold theirs.
            unsafe {
                libc::close(fds.pid_w);
                libc::close(fds.err_w);
                libc::close(fds.status_w);
            }
            let mut st = 0;
            // SAFETY: waiting for our only child.
            while unsafe { libc::waitpid(child.as_raw(), &mut st, 0) } < 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
            {}
            // SAFETY: as in die.
            unsafe { libc::_exit(0) }
        }
    }
}

fn write_file(path: &str, data: &str) -> Res {
    std::fs::write(path, data).map_err(|e| format!("write {path} ({:?}): {e}", data.trim_end()))
}

fn namespaces(plan: &Plan) -> Res {
    unshare(CloneFlags::CLONE_NEWUSER).map_err(ctx(|| "unshare user namespace".into()))?;
    write_file("/proc/self/setgroups", "deny")?;
    write_file(
        "/proc/self/uid_map",
        &format!("{} {} 1\n", plan.uid, plan.outer_uid),
    )?;
    write_file(
        "/proc/self/gid_map",
        &format!("{} {} 1\n", plan.gid, plan.outer_gid),
    )?;
    let flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    unshare(flags).map_err(ctx(|| "unshare mount/pid/net/uts/ipc namespaces".into()))
}

/// PID 1 inside: sets up the root, runs the command, reaps, reports.
fn init(plan: &Plan, fds: &ChildFds) -> ! {
    set_pdeathsig();
    // Only the helper reports init's pid; the caller reads that pipe to EOF.
    // SAFETY: closing our copy.
    unsafe { libc::close(fds.pid_w) };
    if let Err(e) = setup_root(plan) {
        die(fds, &e, 1);
    }
    // SAFETY: single-threaded child.
    let cmd = match unsafe { fork() } {
        Err(e) => die(fds, &format!("fork command: {e}"), 1),
        Ok(ForkResult::Child) => exec_command(plan, fds),
        Ok(ForkResult::Parent { child }) => child.as_raw(),
    };
    // SAFETY: closing our copies of the pipes we no longer write.
    unsafe {
        libc::close(fds.err_w);
        libc::close(plan.log_fd);
    }
    let mut status = libc::SIGKILL;
    loop {
        let mut st = 0;
        // SAFETY: reaping any child.
        let pid = unsafe { libc::waitpid(-1, &mut st, 0) };
        if pid == cmd {
            status = st;
            break;
        }
        if pid < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break;
        }
    }
    write_fd(fds.status_w, &status.to_ne_bytes());
    // Exiting PID 1 kills every process left in the namespace.
    // SAFETY: as in die.
    unsafe { libc::_exit(0) }
}

fn mount_err(what: &str, target: &Path) -> impl FnOnce(nix::Error) -> String {
    let msg = format!("mount {what} on {}", target.display());
    move |e| format!("{msg}: {e}")
}

fn mkdir(p: &Path, mode: u32) -> Res {
    match nix::unistd::mkdir(p, Mode::from_bits_truncate(mode)) {
        Ok(()) | Err(nix::Error::EEXIST) => Ok(()),
        Err(e) => Err(format!("mkdir {}: {e}", p.display())),
    }
}

fn touch(p: &Path) -> Res {
    match std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(p)
    {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("create mount point {}: {e}", p.display())),
    }
}

/// Creates the mount point `root + logical` without following symlinks.
fn mount_point(root: &Path, logical: &str, dir: bool) -> Res {
    let mut p = root.to_path_buf();
    let comps: Vec<&str> = logical.split('/').filter(|c| !c.is_empty()).collect();
    for (i, c) in comps.iter().enumerate() {
        p.push(c);
        let last = i + 1 == comps.len();
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "mount target {logical}: {} is a symlink",
                    p.display()
                ))
            }
            Ok(_) => {}
            Err(_) if last && !dir => touch(&p)?,
            Err(_) => mkdir(&p, 0o755)?,
        }
    }
    Ok(())
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Makes the mount at `target` (and, if `recursive`, its submounts)
/// read-only, nosuid and nodev, keeping the other (possibly locked) flags.
fn make_read_only(target: &Path, recursive: bool) -> Res {
    let c = CString::new(target.as_os_str().as_bytes()).map_err(|_| "NUL in path".to_string())?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = libc::AT_SYMLINK_NOFOLLOW | if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: valid path and attr struct of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c.as_ptr(),
            flags as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = nix::Error::last();
    if e != nix::Error::ENOSYS {
        return Err(format!(
            "make {} read-only (mount_setattr): {e}",
            target.display()
        ));
    }
    // Old kernel: remount this mount only, keeping the flags statvfs reports
    // (they may be locked in a user namespace).
    let st = nix::sys::statvfs::statvfs(target)
        .map_err(ctx(|| format!("statvfs {}", target.display())))?;
    use nix::sys::statvfs::FsFlags;
    let f = st.flags();
    let mut ms = MsFlags::MS_REMOUNT
        | MsFlags::MS_BIND
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV;
    for (s, m) in [
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(s) {
            ms |= m;
        }
    }
    mount(None::<&str>, target, None::<&str>, ms, None::<&str>)
        .map_err(mount_err("read-only remount", target))
}

fn bind(src: &Path, dst: &Path, read_only: bool) -> Res {
    mount(
        Some(src),
        dst,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("bind {} on {}: {e}", src.display(), dst.display()))?;
    if read_only {
        make_read_only(dst, true)?;
    }
    Ok(())
}

fn tmpfs(target: &Path, flags: MsFlags, opts: &str) -> Res {
    mount(Some("tmpfs"), target, Some("tmpfs"), flags, Some(opts))
        .map_err(mount_err("tmpfs", target))
}

fn setup_root(plan: &Plan) -> Res {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(ctx(|| "make / private".into()))?;
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    tmpfs(&plan.scratch, nosuid_nodev, "mode=0755")?;
    let root = plan.scratch.join("root");
    mkdir(&root, 0o755)?;
    tmpfs(&root, nosuid_nodev, "mode=0755")?;

    // The merged root layers.
    let lower = if plan.layers.len() == 1 {
        plan.layers[0].clone()
    } else {
        let lower = plan.scratch.join("lower");
        mkdir(&lower, 0o755)?;
        let dirs: Vec<String> = plan
            .layers
            .iter()
            .rev()
            .map(|l| l.display().to_string())
            .collect();
        let opts = format!("lowerdir={},userxattr", dirs.join(":"));
        mount(Some("overlay"), &lower, Some("overlay"), MsFlags::MS_RDONLY | nosuid_nodev, Some(opts.as_str()))
            .map_err(|e| {
                format!(
                    "mount overlay ({opts}) on {}: {e} (overlayfs in a user namespace needs Linux >= 5.11 with userxattr support)",
                    lower.display()
                )
            })?;
        lower
    };
    let reserved = |name: &str| {
        matches!(name, "dev" | "proc" | "tmp")
            || (name == "store" && plan.binds.iter().any(|b| b.dst.starts_with("/store/")))
            || plan
                .binds
                .iter()
                .any(|b| b.dst.strip_prefix('/') == Some(name))
    };
    let entries = std::fs::read_dir(&lower)
        .map_err(|e| format!("read root layer {}: {e}", lower.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("read root layer {}: {e}", lower.display()))?;
        let name = entry.file_name();
        if reserved(&name.to_string_lossy()) {
            continue;
        }
        let (src, dst) = (entry.path(), root.join(&name));
        let ft = entry
            .file_type()
            .map_err(|e| format!("stat {}: {e}", src.display()))?;
        if ft.is_symlink() {
            let target =
                std::fs::read_link(&src).map_err(|e| format!("readlink {}: {e}", src.display()))?;
            std::os::unix::fs::symlink(&target, &dst)
                .map_err(|e| format!("symlink {}: {e}", dst.display()))?;
        } else if ft.is_dir() {
            mkdir(&dst, 0o755)?;
            bind(&src, &dst, true)?;
        } else if ft.is_file() {
            touch(&dst)?;
            bind(&src, &dst, true)?;
        }
    }

    if !plan.binds.iter().any(|b| b.dst == "/tmp") {
        let tmp = root.join("tmp");
        mkdir(&tmp, 0o1777)?;
        tmpfs(&tmp, nosuid_nodev, "mode=1777")?;
    }
    for b in &plan.binds {
        let target = root.join(b.dst.trim_start_matches('/'));
        if b.tmpfs {
            mount_point(&root, &b.dst, true)?;
            tmpfs(&target, nosuid_nodev, "mode=0755")?;
            continue;
        }
        mount_point(&root, &b.dst, b.src.is_dir())?;
        bind(&b.src, &target, !b.writable)?;
    }

    setup_dev(plan, &root.join("dev"))?;
    let proc_ = root.join("proc");
    mkdir(&proc_, 0o555)?;
    mount(
        Some("proc"),
        &proc_,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(mount_err("proc", &proc_))?;

    chdir(&root).map_err(ctx(|| format!("chdir {}", root.display())))?;
    pivot_root(".", ".").map_err(ctx(|| "pivot_root".into()))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(ctx(|| "detach old root".into()))?;
    chdir("/").map_err(ctx(|| "chdir /".into()))?;
    make_read_only(Path::new("/"), false)?;

    sethostname(&plan.hostname).map_err(ctx(|| format!("sethostname {:?}", plan.hostname)))?;
    loopback_up()
}

fn setup_dev(plan: &Plan, dev: &Path) -> Res {
    mkdir(dev, 0o755)?;
    tmpfs(dev, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, "mode=0755")?;
    for d in &plan.devices {
        let dst = dev.join(Path::new(d).file_name().unwrap_or_default());
        touch(&dst)?;
        mount(Some(*d), &dst, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|e| format!("bind {d} on {}: {e}", dst.display()))?;
    }
    let pts = dev.join("pts");
    mkdir(&pts, 0o755)?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(mount_err("devpts", &pts))?;
    let shm = dev.join("shm");
    mkdir(&shm, 0o1777)?;
    tmpfs(&shm, MsFlags::MS_NOSUID | MsFlags::MS_NODEV, "mode=1777")?;
    for (name, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let p = dev.join(name);
        std::os::unix::fs::symlink(target, &p)
            .map_err(|e| format!("symlink {}: {e}", p.display()))?;
    }
    // The tmpfs itself: no new entries from inside.
    let c = dev.to_path_buf();
    mount(
        None::<&str>,
        &c,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755"),
    )
    .map_err(mount_err("read-only remount", dev))
}

/// Brings `lo` up: a new network namespace starts with it down, so even
/// 127.0.0.1 is unreachable until then.
fn loopback_up() -> Res {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq naming "lo".
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(format!("socket: {}", nix::Error::last()));
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        let r = if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            Err(format!("ioctl SIOCGIFFLAGS lo: {}", nix::Error::last()))
        } else {
            ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr) < 0 {
                Err(format!("ioctl SIOCSIFFLAGS lo up: {}", nix::Error::last()))
            } else {
                Ok(())
            }
        };
        libc::close(fd);
        r
    }
}

fn redirect(from: RawFd, to: RawFd) -> Res {
    // SAFETY: plain fd calls.
    let r = unsafe {
        if from == to {
            libc::fcntl(to, libc::F_SETFD, 0)
        } else {
            libc::dup2(from, to)
        }
    };
    if r < 0 {
        return Err(format!("dup2 {from} to {to}: {}", nix::Error::last()));
    }
    Ok(())
}

fn prepare_command(plan: &Plan) -> Res {
    // SAFETY: resetting signal state and process attributes in a
    // single-threaded child before exec.
    unsafe {
        for sig in 1..libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::setsid();
    }
    let null = nix::fcntl::open("/dev/null", nix::fcntl::OFlag::O_RDONLY, Mode::empty())
        .map_err(ctx(|| "open /dev/null".into()))?;
    let null = std::os::fd::IntoRawFd::into_raw_fd(null);
    redirect(null, 0)?;
    if null > 2 {
        // SAFETY: our own descriptor, now copied to 0.
        unsafe { libc::close(null) };
    }
    // stdout before stderr: if log_fd is 2, it is copied to 1 first.
    redirect(plan.log_fd, 1)?;
    redirect(plan.log_fd, 2)?;
    // Everything else is closed at exec (the error pipe included).
    // SAFETY: plain syscall.
    unsafe { libc::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int) };
    nix::sys::stat::umask(Mode::from_bits_truncate(0o022));
    if let Some(n) = plan.cpus {
        limit_cpus(n)?;
    }
    if plan.uname26 {
        // SAFETY: plain syscall; 0xffffffff queries the current persona.
        unsafe {
            let current = libc::personality(0xffff_ffff);
            if current == -1 || libc::personality((current as libc::c_ulong) | UNAME26) == -1 {
                return Err(format!("personality(UNAME26): {}", nix::Error::last()));
            }
        }
    }
    chdir(plan.cwd.as_str()).map_err(ctx(|| format!("chdir {}", plan.cwd)))?;
    // No capabilities survive exec, even for uid 0 inside.
    // SAFETY: plain prctl calls.
    unsafe {
        for cap in 0..64 {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 {
                break;
            }
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
    }
    Ok(())
}

/// `UNAME26` from <linux/personality.h>: uname reports a 2.6 kernel.
const UNAME26: libc::c_ulong = 0x0020000;

/// Keep the first `n` of the CPUs this process may run on.
fn limit_cpus(n: usize) -> Res {
    use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
    let me = nix::unistd::Pid::from_raw(0);
    let allowed = sched_getaffinity(me).map_err(ctx(|| "sched_getaffinity".into()))?;
    let mut keep = CpuSet::new();
    let mut kept = 0;
    for cpu in 0..CpuSet::count() {
        if kept < n && allowed.is_set(cpu).unwrap_or(false) {
            keep.set(cpu).map_err(ctx(|| format!("cpu {cpu}")))?;
            kept += 1;
        }
    }
    sched_setaffinity(me, &keep).map_err(ctx(|| "sched_setaffinity".into()))
}

fn exec_command(plan: &Plan, fds: &ChildFds) -> ! {
    // SAFETY: closing the copy init keeps for reporting.
    unsafe { libc::close(fds.status_w) };
    if let Err(e) = prepare_command(plan) {
        die(fds, &e, 127);
    }
    let arg0 = plan.argv[0].to_bytes();
    let candidates: Vec<CString> = if arg0.contains(&b'/') {
        vec![plan.argv[0].clone()]
    } else {
        plan.path_dirs
            .iter()
            .filter_map(|d| CString::new([d.as_bytes(), b"/", arg0].concat()).ok())
            .collect()
    };
    let mut argv: Vec<*const libc::c_char> = plan.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = plan.env.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let mut err = nix::Error::ENOENT;
    for c in &candidates {
        // SAFETY: NUL-terminated argv/envp of valid C strings.
        unsafe { libc::execve(c.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        let e = nix::Error::last();
        // Like execvp: keep searching past missing entries, remember the rest.
        if e != nix::Error::ENOENT && e != nix::Error::ENOTDIR {
            err = e;
        }
    }
    let shown = String::from_utf8_lossy(arg0);
    die(
        fds,
        &format!("exec {shown} (searched {:?}): {err}", plan.path_dirs),
        127,
    )
}
