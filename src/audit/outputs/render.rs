//! The human rendering: one line per changed path with a short reason, then the
//! details (diff hunks, members, sections, hexdump rows) indented beneath it.

use std::fmt::{self, Write};

use super::bytes::ContentDiff;
use super::bytes::MemberChange;
use super::tree::{EntryChange, EntryKind, MetaChange, TreeDiff};
use super::{OutputDiff, PartChange, PartDiff};

/// Identical parts listed by name up to this many; beyond, only counted.
const MAX_SAME_LISTED: usize = 3;

impl fmt::Display for OutputDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return writeln!(f, "no differences");
        }
        let mut out = String::new();
        if let [PartDiff {
            name,
            change: PartChange::Tree { diff },
        }] = self.parts.as_slice()
        {
            if name.is_empty() {
                writeln!(out, "{}", tree_headline(diff))?;
                render_tree(&mut out, diff, 0)?;
                return f.write_str(&out);
            }
        }
        for p in self.parts.iter().filter(|p| !p.is_same()) {
            render_part(&mut out, p)?;
        }
        let (layers, others): (Vec<&PartDiff>, Vec<&PartDiff>) = self
            .parts
            .iter()
            .filter(|p| p.is_same())
            .partition(|p| matches!(p.change, PartChange::Tree { .. }));
        if layers.len() > MAX_SAME_LISTED {
            writeln!(out, "{} layers identical", layers.len())?;
        } else {
            for p in layers {
                writeln!(out, "{}: same", p.name)?;
            }
        }
        for p in others {
            writeln!(out, "{}: same", p.name)?;
        }
        f.write_str(&out)
    }
}

impl fmt::Display for TreeDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        writeln!(out, "{}", tree_headline(self))?;
        render_tree(&mut out, self, 0)?;
        f.write_str(&out)
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn tree_headline(d: &TreeDiff) -> String {
    if d.is_empty() {
        return "no differences".into();
    }
    let (added, removed, changed) = d.counts();
    let mut parts = Vec::new();
    if changed > 0 {
        parts.push(format!("{changed} changed"));
    }
    if added > 0 {
        parts.push(format!("{added} added"));
    }
    if removed > 0 {
        parts.push(format!("{removed} removed"));
    }
    parts.join(", ")
}

fn render_part(out: &mut String, p: &PartDiff) -> fmt::Result {
    match &p.change {
        PartChange::Tree { diff } => {
            writeln!(out, "{}: {}", p.name, tree_headline(diff))?;
            render_tree(out, diff, 1)
        }
        PartChange::Document { diff } => match diff {
            None => writeln!(out, "{}: same", p.name),
            Some(d) => {
                writeln!(out, "{}: changed ({})", p.name, summary(d))?;
                render_content(out, d, 1)
            }
        },
        PartChange::Added { entries } if *entries > 0 => {
            writeln!(
                out,
                "{}: added ({})",
                p.name,
                plural(*entries, "entry", "entries")
            )
        }
        PartChange::Removed { entries } if *entries > 0 => {
            writeln!(
                out,
                "{}: removed ({})",
                p.name,
                plural(*entries, "entry", "entries")
            )
        }
        PartChange::Added { .. } => writeln!(out, "{}: added", p.name),
        PartChange::Removed { .. } => writeln!(out, "{}: removed", p.name),
    }
}

fn pad(level: usize) -> String {
    "  ".repeat(level)
}

fn mode(m: u32) -> String {
    format!("{m:04o}")
}

fn describe(k: &EntryKind) -> String {
    match k {
        EntryKind::File { size, mode: m } => format!("file, {}, mode {}", bytes(*size), mode(*m)),
        EntryKind::Symlink { target } => format!("symlink → {target}"),
        EntryKind::Directory { mode: m } => format!("directory, mode {}", mode(*m)),
        EntryKind::Other { what } => what.clone(),
    }
}

fn bytes(n: u64) -> String {
    plural(n as usize, "byte", "bytes")
}

