//! File locks (flock) that coordinate buildit processes sharing one store.
//!
//! Locks are released by the kernel when a process dies, so a killed buildit never
//! leaves a lock behind.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::StoreError;

/// A held lock on one file; dropping it releases the lock.
#[derive(Debug)]
pub struct FileLock {
    _flock: Flock<File>,
    path: PathBuf,
}

impl FileLock {
    fn open(path: &Path) -> Result<File, StoreError> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| StoreError::io(path, e))
    }

    fn take(path: &Path, arg: FlockArg) -> Result<Option<FileLock>, StoreError> {
        let mut file = Self::open(path)?;
        loop {
            match Flock::lock(file, arg) {
                Ok(flock) => {
                    // Stale lock files are removed (held, so unused) by
                    // `LocalStore::open`; one removed between our open and our
                    // lock is a lock on nothing: take the one now at `path`.
                    if !Self::still_at(&flock, path)? {
                        drop(flock);
                        file = Self::open(path)?;
                        continue;
                    }
                    return Ok(Some(FileLock {
                        _flock: flock,
                        path: path.to_path_buf(),
                    }));
                }
                Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
                // Interrupted by a signal: wait again on the same file.
                Err((f, Errno::EINTR)) => file = f,
                Err((_, e)) => return Err(StoreError::io(path, e.into())),
            }
        }
    }

    /// Whether `path` still names the file `locked` holds.
    fn still_at(locked: &File, path: &Path) -> Result<bool, StoreError> {
        use std::os::unix::fs::MetadataExt;
        let held = locked.metadata().map_err(|e| StoreError::io(path, e))?;
        match std::fs::symlink_metadata(path) {
            Ok(now) => Ok(now.dev() == held.dev() && now.ino() == held.ino()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::io(path, e)),
        }
    }

    /// Wait for an exclusive lock.
    pub fn exclusive(path: &Path) -> Result<FileLock, StoreError> {
        Self::take(path, FlockArg::LockExclusive).map(|l| l.expect("blocking lock"))
    }

    /// Wait for a shared lock.
    pub fn shared(path: &Path) -> Result<FileLock, StoreError> {
        Self::take(path, FlockArg::LockShared).map(|l| l.expect("blocking lock"))
    }

    /// An exclusive lock if nobody holds the file, else `None`.
    pub fn try_exclusive(path: &Path) -> Result<Option<FileLock>, StoreError> {
        Self::take(path, FlockArg::LockExclusiveNonblock)
    }

    /// A shared lock if nobody holds the file exclusively, else `None`.
    pub fn try_shared(path: &Path) -> Result<Option<FileLock>, StoreError> {
        Self::take(path, FlockArg::LockSharedNonblock)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
