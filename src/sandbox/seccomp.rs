//! The system-call filter a build runs under, in the spirit of Nix's: a build
//! may do anything an ordinary program does, but it cannot leave behind a file
//! that would gain privilege elsewhere (setuid/setgid bits, extended
//! attributes such as file capabilities or ACLs), and it cannot reach the
//! kernel's privileged interfaces (keyrings, BPF, modules, reboot, kexec) even
//! through a nested user namespace of its own.
//!
//! The filters are compiled in the caller (allocation) and installed by the
//! command right before `execve`, after `PR_SET_NO_NEW_PRIVS`, so they hold
//! for everything the build runs and cannot be lifted.
//!
//! Three filters, because one seccomp filter returns one action:
//! - [`Errno EPERM`](libc::EPERM): `chmod`/`fchmod`/`fchmodat`/`fchmodat2`
//!   with `S_ISUID` or `S_ISGID` in the mode, the same for the mode of
//!   `open`/`openat`/`creat`/`mknod`/`mknodat` (`mkdir` ignores them); `add_key`,
//!   `request_key`, `keyctl`, `bpf`, `init_module`, `finit_module`,
//!   `delete_module`, `reboot`, `kexec_load`, `kexec_file_load`.
//! - `ENOTSUP` for `setxattr`/`lsetxattr`/`fsetxattr`/`setxattrat`: the answer
//!   of a filesystem without extended attributes, which `cp -a`, `tar` and
//!   `rsync` take in their stride.
//! - On x86-64, `ENOSYS` for the x32 ABI (system-call numbers with bit 30
//!   set), which would otherwise reach the same calls under other numbers.
//!
//! Any other architecture's calls (e.g. 32-bit `int 0x80` on x86-64) end the
//! process: the rule tables are written for the native one only.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

use super::SandboxError;

/// Syscall numbers the `libc` crate may not know yet (they are the same on
/// every architecture since the tables were unified).
const SYS_FCHMODAT2: i64 = 452;
const SYS_SETXATTRAT: i64 = 463;

/// A rule that matches when the mode argument `arg` has a set-id bit.
fn mode_has_set_id(arg: u8) -> Result<Vec<SeccompRule>, SandboxError> {
    [libc::S_ISUID as u64, libc::S_ISGID as u64]
        .into_iter()
        .map(|bit| {
            let cond = SeccompCondition::new(
                arg,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::MaskedEq(bit),
                bit,
            )
            .map_err(seccomp_err)?;
            SeccompRule::new(vec![cond]).map_err(seccomp_err)
        })
        .collect()
}

fn seccomp_err(e: seccompiler::BackendError) -> SandboxError {
    SandboxError::Spec(format!("seccomp filter: {e}"))
}

/// The calls refused with `EPERM`: (syscall, index of its mode argument, or
/// `None` to refuse it whatever its arguments).
fn eperm_calls() -> Vec<(i64, Option<u8>)> {
    let mut v: Vec<(i64, Option<u8>)> = vec![
        (libc::SYS_fchmod, Some(1)),
        (libc::SYS_fchmodat, Some(2)),
        (SYS_FCHMODAT2, Some(2)),
        (libc::SYS_openat, Some(3)),
        (libc::SYS_mknodat, Some(2)),
        (libc::SYS_add_key, None),
        (libc::SYS_request_key, None),
        (libc::SYS_keyctl, None),
        (libc::SYS_bpf, None),
        (libc::SYS_init_module, None),
        (libc::SYS_finit_module, None),
        (libc::SYS_delete_module, None),
        (libc::SYS_reboot, None),
        (libc::SYS_kexec_load, None),
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        (libc::SYS_chmod, Some(1)),
        (libc::SYS_open, Some(2)),
        (libc::SYS_creat, Some(1)),
        (libc::SYS_mknod, Some(1)),
        (libc::SYS_kexec_file_load, None),
    ]);
    #[cfg(target_arch = "aarch64")]
    v.push((libc::SYS_kexec_file_load, None));
    v
}

fn xattr_calls() -> Vec<i64> {
    vec![
        libc::SYS_setxattr,
        libc::SYS_lsetxattr,
        libc::SYS_fsetxattr,
        SYS_SETXATTRAT,
    ]
}

fn compile(rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32) -> Result<BpfProgram, SandboxError> {
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e: seccompiler::BackendError| {
            SandboxError::Spec(format!("seccomp filter: {e}"))
        })?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch,
    )
    .map_err(seccomp_err)?;
    filter.try_into().map_err(seccomp_err)
}

/// The filters to install, in order.
pub(crate) fn filters() -> Result<Vec<BpfProgram>, SandboxError> {
    let mut eperm = BTreeMap::new();
    for (nr, mode_arg) in eperm_calls() {
        let rules = match mode_arg {
            Some(arg) => mode_has_set_id(arg)?,
            None => Vec::new(),
        };
        eperm.insert(nr, rules);
    }
    let xattr = xattr_calls()
        .into_iter()
        .map(|nr| (nr, Vec::new()))
        .collect();
    let mut out = vec![compile(eperm, libc::EPERM)?, compile(xattr, libc::ENOTSUP)?];
    #[cfg(target_arch = "x86_64")]
    out.push(no_x32());
    Ok(out)
}

/// `ENOSYS` for every x32 system call (numbers with `__X32_SYSCALL_BIT`),
/// written by hand: the rule compiler matches exact numbers only.
#[cfg(target_arch = "x86_64")]
fn no_x32() -> BpfProgram {
    use seccompiler::sock_filter;
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    // EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
    const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    let op = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        op(LD_W_ABS, 0, 0, 4),              // arch
        op(JEQ_K, 0, 3, AUDIT_ARCH_X86_64), // other arch: allow here
        op(LD_W_ABS, 0, 0, 0),              // syscall number
        op(JGE_K, 0, 1, X32_SYSCALL_BIT),   // x32?
        op(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        op(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

/// Installs `filters` in the calling thread; sets `PR_SET_NO_NEW_PRIVS`.
pub(crate) fn install(filters: &[BpfProgram]) -> Result<(), String> {
    for f in filters {
        seccompiler::apply_filter(f).map_err(|e| format!("install seccomp filter: {e}"))?;
    }
    Ok(())
}
