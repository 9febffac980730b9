//! `builtin:buildroot`: merge the trees of a build root's members into one tree and
//! apply the declarative fix-ups that maintainer scripts would have made.
//!
//! Files are hard links to the members' (immutable, read-only) files where the
//! filesystem allows, so a 100 MB root costs a few thousand directory entries.
//! A path provided twice with different content is an error naming both members.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use buildit_store::builtins::Fixups;

use crate::in_root::resolve_in_root;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum MergeError {
    #[error("{path} is provided by both {first} and {second}, with different {what}")]
    Conflict {
        path: String,
        first: String,
        second: String,
        what: &'static str,
    },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("fix-up {what} {path}: {reason}")]
    Fixup {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("{}: unsupported file type in a member tree", .0.display())]
    FileType(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> MergeError + '_ {
    move |source| MergeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Merge `members` (name, tree) in order into `dest` (which must not exist).
pub fn merge_trees(members: &[(String, PathBuf)], dest: &Path) -> Result<(), MergeError> {
    fs::create_dir(dest).map_err(io_err(dest))?;
    let mut provider: HashMap<PathBuf, usize> = HashMap::new();
    for (i, (_, root)) in members.iter().enumerate() {
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let dir = root.join(&rel);
            let mut names: Vec<_> = fs::read_dir(&dir)
                .map_err(io_err(&dir))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .map_err(io_err(&dir))?;
            names.sort();
            for name in names {
                let rel = rel.join(&name);
                let src = root.join(&rel);
                let dst = dest.join(&rel);
                let md = fs::symlink_metadata(&src).map_err(io_err(&src))?;
                let existing = fs::symlink_metadata(&dst).ok();
                let conflict = |what| {
                    let first = provider
                        .get(&rel)
                        .map(|j| members[*j].0.clone())
                        .unwrap_or_default();
                    MergeError::Conflict {
                        path: format!("/{}", rel.display()),
                        first,
                        second: members[i].0.clone(),
                        what,
                    }
                };
                if md.is_dir() {
                    match existing {
                        None => fs::create_dir(&dst).map_err(io_err(&dst))?,
                        Some(e) if e.is_dir() => {}
                        Some(_) => return Err(conflict("types (directory and non-directory)")),
                    }
                    provider.entry(rel.clone()).or_insert(i);
                    stack.push(rel);
                } else if md.file_type().is_symlink() {
                    let target = fs::read_link(&src).map_err(io_err(&src))?;
                    match existing {
                        None => symlink(&target, &dst).map_err(io_err(&dst))?,
                        Some(e) if e.file_type().is_symlink() => {
                            if fs::read_link(&dst).map_err(io_err(&dst))? != target {
                                return Err(conflict("symlink targets"));
                            }
                        }
                        Some(_) => return Err(conflict("types (symlink and non-symlink)")),
                    }
                    provider.entry(rel).or_insert(i);
                } else if md.is_file() {
                    match existing {
                        None => link_or_copy(&src, &dst, md.mode())?,
                        Some(e) if e.is_file() => {
                            if (e.mode() & 0o100) != (md.mode() & 0o100) {
                                return Err(conflict("modes"));
                            }
                            if !same_contents(&src, &dst)? {
                                return Err(conflict("contents"));
                            }
                        }
                        Some(_) => return Err(conflict("types (file and non-file)")),
                    }
                    provider.entry(rel).or_insert(i);
                } else {
                    return Err(MergeError::FileType(src));
                }
            }
        }
    }
    Ok(())
}

fn link_or_copy(src: &Path, dst: &Path, mode: u32) -> Result<(), MergeError> {
    match fs::hard_link(src, dst) {
        Ok(()) => Ok(()),
        // Another filesystem, or a link count limit: copy instead.
        Err(_) => {
            fs::copy(src, dst).map_err(io_err(dst))?;
            fs::set_permissions(dst, fs::Permissions::from_mode(mode & 0o777)).map_err(io_err(dst))
        }
    }
}

fn same_contents(a: &Path, b: &Path) -> Result<bool, MergeError> {
    crate::io_util::same_file_contents(a, b)
        .map_err(|(path, source)| MergeError::Io { path, source })
}

fn unlink_if_present(p: &Path) -> Result<(), MergeError> {
    match fs::symlink_metadata(p) {
        Ok(md) if md.is_dir() => Err(MergeError::Fixup {
            what: "path",
            path: p.display().to_string(),
            reason: "is a directory".into(),
        }),
        Ok(_) => fs::remove_file(p).map_err(io_err(p)),
        Err(_) => Ok(()),
    }
}

fn rel(abs: &str) -> &str {
    abs.trim_start_matches('/')
}

