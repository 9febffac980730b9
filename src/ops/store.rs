//! Store inspection operations: listing and reading inside store paths.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use buildit_store::{LocalStore, StoreError, StorePath};
use serde::Serialize;

/// One entry of a listing inside a store path.
#[derive(Debug, Serialize)]
pub struct LsEntry {
    /// Path relative to the listed location ("" for the location itself).
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub executable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// A location inside a valid store path, resolved to its physical place.
pub struct StoreLocation {
    pub path: StorePath,
    pub sub: PathBuf,
    pub physical: PathBuf,
}

impl StoreLocation {
    /// Resolve what a user typed; the store path must be valid, and the location inside
    /// it may not escape through `..`.
    pub fn resolve(store: &LocalStore, arg: &str) -> Result<StoreLocation, StoreError> {
        let (path, sub) = store.resolve(arg)?;
        if !store.is_valid(&path)? {
            return Err(StoreError::NotValid(path));
        }
        if sub
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(StoreError::Invalid(format!(
                "'{arg}' leaves its store path"
            )));
        }
        // Joining an empty `sub` would add a trailing '/', which a file refuses.
        let physical = if sub.as_os_str().is_empty() {
            store.physical_path(&path)
        } else {
            store.physical_path(&path).join(&sub)
        };
        Ok(StoreLocation {
            path,
            sub,
            physical,
        })
    }

    pub fn display(&self) -> String {
        if self.sub.as_os_str().is_empty() {
            self.path.to_string()
        } else {
            format!("{}/{}", self.path, self.sub.display())
        }
    }
}

fn entry(name: String, p: &Path) -> Result<LsEntry, StoreError> {
    let md = fs::symlink_metadata(p).map_err(|e| io_err(p, e))?;
    let ft = md.file_type();
    Ok(if ft.is_symlink() {
        LsEntry {
            name,
            kind: "symlink",
            size: None,
            executable: false,
            target: Some(
                fs::read_link(p)
                    .map_err(|e| io_err(p, e))?
                    .to_string_lossy()
                    .into_owned(),
            ),
        }
    } else if ft.is_dir() {
        LsEntry {
            name,
            kind: "directory",
            size: None,
            executable: false,
            target: None,
        }
    } else {
        LsEntry {
            name,
            kind: "regular",
            size: Some(md.len()),
            executable: md.mode() & 0o100 != 0,
            target: None,
        }
    })
}

fn io_err(p: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io {
        path: p.to_path_buf(),
        error: e,
    }
}

/// List a location: a directory's entries (sorted by name bytes, as in a NAR), all of
/// them below it with `recursive`, or the file or symlink itself.
pub fn ls(loc: &StoreLocation, recursive: bool) -> Result<Vec<LsEntry>, StoreError> {
    let root = &loc.physical;
    let top = entry(String::new(), root)?;
    if top.kind != "directory" {
        return Ok(vec![top]);
    }
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), root.clone())];
    while let Some((prefix, dir)) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(&dir)
            .map_err(|e| io_err(&dir, e))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(|e| io_err(&dir, e))?;
        names.sort();
        let mut subdirs = Vec::new();
        for n in names {
            let name = format!("{prefix}{}", n.to_string_lossy());
            let p = dir.join(&n);
            let e = entry(name.clone(), &p)?;
            if recursive && e.kind == "directory" {
                subdirs.push((format!("{name}/"), p));
            }
            out.push(e);
        }
        // Depth-first in name order: push in reverse so the first name is visited first.
        stack.extend(subdirs.into_iter().rev());
    }
    if recursive {
        out.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    }
    Ok(out)
}

/// Restore a NAR into `target`, which must not exist, all or nothing: the tree is
/// written under a temporary name beside `target` and renamed into place (never
/// over anything) once the whole NAR was read and found sound; on any error the
/// temporary tree is removed and `target` never appears. Only a kill leaves the
/// temporary `.NAME.restore-…` behind.
pub fn restore_nar(
    nar: &mut (impl std::io::Read + ?Sized),
    target: &Path,
) -> Result<u64, buildit_store::nar::NarError> {
    use buildit_store::nar::NarError;
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    let io_err = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source: std::io::Error| NarError::Io { op, path, source }
    };
    // Refused before the NAR is read, as nar::restore would.
    match fs::symlink_metadata(target) {
        Ok(_) => return Err(NarError::TargetExists(target.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("stat", target)(e)),
    }
    let name = target
        .file_name()
        .ok_or_else(|| io_err("restore", target)(std::io::ErrorKind::InvalidInput.into()))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".restore-{}-{nanos:x}", std::process::id()));
    let tmp = target.with_file_name(tmp_name);
    let discard = |tmp: &Path| {
        let _ = buildit_store::local::remove_tree(tmp);
    };
    let size = match buildit_store::nar::restore(nar, &tmp) {
        Ok(size) => size,
        // Someone else's file at our temporary name is not ours to remove.
        Err(e @ NarError::TargetExists(_)) => return Err(e),
        Err(e) => {
            discard(&tmp);
            return Err(e);
        }
    };
    if let Err(e) = renameat2(
        AT_FDCWD,
        &tmp,
        AT_FDCWD,
        target,
        RenameFlags::RENAME_NOREPLACE,
    ) {
        discard(&tmp);
        return Err(if e == nix::errno::Errno::EEXIST {
            NarError::TargetExists(target.to_path_buf())
        } else {
            io_err("rename", target)(e.into())
        });
    }
    Ok(size)
}
