//! Writing image trees as tar streams, the same bytes every time: entries in path
//! order, mtime 1 (the store's), owners by number with no names, GNU headers for
//! long names. File contents are streamed from the store, never held whole.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::tree::{ImageTree, Kind, Node};

/// The mtime of every entry: the store's, so the bytes do not depend on when or
/// where the image was written.
pub const MTIME: u64 = 1;

/// The entries of `provider` (or of all providers, `None`) with every directory
/// above them, in path order.
pub fn entries(tree: &ImageTree, provider: Option<usize>) -> Vec<(&PathBuf, &Node)> {
    let mine: Vec<(&PathBuf, &Node)> = match provider {
        None => return tree.nodes.iter().collect(),
        Some(p) => tree.of_provider(p),
    };
    let mut paths: BTreeSet<&PathBuf> = mine.iter().map(|(p, _)| *p).collect();
    for (p, _) in &mine {
        for a in p.ancestors().skip(1) {
            if a.as_os_str().is_empty() {
                break;
            }
            if let Some((k, _)) = tree.nodes.get_key_value(a) {
                paths.insert(k);
            }
        }
    }
    paths.into_iter().map(|p| (p, &tree.nodes[p])).collect()
}

/// Write `entries` as a tar under `prefix` (e.g. `rootfs`, or empty), ending the
/// archive. `extra` entries (name, bytes) go first, e.g. an ACI's `manifest`.
pub fn write<W: Write>(
    out: W,
    prefix: &Path,
    extra: &[(&str, &[u8])],
    entries: &[(&PathBuf, &Node)],
) -> io::Result<W> {
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Deterministic);
    b.follow_symlinks(false);
    for (name, data) in extra {
        let mut h = header(tar::EntryType::Regular, 0o644, 0, 0, data.len() as u64);
        b.append_data(&mut h, name, *data)?;
    }
    if !prefix.as_os_str().is_empty() {
        let mut h = header(tar::EntryType::Directory, 0o755, 0, 0, 0);
        b.append_data(&mut h, prefix, io::empty())?;
    }
    for (rel, node) in entries {
        let path = prefix.join(rel);
        match &node.kind {
            Kind::Dir => {
                let mut h = header(tar::EntryType::Directory, node.mode, node.uid, node.gid, 0);
                b.append_data(&mut h, &path, io::empty())?;
            }
            Kind::Symlink { target } => {
                let mut h = header(tar::EntryType::Symlink, 0o777, node.uid, node.gid, 0);
                b.append_link(&mut h, &path, target)?;
            }
            Kind::File { src, size } => {
                let f = File::open(src)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", src.display())))?;
                let mut h = header(
                    tar::EntryType::Regular,
                    node.mode,
                    node.uid,
                    node.gid,
                    *size,
                );
                // A file that changed size under us would corrupt the stream: the
                // store is immutable, but say so if it happens.
                let got = f.metadata()?.len();
                if got != *size {
                    return Err(io::Error::other(format!(
                        "{} changed size while the image was written",
                        src.display()
                    )));
                }
                b.append_data(&mut h, &path, f)?;
            }
        }
    }
    b.into_inner()
}

fn header(kind: tar::EntryType, mode: u32, uid: u32, gid: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid.into());
    h.set_gid(gid.into());
    h.set_size(size);
    h.set_mtime(MTIME);
    h
}
