//! Whose configuration buildit takes. `.buildit-config.yaml` is looked up in the
//! parents of a spec directory, so anyone who can write a directory above a spec
//! (`/tmp`, a shared checkout) could otherwise name the caches, keys and recipe
//! directories of everyone who builds below it — root included. As git's
//! `safe.directory` reasons, what matters is who owns the file: a configuration is
//! used only when it, and any symlink that names it, is owned by the invoking user
//! (effective uid) or by root, it is not writable by group or others, and its
//! directory is not writable by others unless that directory is sticky and owned by
//! the user or root (as `/tmp` is: nobody else can replace the file there). The
//! directories and key files a configuration names are checked the same way, and
//! must not be writable by group or others at all (others could add recipes or
//! sources to them).
//!
//! A file or directory that fails the check but is trusted anyway is named in
//! `BUILDIT_TRUSTED_CONFIG` (paths separated by `:`).

use std::fmt;
use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Paths (separated by `:`) trusted whatever their owner and mode.
pub const TRUST_ENV: &str = "BUILDIT_TRUSTED_CONFIG";

const STICKY: u32 = 0o1000;
const GROUP_OR_OTHER_WRITE: u32 = 0o022;
const OTHER_WRITE: u32 = 0o002;

/// Why a file or directory is not trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Distrust {
    /// Owned by someone else (`uid`), neither the invoking user (`euid`) nor root.
    Owner { uid: u32, euid: u32 },
    /// A symlink to it is owned by someone else.
    LinkOwner { link: PathBuf, uid: u32, euid: u32 },
    /// Writable by group or others (`mode` is its permission bits).
    Writable { mode: u32 },
    /// Its directory is writable by others and not sticky, or sticky but owned by
    /// someone else: they could replace the file.
    Directory { dir: PathBuf, mode: u32, uid: u32 },
    /// It could not be examined.
    Unreadable { reason: String },
}

impl fmt::Display for Distrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Distrust::Owner { uid, euid } => write!(
                f,
                "it is owned by uid {uid}, neither you (uid {euid}) nor root"
            ),
            Distrust::LinkOwner { link, uid, euid } => write!(
                f,
                "the symlink {} is owned by uid {uid}, neither you (uid {euid}) nor root",
                link.display()
            ),
            Distrust::Writable { mode } => write!(
                f,
                "it is writable by {} (mode {mode:04o})",
                if mode & OTHER_WRITE != 0 {
                    "others"
                } else {
                    "its group"
                }
            ),
            Distrust::Directory { dir, mode, uid } => write!(
                f,
                "its directory {} is writable by others (mode {mode:04o}, owner uid {uid})",
                dir.display()
            ),
            Distrust::Unreadable { reason } => write!(f, "it cannot be examined: {reason}"),
        }
    }
}

/// A path that was not trusted, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Untrusted {
    pub path: PathBuf,
    pub why: Distrust,
}

impl Untrusted {
    /// How to allow it, for the message's help.
    pub fn help(&self) -> String {
        let fix = match &self.why {
            Distrust::Owner { .. } | Distrust::LinkOwner { .. } => {
                "if it is yours, take it over (chown); ".to_string()
            }
            Distrust::Writable { .. } => format!("`chmod go-w {}`, or ", self.path.display()),
            Distrust::Directory { .. } => "move it to a directory only you can write, or ".into(),
            Distrust::Unreadable { .. } => String::new(),
        };
        format!(
            "{fix}if you trust it as it is, name it in {TRUST_ENV} (paths separated by ':'): {TRUST_ENV}={}",
            self.path.display()
        )
    }
}

impl fmt::Display for Untrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.why)
    }
}

/// Who is asking, and what they said to trust anyway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trust {
    pub euid: u32,
    /// From [`TRUST_ENV`], each as written and canonicalised.
    pub trusted: Vec<PathBuf>,
}

impl Trust {
    /// The invoking user (effective uid) and `$BUILDIT_TRUSTED_CONFIG`.
    pub fn from_env() -> Trust {
        let euid = nix::unistd::geteuid().as_raw();
        let list = std::env::var_os(TRUST_ENV).unwrap_or_default();
        Trust::new(euid, std::env::split_paths(&list))
    }