fn render_tree(out: &mut String, d: &TreeDiff, level: usize) -> fmt::Result {
    let p = pad(level);
    for e in &d.entries {
        match &e.change {
            EntryChange::Added { entry, beneath } => {
                write!(out, "{p}added {} ({}", e.path, describe(entry))?;
                if *beneath > 0 {
                    write!(out, ", {} inside", plural(*beneath, "entry", "entries"))?;
                }
                writeln!(out, ")")?;
            }
            EntryChange::Removed { entry, beneath } => {
                write!(out, "{p}removed {} ({}", e.path, describe(entry))?;
                if *beneath > 0 {
                    write!(out, ", {} inside", plural(*beneath, "entry", "entries"))?;
                }
                writeln!(out, ")")?;
            }
            EntryChange::Changed { meta, content } => {
                let mut why: Vec<String> = meta
                    .iter()
                    .map(|m| match m {
                        MetaChange::Kind { from, to } => {
                            format!("{} → {}", from.kind_name(), to.kind_name())
                        }
                        MetaChange::Mode { from, to } => {
                            format!("mode {} → {}", mode(*from), mode(*to))
                        }
                        MetaChange::Target { from, to } => format!("link target {from} → {to}"),
                        MetaChange::Size { from, to } => format!("size {from} → {to}"),
                    })
                    .collect();
                if let Some(c) = content {
                    why.push(format!("content ({})", summary(c)));
                }
                writeln!(out, "{p}changed {}: {}", e.path, why.join(", "))?;
                if let Some(c) = content {
                    render_content(out, c, level + 1)?;
                }
            }
        }
    }
    Ok(())
}

/// A few words on what differs: "text, line 12", "gzip → tar: 1 member changed".
pub(crate) fn summary(c: &ContentDiff) -> String {
    match c {
        ContentDiff::Text { lines, .. } => {
            let many = lines.contains(',') || lines.contains('–');
            if lines.is_empty() {
                "text".into()
            } else if many {
                format!("text, lines {lines}")
            } else {
                format!("text, line {lines}")
            }
        }
        ContentDiff::Binary {
            differing_bytes, ..
        } => {
            format!("binary, {} differ", bytes(*differing_bytes))
        }
        ContentDiff::Compressed { format, inner, .. } => match inner {
            None => format!("{format} stream: only the {format} header differs"),
            Some(i) => format!("{format} → {}", summary(i)),
        },
        ContentDiff::Archive {
            format,
            members,
            omitted,
            ..
        } => {
            let (mut added, mut removed, mut changed) = (0, 0, 0);
            for m in members {
                match m.change {
                    MemberChange::Added { .. } => added += 1,
                    MemberChange::Removed { .. } => removed += 1,
                    MemberChange::Changed { .. } => changed += 1,
                }
            }
            let mut parts = Vec::new();
            if changed > 0 {
                parts.push(format!("{} changed", plural(changed, "member", "members")));
            }
            if added > 0 {
                parts.push(format!("{added} added"));
            }
            if removed > 0 {
                parts.push(format!("{removed} removed"));
            }
            if *omitted > 0 {
                parts.push(format!("{omitted} more"));
            }
            format!("{format}: {}", parts.join(", "))
        }
        ContentDiff::Elf {
            sections, symbols, ..
        } => {
            if sections.is_empty() && symbols.is_empty() {
                return "ELF, headers differ".into();
            }
            let names: Vec<&str> = sections.iter().take(4).map(|s| s.name.as_str()).collect();
            let mut s = format!("ELF: {}", names.join(", "));
            if sections.len() > 4 {
                write!(s, " and {} more sections", sections.len() - 4).ok();
            }
            if !symbols.is_empty() {
                write!(s, "; {}", plural(symbols.len(), "symbol", "symbols")).ok();
            }
            s
        }
    }
}

