//! Archives (tar, ar: `.a` libraries and `.deb` packages) compared by member,
//! members that differ explained in turn by the caller's `explain`.

use std::collections::HashMap;
use std::io;

use object::read::archive::ArchiveFile;

use super::bytes::{ContentDiff, Explain, MemberChange, MemberDiff, MetaField};
use super::DiffOptions;

/// Differing members listed per archive; the rest are counted.
const MAX_MEMBERS: usize = 200;

/// "ustar" magic (POSIX and old GNU) in the first header.
pub(crate) fn is_tar(d: &[u8]) -> bool {
    d.len() >= 512 && &d[257..262] == b"ustar"
}

pub(crate) fn is_ar(d: &[u8]) -> bool {
    d.starts_with(b"!<arch>\n")
}

/// A member's header fields, in display order, and its data.
struct Member<'a> {
    name: String,
    fields: Vec<(&'static str, String)>,
    data: Data<'a>,
}

/// Member data: a slice of the archive, or made up (an ar symbol table's listing).
enum Data<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Data<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Data::Borrowed(d) => d,
            Data::Owned(d) => d,
        }
    }
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
            data: Data::Borrowed(data),
        });
    }
    Ok(out)
}

/// The members of an ar archive, read by `object` (GNU and BSD long names). The
/// symbol table, which `object` keeps to itself, is one more member, "(symbol
/// table)", listed as the symbol names it holds: a change in the symbols is what
/// matters, and its offsets move whenever any member's size does. `None` if
/// malformed.
fn ar_members(d: &[u8]) -> Option<Vec<Member<'_>>> {
    let file = ArchiveFile::parse(d).ok()?;
    let mut out = Vec::new();
    if let Some(symbols) = file.symbols().ok()? {
        let mut listing = Vec::new();
        for s in symbols {
            listing.extend_from_slice(s.ok()?.name());
            listing.push(b'\n');
        }
        out.push(Member {
            name: "(symbol table)".into(),
            fields: vec![(
                "symbols",
                listing.iter().filter(|&&c| c == b'\n').count().to_string(),
            )],
            data: Data::Owned(listing),
        });
    }
    let number = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_default();
    for m in file.members() {
        let m = m.ok()?;
        let data = m.data(d).ok()?;
        out.push(Member {
            name: String::from_utf8_lossy(m.name()).into_owned(),
            fields: vec![
                ("mtime", number(m.date())),
                ("uid", number(m.uid())),
                ("gid", number(m.gid())),
                ("mode", format!("{:04o}", m.mode().unwrap_or(0) & 0o7777)),
                ("size", data.len().to_string()),
            ],
            data: Data::Borrowed(data),
        });
    }
    Some(out)
}

/// `None` if either side is not a readable tar.
pub(crate) fn diff_tar(
    a: &[u8],
    b: &[u8],
    opts: &DiffOptions,
    depth: usize,
    explain: &Explain,
) -> Option<ContentDiff> {
    let (ma, mb) = (tar_members(a).ok()?, tar_members(b).ok()?);
    Some(diff_members("tar", ma, mb, opts, depth, explain))
}

/// `None` if either side is not a readable ar archive.
pub(crate) fn diff_ar(
    a: &[u8],
    b: &[u8],
    opts: &DiffOptions,
    depth: usize,
    explain: &Explain,
) -> Option<ContentDiff> {
    let (ma, mb) = (ar_members(a)?, ar_members(b)?);
    Some(diff_members("ar", ma, mb, opts, depth, explain))
}

/// Members paired by name (and occurrence, since both formats allow a name twice),
/// in the first archive's order, then those only in the second.
fn diff_members(
    format: &str,
    ma: Vec<Member<'_>>,
    mb: Vec<Member<'_>>,
    opts: &DiffOptions,
    depth: usize,
    explain: &Explain,
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
            (*x.data != *y.data).then(|| Box::new(explain(&x.data, &y.data, opts, depth + 1)));
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
