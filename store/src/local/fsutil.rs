//! Filesystem chores of the store: normalising a new path, deleting read-only
//! trees, flushing to disk.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::AT_FDCWD;
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;

use super::StoreError;

/// The mtime of every file in the store, as in Nix: not zero, so that tools which
/// treat 0 as "unknown" still work.
pub const STORE_MTIME: i64 = 1;

/// Make a tree look like a store path: files 0444 or 0555 (owner-exec decides),
/// directories 0555, mtime 1, no setuid/setgid/sticky bits, owned by the store's
/// owner (a build run by root writes as an unprivileged build user). Refuses
/// device nodes, fifos and sockets.
pub fn normalise(root: &Path) -> Result<(), StoreError> {
    normalise_below(root)?;
    seal_root(root)
}

/// `normalise`, except that a directory at `root` keeps its write permission: an
/// unprivileged process can only rename a directory into another one if it may
/// write to it (its `..` entry changes). Call `seal_root` after the move.
pub fn normalise_below(root: &Path) -> Result<(), StoreError> {
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    // Directories are made read-only after their children, so that a failure part way
    // leaves the tree still removable by the caller.
    let mut dirs: Vec<PathBuf> = Vec::new();
    let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
    while let Some(p) = stack.pop() {
        let md = fs::symlink_metadata(&p).map_err(|e| StoreError::io(&p, e))?;
        if md.uid() != uid.as_raw() || md.gid() != gid.as_raw() {
            // Never follows a symlink: the tree's own entries only.
            std::os::unix::fs::lchown(&p, Some(uid.as_raw()), Some(gid.as_raw()))
                .map_err(|e| StoreError::io(&p, e))?;
        }
        let ft = md.file_type();
        if ft.is_dir() {
            for entry in fs::read_dir(&p).map_err(|e| StoreError::io(&p, e))? {
                stack.push(entry.map_err(|e| StoreError::io(&p, e))?.path());
            }
            dirs.push(p);
        } else if ft.is_file() {
            let mode = if md.mode() & 0o100 != 0 { 0o555 } else { 0o444 };
            if md.mode() & 0o7777 != mode {
                fs::set_permissions(&p, fs::Permissions::from_mode(mode))
                    .map_err(|e| StoreError::io(&p, e))?;
            }
            set_mtime(&p)?;
        } else if ft.is_symlink() {
            set_mtime(&p)?;
        } else {
            return Err(StoreError::UnsupportedFileType(p));
        }
    }
    for d in dirs.iter().rev() {
        if d == root {
            fs::set_permissions(d, fs::Permissions::from_mode(0o755))
                .map_err(|e| StoreError::io(d, e))?;
        } else {
            fs::set_permissions(d, fs::Permissions::from_mode(0o555))
                .map_err(|e| StoreError::io(d, e))?;
            set_mtime(d)?;
        }
    }
    Ok(())
}

/// Make a directory at `root` read-only with the store's mtime (after `normalise_below`).
pub fn seal_root(root: &Path) -> Result<(), StoreError> {
    let md = fs::symlink_metadata(root).map_err(|e| StoreError::io(root, e))?;
    if md.is_dir() {
        fs::set_permissions(root, fs::Permissions::from_mode(0o555))
            .map_err(|e| StoreError::io(root, e))?;
        set_mtime(root)?;
        sync_dir(root)?;
    }
    Ok(())
}

fn set_mtime(p: &Path) -> Result<(), StoreError> {
    let t = TimeSpec::new(STORE_MTIME, 0);
    utimensat(AT_FDCWD, p, &t, &t, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| StoreError::io(p, e.into()))
}

/// Delete a file or tree even if its directories are read-only. A missing path is
/// not an error.
pub fn remove_tree(root: &Path) -> Result<(), StoreError> {
    let md = match fs::symlink_metadata(root) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io(root, e)),
    };
    if !md.is_dir() {
        return fs::remove_file(root).map_err(|e| StoreError::io(root, e));
    }
    // Make every directory writable first (top-down), then let remove_dir_all do the rest.
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755))
            .map_err(|e| StoreError::io(&d, e))?;
        for entry in fs::read_dir(&d).map_err(|e| StoreError::io(&d, e))? {
            let entry = entry.map_err(|e| StoreError::io(&d, e))?;
            if entry
                .file_type()
                .map_err(|e| StoreError::io(&d, e))?
                .is_dir()
            {
                stack.push(entry.path());
            }
        }
    }
    fs::remove_dir_all(root).map_err(|e| StoreError::io(root, e))
}

