//! Text for people: the report's layout, and the small diffs it shows (lines of a
//! script, fields of a JSON value) so that a cause reads as what changed.

use std::fmt;

use buildit_store::STORE_DIR;
use serde_json::Value;

use super::DrvDiff;

impl fmt::Display for DrvDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            writeln!(f, "no differences")?;
        }
        for c in &self.causes {
            writeln!(f, "{c}")?;
        }
        if !self.consequences.is_empty() {
            writeln!(f, "rebuilt because an input changed:")?;
            for c in &self.consequences {
                writeln!(f, "  {} (via {})", c.name, c.because.join(", "))?;
            }
        }
        let what = match (self.from_locks, self.unchanged) {
            (true, 1) => "lock entry",
            (true, _) => "lock entries",
            (false, 1) => "derivation",
            (false, _) => "derivations",
        };
        writeln!(f, "{} {what} unchanged", self.unchanged)
    }
}

/// Store paths with their hash replaced: two values equal after masking differ
/// only in which input paths they name.
pub(super) fn mask_store_hashes(s: &str) -> String {
    const HASH_LEN: usize = 32;
    let prefix = format!("{STORE_DIR}/");
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(&prefix) {
        let (before, at) = rest.split_at(i);
        out.push_str(before);
        out.push_str(&prefix);
        let tail = &at[prefix.len()..];
        let is_hash = tail.len() > HASH_LEN
            && tail.as_bytes()[HASH_LEN] == b'-'
            && tail.as_bytes()[..HASH_LEN]
                .iter()
                .all(|c| b"0123456789abcdfghijklmnpqrsvwxyz".contains(c));
        if is_hash {
            out.push('*');
            rest = &tail[HASH_LEN..];
        } else {
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Same,
    Del,
    Add,
}

/// The edit script from `a` to `b` (Myers, through `similar`, as the output diff
/// uses), or `None` when the inputs are too large to compare line by line cheaply.
fn edit_script<'a>(a: &[&'a str], b: &[&'a str]) -> Option<Vec<(Op, &'a str)>> {
    const MAX_LINES: usize = 200_000;
    if a.len() + b.len() > MAX_LINES {
        return None;
    }
    let diff = similar::TextDiff::configure()
        .algorithm(similar::Algorithm::Myers)
        .timeout(std::time::Duration::from_secs(1))
        .diff_slices(a, b);
    Some(
        diff.iter_all_changes()
            .map(|c| {
                let op = match c.tag() {
                    similar::ChangeTag::Equal => Op::Same,
                    similar::ChangeTag::Delete => Op::Del,
                    similar::ChangeTag::Insert => Op::Add,
                };
                (op, c.value())
            })
            .collect(),
    )
}

/// `+3 -1 lines` between two texts.
pub(super) fn line_counts(a: &str, b: &str) -> String {
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let (added, removed) = match edit_script(&la, &lb) {
        Some(ops) => (
            ops.iter().filter(|(o, _)| *o == Op::Add).count(),
            ops.iter().filter(|(o, _)| *o == Op::Del).count(),
        ),
        None => {
            // Too big for a table: count lines present on one side only.
            let sa: std::collections::BTreeSet<&str> = la.iter().copied().collect();
            let sb: std::collections::BTreeSet<&str> = lb.iter().copied().collect();
            (
                lb.iter().filter(|l| !sa.contains(*l)).count(),
                la.iter().filter(|l| !sb.contains(*l)).count(),
            )
        }
    };
    format!("+{added} -{removed} lines")
}

/// A short unified diff (one line of context, at most `MAX_LINES` lines shown).
pub(super) fn short_diff(a: &str, b: &str) -> String {
    const CONTEXT: usize = 1;
    const MAX_LINES: usize = 12;
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let Some(ops) = edit_script(&la, &lb) else {
        return line_counts(a, b);
    };
    let near_change = |k: usize| {
        let lo = k.saturating_sub(CONTEXT);
        let hi = (k + CONTEXT).min(ops.len() - 1);
        ops[lo..=hi].iter().any(|(o, _)| *o != Op::Same)
    };
    let mut shown = Vec::new();
    let mut last = None;
    for (k, (op, line)) in ops.iter().enumerate() {
        if !near_change(k) {
            continue;
        }
        if last.is_some_and(|l: usize| l + 1 != k) {
            shown.push("…".to_string());
        }
        let mark = match op {
            Op::Same => ' ',
            Op::Del => '-',
            Op::Add => '+',
        };
        shown.push(format!("{mark}{line}"));
        last = Some(k);
    }
    if a.ends_with('\n') != b.ends_with('\n') {
        shown.push("(newline at end of script changed)".into());
    }
    if shown.len() > MAX_LINES {
        let more = shown.len() - MAX_LINES;
        shown.truncate(MAX_LINES);
        shown.push(format!("… ({more} more lines)"));
    }
    shown.join("\n")
}

/// Fields that differ between two JSON values, named by path (`a.b`), with their
/// values as compact JSON. Arrays are compared whole.
pub(super) fn json_changes(
    a: &Value,
    b: &Value,
    path: &str,
    out: &mut Vec<(String, Option<String>, Option<String>)>,
) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (a, b) {
        (Value::Object(ma), Value::Object(mb)) => {
            for (k, va) in ma {
                match mb.get(k) {
                    Some(vb) => json_changes(va, vb, &join(k), out),
                    None => out.push((join(k), Some(compact(va)), None)),
                }
            }
            for (k, vb) in mb {
                if !ma.contains_key(k) {
                    out.push((join(k), None, Some(compact(vb))));
                }
            }
        }
        _ if a != b => out.push((path.to_string(), Some(compact(a)), Some(compact(b)))),
        _ => {}
    }
}

fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        _ => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_only_store_hashes() {
        let p = "/store/0123456789abcdfghijklmnpqrsvwxyz-zlib /store/notahash x";
        let q = "/store/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-zlib /store/notahash x";
        assert_eq!(mask_store_hashes(p), mask_store_hashes(q));
        assert_eq!(
            mask_store_hashes(p),
            "/store/*-zlib /store/notahash x",
            "a hash is 32 nix32 characters before a dash"
        );
    }

    #[test]
    fn diffs_are_short_and_count_lines() {
        let a = "a\nb\nc\nd\ne\nf\n";
        let b = "a\nb\nC\nd\ne\nf\ng\n";
        assert_eq!(short_diff(a, b), " b\n-c\n+C\n d\n…\n f\n+g");
        assert_eq!(line_counts(a, b), "+2 -1 lines");
        let mut out = Vec::new();
        json_changes(
            &serde_json::json!({"x": {"y": 1, "z": [1]}, "w": "s"}),
            &serde_json::json!({"x": {"y": 2, "z": [1]}, "v": true}),
            "",
            &mut out,
        );
        // serde_json's map order depends on its features; the set of changes does not.
        out.sort();
        assert_eq!(
            out,
            vec![
                ("v".into(), None, Some("true".into())),
                ("w".into(), Some("s".into()), None),
                ("x.y".into(), Some("1".into()), Some("2".into())),
            ]
        );
    }
}
