//! Why two byte strings differ, explained by what they are: compressed streams and
//! archives are opened and their members compared (recursively), ELF files by
//! section and symbol, text by a unified diff, anything else by hexdump windows.

use std::path::Path;
use std::time::Duration;

use similar::{ChangeTag, DiffTag, TextDiff};

use super::archive;
use super::bytes::{hex_diff, stream_hex, ContentDiff};
use super::elf;
use super::{io_at, DiffOptions, OutputDiffError};
use crate::codec::Codec;

/// Containers nested deeper than this (a .deb holding a tar.xz holding a .a holding
/// an ELF is 4) are shown as bytes.
pub(crate) const MAX_DEPTH: usize = 4;

/// Files (and decompressed streams) up to this size are explained in memory; larger
/// files only get hexdump windows, streamed.
pub(crate) const MAX_IN_MEMORY: u64 = 128 << 20;

/// Text is what has no NUL here and is valid UTF-8 throughout.
const TEXT_SNIFF: usize = 8192;

/// Longer diff lines (minified code) are cut: the line number already says where.
const MAX_LINE_CHARS: usize = 300;

/// A pathological pair must not stall the whole diff in Myers' worst case.
const TEXT_DIFF_TIMEOUT: Duration = Duration::from_secs(5);

/// Explain two regular files that differ.
pub(crate) fn explain_files(
    a: &Path,
    b: &Path,
    opts: &DiffOptions,
) -> Result<ContentDiff, OutputDiffError> {
    let size = |p: &Path| Ok::<_, OutputDiffError>(std::fs::metadata(p).map_err(io_at(p))?.len());
    let (sa, sb) = (size(a)?, size(b)?);
    if sa <= MAX_IN_MEMORY && sb <= MAX_IN_MEMORY {
        let da = std::fs::read(a).map_err(io_at(a))?;
        let db = std::fs::read(b).map_err(io_at(b))?;
        return Ok(explain_bytes(&da, &db, opts, 0));
    }
    stream_hex(a, b, opts)
}

/// Explain two byte strings that differ.
pub(crate) fn explain_bytes(a: &[u8], b: &[u8], opts: &DiffOptions, depth: usize) -> ContentDiff {
    if depth < MAX_DEPTH {
        if let Some(d) = explain_container(a, b, opts, depth) {
            return d;
        }
    }
    if is_text(a) && is_text(b) {
        // is_text checked UTF-8 validity.
        let (ta, tb) = (
            std::str::from_utf8(a).unwrap_or_default(),
            std::str::from_utf8(b).unwrap_or_default(),
        );
        return text_diff(ta, tb, opts);
    }
    hex_diff(a, b, opts)
}

fn explain_container(a: &[u8], b: &[u8], opts: &DiffOptions, depth: usize) -> Option<ContentDiff> {
    let (ca, cb) = (Codec::sniff(a), Codec::sniff(b));
    if ca != Codec::None && ca == cb {
        // A corrupt stream is shown as the bytes it is.
        let (da, ta) = ca.decompress_capped(a, MAX_IN_MEMORY).ok()?;
        let (db, tb) = cb.decompress_capped(b, MAX_IN_MEMORY).ok()?;
        let inner = (da != db).then(|| Box::new(explain_bytes(&da, &db, opts, depth + 1)));
        return Some(ContentDiff::Compressed {
            format: ca.name().into(),
            inner,
            truncated: ta || tb,
        });
    }
    if archive::is_tar(a) && archive::is_tar(b) {
        if let Some(d) = archive::diff_tar(a, b, opts, depth, &explain_bytes) {
            return Some(d);
        }
    }
    if archive::is_ar(a) && archive::is_ar(b) {
        if let Some(d) = archive::diff_ar(a, b, opts, depth, &explain_bytes) {
            return Some(d);
        }
    }
    if crate::elf::is_elf(a) && crate::elf::is_elf(b) {
        return elf::diff_elf(a, b, opts, depth, &explain_bytes);
    }
    None
}

/// The changed line ranges, the first few by number: a file rewritten in many
/// places (a reordered listing) would otherwise make a summary nobody reads.
fn summarise_ranges(ranges: &[String]) -> String {
    const SHOWN: usize = 4;
    if ranges.len() <= SHOWN {
        return ranges.join(", ");
    }
    format!(
        "{} and {} more ranges",
        ranges[..SHOWN - 1].join(", "),
        ranges.len() - (SHOWN - 1)
    )
}