/// Flush everything written to the filesystem that holds `dir`. One syncfs is far
/// cheaper than an fsync per file of a large tree.
pub fn sync_filesystem(dir: &Path) -> Result<(), StoreError> {
    let f = fs::File::open(dir).map_err(|e| StoreError::io(dir, e))?;
    nix::unistd::syncfs(&f).map_err(|e| StoreError::io(dir, e.into()))
}

/// Trees with more entries than this are flushed with one syncfs instead.
const FSYNC_EACH_LIMIT: usize = 64;

/// Make the tree at `root` durable before it is renamed into the store. A small tree
/// (most outputs of small builds, every `.drv`) is flushed file by file: a syncfs
/// waits for everything any process has written to the filesystem, which on a busy
/// machine costs tens of milliseconds per path. A large tree gets one syncfs of the
/// filesystem that holds `parent`.
pub fn sync_tree(root: &Path, parent: &Path) -> Result<(), StoreError> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = fs::symlink_metadata(&p).map_err(|e| StoreError::io(&p, e))?;
        if md.is_dir() {
            for entry in fs::read_dir(&p).map_err(|e| StoreError::io(&p, e))? {
                stack.push(entry.map_err(|e| StoreError::io(&p, e))?.path());
            }
            files.push(p);
        } else if md.is_file() {
            files.push(p);
        } else if p == root {
            // A store path that is one symlink: the directory that holds it now.
            files.push(parent.to_path_buf());
        }
        // Below the root, a symlink is flushed with the directory that holds it.
        if files.len() + stack.len() > FSYNC_EACH_LIMIT {
            return sync_filesystem(parent);
        }
    }
    for p in &files {
        // Read-only files and directories can be opened for reading and fsynced.
        let f = fs::File::open(p).map_err(|e| StoreError::io(p, e))?;
        f.sync_all().map_err(|e| StoreError::io(p, e))?;
    }
    Ok(())
}

/// fsync a directory so that a rename into it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    let f = fs::File::open(dir).map_err(|e| StoreError::io(dir, e))?;
    f.sync_all().map_err(|e| StoreError::io(dir, e))
}

/// Total size in bytes of the files under `root` (for GC reports).
pub fn disk_usage(root: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(md) = fs::symlink_metadata(&p) else {
            continue;
        };
        total += md.blocks() * 512;
        if md.is_dir() {
            if let Ok(rd) = fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shape an added tree can have is flushed without error: a small tree
    /// (file by file, read-only as `normalise_below` leaves it), a large one (one
    /// syncfs), a lone file and a lone symlink (through the directory holding it).
    #[test]
    fn trees_of_every_shape_are_flushed() {
        let t = tempfile::tempdir().unwrap();
        let small = t.path().join("small");
        fs::create_dir_all(small.join("d")).unwrap();
        fs::write(small.join("d/f"), b"x").unwrap();
        std::os::unix::fs::symlink("d/f", small.join("l")).unwrap();
        normalise_below(&small).unwrap();
        sync_tree(&small, t.path()).unwrap();

        let large = t.path().join("large");
        fs::create_dir(&large).unwrap();
        for i in 0..=FSYNC_EACH_LIMIT {
            fs::write(large.join(i.to_string()), b"y").unwrap();
        }
        sync_tree(&large, t.path()).unwrap();

        let file = t.path().join("file");
        fs::write(&file, b"z").unwrap();
        sync_tree(&file, t.path()).unwrap();

        let link = t.path().join("link");
        std::os::unix::fs::symlink("/nowhere", &link).unwrap();
        sync_tree(&link, t.path()).unwrap();

        let missing = t.path().join("missing");
        assert!(sync_tree(&missing, t.path()).is_err());
    }
}
