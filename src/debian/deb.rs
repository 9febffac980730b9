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

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::io_util::read_full;

const AR_MAGIC: &[u8; 8] = b"!<arch>\n";
const AR_HEADER_LEN: usize = 60;
/// Large enough that reading the `.deb` costs a handful of system calls per
/// megabyte; small enough that two unpacks at a time stay cheap.
const READ_BUF: usize = 1 << 20;
/// Between the decompressor and the tar reader, which asks for 512-byte headers:
/// without it every header would be a separate call into the decompressor.
const TAR_BUF: usize = 256 << 10;
const COPY_BUF: usize = 256 << 10;
/// The control files are read into memory; real ones are at most a few MB
/// (md5sums of large packages), so anything bigger is a hostile package.
const CONTROL_FILE_LIMIT: u64 = 64 << 20;
const DEBIAN_BINARY_LIMIT: u64 = 64;

/// Top-level directories that merged-usr systems alias into `/usr`.
pub const MERGED_USR_DIRS: [&str; 6] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

const MAINTAINER_SCRIPTS: [&str; 5] = ["preinst", "postinst", "prerm", "postrm", "config"];

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

/// The control part of a package: what `buildit debian show` needs, without
/// touching the data member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebControl {
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
    /// The control file exactly as shipped.
    pub control_text: String,
    /// The conffiles file's lines with their paths folded, flags kept.
    conffiles_lines: Option<Vec<String>>,
}

/// What [`unpack_deb`] found and wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebInfo {
    pub control: Vec<(String, String)>,
    pub package: String,
    pub version: String,
    pub architecture: String,
    /// Every path of the package's tree after folding, sorted, directories included,
    /// as `/usr/bin/x`. The metadata files this module adds are not listed (dpkg does
    /// not list its own database either).
    pub files: Vec<String>,
    /// As in [`DebControl::conffiles`].
    pub conffiles: Vec<String>,
    /// As in [`DebControl::md5sums`]: `(/folded/path, md5 hex)`.
    pub md5sums: Vec<(String, String)>,
    /// Paths (files and directories) whose setuid, setgid or sticky bits were
    /// dropped, sorted: the store cannot hold them, an image step may restore them.
    pub setuid_stripped: Vec<String>,
    /// The maintainer scripts the package has; never run.
    pub scripts: Vec<String>,
}

fn control_field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// dpkg names the database files of a `Multi-Arch: same` package `pkg:arch` so that
/// several architectures can be installed side by side; others are just `pkg`.
fn dpkg_info_name(fields: &[(String, String)], package: &str, architecture: &str) -> String {
    match control_field(fields, "Multi-Arch") {
        Some(ma) if ma.trim() == "same" => format!("{package}:{architecture}"),
        _ => package.to_string(),
    }
}

impl DebControl {
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

impl DebInfo {
    pub fn field(&self, name: &str) -> Option<&str> {
        control_field(&self.control, name)
    }

    /// See [`DebControl::info_name`].
    pub fn info_name(&self) -> String {
        dpkg_info_name(&self.control, &self.package, &self.architecture)
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

fn unpack_into(deb: &Path, dest: &Path) -> Result<DebInfo, DebError> {
    let mut ar = ArReader::open(deb)?;
    let control = read_head(&mut ar)?;
    let member = loop {
        match ar.next_member()? {
            None => {
                return Err(DebError::MissingMember {
                    deb: deb.to_path_buf(),
                    member: "data.tar",
                })
            }
            Some(m) if m.starts_with('_') => ar.skip_member()?,
            Some(m) if m.starts_with("data.tar") => break m,
            Some(m) => {
                return Err(DebError::UnexpectedMember {
                    deb: deb.to_path_buf(),
                    member: m,
                    reason: "expected data.tar after the control member",
                })
            }
        }
    };
    let mut unpacker = Unpacker::new(deb, dest);
    let mut stream = MemberStream::open(&mut ar, &member, "data.tar")?;
    {
        let mut archive = tar::Archive::new(&mut stream.reader);
        let entries = archive
            .entries()
            .map_err(|e| stream.ctx.stream_error(e, None))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| stream.ctx.stream_error(e, None))?;
            unpacker.entry(&mut entry, &stream.ctx)?;
        }
    }
    stream.finish()?;
    drop(stream);
    ar.check_consumed(&member)?;

    let mut files: Vec<String> = unpacker.nodes.keys().map(|k| format!("/{k}")).collect();
    files.sort_unstable();
    unpacker.write_metadata(&control, &files)?;
    unpacker.finish_dirs()?;

    let mut setuid_stripped = unpacker.setuid;
    setuid_stripped.sort_unstable();
    setuid_stripped.dedup();
    Ok(DebInfo {
        control: control.control,
        package: control.package,
        version: control.version,
        architecture: control.architecture,
        files,
        conffiles: control.conffiles,
        md5sums: control.md5sums,
        setuid_stripped,
        scripts: control.scripts,
    })
}

/// `debian-binary` then the control member: what every reader needs.
fn read_head(ar: &mut ArReader) -> Result<DebControl, DebError> {
    let deb = ar.deb.clone();
    match ar.next_member()? {
        None => {
            return Err(DebError::MissingMember {
                deb,
                member: "debian-binary",
            })
        }
        Some(m) if m == "debian-binary" => {}
        Some(m) => {
            return Err(DebError::UnexpectedMember {
                deb,
                member: m,
                reason: "a .deb starts with debian-binary",
            })
        }
    }
    if ar.remaining > DEBIAN_BINARY_LIMIT {
        return Err(DebError::BadFormatVersion {
            deb,
            found: format!("<{} bytes>", ar.remaining),
        });
    }
    let mut version = Vec::new();
    let read = ar.member_data().read_to_end(&mut version);
    read.map_err(|e| ar.read_error(e, "debian-binary"))?;
    ar.finish_member();
    if version != b"2.0\n" {
        return Err(DebError::BadFormatVersion {
            deb,
            found: String::from_utf8_lossy(&version).into_owned(),
        });
    }
    loop {
        match ar.next_member()? {
            None => {
                return Err(DebError::MissingMember {
                    deb,
                    member: "control.tar",
                })
            }
            Some(m) if m.starts_with('_') => ar.skip_member()?,
            Some(m) if m.starts_with("control.tar") => return read_control_member(ar, &m),
            Some(m) if m.starts_with("data.tar") => {
                return Err(DebError::UnexpectedMember {
                    deb,
                    member: m,
                    reason: "the data member comes before the control member",
                })
            }
            Some(m) => {
                return Err(DebError::UnexpectedMember {
                    deb,
                    member: m,
                    reason: "expected control.tar after debian-binary",
                })
            }
        }
    }
}

fn read_control_member(ar: &mut ArReader, member: &str) -> Result<DebControl, DebError> {
    let deb = ar.deb.clone();
    let mut control = None;
    let mut md5sums = None;
    let mut conffiles = None;
    let mut scripts = Vec::new();
    let mut stream = MemberStream::open(ar, member, "control.tar")?;
    {
        let mut archive = tar::Archive::new(&mut stream.reader);
        let entries = archive
            .entries()
            .map_err(|e| stream.ctx.stream_error(e, None))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| stream.ctx.stream_error(e, None))?;
            let raw = entry.path_bytes().into_owned();
            // The control member's paths are never written anywhere, so an odd one is
            // simply not one of the names looked for.
            let Ok(Some(name)) = normalise(&raw) else {
                continue;
            };
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let slot = match name.as_str() {
                "control" => &mut control,
                "md5sums" => &mut md5sums,
                "conffiles" => &mut conffiles,
                s if MAINTAINER_SCRIPTS.contains(&s) => {
                    scripts.push(name);
                    continue;
                }
                _ => continue,
            };
            let mut text = Vec::new();
            (&mut entry)
                .take(CONTROL_FILE_LIMIT + 1)
                .read_to_end(&mut text)
                .map_err(|e| stream.ctx.stream_error(e, Some(&name)))?;
            if text.len() as u64 > CONTROL_FILE_LIMIT {
                return Err(DebError::BadControl {
                    deb,
                    reason: format!("{name} is larger than {CONTROL_FILE_LIMIT} bytes"),
                });
            }
            let text = String::from_utf8(text).map_err(|_| DebError::BadControl {
                deb: deb.clone(),
                reason: format!("{name} is not UTF-8"),
            })?;
            *slot = Some(text);
        }
    }
    stream.finish()?;
    drop(stream);
    ar.check_consumed(member)?;
    ar.finish_member();

    let bad = |reason: String| DebError::BadControl {
        deb: deb.clone(),
        reason,
    };
    let control_text =
        control.ok_or_else(|| bad("the control member has no control file".into()))?;
    let fields = parse_control(&control_text).map_err(bad)?;
    let required = |name: &str| {
        control_field(&fields, name)
            .map(str::to_string)
            .ok_or_else(|| bad(format!("control file has no {name} field")))
    };
    let package = required("Package")?;
    let version = required("Version")?;
    let architecture = required("Architecture")?;
    // The package and architecture name files in the tree; refuse anything that
    // could be read as a path.
    let valid_package = package.len() < 256
        && package.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && package
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
    if !valid_package {
        return Err(bad(format!("invalid package name {package:?}")));
    }
    let valid_arch = !architecture.is_empty()
        && architecture.len() < 64
        && architecture
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid_arch {
        return Err(bad(format!("invalid architecture {architecture:?}")));
    }
    if version.is_empty() || version.contains(char::is_whitespace) {
        return Err(bad(format!("invalid version {version:?}")));
    }
    let md5sums = match md5sums {
        Some(text) => parse_md5sums(&text).map_err(bad)?,
        None => Vec::new(),
    };
    let (conffiles, conffiles_lines) = match conffiles {
        Some(text) => {
            let (c, l) = parse_conffiles(&text).map_err(bad)?;
            (c, Some(l))
        }
        None => (Vec::new(), None),
    };
    scripts.sort_unstable();
    scripts.dedup();
    Ok(DebControl {
        control: fields,
        package,
        version,
        architecture,
        conffiles,
        md5sums,
        scripts,
        control_text,
        conffiles_lines,
    })
}