/// Apply fix-ups to a merged tree, and write `/var/lib/dpkg/status` from the members'
/// control files so that dpkg (and SBOM scanners) see what is installed.
pub fn apply_fixups(dest: &Path, fixups: &Fixups) -> Result<(), MergeError> {
    write_dpkg_status(dest)?;
    if fixups.merged_usr {
        for d in buildit_store::usrmerge::MERGED_USR_DIRS {
            let link = dest.join(d);
            if dest.join("usr").join(d).is_dir() && fs::symlink_metadata(&link).is_err() {
                symlink(format!("usr/{d}"), &link).map_err(io_err(&link))?;
            }
        }
    }
    for d in &fixups.directories {
        let p = dest.join(rel(d));
        fs::create_dir_all(&p).map_err(io_err(&p))?;
    }
    for (path, contents) in &fixups.files {
        let p = dest.join(rel(path));
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        unlink_if_present(&p)?;
        fs::write(&p, contents).map_err(io_err(&p))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).map_err(io_err(&p))?;
    }
    for (link, target) in &fixups.alternatives {
        let p = dest.join(rel(link));
        let parent = p.parent().unwrap_or(dest);
        let resolved_target = if target.starts_with('/') {
            PathBuf::from(target)
        } else {
            Path::new("/")
                .join(parent.strip_prefix(dest).unwrap_or(Path::new("")))
                .join(target)
        };
        if resolve_in_root(dest, &resolved_target).is_none_or(|t| !t.exists()) {
            return Err(MergeError::Fixup {
                what: "alternative",
                path: link.clone(),
                reason: format!("its target {target} does not exist in the build root"),
            });
        }
        fs::create_dir_all(parent).map_err(io_err(parent))?;
        unlink_if_present(&p)?;
        symlink(target, &p).map_err(io_err(&p))?;
    }
    Ok(())
}

fn write_dpkg_status(dest: &Path) -> Result<(), MergeError> {
    let dir = dest.join("var/lib/buildit/debian");
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(());
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "control"))
        .collect();
    files.sort();
    let mut status = String::new();
    for f in files {
        let text = fs::read_to_string(&f).map_err(io_err(&f))?;
        let mut out = String::new();
        for line in text.trim_end_matches('\n').lines() {
            out.push_str(line);
            out.push('\n');
            if line.starts_with("Package:") {
                out.push_str("Status: install ok installed\n");
            }
        }
        status.push_str(&out);
        status.push('\n');
    }
    let p = dest.join("var/lib/dpkg/status");
    fs::create_dir_all(p.parent().expect("has parent")).map_err(io_err(&p))?;
    unlink_if_present(&p)?;
    fs::write(&p, status).map_err(io_err(&p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(root: &Path, name: &str, files: &[(&str, &str)]) -> (String, PathBuf) {
        let dir = root.join(name);
        for (p, c) in files {
            let p = dir.join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, c).unwrap();
        }
        (name.to_string(), dir)
    }

    #[test]
    fn merge_and_conflicts() {
        let t = tempfile::tempdir().unwrap();
        let a = member(
            t.path(),
            "a-1",
            &[("usr/bin/x", "x"), ("usr/share/doc/same", "s")],
        );
        let b = member(
            t.path(),
            "b-2",
            &[("usr/bin/y", "y"), ("usr/share/doc/same", "s")],
        );
        let c = member(t.path(), "c-3", &[("usr/bin/x", "other")]);
        merge_trees(&[a.clone(), b.clone()], &t.path().join("ok")).unwrap();
        assert_eq!(
            fs::read_to_string(t.path().join("ok/usr/bin/y")).unwrap(),
            "y"
        );
        let e = merge_trees(&[a, b, c], &t.path().join("bad")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/usr/bin/x is provided by both a-1 and c-3, with different contents"
        );
    }

    #[test]
    fn fixups_never_write_through_links() {
        let t = tempfile::tempdir().unwrap();
        let a = member(
            t.path(),
            "a",
            &[("etc/shells", "old\n"), ("usr/bin/gcc-12", "cc")],
        );
        let dest = t.path().join("root");
        merge_trees(&[a], &dest).unwrap();
        let mut f = Fixups {
            merged_usr: true,
            ..Default::default()
        };
        f.files.insert("/etc/shells".into(), "/bin/sh\n".into());
        f.alternatives.insert("/usr/bin/cc".into(), "gcc-12".into());
        apply_fixups(&dest, &f).unwrap();
        assert_eq!(
            fs::read_to_string(t.path().join("a/etc/shells")).unwrap(),
            "old\n"
        );
        assert_eq!(
            fs::read_to_string(dest.join("etc/shells")).unwrap(),
            "/bin/sh\n"
        );
        assert_eq!(fs::read_to_string(dest.join("bin/cc")).unwrap(), "cc");
        f.alternatives
            .insert("/usr/bin/c++".into(), "g++-12".into());
        let e = apply_fixups(&dest, &f).unwrap_err();
        assert!(e.to_string().contains("g++-12 does not exist"), "{e}");
    }
}
