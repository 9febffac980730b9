//! The forked side of the sandbox: never returns, reports errors as text on
//! `err_w` and exits.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
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

/// Writes the id maps of the user namespace of process `pid` ("self" or a
/// number): the sandbox's one uid and gid onto the host ids.
fn write_id_maps(plan: &Plan, pid: &str) -> Res {
    write_file(&format!("/proc/{pid}/setgroups"), "deny")?;
    write_file(
        &format!("/proc/{pid}/uid_map"),
        &format!("{} {} 1\n", plan.uid, plan.host_uid),
    )?;
    write_file(
        &format!("/proc/{pid}/gid_map"),
        &format!("{} {} 1\n", plan.gid, plan.host_gid),
    )
}

/// For a root caller: a process that enters a new user namespace has no
/// capabilities left in its parent, so it may only map its own id — which
/// for root is host root. A child that stays outside (still root there)
/// writes the helper's maps instead, with the unprivileged host ids.
fn unshare_user_mapped_by_child(plan: &Plan) -> Res {
    // Root's supplementary groups would otherwise stay with the build.
    nix::unistd::setgroups(&[]).map_err(ctx(|| "drop supplementary groups".into()))?;
    let (go_r, go_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(ctx(|| "pipe".into()))?;
    let (res_r, res_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(ctx(|| "pipe".into()))?;
    let helper = nix::unistd::getpid().as_raw().to_string();
    // SAFETY: single-threaded child; the mapper only writes files and exits.
    match unsafe { fork() }.map_err(ctx(|| "fork id mapper".into()))? {
        ForkResult::Child => {
            set_pdeathsig();
            drop(go_w);
            drop(res_r);
            let mut byte = [0u8; 1];
            let go = nix::unistd::read(&go_r, &mut byte).unwrap_or(0) == 1;
            let code = match go.then(|| write_id_maps(plan, &helper)) {
                Some(Ok(())) => 0,
                Some(Err(e)) => {
                    write_fd(res_w.as_raw_fd(), e.as_bytes());
                    1
                }
                None => 1,
            };
            // SAFETY: as in die.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(go_r);
            drop(res_w);
            let unshared =
                unshare(CloneFlags::CLONE_NEWUSER).map_err(ctx(|| "unshare user namespace".into()));
            if unshared.is_ok() {
                write_fd(go_w.as_raw_fd(), b"g");
            }
            // EOF tells the mapper to give up when the unshare failed.
            drop(go_w);
            let mut msg = Vec::new();
            let _ = std::fs::File::from(res_r).read_to_end(&mut msg);
            let mut st = 0;
            // SAFETY: waiting for our own child.
            while unsafe { libc::waitpid(child.as_raw(), &mut st, 0) } < 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
            {}
            unshared?;
            if !msg.is_empty() {
                return Err(String::from_utf8_lossy(&msg).into_owned());
            }
            if !libc::WIFEXITED(st) || libc::WEXITSTATUS(st) != 0 {
                return Err(format!("the id mapper ended with status {st}"));
            }
            Ok(())
        }
    }
}

fn namespaces(plan: &Plan) -> Res {
    if plan.privileged_map {
        unshare_user_mapped_by_child(plan)?;
    } else {
        unshare(CloneFlags::CLONE_NEWUSER).map_err(ctx(|| "unshare user namespace".into()))?;
        write_id_maps(plan, "self")?;
    }
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
    // Init is a copy of the caller: keep the build from reading the caller's
    // environment, executable and memory through /proc/1 or ptrace.
    // SAFETY: plain prctl.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    wipe_command_line_and_environment();
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

/// Overwrites the caller's argv and environment strings in init's memory with
/// zeros: `/proc/1/cmdline` is readable by everyone in the sandbox, and the
/// caller's command line (paths, cache URLs) is none of the build's business.
fn wipe_command_line_and_environment() {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name (which may hold spaces) start at field 3;
    // arg_start..env_end are fields 48..=51.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return;
    };
    let f: Vec<usize> = rest
        .split_whitespace()
        .skip(45)
        .take(4)
        .filter_map(|x| x.parse().ok())
        .collect();
    let [arg_start, arg_end, env_start, env_end] = f[..] else {
        return;
    };
    for (start, end) in [(arg_start, arg_end), (env_start, env_end)] {
        if start == 0 || end <= start {
            continue;
        }
        // SAFETY: the kernel reports these ranges as the strings of this
        // process's initial stack, mapped writable; nothing in init reads
        // argv or the environment after this (the command gets its own).
        unsafe { std::ptr::write_bytes(start as *mut u8, 0, end - start) };
    }
}

fn mount_err(what: &str, target: &Path) -> impl FnOnce(nix::Error) -> String {
    let msg = format!("mount {what} on {}", target.display());
    move |e| format!("{msg}: {e}")
}

/// Checks that the mount point `root + logical` exists and that no
/// component of it is a symlink (the caller made the ones it could; one
/// inside a layer or another bind must be there already).
fn check_mount_point(root: &Path, logical: &str) -> Res {
    let mut p = root.to_path_buf();
    for c in logical.split('/').filter(|c| !c.is_empty()) {
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!("mount target {logical}: {} is a symlink", p.display()))
            }
            Ok(_) => {}
            Err(e) => {
                return Err(format!(
                    "mount target {logical}: {}: {e} (no mount point can be made inside a read-only layer or bind)",
                    p.display()
                ))
            }
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
    let sk = &plan.skeleton;
    let root = &sk.root;
    // pivot_root wants a mount point.
    mount(
        Some(root.as_path()),
        root.as_path(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(mount_err("the root", root))?;

    // The merged root layers.
    let lower = match &sk.overlay {
        None => plan.layers[0].clone(),
        Some(lower) => {
            let dirs: Vec<String> = plan
                .layers
                .iter()
                .rev()
                .map(|l| l.display().to_string())
                .collect();
            let opts = format!("lowerdir={},userxattr", dirs.join(":"));
            mount(Some("overlay"), lower, Some("overlay"), MsFlags::MS_RDONLY | nosuid_nodev, Some(opts.as_str()))
                .map_err(|e| {
                    format!(
                        "mount overlay ({opts}) on {}: {e} (overlayfs in a user namespace needs Linux >= 5.11 with userxattr support)",
                        lower.display()
                    )
                })?;
            lower.clone()
        }
    };
    for name in &sk.layer_entries {
        bind(&lower.join(name), &root.join(name), true)?;
    }

    if !plan.binds.iter().any(|b| b.dst == "/tmp") {
        tmpfs(&root.join("tmp"), nosuid_nodev, "mode=1777")?;
    }
    for b in &plan.binds {
        check_mount_point(root, &b.dst)?;
        let target = root.join(b.dst.trim_start_matches('/'));
        if b.tmpfs {
            let opts = format!("mode=0755,uid={},gid={}", plan.uid, plan.gid);
            tmpfs(&target, nosuid_nodev, &opts)?;
        } else {
            bind(&b.src, &target, !b.writable)?;
        }
    }

    setup_dev(plan, &root.join("dev"))?;
    let proc_ = root.join("proc");
    mount(
        Some("proc"),
        &proc_,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(mount_err("proc", &proc_))?;
    mask_proc(&proc_)?;

    chdir(root).map_err(ctx(|| format!("chdir {}", root.display())))?;
    pivot_root(".", ".").map_err(ctx(|| "pivot_root".into()))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(ctx(|| "detach old root".into()))?;
    chdir("/").map_err(ctx(|| "chdir /".into()))?;
    // The tree itself, /dev's nodes and links included: no new entries.
    make_read_only(Path::new("/"), false)?;

    sethostname(&plan.hostname).map_err(ctx(|| format!("sethostname {:?}", plan.hostname)))?;
    loopback_up()
}

/// What OCI runtimes hide of `/proc` (runc's default masked paths): files
/// get `/dev/null` bound over them, directories an empty read-only tmpfs.
const PROC_MASKED: [&str; 9] = [
    "acpi",
    "asound",
    "kcore",
    "keys",
    "latency_stats",
    "timer_list",
    "timer_stats",
    "sched_debug",
    "scsi",
];
/// And what they leave readable but not writable.
const PROC_READ_ONLY: [&str; 5] = ["bus", "fs", "irq", "sys", "sysrq-trigger"];

fn mask_proc(proc_: &Path) -> Res {
    for name in PROC_MASKED {
        let p = proc_.join(name);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => tmpfs(
                &p,
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                "size=0,mode=0555",
            )?,
            Ok(_) => bind(Path::new("/dev/null"), &p, true)?,
            Err(_) => {}
        }
    }
    for name in PROC_READ_ONLY {
        let p = proc_.join(name);
        if std::fs::symlink_metadata(&p).is_ok() {
            bind(&p, &p, true)?;
        }
    }
    Ok(())
}

/// Devices, a fresh devpts and a `/dev/shm` onto the caller's `/dev` tree.
fn setup_dev(plan: &Plan, dev: &Path) -> Res {
    for d in &plan.devices {
        let dst = dev.join(Path::new(d).file_name().unwrap_or_default());
        mount(Some(*d), &dst, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|e| format!("bind {d} on {}: {e}", dst.display()))?;
    }
    let pts = dev.join("pts");
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(mount_err("devpts", &pts))?;
    tmpfs(
        &dev.join("shm"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        "mode=1777",
    )
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
    if plan.privileged_map {
        // Init kept the caller's host id; the build takes its own.
        let (uid, gid) = (
            nix::unistd::Uid::from_raw(plan.uid),
            nix::unistd::Gid::from_raw(plan.gid),
        );
        nix::unistd::setresgid(gid, gid, gid).map_err(ctx(|| format!("setresgid {gid}")))?;
        nix::unistd::setresuid(uid, uid, uid).map_err(ctx(|| format!("setresuid {uid}")))?;
    }
    if let Some(n) = plan.max_processes {
        let lim = libc::rlimit {
            rlim_cur: n,
            rlim_max: n,
        };
        // SAFETY: plain syscall with a valid struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NPROC, &lim) } != 0 {
            return Err(format!("setrlimit NPROC {n}: {}", nix::Error::last()));
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
    super::seccomp::install(&plan.filters)
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