/// Parse one deb822 stanza (a binary package's control file).
pub fn parse_control(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut ended = false;
    for (n, line) in text.lines().enumerate() {
        let lineno = n + 1;
        if line.trim().is_empty() {
            ended = !fields.is_empty();
            continue;
        }
        if ended {
            return Err(format!(
                "line {lineno}: a second stanza (a binary package has one)"
            ));
        }
        if line.starts_with([' ', '\t']) {
            let Some((_, value)) = fields.last_mut() else {
                return Err(format!("line {lineno}: continuation line before any field"));
            };
            value.push('\n');
            value.push_str(line.trim_end());
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("line {lineno}: expected `Field: value`"));
        };
        let valid_name = !name.is_empty()
            && !name.starts_with(['#', '-'])
            && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
        if !valid_name {
            return Err(format!("line {lineno}: invalid field name {name:?}"));
        }
        if fields.iter().any(|(k, _)| k.eq_ignore_ascii_case(name)) {
            return Err(format!("line {lineno}: field {name} appears twice"));
        }
        fields.push((name.to_string(), value.trim().to_string()));
    }
    if fields.is_empty() {
        return Err("the control file is empty".into());
    }
    Ok(fields)
}

/// `md5  path` lines → `(/folded/path, md5)`.
fn parse_md5sums(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || format!("md5sums line {}: expected `MD5  PATH`", n + 1);
        let (md5, path) = line.split_once([' ', '\t']).ok_or_else(bad)?;
        let path = path.trim_start_matches([' ', '\t']);
        if md5.len() != 32 || !md5.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let rel = match normalise(path.as_bytes()) {
            Ok(Some(rel)) => rel,
            _ => return Err(format!("md5sums line {}: bad path {path:?}", n + 1)),
        };
        out.push((format!("/{}", fold(&rel)), md5.to_ascii_lowercase()));
    }
    Ok(out)
}

/// Returns the plain conffiles (folded) and every line with its path folded.
fn parse_conffiles(text: &str) -> Result<(Vec<String>, Vec<String>), String> {
    let mut files = Vec::new();
    let mut lines = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        // dpkg ≥ 1.20 allows flags before the path (`remove-on-upgrade /etc/x`).
        let (flags, path) = match line.find('/') {
            Some(0) => ("", line),
            Some(i) => (line[..i].trim_end(), &line[i..]),
            None => return Err(format!("conffiles line {}: no absolute path", n + 1)),
        };
        let rel = match normalise(path.trim_start_matches('/').as_bytes()) {
            Ok(Some(rel)) => rel,
            _ => return Err(format!("conffiles line {}: bad path {path:?}", n + 1)),
        };
        let folded = format!("/{}", fold(&rel));
        if flags.is_empty() {
            lines.push(folded.clone());
            files.push(folded);
        } else {
            lines.push(format!("{flags} {folded}"));
        }
    }
    Ok((files, lines))
}

