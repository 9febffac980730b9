//! The vocabulary of a content diff ([`ContentDiff`] and what it is made of) and
//! the explanation of last resort, hexdump windows. Everything that explains
//! bytes (content, archive, elf) builds on this file, and it on nothing of theirs,
//! so that the dispatcher in `content.rs` is the only place that knows them all.

use std::fs::File;
use std::path::Path;

use serde::Serialize;

use super::read_full;
use super::{io_at, DiffOptions, OutputDiffError};

/// Context rows around differing hexdump rows, and the most rows in one window.
const HEX_CONTEXT_ROWS: usize = 1;
const HEX_MAX_ROWS: usize = 8;

/// How a container's members are explained in turn: `content::explain_bytes`,
/// handed down so that archive and ELF diffs need not import the dispatcher.
pub(crate) type Explain = dyn Fn(&[u8], &[u8], &DiffOptions, usize) -> ContentDiff;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentDiff {
    Text {
        /// Changed lines of the second file ("12", "12–14, 40"); pure deletions
        /// by the first file's line numbers, marked "(deleted)".
        lines: String,
        /// Unified diff lines, hunk headers included.
        diff: Vec<String>,
        /// Diff lines left out beyond the cap.
        omitted: usize,
    },
    Binary {
        size_a: u64,
        size_b: u64,
        /// Bytes that differ at the same offset, plus the length difference.
        differing_bytes: u64,
        windows: Vec<HexWindow>,
        /// More differing regions exist than windows shown.
        more: bool,
    },
    Compressed {
        /// "gzip", "xz", "zstd".
        format: String,
        /// `None`: the decompressed bytes are equal (only the framing differs, e.g.
        /// gzip's mtime or file name).
        inner: Option<Box<ContentDiff>>,
        /// The streams were cut at the in-memory cap before comparing.
        truncated: bool,
    },
    Archive {
        /// "tar", "ar".
        format: String,
        members: Vec<MemberDiff>,
        /// Differing members left out of `members`.
        omitted: usize,
        /// Members equal on both sides.
        same: usize,
    },
    Elf {
        sections: Vec<SectionDiff>,
        symbols: Vec<SymbolDiff>,
        omitted_symbols: usize,
        /// GNU build IDs (hex) of both files, when they differ.
        #[serde(skip_serializing_if = "Option::is_none")]
        build_id: Option<[String; 2]>,
        /// Set when no section or symbol differs: the headers differ, shown as bytes.
        #[serde(skip_serializing_if = "Option::is_none")]
        headers: Option<Box<ContentDiff>>,
    },
}

/// Consecutive hexdump rows around differing bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HexWindow {
    pub offset: u64,
    pub rows: Vec<HexRow>,
}

/// 16 bytes at `offset`: hex and printable ASCII, of each side (empty past its end).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HexRow {
    pub offset: u64,
    pub a: String,
    pub b: String,
}