    pub fn new(euid: u32, trusted: impl IntoIterator<Item = PathBuf>) -> Trust {
        let mut all = Vec::new();
        for p in trusted.into_iter().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(real) = std::fs::canonicalize(&p) {
                all.push(real);
            }
            all.push(std::path::absolute(&p).unwrap_or(p));
        }
        Trust { euid, trusted: all }
    }

    fn listed(&self, path: &Path) -> bool {
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let real = std::fs::canonicalize(path).ok();
        self.trusted
            .iter()
            .any(|t| *t == abs || real.as_ref() == Some(t))
    }

    fn owner_ok(&self, uid: u32) -> bool {
        uid == self.euid || uid == 0
    }

    /// The checks of a path before it is opened: a symlink at `path` owned by a
    /// stranger, and the directory it is in.
    fn check_place(&self, path: &Path) -> Result<(), Distrust> {
        let unreadable = |e: std::io::Error| Distrust::Unreadable {
            reason: e.to_string(),
        };
        let link = std::fs::symlink_metadata(path).map_err(unreadable)?;
        if link.file_type().is_symlink() && !self.owner_ok(link.uid()) {
            return Err(Distrust::LinkOwner {
                link: path.to_path_buf(),
                uid: link.uid(),
                euid: self.euid,
            });
        }
        let abs = std::path::absolute(path).map_err(unreadable)?;
        if let Some(dir) = abs.parent() {
            let d = std::fs::metadata(dir).map_err(unreadable)?;
            let mode = d.mode() & 0o7777;
            let replaceable =
                mode & OTHER_WRITE != 0 && (mode & STICKY == 0 || !self.owner_ok(d.uid()));
            if replaceable {
                return Err(Distrust::Directory {
                    dir: dir.to_path_buf(),
                    mode,
                    uid: d.uid(),
                });
            }
        }
        Ok(())
    }

    fn check_meta(&self, meta: &Metadata, writable_mask: u32) -> Result<(), Distrust> {
        if !self.owner_ok(meta.uid()) {
            return Err(Distrust::Owner {
                uid: meta.uid(),
                euid: self.euid,
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & writable_mask != 0 {
            return Err(Distrust::Writable { mode });
        }
        Ok(())
    }

    /// Open a configuration file if it is trusted. The owner and mode are those of
    /// the file opened (`fstat`), so it cannot be swapped between check and read.
    pub fn open_config(&self, path: &Path) -> Result<File, Untrusted> {
        let untrusted = |why| Untrusted {
            path: path.to_path_buf(),
            why,
        };
        let file = File::open(path).map_err(|e| {
            untrusted(Distrust::Unreadable {
                reason: e.to_string(),
            })
        })?;
        if self.listed(path) {
            return Ok(file);
        }
        self.check_place(path).map_err(untrusted)?;
        let meta = file.metadata().map_err(|e| {
            untrusted(Distrust::Unreadable {
                reason: e.to_string(),
            })
        })?;
        self.check_meta(&meta, GROUP_OR_OTHER_WRITE)
            .map_err(untrusted)?;
        Ok(file)
    }

    /// Whether a configuration file may be used (see [`Trust::open_config`]).
    pub fn check_config(&self, path: &Path) -> Result<(), Untrusted> {
        self.open_config(path).map(drop)
    }

    /// Whether a directory or file that a configuration names may be used: owned by
    /// the user or root, not writable by group or others (sticky or not: others
    /// could add files to a directory), and the same for the directories above it
    /// up to the first one owned by root and not writable by others.
    pub fn check_named(&self, path: &Path) -> Result<(), Untrusted> {
        if self.listed(path) {
            return Ok(());
        }
        let real = std::fs::canonicalize(path).map_err(|e| Untrusted {
            path: path.to_path_buf(),
            why: Distrust::Unreadable {
                reason: e.to_string(),
            },
        })?;
        let meta = std::fs::metadata(&real).map_err(|e| Untrusted {
            path: path.to_path_buf(),
            why: Distrust::Unreadable {
                reason: e.to_string(),
            },
        })?;
        self.check_meta(&meta, GROUP_OR_OTHER_WRITE)
            .map_err(|why| Untrusted {
                path: path.to_path_buf(),
                why,
            })?;
        // A directory above it that others may write lets them rename it away and
        // put their own in its place.
        for dir in real.ancestors().skip(1) {
            let Ok(d) = std::fs::metadata(dir) else {
                break;
            };
            let mode = d.mode() & 0o7777;
            let replaceable =
                mode & OTHER_WRITE != 0 && (mode & STICKY == 0 || !self.owner_ok(d.uid()));
            if replaceable {
                return Err(Untrusted {
                    path: path.to_path_buf(),
                    why: Distrust::Directory {
                        dir: dir.to_path_buf(),
                        mode,
                        uid: d.uid(),
                    },
                });
            }
            if d.uid() == 0 && mode & GROUP_OR_OTHER_WRITE == 0 {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn me() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn own_file_is_trusted_unless_others_can_write_it() {
        let t = tempfile::tempdir().unwrap();
        chmod(t.path(), 0o755);
        let f = t.path().join("c.yaml");
        std::fs::write(&f, "").unwrap();
        chmod(&f, 0o644);
        let trust = Trust::new(me(), []);
        trust.check_config(&f).unwrap();
        chmod(&f, 0o664);
        assert_eq!(
            trust.check_config(&f).unwrap_err().why,
            Distrust::Writable { mode: 0o664 }
        );
        chmod(&f, 0o646);
        let e = trust.check_config(&f).unwrap_err();
        assert!(
            e.to_string().contains("writable by others (mode 0646)"),
            "{e}"
        );
        assert!(e.help().contains(TRUST_ENV), "{}", e.help());
        // Named in the environment variable: trusted as it is.
        Trust::new(me(), [f.clone()]).check_config(&f).unwrap();
    }

    #[test]
    fn someone_elses_file_is_not_trusted() {
        let t = tempfile::tempdir().unwrap();
        chmod(t.path(), 0o755);
        let f = t.path().join("c.yaml");
        std::fs::write(&f, "").unwrap();
        chmod(&f, 0o644);
        let other = if me() == 4242 { 4243 } else { 4242 };
        let (as_uid, owner) = if me() == 0 {
            // Root can give the file away, and then is the one who does not own it.
            std::os::unix::fs::chown(&f, Some(other), None).unwrap();
            (0, other)
        } else {
            // Anyone else sees their own file as another user would.
            (other, me())
        };
        let e = Trust::new(as_uid, []).check_config(&f).unwrap_err();
        assert_eq!(
            e.why,
            Distrust::Owner {
                uid: owner,
                euid: as_uid
            }
        );
        assert!(
            e.to_string().contains(&format!("owned by uid {owner}")),
            "{e}"
        );
    }

    #[test]
    fn writable_directories() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("shared");
        std::fs::create_dir(&dir).unwrap();
        let f = dir.join("c.yaml");
        std::fs::write(&f, "").unwrap();
        chmod(&f, 0o644);
        let trust = Trust::new(me(), []);
        chmod(&dir, 0o777);
        assert!(matches!(
            trust.check_config(&f).unwrap_err().why,
            Distrust::Directory { mode: 0o777, .. }
        ));
        // Sticky and ours, as /tmp is root's: nobody else can replace the file.
        chmod(&dir, 0o1777);
        trust.check_config(&f).unwrap();
        // A named directory inside a world-writable one is refused even when sticky:
        // others could not replace it, but a configuration's directories are held
        // to "only you can change what is in them", and for the parent too when it
        // is not sticky.
        let sub = dir.join("recipes");
        std::fs::create_dir(&sub).unwrap();
        chmod(&sub, 0o755);
        trust.check_named(&sub).unwrap();
        chmod(&sub, 0o775);
        assert!(matches!(
            trust.check_named(&sub).unwrap_err().why,
            Distrust::Writable { mode: 0o775 }
        ));
        chmod(&sub, 0o755);
        chmod(&dir, 0o777);
        assert!(matches!(
            trust.check_named(&sub).unwrap_err().why,
            Distrust::Directory { .. }
        ));
        chmod(&dir, 0o755);
    }

    #[test]
    fn a_strangers_symlink_is_not_followed_into_trust() {
        // Only root can make a symlink owned by someone else; anyone else sees their
        // own link as another user would.
        let t = tempfile::tempdir().unwrap();
        chmod(t.path(), 0o755);
        let f = t.path().join("real.yaml");
        std::fs::write(&f, "").unwrap();
        chmod(&f, 0o644);
        let link = t.path().join("c.yaml");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        Trust::new(me(), []).check_config(&link).unwrap();
        let e = if me() == 0 {
            // Root can give the link itself away; the file it names is still root's.
            std::os::unix::fs::lchown(&link, Some(4242), None).unwrap();
            Trust::new(0, []).check_config(&link).unwrap_err()
        } else {
            Trust::new(me() + 1, []).check_config(&link).unwrap_err()
        };
        assert!(matches!(e.why, Distrust::LinkOwner { .. }), "{e}");
    }
}