/// An archive path without `./`, empty and `.` components; `None` for the root.
/// Errors are reasons the path is unsafe.
fn normalise(raw: &[u8]) -> Result<Option<String>, String> {
    if raw.contains(&0) {
        return Err("the path contains a NUL byte".into());
    }
    if raw.first() == Some(&b'/') {
        return Err("absolute path".into());
    }
    let s = std::str::from_utf8(raw).map_err(|_| "the path is not UTF-8".to_string())?;
    let mut out = String::with_capacity(s.len());
    for comp in s.split('/') {
        match comp {
            "" | "." => {}
            ".." => return Err("the path contains `..`".into()),
            c => {
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(c);
            }
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

fn is_folded_top(first: &str) -> bool {
    MERGED_USR_DIRS.contains(&first)
}

/// `lib/x` → `usr/lib/x`; everything else unchanged. `rel` is normalised.
pub fn fold(rel: &str) -> String {
    let first = rel.split('/').next().unwrap_or(rel);
    if is_folded_top(first) {
        format!("usr/{rel}")
    } else {
        rel.to_string()
    }
}

/// Lexically resolve `target` relative to the directory `dir` (components), the way
/// the kernel would if no component were a symlink; `..` stops at the root.
fn resolve_lexically<'a>(dir: &[&'a str], target: &'a str) -> Vec<&'a str> {
    let mut out: Vec<&str> = dir.to_vec();
    for comp in target.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// The symlink target to write for a link the package has at `rel` (unfolded),
/// which is written at `fold(rel)`.
///
/// Absolute targets into a folded directory are folded. A relative target is kept
/// as written whenever it still names the same (folded) file from the link's new
/// place, which is always the case in practice: Debian policy makes links that cross
/// top-level directories absolute. Otherwise, rather than leaving a dangling link,
/// the target is recomputed from the link's original place and made relative again.
pub fn fold_link_target(rel: &str, target: &str) -> String {
    if let Some(abs) = target.strip_prefix('/') {
        let abs = abs.trim_start_matches('/');
        let first = abs.split('/').next().unwrap_or(abs);
        return if is_folded_top(first) {
            format!("/usr/{abs}")
        } else {
            target.to_string()
        };
    }
    let folded = fold(rel);
    let old_dir: Vec<&str> = parent_components(rel);
    let new_dir: Vec<&str> = parent_components(&folded);
    let meant = fold(&resolve_lexically(&old_dir, target).join("/"));
    let meant: Vec<&str> = meant.split('/').filter(|c| !c.is_empty()).collect();
    if resolve_lexically(&new_dir, target) == meant {
        return target.to_string();
    }
    let common = new_dir
        .iter()
        .zip(&meant)
        .take_while(|(a, b)| a == b)
        .count();
    let mut parts: Vec<&str> = vec![".."; new_dir.len() - common];
    parts.extend(&meant[common..]);
    if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    }
}

fn parent_components(rel: &str) -> Vec<&str> {
    let mut comps: Vec<&str> = rel.split('/').collect();
    comps.pop();
    comps
}

// ---------------------------------------------------------------------------
// ar

/// A failure below the tar reader, remembered so that the tar crate's error (which
/// wraps or replaces it) can be reported as what it really was.
enum Fault {
    Truncated,
    Io(io::Error),
    Corrupt(String),
}

type FaultCell = Rc<RefCell<Option<Fault>>>;

fn record(fault: &FaultCell, f: Fault) {
    let mut slot = fault.borrow_mut();
    if slot.is_none() {
        *slot = Some(f);
    }
}

struct ArReader {
    deb: PathBuf,
    file: BufReader<File>,
    /// Offset of the next unread byte.
    pos: u64,
    /// Unread bytes of the current member.
    remaining: u64,
    /// The current member has odd size, so a padding byte follows it.
    pad: bool,
    fault: FaultCell,
}

impl ArReader {
    fn open(deb: &Path) -> Result<ArReader, DebError> {
        let file = File::open(deb).map_err(io_err(deb))?;
        let mut file = BufReader::with_capacity(READ_BUF, file);
        let mut magic = [0u8; 8];
        let n = read_full(&mut file, &mut magic).map_err(io_err(deb))?;
        if n < magic.len() || &magic != AR_MAGIC {
            return Err(DebError::NotAr {
                deb: deb.to_path_buf(),
            });
        }
        Ok(ArReader {
            deb: deb.to_path_buf(),
            file,
            pos: 8,
            remaining: 0,
            pad: false,
            fault: Rc::new(RefCell::new(None)),
        })
    }

    /// The next member's name, or `None` at the end of the archive. The previous
    /// member must have been read or skipped.
    fn next_member(&mut self) -> Result<Option<String>, DebError> {
        debug_assert_eq!(self.remaining, 0);
        if self.pad {
            // A missing padding byte at the very end is tolerated, as by ar(1).
            let mut b = [0u8; 1];
            let n = read_full(&mut self.file, &mut b).map_err(io_err(&self.deb))?;
            self.pos += n as u64;
            self.pad = false;
        }
        let offset = self.pos;
        let mut h = [0u8; AR_HEADER_LEN];
        let n = read_full(&mut self.file, &mut h).map_err(io_err(&self.deb))?;
        if n == 0 {
            return Ok(None);
        }
        if n < AR_HEADER_LEN {
            return Err(DebError::Truncated {
                deb: self.deb.clone(),
                member: "an ar member header".into(),
            });
        }
        self.pos += AR_HEADER_LEN as u64;
        let bad = |reason: &str| DebError::BadMemberHeader {
            deb: self.deb.clone(),
            offset,
            reason: reason.to_string(),
        };
        if &h[58..60] != b"`\n" {
            return Err(bad("no header terminator"));
        }
        let raw_name = &h[..16];
        let name_end = raw_name
            .iter()
            .rposition(|&b| b != b' ')
            .map_or(0, |i| i + 1);
        let mut name = &raw_name[..name_end];
        // GNU ar ends names with `/`.
        if let Some(stripped) = name.strip_suffix(b"/") {
            name = stripped;
        }
        if name.is_empty() || !name.iter().all(|b| b.is_ascii_graphic()) {
            return Err(bad("invalid member name"));
        }
        let size = std::str::from_utf8(&h[48..58])
            .ok()
            .map(str::trim_end)
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| bad("invalid member size"))?;
        self.remaining = size;
        self.pad = size % 2 == 1;
        // Checked above to be printable ASCII.
        Ok(Some(String::from_utf8_lossy(name).into_owned()))
    }

    fn member_data(&mut self) -> MemberData<'_> {
        MemberData { ar: self }
    }

    fn read_error(&self, e: io::Error, member: &str) -> DebError {
        match self.fault.borrow_mut().take() {
            Some(Fault::Truncated) => DebError::Truncated {
                deb: self.deb.clone(),
                member: member.to_string(),
            },
            _ => io_err(&self.deb)(e),
        }
    }

    fn skip_member(&mut self) -> Result<(), DebError> {
        let member = "a skipped member";
        io::copy(&mut self.member_data(), &mut io::sink())
            .map_err(|e| self.read_error(e, member))?;
        self.finish_member();
        Ok(())
    }

    fn finish_member(&mut self) {
        *self.fault.borrow_mut() = None;
    }

    /// After a compressed member's stream ended: bytes left in the member are
    /// garbage after the stream (or, if missing, a truncation).
    fn check_consumed(&mut self, member: &str) -> Result<(), DebError> {
        if self.remaining == 0 {
            return Ok(());
        }
        io::copy(&mut self.member_data(), &mut io::sink())
            .map_err(|e| self.read_error(e, member))?;
        Err(DebError::CorruptStream {
            deb: self.deb.clone(),
            member: member.to_string(),
            reason: "data after the end of the compressed stream".into(),
        })
    }
}

/// The current member's bytes, straight out of the file buffer (it is a `BufRead`,
/// so the decompressors read it without another copy).
struct MemberData<'a> {
    ar: &'a mut ArReader,
}

impl BufRead for MemberData<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let ar = &mut *self.ar;
        if ar.remaining == 0 {
            return Ok(&[]);
        }
        let buf = match ar.file.fill_buf() {
            Ok(buf) => buf,
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                record(&ar.fault, Fault::Io(e));
                return Err(copy);
            }
        };
        if buf.is_empty() {
            record(&ar.fault, Fault::Truncated);
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the .deb ends inside a member",
            ));
        }
        let n = buf
            .len()
            .min(usize::try_from(ar.remaining).unwrap_or(usize::MAX));
        Ok(&buf[..n])
    }

    fn consume(&mut self, amt: usize) {
        self.ar.file.consume(amt);
        self.ar.remaining = self.ar.remaining.saturating_sub(amt as u64);
        self.ar.pos += amt as u64;
    }
}

impl Read for MemberData<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let buf = self.fill_buf()?;
        let n = buf.len().min(out.len());
        out[..n].copy_from_slice(&buf[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// Records the decompressor's errors as corruption, unless something below it
/// (truncation, I/O) already explains them.
struct Tap<R> {
    inner: R,
    fault: FaultCell,
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            record(&self.fault, Fault::Corrupt(e.to_string()));
        })
    }
}

/// What is needed to turn an error from the tar reader into a [`DebError`].
struct StreamCtx {
    deb: PathBuf,
    member: String,
    fault: FaultCell,
}

impl StreamCtx {
    fn stream_error(&self, e: io::Error, entry: Option<&str>) -> DebError {
        let deb = self.deb.clone();
        let member = self.member.clone();
        match self.fault.borrow_mut().take() {
            Some(Fault::Truncated) => DebError::Truncated { deb, member },
            Some(Fault::Io(source)) => DebError::Io { path: deb, source },
            Some(Fault::Corrupt(reason)) => DebError::CorruptStream {
                deb,
                member,
                reason,
            },
            None => DebError::BadTar {
                deb,
                member,
                entry: entry.map(str::to_string),
                reason: e.to_string(),
            },
        }
    }
}

/// A member, decompressed, ready for the tar reader.
struct MemberStream<'a> {
    reader: BufReader<Tap<Box<dyn Read + 'a>>>,
    ctx: StreamCtx,
}

