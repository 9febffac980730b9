//! Compressed streams (gzip, xz, zstd) and archives (tar, ar: `.a` libraries and
//! `.deb` packages) compared by member, recursing into members that differ.

use std::collections::HashMap;
use std::io::{self, Read};

use serde::Serialize;

use super::content::{explain_bytes, read_capped, ContentDiff};
use super::DiffOptions;

/// Differing members listed per archive; the rest are counted.
const MAX_MEMBERS: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    Gzip,
    Xz,
    Zstd,
}

impl Codec {
    pub(crate) fn sniff(d: &[u8]) -> Option<Codec> {
        if d.starts_with(&[0x1f, 0x8b]) {
            Some(Codec::Gzip)
        } else if d.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Some(Codec::Xz)
        } else if d.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Codec::Zstd)
        } else {
            None
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Xz => "xz",
            Codec::Zstd => "zstd",
        }
    }

    /// A streaming decoder over `r` (multi-member gzip and multi-stream xz too).
    pub(crate) fn decoder<'a>(self, r: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
            Codec::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(r)),
            Codec::Zstd => Box::new(zstd::Decoder::new(r)?),
        })
    }
}

/// Decompress at most `cap` bytes; whether the stream was longer.
pub(crate) fn decompress(codec: Codec, d: &[u8], cap: u64) -> io::Result<(Vec<u8>, bool)> {
    read_capped(codec.decoder(d)?, cap)
}

/// "ustar" magic (POSIX and old GNU) in the first header.
pub(crate) fn is_tar(d: &[u8]) -> bool {
    d.len() >= 512 && &d[257..262] == b"ustar"
}

pub(crate) fn is_ar(d: &[u8]) -> bool {
    d.starts_with(b"!<arch>\n")
}

/// One header field that differs, as text ("mode", "0644", "0755").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetaField {
    pub field: String,
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberDiff {
    pub name: String,
    #[serde(flatten)]
    pub change: MemberChange,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum MemberChange {
    Added {
        size: u64,
    },
    Removed {
        size: u64,
    },
    Changed {
        meta: Vec<MetaField>,
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<Box<ContentDiff>>,
    },
}

/// A member's header fields, in display order, and its data.
struct Member<'a> {
    name: String,
    fields: Vec<(&'static str, String)>,
    data: &'a [u8],
}

fn tar_members(d: &[u8]) -> io::Result<Vec<Member<'_>>> {
    let mut out = Vec::new();
    let mut ar = tar::Archive::new(d);
    for e in ar.entries()? {
        let e = e?;
        let h = e.header();
        let start = e.raw_file_position() as usize;
        let data = d
            .get(start..start.saturating_add(e.size() as usize))
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "truncated member"))?;
        let kind = match h.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => "file",
            tar::EntryType::Directory => "directory",
            tar::EntryType::Symlink => "symlink",
            tar::EntryType::Link => "hard link",
            tar::EntryType::Char => "character device",
            tar::EntryType::Block => "block device",
            tar::EntryType::Fifo => "fifo",
            _ => "other",
        };
        let mut fields = vec![
            ("type", kind.to_string()),
            ("mode", format!("{:04o}", h.mode().unwrap_or(0) & 0o7777)),
            ("uid", h.uid().unwrap_or(0).to_string()),
            ("gid", h.gid().unwrap_or(0).to_string()),
            ("mtime", h.mtime().unwrap_or(0).to_string()),
            ("size", e.size().to_string()),
        ];
        if let Some(l) = e.link_name()? {
            fields.push(("link", l.to_string_lossy().into_owned()));
        }
        out.push(Member {
            name: e.path()?.to_string_lossy().into_owned(),
            fields,
            data,
        });
    }
    Ok(out)
}

