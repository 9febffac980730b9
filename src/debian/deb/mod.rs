//! Reading Debian binary packages (`.deb`) and unpacking their file trees.
//!
//! A `.deb` is an `ar` archive of `debian-binary` (`2.0\n`), `control.tar[.gz|.xz|.zst]`
//! (metadata and maintainer scripts) and `data.tar[.gz|.xz|.zst]` (the file tree). The
//! data tar is streamed from the file through the decompressor and the tar reader;
//! it is never held in memory.
//!
//! Unpacking is the one place where bytes from a package decide which paths buildit
//! writes, so every path is checked here instead of trusting the tar crate's
//! `unpack`: nothing may leave the destination, nothing is written through a symlink
//! the package created, and device nodes are refused. Every node below `dest` is
//! created by this module and remembered in memory, so a parent's type is known
//! without a system call; the last component is never followed because files are
//! created with `O_CREAT|O_EXCL`, directories with `mkdir`, links with `symlink` and
//! `link`, none of which follow a symlink in the last component.
//!
//! Bookworm packages still ship `/bin`, `/lib`, … as directories; buildit's trees are
//! merged-usr, so those are folded into `usr/` here (the `bin -> usr/bin` links are the
//! build root's business). Maintainer scripts are never run. What dpkg would have
//! recorded (file list, md5sums, conffiles, control stanza) is written into the tree so
//! that it travels with the store path and a build root can assemble
//! `/var/lib/dpkg/status` from it.
//!
//! The parts: `ar` reads the archive's members, `stream` puts a member through its
//! decompressor, `control` parses the control member, `usrmerge` normalises and
//! folds archive paths, and `unpack` writes the data member's tree.

mod ar;
mod control;
mod stream;
mod unpack;
mod usrmerge;

use std::fs;
use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use ar::ArReader;
pub use control::parse_control;
use control::{control_field, dpkg_info_name, read_head};
use unpack::unpack_into;
pub use usrmerge::{fold, fold_link_target, MERGED_USR_DIRS};

/// Where the package's metadata goes inside its unpacked tree.
pub const DPKG_INFO_DIR: &str = "var/lib/dpkg/info";
pub const BUILDIT_CONTROL_DIR: &str = "var/lib/buildit/debian";

#[derive(Debug, Error)]
pub enum DebError {
    #[error("{}: not a Debian package (no ar archive header)", .deb.display())]
    NotAr { deb: PathBuf },
    #[error("{}: bad ar member header at byte {offset}: {reason}", .deb.display())]
    BadMemberHeader {
        deb: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("{}: unsupported package format {found:?} in debian-binary (expected \"2.0\\n\")", .deb.display())]
    BadFormatVersion { deb: PathBuf, found: String },
    #[error("{}: missing member {member}", .deb.display())]
    MissingMember { deb: PathBuf, member: &'static str },
    #[error("{}: unexpected member {member:?}: {reason}", .deb.display())]
    UnexpectedMember {
        deb: PathBuf,
        member: String,
        reason: &'static str,
    },
    #[error("{}: member {member}: unsupported compression", .deb.display())]
    UnsupportedCompression { deb: PathBuf, member: String },
    #[error("{}: member {member}: corrupt compressed stream: {reason}", .deb.display())]
    CorruptStream {
        deb: PathBuf,
        member: String,
        reason: String,
    },
    #[error("{}: truncated: the file ends inside {member}", .deb.display())]
    Truncated { deb: PathBuf, member: String },
    #[error("{}: member {member}: malformed tar{}: {reason}", .deb.display(),
            .entry.as_deref().map(|e| format!(" at entry {e:?}")).unwrap_or_default())]
    BadTar {
        deb: PathBuf,
        member: String,
        entry: Option<String>,
        reason: String,
    },
    #[error("{}: unsafe entry {entry:?}: {reason}", .deb.display())]
    UnsafePath {
        deb: PathBuf,
        entry: String,
        reason: String,
    },
    #[error("{}: entry {entry:?} is a {kind}: device nodes, fifos and sockets are refused", .deb.display())]
    DeviceNode {
        deb: PathBuf,
        entry: String,
        kind: &'static str,
    },
    #[error("{}: entry {entry:?} has an unsupported tar entry type ({kind})", .deb.display())]
    UnsupportedEntry {
        deb: PathBuf,
        entry: String,
        kind: String,
    },
    #[error("{}: entries {first:?} and {second:?} both unpack to {path} and differ", .deb.display())]
    Conflict {
        deb: PathBuf,
        path: String,
        first: String,
        second: String,
    },
    #[error("{}: bad control data: {reason}", .deb.display())]
    BadControl { deb: PathBuf, reason: String },
    #[error("{}: the destination already exists", .dest.display())]
    DestExists { dest: PathBuf },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DebError + '_ {
    move |source| DebError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the control member says about a package: the part that
