//! Writing the data member's tree below the destination, every path checked, and
//! the dpkg metadata beside it.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::ar::ArReader;
use super::control::read_head;
use super::stream::{MemberStream, StreamCtx};
use super::usrmerge::{fold, fold_link_target, is_folded_top, normalise};
use super::{io_err, DebControl, DebError, DebInfo, BUILDIT_CONTROL_DIR, DPKG_INFO_DIR};
use crate::io_util::read_full;

const COPY_BUF: usize = 256 << 10;

pub(super) fn unpack_into(deb: &Path, dest: &Path) -> Result<DebInfo, DebError> {
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
        meta: control.meta,
        files,
        setuid_stripped,
    })
}

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
    use crate::debian::deb::{read_control, unpack_deb};
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;

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
        let mut out = b"!<arch>\n".to_vec();
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