impl HexRow {
    pub fn differs(&self) -> bool {
        self.a != self.b
    }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SectionLoc {
    /// In the file; `None` for sections without file data (`.bss`).
    pub offset: Option<u64>,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SectionDiff {
    pub name: String,
    /// `None`: the section is only in the other file.
    pub a: Option<SectionLoc>,
    pub b: Option<SectionLoc>,
    /// First differing byte, relative to the section's start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_difference: Option<u64>,
    /// The section's bytes explained, for the first few differing sections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<Box<ContentDiff>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SymbolLoc {
    pub value: u64,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SymbolDiff {
    /// "symtab" or "dynsym".
    pub table: String,
    pub name: String,
    pub a: Option<SymbolLoc>,
    pub b: Option<SymbolLoc>,
}

/// Collects hexdump windows over one or more aligned chunks of both sides.
struct HexState {
    windows: Vec<HexWindow>,
    max: usize,
    more: bool,
    differing: u64,
}

impl HexState {
    fn new(max: usize) -> HexState {
        HexState {
            windows: Vec::new(),
            max,
            more: false,
            differing: 0,
        }
    }

    /// `a` and `b` start at `base` (a multiple of 16) and are equally long except
    /// at the end of the shorter file. Windows do not cross chunk boundaries.
    fn feed(&mut self, base: u64, a: &[u8], b: &[u8]) {
        let common = a.len().min(b.len());
        let longest = a.len().max(b.len());
        self.differing += (longest - common) as u64;
        let rows = longest.div_ceil(16);
        let mut diff_rows = Vec::new();
        for r in 0..rows {
            let (x, y) = (row(a, r), row(b, r));
            if x != y {
                self.differing += x.iter().zip(y).filter(|(p, q)| p != q).count() as u64;
                diff_rows.push(r);
            }
        }
        let mut k = 0;
        while k < diff_rows.len() {
            if self.windows.len() >= self.max {
                self.more = true;
                return;
            }
            let first = diff_rows[k];
            let start = first.saturating_sub(HEX_CONTEXT_ROWS);
            // Extend over differing rows close enough to share context.
            let mut last = first;
            k += 1;
            while k < diff_rows.len()
                && diff_rows[k] <= last + 2 * HEX_CONTEXT_ROWS + 1
                && diff_rows[k] + HEX_CONTEXT_ROWS < start + HEX_MAX_ROWS
            {
                last = diff_rows[k];
                k += 1;
            }
            let end = (last + HEX_CONTEXT_ROWS + 1).min(rows);
            let rows: Vec<HexRow> = (start..end)
                .map(|r| HexRow {
                    offset: base + (r * 16) as u64,
                    a: hex_row(row(a, r)),
                    b: hex_row(row(b, r)),
                })
                .collect();
            self.windows.push(HexWindow {
                offset: base + (first * 16) as u64,
                rows,
            });
        }
    }
}

/// Row `r` (16 bytes) of `d`, short or empty at its end.
fn row(d: &[u8], r: usize) -> &[u8] {
    let s = (r * 16).min(d.len());
    &d[s..(s + 16).min(d.len())]
}

fn hex_row(d: &[u8]) -> String {
    if d.is_empty() {
        return String::new();
    }
    let mut s = String::with_capacity(70);
    for i in 0..16 {
        match d.get(i) {
            Some(x) => s.push_str(&format!("{x:02x} ")),
            None => s.push_str("   "),
        }
        if i == 7 {
            s.push(' ');
        }
    }
    s.push('|');
    s.extend(d.iter().map(|&c| {
        if c.is_ascii_graphic() || c == b' ' {
            c as char
        } else {
            '.'
        }
    }));
    s.push('|');
    s
}

pub(crate) fn hex_diff(a: &[u8], b: &[u8], opts: &DiffOptions) -> ContentDiff {
    let mut st = HexState::new(opts.max_hex_windows);
    st.feed(0, a, b);
    ContentDiff::Binary {
        size_a: a.len() as u64,
        size_b: b.len() as u64,
        differing_bytes: st.differing,
        windows: st.windows,
        more: st.more,
    }
}

/// Hexdump windows of files too large to hold, read in aligned chunks.
pub(crate) fn stream_hex(
    a: &Path,
    b: &Path,
    opts: &DiffOptions,
) -> Result<ContentDiff, OutputDiffError> {
    const CHUNK: usize = 1 << 20;
    let mut fa = File::open(a).map_err(io_at(a))?;
    let mut fb = File::open(b).map_err(io_at(b))?;
    let (mut ba, mut bb) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut st = HexState::new(opts.max_hex_windows);
    let (mut sa, mut sb, mut base) = (0u64, 0u64, 0u64);
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(io_at(a))?;
        let nb = read_full(&mut fb, &mut bb).map_err(io_at(b))?;
        if na == 0 && nb == 0 {
            break;
        }
        sa += na as u64;
        sb += nb as u64;
        st.feed(base, &ba[..na], &bb[..nb]);
        base += CHUNK as u64;
    }
    Ok(ContentDiff::Binary {
        size_a: sa,
        size_b: sb,
        differing_bytes: st.differing,
        windows: st.windows,
        more: st.more,
    })
}