/// [`DebControl`] (the control member alone) and [`DebInfo`] (an unpack) share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebMeta {
    /// The control file's fields in order. A multi-line value keeps its
    /// continuation lines, leading space included, joined by `\n`.
    pub control: Vec<(String, String)>,
    pub package: String,
    pub version: String,
    pub architecture: String,
    /// Conffiles as absolute paths, merged-usr folded. Entries flagged
    /// `remove-on-upgrade` are not files of the package and are left out.
    pub conffiles: Vec<String>,
    /// `(path, md5 hex)` with paths absolute (`/usr/bin/x`), merged-usr folded, in
    /// the order of the package's md5sums file.
    pub md5sums: Vec<(String, String)>,
    /// The maintainer scripts the package has (they are never run).
    pub scripts: Vec<String>,
}

impl DebMeta {
    /// A field of the control stanza, by case-insensitive name.
    pub fn field(&self, name: &str) -> Option<&str> {
        control_field(&self.control, name)
    }

    /// The name of the package's files in `/var/lib/dpkg/info` (`libc6:amd64` for a
    /// `Multi-Arch: same` package, as dpkg does, else the package name).
    pub fn info_name(&self) -> String {
        dpkg_info_name(&self.control, &self.package, &self.architecture)
    }
}

/// The control part of a package: what `buildit debian show` needs, without
/// touching the data member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebControl {
    #[serde(flatten)]
    pub meta: DebMeta,
    /// The control file exactly as shipped.
    pub control_text: String,
    /// The conffiles file's lines with their paths folded, flags kept.
    conffiles_lines: Option<Vec<String>>,
}

/// What [`unpack_deb`] found and wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebInfo {
    #[serde(flatten)]
    pub meta: DebMeta,
    /// Every path of the package's tree after folding, sorted, directories included,
    /// as `/usr/bin/x`. The metadata files this module adds are not listed (dpkg does
    /// not list its own database either).
    pub files: Vec<String>,
    /// Paths (files and directories) whose setuid, setgid or sticky bits were
    /// dropped, sorted: the store cannot hold them, an image step may restore them.
    pub setuid_stripped: Vec<String>,
}

// Both are a `DebMeta` and more: reading through keeps `info.package` and
// `info.field(..)` as they were before the shared part had a name.
impl Deref for DebControl {
    type Target = DebMeta;
    fn deref(&self) -> &DebMeta {
        &self.meta
    }
}

impl Deref for DebInfo {
    type Target = DebMeta;
    fn deref(&self) -> &DebMeta {
        &self.meta
    }
}

/// Read only the control member of a `.deb`.
pub fn read_control(deb: &Path) -> Result<DebControl, DebError> {
    let mut ar = ArReader::open(deb)?;
    read_head(&mut ar)
}

/// Unpack `deb` into `dest`, which must not exist and is created as a directory
/// holding the package's file tree (merged-usr folded) plus its dpkg metadata
/// (`var/lib/dpkg/info/NAME.{list,md5sums,conffiles}`,
/// `var/lib/buildit/debian/NAME.control`). On error `dest` is removed again.
pub fn unpack_deb(deb: &Path, dest: &Path) -> Result<DebInfo, DebError> {
    match fs::create_dir(dest) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(DebError::DestExists {
                dest: dest.to_path_buf(),
            })
        }
        Err(e) => return Err(io_err(dest)(e)),
    }
    let result = unpack_into(deb, dest);
    if result.is_err() {
        // dest did not exist before, so all of it is ours; directories keep their
        // 0755 creation mode until the very end, so removal cannot be blocked by a
        // read-only directory from the package. Best effort: the unpack error is the
        // one worth reporting.
        let _ = fs::remove_dir_all(dest);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_stay_small() {
        // Every step returns Result<_, DebError>; clippy's result_large_err limit.
        assert!(std::mem::size_of::<DebError>() <= 128);
    }
}