impl<'a> MemberStream<'a> {
    fn open(ar: &'a mut ArReader, member: &str, base: &str) -> Result<Self, DebError> {
        let deb = ar.deb.clone();
        let fault = ar.fault.clone();
        let unsupported = || DebError::UnsupportedCompression {
            deb: deb.clone(),
            member: member.to_string(),
        };
        let suffix = member.strip_prefix(base).ok_or_else(unsupported)?;
        let data = ar.member_data();
        let inner: Box<dyn Read + 'a> = match suffix {
            "" => Box::new(data),
            ".gz" => Box::new(flate2::bufread::MultiGzDecoder::new(data)),
            ".xz" => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(data)),
            ".zst" => {
                Box::new(zstd::stream::read::Decoder::with_buffer(data).map_err(io_err(&deb))?)
            }
            _ => return Err(unsupported()),
        };
        Ok(MemberStream {
            reader: BufReader::with_capacity(
                TAR_BUF,
                Tap {
                    inner,
                    fault: fault.clone(),
                },
            ),
            ctx: StreamCtx {
                deb,
                member: member.to_string(),
                fault,
            },
        })
    }

    /// Read the stream to its end: the tar reader stops at the end-of-archive
    /// block, but the padding after it must still decompress (and, for xz, pass the
    /// integrity check) and the member must be complete.
    fn finish(&mut self) -> Result<(), DebError> {
        io::copy(&mut self.reader, &mut io::sink())
            .map(drop)
            .map_err(|e| self.ctx.stream_error(e, None))
    }
}

// ---------------------------------------------------------------------------
// unpacking

enum Kind {
    /// `mode` is the package's, once an entry for the directory has been seen
    /// (directories created only as parents get 0755).
    Dir {
        mode: Option<u32>,
    },
    File {
        mode: u32,
    },
    Symlink {
        target: String,
    },
}

struct Node {
    kind: Kind,
    /// The archive entry that created it, for error messages.
    origin: String,
}

struct Unpacker<'a> {
    deb: &'a Path,
    dest: &'a Path,
    /// Every node below dest, by folded relative path.
    nodes: HashMap<String, Node>,
    /// Nodes created for metadata; kept apart so that `files` is the package's.
    meta_nodes: HashMap<String, Node>,
    setuid: Vec<String>,
    buf: Vec<u8>,
    cmp_buf: Vec<u8>,
}

impl<'a> Unpacker<'a> {
    fn new(deb: &'a Path, dest: &'a Path) -> Self {
        Unpacker {
            deb,
            dest,
            nodes: HashMap::new(),
            meta_nodes: HashMap::new(),
            setuid: Vec::new(),
            buf: vec![0; COPY_BUF],
            cmp_buf: Vec::new(),
        }
    }

    fn unsafe_path(&self, entry: &str, reason: impl Into<String>) -> DebError {
        DebError::UnsafePath {
            deb: self.deb.to_path_buf(),
            entry: entry.to_string(),
            reason: reason.into(),
        }
    }

    fn conflict(&self, path: &str, first: &str, second: &str) -> DebError {
        DebError::Conflict {
            deb: self.deb.to_path_buf(),
            path: format!("/{path}"),
            first: first.to_string(),
            second: second.to_string(),
        }
    }

    /// `second` collides with whatever entry first created `path`.
    fn conflict_with_existing(&self, path: &str, second: &str) -> DebError {
        let first = self
            .nodes
            .get(path)
            .map(|n| n.origin.as_str())
            .unwrap_or("");
        self.conflict(path, first, second)
    }

