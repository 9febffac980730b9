//! Unprivileged host ids for builds started by root.
//!
//! A sandbox maps its uid/gid (1000 by default) to one host id. For an
//! ordinary user that is the user's own id, and nothing in the sandbox holds
//! more than the user. For root it must not be 0: the kernel checks
//! `/proc/sys`, `/proc/sysrq-trigger` and the like against the host id, so a
//! build mapped to host root could change the host's kernel settings.
//!
//! So root runs each build as its own unprivileged id, as Nix's
//! `auto-allocate-uids` does: the range is the `buildit` entry of
//! `/etc/subuid` and `/etc/subgid` when the administrator made one, else
//! [`DEFAULT_FIRST_ID`] (Nix's default start, far above the ids distributions
//! and `useradd`'s sub-id ranges hand out) with [`DEFAULT_COUNT`] ids. No user
//! account is needed. One id per concurrent build, held with a lock file under
//! [`LOCK_DIR`] (host-wide, so that stores in different roots agree) for as
//! long as the [`BuildUser`] lives; a build's process limit is counted per id
//! and user namespace, so builds do not share it.

use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::SandboxError;

/// Where the slot locks live: root-owned, on a tmpfs that a reboot empties.
pub const LOCK_DIR: &str = "/run/buildit/build-users";
/// The first id of the default range (0x34000000).
pub const DEFAULT_FIRST_ID: u32 = 872_415_232;
/// How many builds may run at once with the default range.
pub const DEFAULT_COUNT: u32 = 65_536;
/// The user whose `/etc/subuid` and `/etc/subgid` ranges are used.
pub const RANGE_OWNER: &str = "buildit";

/// A host uid/gid that one sandbox runs as; released when dropped.
#[derive(Debug)]
pub struct BuildUser {
    pub uid: u32,
    pub gid: u32,
    _lock: File,
}

/// `start:count` of `user` in a subordinate-id file (`NAME:START:COUNT`).
fn sub_range(file: &Path, user: &str) -> Option<(u32, u32)> {
    let text = fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        if f.next()? != user {
            return None;
        }
        let start = f.next()?.parse::<u32>().ok()?;
        let count = f.next()?.parse::<u32>().ok()?;
        (start > 0 && count > 0 && start.checked_add(count).is_some()).then_some((start, count))
    })
}

/// The (uid start, gid start, count) to allocate from.
fn range() -> (u32, u32, u32) {
    match (
        sub_range(Path::new("/etc/subuid"), RANGE_OWNER),
        sub_range(Path::new("/etc/subgid"), RANGE_OWNER),
    ) {
        (Some((u, nu)), Some((g, ng))) => (u, g, nu.min(ng)),
        _ => (DEFAULT_FIRST_ID, DEFAULT_FIRST_ID, DEFAULT_COUNT),
    }
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> SandboxError {
    move |source| SandboxError::Io { context, source }
}

/// Creates `dir` (and its parents) owned by us (root) and writable by us
/// only, refusing one that someone else could have prepared.
fn private_dir(dir: &Path) -> Result<(), SandboxError> {
    let me = nix::unistd::geteuid().as_raw();
    for d in dir
        .ancestors()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .skip(1)
    {
        match fs::DirBuilder::new().mode(0o755).create(d) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(format!("create {}", d.display()))(e)),
        }
        let md = fs::symlink_metadata(d).map_err(io(format!("stat {}", d.display())))?;
        let shared = md.mode() & 0o022 != 0 && md.mode() & 0o1000 == 0;
        let ours = md.uid() == me || md.uid() == 0;
        if !md.is_dir() || !ours || shared {
            return Err(SandboxError::Spec(format!(
                "{} must be a directory owned by root and writable by root only",
                d.display()
            )));
        }
    }
    Ok(())
}

impl BuildUser {
    /// Takes a free id from the range (see the module docs).
    pub fn acquire() -> Result<BuildUser, SandboxError> {
        Self::acquire_in(Path::new(LOCK_DIR))
    }

    fn acquire_in(lock_dir: &Path) -> Result<BuildUser, SandboxError> {
        private_dir(lock_dir)?;
        let (uid0, gid0, count) = range();
        // Lowest free slot first: the lock files stay as few as the most
        // builds that ever ran at once.
        for slot in 0..count {
            let path: PathBuf = lock_dir.join(format!("{}", uid0 + slot));
            let f = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .map_err(io(format!("open {}", path.display())))?;
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(BuildUser {
                    uid: uid0 + slot,
                    gid: gid0 + slot,
                    _lock: f,
                });
            }
        }
        Err(SandboxError::Spec(format!(
            "all {count} build ids (from {uid0}) are in use"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_ranges_are_read_by_name() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("subuid");
        fs::write(&f, "alice:100000:65536\nbuildit:200000:1000\nbad:x:1\n").unwrap();
        assert_eq!(sub_range(&f, "buildit"), Some((200000, 1000)));
        assert_eq!(sub_range(&f, "alice"), Some((100000, 65536)));
        assert_eq!(sub_range(&f, "bad"), None);
        assert_eq!(sub_range(&f, "bob"), None);
    }

    #[test]
    fn each_holder_gets_its_own_id_until_it_lets_go() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("build-users");
        let a = BuildUser::acquire_in(&dir).unwrap();
        let b = BuildUser::acquire_in(&dir).unwrap();
        assert_ne!(a.uid, b.uid);
        assert!(a.uid != 0 && b.uid != 0);
        let first = a.uid;
        drop(a);
        let c = BuildUser::acquire_in(&dir).unwrap();
        assert_eq!(c.uid, first);
        // A lock dir others may write to is refused.
        let open = t.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        assert!(BuildUser::acquire_in(&open.join("x")).is_err());
    }
}