fn render_content(out: &mut String, c: &ContentDiff, level: usize) -> fmt::Result {
    let p = pad(level);
    match c {
        ContentDiff::Text { diff, omitted, .. } => {
            for l in diff {
                writeln!(out, "{p}{l}")?;
            }
            if *omitted > 0 {
                writeln!(out, "{p}… {} more", plural(*omitted, "line", "lines"))?;
            }
        }
        ContentDiff::Binary {
            size_a,
            size_b,
            windows,
            more,
            ..
        } => {
            if size_a != size_b {
                writeln!(out, "{p}sizes {size_a} → {size_b}")?;
            }
            for w in windows {
                writeln!(out, "{p}at 0x{:x}:", w.offset)?;
                for r in &w.rows {
                    if r.differs() {
                        writeln!(out, "{p}-{:08x}  {}", r.offset, or_end(&r.a))?;
                        writeln!(out, "{p}+{:08x}  {}", r.offset, or_end(&r.b))?;
                    } else {
                        writeln!(out, "{p} {:08x}  {}", r.offset, r.a)?;
                    }
                }
            }
            if *more {
                writeln!(out, "{p}… more differences")?;
            }
        }
        ContentDiff::Compressed {
            inner, truncated, ..
        } => {
            if *truncated {
                writeln!(out, "{p}(compared the first part only: streams too large)")?;
            }
            if let Some(i) = inner {
                render_content(out, i, level)?;
            }
        }
        ContentDiff::Archive {
            members,
            omitted,
            same,
            ..
        } => {
            for m in members {
                match &m.change {
                    MemberChange::Added { size } => {
                        writeln!(out, "{p}added {} ({})", m.name, bytes(*size))?
                    }
                    MemberChange::Removed { size } => {
                        writeln!(out, "{p}removed {} ({})", m.name, bytes(*size))?
                    }
                    MemberChange::Changed { meta, content } => {
                        let mut why: Vec<String> = meta
                            .iter()
                            .map(|f| format!("{} {} → {}", f.field, f.from, f.to))
                            .collect();
                        if let Some(c) = content {
                            why.push(format!("content ({})", summary(c)));
                        }
                        writeln!(out, "{p}changed {}: {}", m.name, why.join(", "))?;
                        if let Some(c) = content {
                            render_content(out, c, level + 1)?;
                        }
                    }
                }
            }
            if *omitted > 0 {
                writeln!(out, "{p}… {} more differing members", omitted)?;
            }
            if *same > 0 {
                writeln!(out, "{p}({} identical)", plural(*same, "member", "members"))?;
            }
        }
        ContentDiff::Elf {
            sections,
            symbols,
            omitted_symbols,
            build_id,
            headers,
        } => {
            for s in sections {
                let loc = |l: &Option<super::SectionLoc>| match l {
                    None => "absent".to_string(),
                    Some(l) => match l.offset {
                        Some(o) => format!("at 0x{o:x}, {}", bytes(l.size)),
                        None => format!("no file data, {}", bytes(l.size)),
                    },
                };
                write!(out, "{p}section {}: {} / {}", s.name, loc(&s.a), loc(&s.b))?;
                if let Some(o) = s.first_difference {
                    write!(out, ", first difference at +0x{o:x}")?;
                }
                writeln!(out)?;
                if let Some(d) = &s.detail {
                    render_content(out, d, level + 1)?;
                }
            }
            for s in symbols {
                let loc = |l: &Option<super::SymbolLoc>| match l {
                    None => "absent".to_string(),
                    Some(l) => format!("0x{:x} ({})", l.value, bytes(l.size)),
                };
                writeln!(
                    out,
                    "{p}symbol {} ({}): {} → {}",
                    s.name,
                    s.table,
                    loc(&s.a),
                    loc(&s.b)
                )?;
            }
            if *omitted_symbols > 0 {
                writeln!(out, "{p}… {} more symbols", omitted_symbols)?;
            }
            if let Some([a, b]) = build_id {
                writeln!(out, "{p}build ID {a} → {b}")?;
            }
            if let Some(h) = headers {
                render_content(out, h, level)?;
            }
        }
    }
    Ok(())
}

fn or_end(s: &str) -> &str {
    if s.is_empty() {
        "(end of file)"
    } else {
        s
    }
}