pub(crate) fn is_text(d: &[u8]) -> bool {
    !d[..d.len().min(TEXT_SNIFF)].contains(&0) && std::str::from_utf8(d).is_ok()
}

/// Unified diff with line numbers in the hunk headers and a one-line summary of
/// which lines changed.
pub(crate) fn text_diff(a: &str, b: &str, opts: &DiffOptions) -> ContentDiff {
    let diff = TextDiff::configure()
        .timeout(TEXT_DIFF_TIMEOUT)
        .diff_lines(a, b);
    let mut ranges = Vec::new();
    for op in diff.ops() {
        if op.tag() == DiffTag::Equal {
            continue;
        }
        let new = op.new_range();
        if new.is_empty() {
            let old = op.old_range();
            ranges.push(format!("{} (deleted)", line_range(old.start + 1, old.end)));
        } else {
            ranges.push(line_range(new.start + 1, new.end));
        }
    }
    let mut lines = Vec::new();
    for hunk in diff
        .unified_diff()
        .context_radius(opts.context)
        .iter_hunks()
    {
        lines.push(hunk.header().to_string());
        for change in hunk.iter_changes() {
            let sign = match change.tag() {
                ChangeTag::Delete => '-',
                ChangeTag::Insert => '+',
                ChangeTag::Equal => ' ',
            };
            let value = change.value();
            let value = value.strip_suffix('\n').unwrap_or(value);
            lines.push(format!("{sign}{}", clip(value)));
            if change.missing_newline() {
                lines.push("\\ No newline at end of file".into());
            }
        }
    }
    let omitted = lines.len().saturating_sub(opts.max_text_lines);
    lines.truncate(opts.max_text_lines);
    ContentDiff::Text {
        lines: summarise_ranges(&ranges),
        diff: lines,
        omitted,
    }
}

fn line_range(first: usize, last: usize) -> String {
    if first >= last {
        first.to_string()
    } else {
        format!("{first}–{last}")
    }
}

fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_LINE_CHARS) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Pretty-printed, key-sorted JSON of both documents compared as text; `None`
/// when equal.
pub(crate) fn json_diff(
    a: &serde_json::Value,
    b: &serde_json::Value,
    opts: &DiffOptions,
) -> Option<ContentDiff> {
    let pretty = |v: &serde_json::Value| {
        let mut v = v.clone();
        v.sort_all_objects();
        serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
    };
    let (ta, tb) = (pretty(a), pretty(b));
    (ta != tb).then(|| text_diff(&ta, &tb, opts))
}

#[cfg(test)]
mod tests {
    use super::super::bytes::{MemberChange, MetaField};
    use super::*;
    use std::io::Write;

    fn numbered(n: usize, changed: Option<usize>) -> String {
        (1..=n)
            .map(|i| {
                if Some(i) == changed {
                    format!("line {i} CHANGED\n")
                } else {
                    format!("line {i}\n")
                }
            })
            .collect()
    }

    #[test]
    fn many_changed_ranges_are_summarised() {
        let r: Vec<String> = ["1", "3", "5–6", "9", "12 (deleted)", "20"]
            .map(String::from)
            .to_vec();
        assert_eq!(summarise_ranges(&r[..4]), "1, 3, 5–6, 9");
        assert_eq!(summarise_ranges(&r), "1, 3, 5–6 and 3 more ranges");
    }