/// The members of an ar archive: GNU and BSD long names, symbol tables shown as
/// "(symbol table)". `None` if malformed.
fn ar_members(d: &[u8]) -> Option<Vec<Member<'_>>> {
    let mut out = Vec::new();
    let mut long_names: &[u8] = &[];
    let mut pos = 8;
    while pos < d.len() {
        // A lone padding newline may end the archive.
        if d.len() - pos < 60 {
            return d[pos..].iter().all(|&c| c == b'\n').then_some(out);
        }
        let h = &d[pos..pos + 60];
        if &h[58..60] != b"`\n" {
            return None;
        }
        let text = |r: std::ops::Range<usize>| String::from_utf8_lossy(&h[r]).trim().to_string();
        let size: usize = text(48..58).parse().ok()?;
        let mut data = d.get(pos + 60..(pos + 60).checked_add(size)?)?;
        let raw = text(0..16);
        let name =
            if raw == "/" || raw == "/SYM64/" || raw == "__.SYMDEF" || raw == "__.SYMDEF SORTED" {
                "(symbol table)".to_string()
            } else if raw == "//" {
                long_names = data;
                pos += 60 + size + (size & 1);
                continue;
            } else if let Some(off) = raw.strip_prefix('/').and_then(|n| n.parse::<usize>().ok()) {
                let rest = long_names.get(off..)?;
                let end = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
                let n = String::from_utf8_lossy(&rest[..end]);
                n.strip_suffix('/').unwrap_or(&n).to_string()
            } else if let Some(len) = raw
                .strip_prefix("#1/")
                .and_then(|n| n.parse::<usize>().ok())
            {
                let n = data.get(..len)?;
                data = &data[len..];
                String::from_utf8_lossy(n)
                    .trim_end_matches('\0')
                    .to_string()
            } else {
                raw.strip_suffix('/').unwrap_or(&raw).to_string()
            };
        let mode = u32::from_str_radix(&text(40..48), 8).unwrap_or(0);
        out.push(Member {
            name,
            fields: vec![
                ("mtime", text(16..28)),
                ("uid", text(28..34)),
                ("gid", text(34..40)),
                ("mode", format!("{:04o}", mode & 0o7777)),
                ("size", data.len().to_string()),
            ],
            data,
        });
        pos += 60 + size + (size & 1);
    }
    Some(out)
}

pub(crate) fn diff_tar(
    a: &[u8],
    b: &[u8],
    opts: &DiffOptions,
    depth: usize,
) -> Option<ContentDiff> {
    let (ma, mb) = (tar_members(a).ok()?, tar_members(b).ok()?);
    Some(diff_members("tar", ma, mb, opts, depth))
}

pub(crate) fn diff_ar(a: &[u8], b: &[u8], opts: &DiffOptions, depth: usize) -> Option<ContentDiff> {
    let (ma, mb) = (ar_members(a)?, ar_members(b)?);
    Some(diff_members("ar", ma, mb, opts, depth))
}

/// Members paired by name (and occurrence, since both formats allow a name twice),
/// in the first archive's order, then those only in the second.
fn diff_members(
    format: &str,
    ma: Vec<Member<'_>>,
    mb: Vec<Member<'_>>,
    opts: &DiffOptions,
    depth: usize,
) -> ContentDiff {
    let key = |ms: &[Member<'_>]| {
        let mut seen: HashMap<String, usize> = HashMap::new();
        ms.iter()
            .map(|m| {
                let n = seen.entry(m.name.clone()).or_default();
                *n += 1;
                (m.name.clone(), *n)
            })
            .collect::<Vec<_>>()
    };
    let (ka, kb) = (key(&ma), key(&mb));
    let index_b: HashMap<&(String, usize), usize> =
        kb.iter().enumerate().map(|(i, k)| (k, i)).collect();
    let mut used = vec![false; mb.len()];
    let mut members = Vec::new();
    let mut same = 0;
    for (i, k) in ka.iter().enumerate() {
        let x = &ma[i];
        let Some(&j) = index_b.get(k) else {
            members.push(MemberDiff {
                name: x.name.clone(),
                change: MemberChange::Removed {
                    size: x.data.len() as u64,
                },
            });
            continue;
        };
        used[j] = true;
        let y = &mb[j];
        let mut meta = Vec::new();
        for (fa, va) in &x.fields {
            let vb = y
                .fields
                .iter()
                .find(|(f, _)| f == fa)
                .map(|(_, v)| v.as_str());
            if vb != Some(va.as_str()) {
                meta.push(MetaField {
                    field: fa.to_string(),
                    from: va.clone(),
                    to: vb.unwrap_or("").to_string(),
                });
            }
        }
        for (fb, vb) in &y.fields {
            if !x.fields.iter().any(|(f, _)| f == fb) {
                meta.push(MetaField {
                    field: fb.to_string(),
                    from: String::new(),
                    to: vb.clone(),
                });
            }
        }
        let content =
            (x.data != y.data).then(|| Box::new(explain_bytes(x.data, y.data, opts, depth + 1)));
        if meta.is_empty() && content.is_none() {
            same += 1;
        } else {
            members.push(MemberDiff {
                name: x.name.clone(),
                change: MemberChange::Changed { meta, content },
            });
        }
    }
    for (j, y) in mb.iter().enumerate() {
        if !used[j] {
            members.push(MemberDiff {
                name: y.name.clone(),
                change: MemberChange::Added {
                    size: y.data.len() as u64,
                },
            });
        }
    }
    let omitted = members.len().saturating_sub(MAX_MEMBERS);
    members.truncate(MAX_MEMBERS);
    ContentDiff::Archive {
        format: format.into(),
        members,
        omitted,
        same,
    }
}