    fn node(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path).or_else(|| self.meta_nodes.get(path))
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        ctx: &StreamCtx,
    ) -> Result<(), DebError> {
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let rel = normalise(&raw).map_err(|reason| self.unsafe_path(&name, reason))?;
        let etype = entry.header().entry_type();
        let bad_tar = |reason: String| DebError::BadTar {
            deb: ctx.deb.clone(),
            member: ctx.member.clone(),
            entry: Some(name.clone()),
            reason,
        };
        use tar::EntryType as T;
        let device = match etype {
            T::Char => Some("character device"),
            T::Block => Some("block device"),
            T::Fifo => Some("fifo"),
            _ => None,
        };
        if let Some(kind) = device {
            return Err(DebError::DeviceNode {
                deb: self.deb.to_path_buf(),
                entry: name.clone(),
                kind,
            });
        }
        let Some(rel) = rel else {
            // `./` itself: dest is the root and keeps the store's mode.
            return match etype {
                T::Directory => Ok(()),
                _ => Err(self.unsafe_path(&name, "a non-directory entry for the root")),
            };
        };
        match etype {
            T::Directory => {
                let mode = entry.header().mode().map_err(|e| bad_tar(e.to_string()))?;
                self.directory(&rel, &name, mode)
            }
            T::Regular | T::Continuous => {
                let mode = entry.header().mode().map_err(|e| bad_tar(e.to_string()))?;
                self.regular(&rel, &name, mode, entry, ctx)
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .ok_or_else(|| bad_tar("a symlink without a target".into()))?;
                self.symlink(&rel, &name, &target)
            }
            T::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .ok_or_else(|| bad_tar("a hard link without a target".into()))?;
                self.hard_link(&rel, &name, &target, entry, ctx)
            }
            // Global pax headers carry defaults (mtime, charset) that do not matter.
            T::XGlobalHeader => Ok(()),
            other => Err(DebError::UnsupportedEntry {
                deb: self.deb.to_path_buf(),
                entry: name,
                kind: format!("{other:?}"),
            }),
        }
    }

    /// Make sure every parent of `path` is a directory we created, creating the
    /// missing ones; refuse to go through a symlink or a file.
    fn parents(&mut self, path: &str, entry: &str, meta: bool) -> Result<(), DebError> {
        let Some(slash) = path.rfind('/') else {
            return Ok(());
        };
        // A directory node exists only once its own parents were checked, so the
        // common case (parent already there) costs one lookup.
        if let Some(Node {
            kind: Kind::Dir { .. },
            ..
        }) = self.node(&path[..slash])
        {
            return Ok(());
        }
        for (i, _) in path.match_indices('/') {
            let parent = &path[..i];
            match self.node(parent).map(|n| &n.kind) {
                Some(Kind::Dir { .. }) => continue,
                Some(Kind::Symlink { .. }) => {
                    return Err(self.unsafe_path(
                        entry,
                        format!("it would be written through the symlink /{parent}"),
                    ))
                }
                Some(Kind::File { .. }) => {
                    return Err(
                        self.unsafe_path(entry, format!("its parent /{parent} is not a directory"))
                    )
                }
                None => {
                    let p = self.dest.join(parent);
                    fs::create_dir(&p).map_err(io_err(&p))?;
                    let node = Node {
                        kind: Kind::Dir { mode: None },
                        origin: entry.to_string(),
                    };
                    let map = if meta {
                        &mut self.meta_nodes
                    } else {
                        &mut self.nodes
                    };
                    map.insert(parent.to_string(), node);
                }
            }
        }
        Ok(())
    }

    fn note_mode(&mut self, path: &str, mode: u32) {
        if mode & 0o7000 != 0 {
            self.setuid.push(format!("/{path}"));
        }
    }

    fn directory(&mut self, rel: &str, name: &str, mode: u32) -> Result<(), DebError> {
        let path = fold(rel);
        match self.nodes.get_mut(&path) {
            // The same directory again (`./bin/` and `./usr/bin/` both fold to
            // usr/bin): directories merge, and the first mode seen wins.
            Some(Node {
                kind: Kind::Dir { mode: m },
                ..
            }) => {
                if m.is_none() {
                    *m = Some(mode & 0o777);
                    self.note_mode(&path, mode);
                }
                Ok(())
            }
            Some(other) => {
                let first = other.origin.clone();
                Err(self.conflict(&path, &first, name))
            }
            None => {
                self.parents(&path, name, false)?;
                let p = self.dest.join(&path);
                fs::create_dir(&p).map_err(io_err(&p))?;
                self.nodes.insert(
                    path.clone(),
                    Node {
                        kind: Kind::Dir {
                            mode: Some(mode & 0o777),
                        },
                        origin: name.to_string(),
                    },
                );
                self.note_mode(&path, mode);
                Ok(())
            }
        }
    }

    fn regular<R: Read>(
        &mut self,
        rel: &str,
        name: &str,
        mode: u32,
        data: &mut R,
        ctx: &StreamCtx,
    ) -> Result<(), DebError> {
        let path = fold(rel);
        let mode_bits = mode & 0o777;
        if let Some(existing) = self.nodes.get(&path) {
            let same = match existing.kind {
                Kind::File { mode: m } if m == mode_bits => {
                    let p = self.dest.join(&path);
                    self.same_content(&p, data, ctx, name)?
                }
                _ => false,
            };
            return if same {
                Ok(())
            } else {
                Err(self.conflict_with_existing(&path, name))
            };
        }
        self.parents(&path, name, false)?;
        let p = self.dest.join(&path);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
            .map_err(io_err(&p))?;
        loop {
            let n = match data.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ctx.stream_error(e, Some(name))),
            };
            f.write_all(&self.buf[..n]).map_err(io_err(&p))?;
        }
        // Explicitly, because the creation mode went through the umask.
        f.set_permissions(fs::Permissions::from_mode(mode_bits))
            .map_err(io_err(&p))?;
        self.nodes.insert(
            path.clone(),
            Node {
                kind: Kind::File { mode: mode_bits },
                origin: name.to_string(),
            },
        );
        self.note_mode(&path, mode);
        Ok(())
    }

    /// Whether the file at `existing` holds exactly what `data` yields.
    fn same_content(
        &mut self,
        existing: &Path,
        data: &mut impl Read,
        ctx: &StreamCtx,
        name: &str,
    ) -> Result<bool, DebError> {
        let mut f =
            BufReader::with_capacity(COPY_BUF, File::open(existing).map_err(io_err(existing))?);
        if self.cmp_buf.len() < COPY_BUF {
            self.cmp_buf.resize(COPY_BUF, 0);
        }
        let mut same = true;
        loop {
            let n = match data.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ctx.stream_error(e, Some(name))),
            };
            // Keep reading the entry to its end even after a difference, so that a
            // stream error is still reported as such.
            if same {
                let got = read_full(&mut f, &mut self.cmp_buf[..n]).map_err(io_err(existing))?;
                same = got == n && self.buf[..n] == self.cmp_buf[..n];
            }
        }
        if same {
            let mut one = [0u8; 1];
            same = read_full(&mut f, &mut one).map_err(io_err(existing))? == 0;
        }
        Ok(same)
    }

    fn symlink(&mut self, rel: &str, name: &str, raw_target: &[u8]) -> Result<(), DebError> {
        if raw_target.is_empty() {
            return Err(self.unsafe_path(name, "a symlink with an empty target"));
        }
        if raw_target.contains(&0) {
            return Err(self.unsafe_path(name, "the symlink target contains a NUL byte"));
        }
        let target = std::str::from_utf8(raw_target)
            .map_err(|_| self.unsafe_path(name, "the symlink target is not UTF-8"))?;
        if !rel.contains('/') && is_folded_top(rel) {
            // A merged-usr package's own `bin -> usr/bin`: the build root makes those.
            let t = target.trim_start_matches('/').trim_start_matches("./");
            if t.trim_end_matches('/') == format!("usr/{rel}") {
                return Ok(());
            }
            return Err(self.unsafe_path(
                name,
                format!("/{rel} may only be a symlink to usr/{rel} (merged-usr)"),
            ));
        }
        let path = fold(rel);
        let target = fold_link_target(rel, target);
        if let Some(existing) = self.nodes.get(&path) {
            return match &existing.kind {
                Kind::Symlink { target: t } if *t == target => Ok(()),
                _ => Err(self.conflict(&path, &existing.origin, name)),
            };
        }
        self.parents(&path, name, false)?;
        let p = self.dest.join(&path);
        symlink(&target, &p).map_err(io_err(&p))?;
        self.nodes.insert(
            path,
            Node {
                kind: Kind::Symlink { target },
                origin: name.to_string(),
            },
        );
        Ok(())
    }

    fn hard_link<R: Read>(
        &mut self,
        rel: &str,
        name: &str,
        raw_target: &[u8],
        data: &mut R,
        ctx: &StreamCtx,
    ) -> Result<(), DebError> {
        let target = match normalise(raw_target) {
            Ok(Some(t)) => fold(&t),
            Ok(None) => return Err(self.unsafe_path(name, "a hard link to the root")),
            Err(reason) => {
                return Err(self.unsafe_path(name, format!("hard link target: {reason}")))
            }
        };
        let target_mode = match self.nodes.get(&target) {
            Some(Node {
                kind: Kind::File { mode },
                ..
            }) => *mode,
            _ => {
                return Err(self.unsafe_path(
                    name,
                    format!(
                        "the hard link target /{target} is not a regular file unpacked before it"
                    ),
                ))
            }
        };
        let path = fold(rel);
        if let Some(existing) = self.nodes.get(&path) {
            let same = match existing.kind {
                Kind::File { mode } if mode == target_mode => {
                    let t = self.dest.join(&target);
                    let mut tf = File::open(&t).map_err(io_err(&t))?;
                    let p = self.dest.join(&path);
                    self.same_content(&p, &mut tf, ctx, name)?
                }
                _ => false,
            };
            // A link entry carries no data, but drain anyway in case a writer put some.
            io::copy(data, &mut io::sink()).map_err(|e| ctx.stream_error(e, Some(name)))?;
            return if same {
                Ok(())
            } else {
                Err(self.conflict_with_existing(&path, name))
            };
        }
        self.parents(&path, name, false)?;
        let (t, p) = (self.dest.join(&target), self.dest.join(&path));
        // link(2) does not follow a symlink in either last component, and both
        // parents are directories we created.
        fs::hard_link(&t, &p).map_err(io_err(&p))?;
        self.nodes.insert(
            path,
            Node {
                kind: Kind::File { mode: target_mode },
                origin: name.to_string(),
            },
        );
        Ok(())
    }

    fn write_meta_file(&mut self, rel: &str, content: &[u8]) -> Result<(), DebError> {
        let origin = "(buildit's dpkg metadata)";
        if let Some(existing) = self.node(rel) {
            return Err(self.conflict(rel, &existing.origin, origin));
        }
        self.parents(rel, origin, true)?;
        let p = self.dest.join(rel);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&p)
            .map_err(io_err(&p))?;
        f.write_all(content).map_err(io_err(&p))?;
        f.set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(io_err(&p))?;
        self.meta_nodes.insert(
            rel.to_string(),
            Node {
                kind: Kind::File { mode: 0o644 },
                origin: origin.to_string(),
            },
        );
        Ok(())
    }

    fn write_metadata(&mut self, control: &DebControl, files: &[String]) -> Result<(), DebError> {
        let name = control.info_name();
        // dpkg's own list starts with the root as `/.`.
        let mut list = String::from("/.\n");
        for f in files {
            list.push_str(f);
            list.push('\n');
        }
        self.write_meta_file(&format!("{DPKG_INFO_DIR}/{name}.list"), list.as_bytes())?;
        if !control.md5sums.is_empty() {
            let mut text = String::new();
            for (path, md5) in &control.md5sums {
                text.push_str(md5);
                text.push_str("  ");
                text.push_str(path.trim_start_matches('/'));
                text.push('\n');
            }
            self.write_meta_file(&format!("{DPKG_INFO_DIR}/{name}.md5sums"), text.as_bytes())?;
        }
        if let Some(lines) = &control.conffiles_lines {
            let mut text = lines.join("\n");
            text.push('\n');
            self.write_meta_file(
                &format!("{DPKG_INFO_DIR}/{name}.conffiles"),
                text.as_bytes(),
            )?;
        }
        self.write_meta_file(
            &format!("{BUILDIT_CONTROL_DIR}/{name}.control"),
            control.control_text.as_bytes(),
        )
    }

    /// Give directories their final modes, deepest first so that a read-only
    /// directory never blocks a chmod below it. Done last so that nothing is ever
    /// written into a directory the package made read-only.
    fn finish_dirs(&self) -> Result<(), DebError> {
        let mut dirs: Vec<(&str, u32)> = self
            .nodes
            .iter()
            .chain(&self.meta_nodes)
            .filter_map(|(p, n)| match n.kind {
                Kind::Dir { mode } => Some((p.as_str(), mode.unwrap_or(0o755))),
                _ => None,
            })
            .collect();
        dirs.sort_unstable_by_key(|(p, _)| std::cmp::Reverse(p.matches('/').count()));
        for (rel, mode) in dirs {
            let p = self.dest.join(rel);
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).map_err(io_err(&p))?;
        }
        fs::set_permissions(self.dest, fs::Permissions::from_mode(0o755)).map_err(io_err(self.dest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    // ---- builders for synthetic packages ----

    enum E<'a> {
        Dir(&'a str, u32),
        File(&'a str, u32, &'a [u8]),
        Symlink(&'a str, &'a str),
        Link(&'a str, &'a str),
        Char(&'a str),
        Fifo(&'a str),
    }

    /// A tar with raw names, bypassing the tar crate's path checks so that hostile
    /// entries can be written.
    fn tar_of(entries: &[E]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            let (name, data): (&str, &[u8]) = match e {
                E::Dir(n, m) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(*m);
                    (n, b"")
                }
                E::File(n, m, d) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*m);
                    (n, d)
                }
                E::Symlink(n, t) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    set_raw(&mut h.as_old_mut().linkname, t);
                    (n, b"")
                }
                E::Link(n, t) => {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_mode(0o644);
                    set_raw(&mut h.as_old_mut().linkname, t);
                    (n, b"")
                }
                E::Char(n) => {
                    h.set_entry_type(tar::EntryType::Char);
                    h.set_mode(0o600);
                    h.set_device_major(1).unwrap();
                    h.set_device_minor(3).unwrap();
                    (n, b"")
                }
                E::Fifo(n) => {
                    h.set_entry_type(tar::EntryType::Fifo);
                    h.set_mode(0o600);
                    (n, b"")
                }
            };
            set_raw(&mut h.as_old_mut().name, name);
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn set_raw(field: &mut [u8], s: &str) {
        field.fill(0);
        field[..s.len()].copy_from_slice(s.as_bytes());
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn ar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = AR_MAGIC.to_vec();
        for (name, data) in members {
            out.extend(
                format!(
                    "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                    name,
                    0,
                    0,
                    0,
                    100644,
                    data.len()
                )
                .as_bytes(),
            );
            out.extend(*data);
            if data.len() % 2 == 1 {
                out.push(b'\n');
            }
        }
        out
    }

    const CONTROL: &str = "Package: demo\nVersion: 1.0-1\nArchitecture: amd64\nMulti-Arch: foreign\nDescription: a demo\n A longer text.\n .\n More.\n";

    fn control_tar() -> Vec<u8> {
        tar_of(&[
            E::Dir("./", 0o755),
            E::File("./control", 0o644, CONTROL.as_bytes()),
            E::File(
                "./md5sums",
                0o644,
                b"d41d8cd98f00b204e9800998ecf8427e  bin/true\n0cc175b9c0f1b6a831c399e269772661  usr/share/a\n",
            ),
            E::File("./conffiles", 0o644, b"/etc/demo.conf\nremove-on-upgrade /etc/old.conf\n"),
            E::File("./postinst", 0o755, b"#!/bin/sh\nexit 0\n"),
        ])
    }

    fn deb_with(data: &[E]) -> Vec<u8> {
        ar_of(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.xz", &xz(&control_tar())),
            ("data.tar.xz", &xz(&tar_of(data))),
        ])
    }

    struct Case {
        dir: tempfile::TempDir,
    }

    impl Case {
        fn new() -> Case {
            Case {
                dir: tempfile::tempdir().unwrap(),
            }
        }
        fn unpack(&self, deb: &[u8]) -> (Result<DebInfo, DebError>, PathBuf) {
            let p = self.dir.path().join("x.deb");
            fs::write(&p, deb).unwrap();
            let dest = self.dir.path().join("out");
            let _ = fs::remove_dir_all(&dest);
            (unpack_deb(&p, &dest), dest)
        }
    }

    fn base_entries() -> Vec<E<'static>> {
        vec![
            E::Dir("./", 0o755),
            E::Dir("./bin/", 0o755),
            E::File("./bin/true", 0o755, b""),
            E::Dir("./usr/", 0o755),
            E::Dir("./usr/share/", 0o755),
            E::File("./usr/share/a", 0o644, b"a"),
        ]
    }

    #[test]
    fn unpacks_folds_and_records() {
        let c = Case::new();
        let mut entries = base_entries();
        entries.extend([
            E::Dir("./usr/bin/", 0o755),
            E::File("./usr/bin/su", 0o4755, b"su"),
            E::Link("./usr/bin/su2", "./usr/bin/su"),
            E::Dir("./lib/", 0o755),
            E::Dir("./lib/x86_64-linux-gnu/", 0o755),
            E::File("./lib/x86_64-linux-gnu/libc.so.6", 0o644, b"elf"),
            E::Symlink("./lib/x86_64-linux-gnu/libc.so", "libc.so.6"),
            E::Dir("./lib64/", 0o755),
            E::Symlink("./lib64/ld.so", "/lib/x86_64-linux-gnu/libc.so.6"),
            E::Dir("./var/", 0o755),
            E::Dir("./var/ro/", 0o555),
            E::File("./var/ro/f", 0o400, b"f"),
            E::Dir("./tmp/", 0o1777),
        ]);
        let (info, dest) = c.unpack(&deb_with(&entries));
        let info = info.unwrap();
        assert_eq!(info.package, "demo");
        assert_eq!(info.version, "1.0-1");
        assert_eq!(info.architecture, "amd64");
        assert_eq!(
            info.field("description"),
            Some("a demo\n A longer text.\n .\n More.")
        );
        assert_eq!(info.scripts, vec!["postinst"]);
        assert_eq!(info.conffiles, vec!["/etc/demo.conf"]);
        assert_eq!(
            info.md5sums[0],
            (
                "/usr/bin/true".into(),
                "d41d8cd98f00b204e9800998ecf8427e".into()
            )
        );
        assert_eq!(info.setuid_stripped, vec!["/tmp", "/usr/bin/su"]);
        assert!(info.files.contains(&"/usr/lib64/ld.so".to_string()));
        assert!(!info
            .files
            .iter()
            .any(|f| f.starts_with("/bin") || f.starts_with("/lib")));
        assert!(!info.files.iter().any(|f| f.starts_with("/var/lib")));

        let md = |p: &str| fs::symlink_metadata(dest.join(p)).unwrap();
        assert_eq!(md("usr/bin/su").mode() & 0o7777, 0o755);
        assert_eq!(md("usr/bin/su").ino(), md("usr/bin/su2").ino());
        assert_eq!(md("usr/bin/true").mode() & 0o7777, 0o755);
        assert_eq!(md("var/ro").mode() & 0o7777, 0o555);
        assert_eq!(md("var/ro/f").mode() & 0o7777, 0o400);
        assert_eq!(md("tmp").mode() & 0o7777, 0o777);
        assert_eq!(
            fs::read_link(dest.join("usr/lib64/ld.so")).unwrap(),
            Path::new("/usr/lib/x86_64-linux-gnu/libc.so.6")
        );
        assert_eq!(
            fs::read_link(dest.join("usr/lib/x86_64-linux-gnu/libc.so")).unwrap(),
            Path::new("libc.so.6")
        );
        let list = fs::read_to_string(dest.join("var/lib/dpkg/info/demo.list")).unwrap();
        let mut want = String::from("/.\n");
        for f in &info.files {
            want.push_str(&format!("{f}\n"));
        }
        assert_eq!(list, want);
        assert_eq!(
            fs::read_to_string(dest.join("var/lib/dpkg/info/demo.md5sums")).unwrap(),
            "d41d8cd98f00b204e9800998ecf8427e  usr/bin/true\n0cc175b9c0f1b6a831c399e269772661  usr/share/a\n"
        );
        assert_eq!(
            fs::read_to_string(dest.join("var/lib/dpkg/info/demo.conffiles")).unwrap(),
            "/etc/demo.conf\nremove-on-upgrade /etc/old.conf\n"
        );
        assert_eq!(
            fs::read_to_string(dest.join("var/lib/buildit/debian/demo.control")).unwrap(),
            CONTROL
        );
        assert!(!dest.join("bin").exists() && !dest.join("lib").exists());

        let ctl = read_control(&c.dir.path().join("x.deb")).unwrap();
        assert_eq!(ctl.package, "demo");
        assert_eq!(ctl.control_text, CONTROL);
        assert_eq!(ctl.info_name(), "demo");
    }

    fn expect_unsafe(entries: Vec<E>, entry: &str) {
        let c = Case::new();
        let (r, dest) = c.unpack(&deb_with(&entries));
        match r {
            Err(DebError::UnsafePath { entry: e, .. }) => assert_eq!(e, entry),
            other => panic!("expected an unsafe path error for {entry}, got {other:?}"),
        }
        assert!(!dest.exists(), "a failed unpack leaves nothing behind");
    }

    #[test]
    fn refuses_traversal_absolute_and_nul() {
        let mut e = base_entries();
        e.push(E::File("../etc/x", 0o644, b"x"));
        expect_unsafe(e, "../etc/x");
        let mut e = base_entries();
        e.push(E::File("./usr/../../etc/x", 0o644, b"x"));
        expect_unsafe(e, "./usr/../../etc/x");
        let mut e = base_entries();
        e.push(E::File("/etc/x", 0o644, b"x"));
        expect_unsafe(e, "/etc/x");
        let mut e = base_entries();
        e.push(E::Link("./usr/x", "../etc/shadow"));
        expect_unsafe(e, "./usr/x");
        // A ustar name cannot hold a NUL, but a pax or GNU long name can.
        assert!(normalise(b"./usr/a\0b").is_err());
        assert!(normalise(b"usr/\xff").is_err());
        assert_eq!(
            normalise(b"./usr//bin/./x/").unwrap().as_deref(),
            Some("usr/bin/x")
        );
        assert_eq!(normalise(b"./").unwrap(), None);
    }

    #[test]
    fn refuses_writing_through_a_symlink() {
        let c = Case::new();
        let outside = c.dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let target = outside.to_str().unwrap().to_string();
        let mut e = base_entries();
        e.push(E::Symlink("./usr/evil", &target));
        e.push(E::File("./usr/evil/pwned", 0o644, b"x"));
        let (r, _) = c.unpack(&deb_with(&e));
        assert!(
            matches!(&r, Err(DebError::UnsafePath { entry, reason, .. })
                if entry == "./usr/evil/pwned" && reason.contains("symlink /usr/evil")),
            "{r:?}"
        );
        assert!(!outside.join("pwned").exists());
        // Through a relative symlink and a directory entry too.
        let mut e = base_entries();
        e.push(E::Symlink("./usr/up", "../.."));
        e.push(E::Dir("./usr/up/x/", 0o755));
        expect_unsafe(e, "./usr/up/x/");
        // Replacing the symlink by a file is a conflict, not a write through it.
        let mut e = base_entries();
        e.push(E::Symlink("./usr/evil", &target));
        e.push(E::File("./usr/evil", 0o644, b"x"));
        let (r, _) = c.unpack(&deb_with(&e));
        assert!(matches!(r, Err(DebError::Conflict { .. })), "{r:?}");
    }

    #[test]
    fn refuses_devices_and_fifos() {
        for (e, kind) in [
            (E::Char("./dev/null"), "character device"),
            (E::Fifo("./run/fifo"), "fifo"),
        ] {
            let c = Case::new();
            let mut entries = base_entries();
            entries.push(e);
            let (r, _) = c.unpack(&deb_with(&entries));
            match r {
                Err(DebError::DeviceNode { entry, kind: k, .. }) => {
                    assert!(entry.starts_with("./"));
                    assert_eq!(k, kind);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn duplicate_folded_paths() {
        let c = Case::new();
        let mut e = base_entries();
        e.push(E::Dir("./usr/bin/", 0o755));
        e.push(E::File("./usr/bin/true", 0o755, b"other"));
        let (r, _) = c.unpack(&deb_with(&e));
        match r {
            Err(DebError::Conflict {
                path,
                first,
                second,
                ..
            }) => {
                assert_eq!(path, "/usr/bin/true");
                assert_eq!(first, "./bin/true");
                assert_eq!(second, "./usr/bin/true");
            }
            other => panic!("{other:?}"),
        }
        // Identical content (and mode) is fine.
        let mut e = base_entries();
        e.push(E::Dir("./usr/bin/", 0o755));
        e.push(E::File("./usr/bin/true", 0o755, b""));
        e.push(E::Symlink("./bin/sh", "dash"));
        e.push(E::Symlink("./usr/bin/sh", "dash"));
        let (r, _) = c.unpack(&deb_with(&e));
        assert!(r.is_ok(), "{r:?}");
        // Same content, different mode: not identical.
        let mut e = base_entries();
        e.push(E::Dir("./usr/bin/", 0o755));
        e.push(E::File("./usr/bin/true", 0o644, b""));
        let (r, _) = c.unpack(&deb_with(&e));
        assert!(matches!(r, Err(DebError::Conflict { .. })), "{r:?}");
    }

    #[test]
    fn hard_links_must_point_at_earlier_files() {
        let mut e = base_entries();
        e.push(E::Link("./usr/x", "./usr/share"));
        expect_unsafe(e, "./usr/x");
        let mut e = base_entries();
        e.push(E::Link("./usr/x", "./usr/later"));
        expect_unsafe(e, "./usr/x");
        let mut e = base_entries();
        e.push(E::Symlink("./usr/s", "share/a"));
        e.push(E::Link("./usr/x", "./usr/s"));
        expect_unsafe(e, "./usr/x");
        // Folded target.
        let c = Case::new();
        let mut e = base_entries();
        e.push(E::Link("./bin/false", "./bin/true"));
        let (r, dest) = c.unpack(&deb_with(&e));
        r.unwrap();
        let ino = |p: &str| fs::metadata(dest.join(p)).unwrap().ino();
        assert_eq!(ino("usr/bin/false"), ino("usr/bin/true"));
    }

    #[test]
    fn relative_links_that_move_are_rewritten() {
        assert_eq!(fold_link_target("sbin/x", "../usr/sbin/y"), "y");
        assert_eq!(fold_link_target("usr/bin/z", "../../bin/bash"), "bash");
        assert_eq!(fold_link_target("sbin/x", "../etc/x"), "../../etc/x");
        assert_eq!(fold_link_target("lib/a/b.wants/c", "../c"), "../c");
        assert_eq!(
            fold_link_target("usr/share/l/LC_TIME/x", "../LC_MESSAGES/x"),
            "../LC_MESSAGES/x"
        );
        assert_eq!(fold_link_target("usr/lib/x", "/lib64/y"), "/usr/lib64/y");
        assert_eq!(fold_link_target("usr/lib/x", "/libexec/y"), "/libexec/y");
        assert_eq!(fold_link_target("usr/lib/x", "/usr/lib/y"), "/usr/lib/y");
        assert_eq!(fold_link_target("bin/x", "."), ".");
        assert_eq!(fold_link_target("etc/x", "../bin"), "../usr/bin");
    }

    #[test]
    fn top_level_alias_symlinks() {
        let c = Case::new();
        let mut e = base_entries();
        e.push(E::Symlink("./sbin", "usr/sbin"));
        let (r, dest) = c.unpack(&deb_with(&e));
        r.unwrap();
        assert!(!dest.join("sbin").exists());
        let mut e = base_entries();
        e.push(E::Symlink("./sbin", "/etc"));
        expect_unsafe(e, "./sbin");
    }

    #[test]
    fn broken_archives() {
        let c = Case::new();
        let good = deb_with(&base_entries());
        // Truncated anywhere: never a panic, always an error, nothing left behind.
        // (Not the last byte: it may be the ar padding byte, whose absence is fine.)
        for cut in [
            0,
            4,
            8,
            30,
            68,
            75,
            good.len() / 2,
            good.len() - 40,
            good.len() - 2,
        ] {
            let (r, dest) = c.unpack(&good[..cut]);
            let e = r.expect_err("truncated");
            assert!(!dest.exists());
            if cut >= 68 {
                assert!(
                    matches!(e, DebError::Truncated { .. }),
                    "cut at {cut}: {e:?}"
                );
            }
        }
        assert!(matches!(
            c.unpack(b"hello world\n").0,
            Err(DebError::NotAr { .. })
        ));

        // Corrupt xz in the data member (flip bytes in the middle of the stream).
        let data = xz(&tar_of(&base_entries()));
        let mut bad = data.clone();
        let mid = bad.len() / 2;
        for b in &mut bad[mid..mid + 8] {
            *b ^= 0x55;
        }
        let deb = ar_of(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.xz", &xz(&control_tar())),
            ("data.tar.xz", &bad),
        ]);
        let (r, _) = c.unpack(&deb);
        assert!(matches!(r, Err(DebError::CorruptStream { .. })), "{r:?}");

        // Garbage after the compressed stream.
        let mut trailing = data.clone();
        trailing.extend(b"garbage!");
        let deb = ar_of(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.xz", &xz(&control_tar())),
            ("data.tar.xz", &trailing),
        ]);
        assert!(matches!(
            c.unpack(&deb).0,
            Err(DebError::CorruptStream { .. })
        ));

        let ctl = xz(&control_tar());
        type Members<'m> = Vec<(&'m str, &'m [u8])>;
        let cases: Vec<(Members, &str)> = vec![
            (vec![("debian-binary", b"3.0\n")], "BadFormatVersion"),
            (vec![("control.tar.xz", &ctl)], "UnexpectedMember"),
            (vec![("debian-binary", b"2.0\n")], "MissingMember"),
            (
                vec![("debian-binary", b"2.0\n"), ("control.tar.xz", &ctl)],
                "MissingMember",
            ),
            (
                vec![("debian-binary", b"2.0\n"), ("control.tar.bz2", b"BZh")],
                "UnsupportedCompression",
            ),
            (
                vec![
                    ("debian-binary", b"2.0\n"),
                    ("control.tar.xz", &ctl),
                    ("data.tar.lzma", b"x"),
                ],
                "UnsupportedCompression",
            ),
            (
                vec![
                    ("debian-binary", b"2.0\n"),
                    ("data.tar.xz", &data),
                    ("control.tar.xz", &ctl),
                ],
                "UnexpectedMember",
            ),
        ];
        for (members, want) in cases {
            let (r, _) = c.unpack(&ar_of(&members));
            let e = r.expect_err(want);
            assert!(format!("{e:?}").starts_with(want), "want {want}, got {e:?}");
        }
        // A bad header terminator.
        let mut deb = good.clone();
        deb[8 + 58] = b'x';
        assert!(matches!(
            c.unpack(&deb).0,
            Err(DebError::BadMemberHeader { .. })
        ));
        let mut deb = good.clone();
        deb[8 + 48] = b'z';
        assert!(matches!(
            c.unpack(&deb).0,
            Err(DebError::BadMemberHeader { .. })
        ));
    }

    #[test]
    fn other_compressions_and_plain_tar() {
        let c = Case::new();
        let data = tar_of(&base_entries());
        let zst = zstd::encode_all(&data[..], 3).unwrap();
        for (member, bytes) in [
            ("data.tar", data.clone()),
            ("data.tar.gz", gz(&data)),
            ("data.tar.zst", zst),
        ] {
            let deb = ar_of(&[
                ("debian-binary", b"2.0\n"),
                ("control.tar.gz", &gz(&control_tar())),
                (member, &bytes),
            ]);
            let (r, dest) = c.unpack(&deb);
            let info = r.unwrap_or_else(|e| panic!("{member}: {e}"));
            assert_eq!(info.package, "demo");
            assert_eq!(fs::read(dest.join("usr/share/a")).unwrap(), b"a");
        }
        // Truncated plain tar inside a complete member: malformed tar, not a panic.
        let deb = ar_of(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar", &control_tar()),
            ("data.tar", &data[..700]),
        ]);
        let r = c.unpack(&deb).0;
        assert!(matches!(r, Err(DebError::BadTar { .. })), "{r:?}");
    }

    #[test]
    fn dest_must_not_exist() {
        let c = Case::new();
        let p = c.dir.path().join("x.deb");
        fs::write(&p, deb_with(&base_entries())).unwrap();
        let r = unpack_deb(&p, c.dir.path());
        assert!(matches!(r, Err(DebError::DestExists { .. })));
    }

    #[test]
    fn control_parser() {
        let f = parse_control("A: 1\nB:  two words \n  cont\n\tcont2\nC:\n").unwrap();
        assert_eq!(
            f,
            vec![
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), "two words\n  cont\n\tcont2".to_string()),
                ("C".to_string(), String::new()),
            ]
        );
        assert!(parse_control(" x\n").is_err());
        assert!(parse_control("A: 1\n\nB: 2\n").is_err());
        assert!(parse_control("A: 1\nA: 2\n").is_err());
        assert!(parse_control("no colon\n").is_err());
        assert!(parse_control("").is_err());
        assert!(parse_md5sums("xyz  usr/bin/x\n").is_err());
        assert!(parse_md5sums("d41d8cd98f00b204e9800998ecf8427e  ../x\n").is_err());
        assert_eq!(
            parse_md5sums("D41D8CD98F00B204E9800998ECF8427E  ./lib/a b\n").unwrap(),
            vec![(
                "/usr/lib/a b".to_string(),
                "d41d8cd98f00b204e9800998ecf8427e".to_string()
            )]
        );
    }

    #[test]
    fn errors_stay_small() {
        // Every step returns Result<_, DebError>; clippy's result_large_err limit.
        assert!(std::mem::size_of::<DebError>() <= 128);
    }

    #[test]
    fn multi_arch_same_info_name() {
        let fields =
            parse_control("Package: libc6\nArchitecture: amd64\nMulti-Arch: same\n").unwrap();
        assert_eq!(dpkg_info_name(&fields, "libc6", "amd64"), "libc6:amd64");
    }

    #[test]
    fn bad_package_names_are_refused() {
        let c = Case::new();
        let ctl = tar_of(&[E::File(
            "./control",
            0o644,
            b"Package: ../../x\nVersion: 1\nArchitecture: all\n",
        )]);
        let deb = ar_of(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.xz", &xz(&ctl)),
            ("data.tar.xz", &xz(&tar_of(&base_entries()))),
        ]);
        assert!(matches!(c.unpack(&deb).0, Err(DebError::BadControl { .. })));
    }
}