    #[test]
    fn text_diff_names_lines_and_numbers_hunks() {
        let o = DiffOptions::default();
        match text_diff(&numbered(30, None), &numbered(30, Some(12)), &o) {
            ContentDiff::Text {
                lines,
                diff,
                omitted,
            } => {
                assert_eq!(lines, "12");
                assert_eq!(diff[0], "@@ -9,7 +9,7 @@");
                assert!(diff.contains(&"-line 12".to_string()));
                assert!(diff.contains(&"+line 12 CHANGED".to_string()));
                assert_eq!(omitted, 0);
            }
            other => panic!("{other:?}"),
        }
        // Several ranges, a deletion, and the cap on shown lines.
        let a = numbered(60, None);
        let b = a
            .replace("line 12\nline 13\nline 14\n", "x\ny\nz\n")
            .replace("line 40\n", "");
        let capped = DiffOptions {
            max_text_lines: 5,
            ..o
        };
        match text_diff(&a, &b, &capped) {
            ContentDiff::Text {
                lines,
                diff,
                omitted,
            } => {
                assert_eq!(lines, "12–14, 40 (deleted)");
                assert_eq!(diff.len(), 5);
                assert!(omitted > 0);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hex_windows_at_differing_offsets() {
        let a = vec![0u8; 4096];
        let mut b = a.clone();
        b[100] = 1;
        b[3000] = 2;
        b[3001] = 3;
        match explain_bytes(&a, &b, &DiffOptions::default(), 0) {
            ContentDiff::Binary {
                differing_bytes,
                windows,
                more,
                ..
            } => {
                assert_eq!(differing_bytes, 3);
                assert!(!more);
                assert_eq!(windows.len(), 2);
                assert_eq!(windows[0].offset, 0x60);
                // One row of context before and after.
                let offs: Vec<u64> = windows[0].rows.iter().map(|r| r.offset).collect();
                assert_eq!(offs, [0x50, 0x60, 0x70]);
                assert!(windows[0].rows[1].differs() && !windows[0].rows[0].differs());
                assert_eq!(windows[1].offset, 0xbb0);
                assert!(windows[1].rows[1]
                    .b
                    .starts_with("00 00 00 00 00 00 00 00  02 03"));
            }
            other => panic!("{other:?}"),
        }
        // The window cap, and a length difference counting as differing bytes.
        let mut c = vec![0u8; 4096 + 10];
        for i in (0..4096).step_by(512) {
            c[i] = 9;
        }
        let o = DiffOptions {
            max_hex_windows: 2,
            ..DiffOptions::default()
        };
        match hex_diff(&a, &c, &o) {
            ContentDiff::Binary {
                differing_bytes,
                windows,
                more,
                ..
            } => {
                assert_eq!(differing_bytes, 8 + 10);
                assert_eq!(windows.len(), 2);
                assert!(more);
            }
            other => panic!("{other:?}"),
        }
    }

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(1);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gzip(data: &[u8], mtime: u32) -> Vec<u8> {
        let mut e = flate2::GzBuilder::new()
            .mtime(mtime)
            .write(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_of_tar_names_the_changed_member_and_line() {
        let a = gzip(
            &tar_of(&[("etc/a.conf", b"x\n"), ("etc/b.conf", b"one\ntwo\nthree\n")]),
            0,
        );
        let b = gzip(
            &tar_of(&[
                ("etc/a.conf", b"x\n"),
                ("etc/b.conf", b"one\n2\nthree\n"),
                ("etc/c", b""),
            ]),
            0,
        );
        let d = explain_bytes(&a, &b, &DiffOptions::default(), 0);
        let ContentDiff::Compressed {
            format,
            inner: Some(inner),
            ..
        } = &d
        else {
            panic!("{d:?}")
        };
        assert_eq!(format, "gzip");
        let ContentDiff::Archive {
            format,
            members,
            same,
            ..
        } = &**inner
        else {
            panic!("{inner:?}")
        };
        assert_eq!(format, "tar");
        assert_eq!(*same, 1);
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].name, "etc/b.conf");
        match &members[0].change {
            MemberChange::Changed {
                meta,
                content: Some(c),
            } => {
                assert_eq!(meta.len(), 1);
                assert_eq!(meta[0].field, "size");
                assert!(matches!(&**c, ContentDiff::Text { lines, .. } if lines == "2"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(members[1].name, "etc/c");
        assert!(matches!(members[1].change, MemberChange::Added { size: 0 }));
        assert_eq!(
            crate::audit::outputs::render::summary(&d),
            "gzip → tar: 1 member changed, 1 added"
        );

        // Same tar, another gzip mtime: only the header differs.
        let t = tar_of(&[("f", b"1")]);
        let d = explain_bytes(&gzip(&t, 1), &gzip(&t, 2), &DiffOptions::default(), 0);
        assert!(
            matches!(d, ContentDiff::Compressed { inner: None, .. }),
            "{d:?}"
        );
    }

    fn ar_of(members: &[(&str, u64, &[u8])]) -> Vec<u8> {
        let mut out = b"!<arch>\n".to_vec();
        for (name, mtime, data) in members {
            let h = format!(
                "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                format!("{name}/"),
                mtime,
                0,
                0,
                "100644",
                data.len()
            );
            assert_eq!(h.len(), 60);
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(data);
            if data.len() % 2 == 1 {
                out.push(b'\n');
            }
        }
        out
    }

    #[test]
    fn ar_member_change_with_header_fields() {
        let a = ar_of(&[("debian-binary", 0, b"2.0\n"), ("x.o", 5, b"abc")]);
        let b = ar_of(&[("debian-binary", 0, b"2.0\n"), ("x.o", 6, b"abd")]);
        let d = explain_bytes(&a, &b, &DiffOptions::default(), 0);
        let ContentDiff::Archive {
            format,
            members,
            same,
            ..
        } = &d
        else {
            panic!("{d:?}")
        };
        assert_eq!((format.as_str(), *same, members.len()), ("ar", 1, 1));
        assert_eq!(members[0].name, "x.o");
        match &members[0].change {
            MemberChange::Changed {
                meta,
                content: Some(c),
            } => {
                assert_eq!(
                    meta[0],
                    MetaField {
                        field: "mtime".into(),
                        from: "5".into(),
                        to: "6".into()
                    }
                );
                assert!(matches!(&**c, ContentDiff::Text { .. }));
            }
            other => panic!("{other:?}"),
        }
    }

    /// A GNU archive as `ar` writes one: the symbol table ("/": count, member
    /// offsets, names), then the long-name table ("//"), then the members.
    fn gnu_ar(symbols: &[&str], long_name: &str, data: &[u8]) -> Vec<u8> {
        let header = |name: &str, len: usize| {
            let h = format!(
                "{name:<16}{:<12}{:<6}{:<6}{:<8}{len:<10}`\n",
                0, 0, 0, "100644"
            );
            assert_eq!(h.len(), 60);
            h.into_bytes()
        };
        let mut table = (symbols.len() as u32).to_be_bytes().to_vec();
        let names: Vec<u8> = symbols
            .iter()
            .flat_map(|s| [s.as_bytes(), b"\0"].concat())
            .collect();
        let table_len = 4 + 4 * symbols.len() + names.len();
        let longs = format!("{long_name}/\n");
        let member_at =
            8 + 60 + table_len.next_multiple_of(2) + 60 + longs.len().next_multiple_of(2);
        for _ in symbols {
            table.extend_from_slice(&(member_at as u32).to_be_bytes());
        }
        table.extend_from_slice(&names);
        let mut out = b"!<arch>\n".to_vec();
        for (name, body) in [
            ("/", table),
            ("//", longs.into_bytes()),
            ("/0", data.to_vec()),
        ] {
            out.extend(header(name, body.len()));
            out.extend_from_slice(&body);
            if body.len() % 2 == 1 {
                out.push(b'\n');
            }
        }
        out
    }

    #[test]
    fn ar_long_names_and_symbol_tables_through_object() {
        let long = "a-member-name-longer-than-sixteen.o";
        let a = gnu_ar(&["f", "g"], long, b"one\n");
        let b = gnu_ar(&["f", "h"], long, b"two\n");
        let d = explain_bytes(&a, &b, &DiffOptions::default(), 0);
        let ContentDiff::Archive { members, same, .. } = &d else {
            panic!("{d:?}")
        };
        assert_eq!(*same, 0);
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["(symbol table)", long]);
        match &members[0].change {
            MemberChange::Changed {
                content: Some(c), ..
            } => assert!(
                matches!(&**c, ContentDiff::Text { diff, .. } if diff.contains(&"+h".to_string())),
                "{c:?}"
            ),
            other => panic!("{other:?}"),
        }
        // Only the member changed: the symbol table's listing is the same.
        let c = gnu_ar(&["f", "g"], long, b"three\n");
        let d = explain_bytes(&a, &c, &DiffOptions::default(), 0);
        assert!(
            matches!(&d, ContentDiff::Archive { members, same: 1, .. } if members.len() == 1),
            "{d:?}"
        );
        // A member running past the end is no archive: shown as bytes.
        let cut = &a[..a.len() - 2];
        let d = explain_bytes(cut, &b, &DiffOptions::default(), 0);
        assert!(matches!(d, ContentDiff::Binary { .. }), "{d:?}");
    }

    #[test]
    fn json_documents_compared_pretty() {
        let a = serde_json::json!({"config": {"Env": ["A=1"]}, "z": 1});
        let b = serde_json::json!({"z": 1, "config": {"Env": ["A=2"]}});
        assert!(json_diff(&a, &a.clone(), &DiffOptions::default()).is_none());
        match json_diff(&a, &b, &DiffOptions::default()) {
            Some(ContentDiff::Text { lines, .. }) => assert_eq!(lines, "4"),
            other => panic!("{other:?}"),
        }
    }
}
