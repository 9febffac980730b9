//! ELF files compared by section (by name, with file offsets and the first
//! differing byte) and by symbol (`.symtab` and `.dynsym`), plus the GNU build ID.

use std::collections::HashMap;

use object::{Object, ObjectSection, ObjectSymbol};

use super::bytes::{
    hex_diff, ContentDiff, Explain, SectionDiff, SectionLoc, SymbolDiff, SymbolLoc,
};
use super::DiffOptions;

/// Symbol differences listed per file: one changed function shifts every later
/// address, and the first few say enough.
const MAX_SYMBOLS: usize = 50;

/// Differing sections whose bytes are shown too.
const MAX_SECTION_DETAILS: usize = 3;

/// `None` if either side does not parse as ELF. Differing sections' bytes are
/// explained by `explain`.
pub(crate) fn diff_elf(
    a: &[u8],
    b: &[u8],
    opts: &DiffOptions,
    depth: usize,
    explain: &Explain,
) -> Option<ContentDiff> {
    let fa = object::File::parse(a).ok()?;
    let fb = object::File::parse(b).ok()?;

    let mut sections = Vec::new();
    let (sa, sb) = (sections_of(&fa), sections_of(&fb));
    let index_b: HashMap<&(String, usize), usize> =
        sb.iter().enumerate().map(|(i, s)| (&s.key, i)).collect();
    let mut used = vec![false; sb.len()];
    for x in &sa {
        let y = index_b.get(&x.key).map(|&j| {
            used[j] = true;
            &sb[j]
        });
        match y {
            None => sections.push(section_diff(x, None)),
            Some(y) if x.data != y.data || x.loc.size != y.loc.size => {
                sections.push(section_diff(x, Some(y)));
            }
            Some(_) => {}
        }
    }
    for (j, y) in sb.iter().enumerate() {
        if !used[j] {
            sections.push(SectionDiff {
                name: y.key.0.clone(),
                a: None,
                b: Some(y.loc),
                first_difference: None,
                detail: None,
            });
        }
    }
    // Show the bytes of the first few sections on both sides, one window each.
    let detail_opts = DiffOptions {
        max_hex_windows: 1,
        ..opts.clone()
    };
    for s in sections
        .iter_mut()
        .filter(|s| s.a.is_some() && s.b.is_some())
        .take(MAX_SECTION_DETAILS)
    {
        let (da, db) = (section_data(&sa, &s.name), section_data(&sb, &s.name));
        if da != db {
            s.detail = Some(Box::new(explain(da, db, &detail_opts, depth + 1)));
        }
    }

    let mut symbols = Vec::new();
    symbol_diffs(
        "symtab",
        &symbols_of(fa.symbols()),
        &symbols_of(fb.symbols()),
        &mut symbols,
    );
    symbol_diffs(
        "dynsym",
        &symbols_of(fa.dynamic_symbols()),
        &symbols_of(fb.dynamic_symbols()),
        &mut symbols,
    );
    let omitted_symbols = symbols.len().saturating_sub(MAX_SYMBOLS);
    symbols.truncate(MAX_SYMBOLS);

    let hex =
        |d: Option<&[u8]>| d.map(|d| d.iter().map(|b| format!("{b:02x}")).collect::<String>());
    let (ia, ib) = (
        hex(fa.build_id().ok().flatten()),
        hex(fb.build_id().ok().flatten()),
    );
    let build_id = (ia != ib).then(|| [ia.unwrap_or_default(), ib.unwrap_or_default()]);

    let headers =
        (sections.is_empty() && symbols.is_empty()).then(|| Box::new(hex_diff(a, b, opts)));
    Some(ContentDiff::Elf {
        sections,
        symbols,
        omitted_symbols,
        build_id,
        headers,
    })
}

struct Section<'a> {
    /// Name and occurrence (names may repeat, e.g. in relocatable objects).
    key: (String, usize),
    loc: SectionLoc,
    data: &'a [u8],
}

fn sections_of<'a>(f: &object::File<'a>) -> Vec<Section<'a>> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for s in f.sections() {
        let name = s.name().unwrap_or("?").to_string();
        let n = seen.entry(name.clone()).or_default();
        *n += 1;
        let (offset, _) = s.file_range().unzip();
        out.push(Section {
            key: (name, *n),
            loc: SectionLoc {
                offset,
                size: s.size(),
            },
            data: s.data().unwrap_or_default(),
        });
    }
    out
}

fn section_data<'a>(list: &[Section<'a>], name: &str) -> &'a [u8] {
    list.iter()
        .find(|x| x.key.0 == name)
        .map(|x| x.data)
        .unwrap_or_default()
}

fn section_diff(x: &Section<'_>, y: Option<&Section<'_>>) -> SectionDiff {
    let first_difference = y.map(|y| {
        let common = x.data.len().min(y.data.len());
        x.data
            .iter()
            .zip(y.data)
            .position(|(p, q)| p != q)
            .unwrap_or(common) as u64
    });
    SectionDiff {
        name: x.key.0.clone(),
        a: Some(x.loc),
        b: y.map(|y| y.loc),
        first_difference,
        detail: None,
    }
}

fn symbols_of<'a, S: ObjectSymbol<'a>>(
    it: impl Iterator<Item = S>,
) -> Vec<((String, usize), SymbolLoc)> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for s in it {
        let Ok(name) = s.name() else { continue };
        // Section and file symbols have no name worth reporting.
        if name.is_empty() {
            continue;
        }
        let n = seen.entry(name.to_string()).or_default();
        *n += 1;
        out.push((
            (name.to_string(), *n),
            SymbolLoc {
                value: s.address(),
                size: s.size(),
            },
        ));
    }
    out
}

fn symbol_diffs(
    table: &str,
    a: &[((String, usize), SymbolLoc)],
    b: &[((String, usize), SymbolLoc)],
    out: &mut Vec<SymbolDiff>,
) {
    let mb: HashMap<&(String, usize), SymbolLoc> = b.iter().map(|(k, l)| (k, *l)).collect();
    let ma: HashMap<&(String, usize), SymbolLoc> = a.iter().map(|(k, l)| (k, *l)).collect();
    for (k, la) in a {
        let lb = mb.get(k).copied();
        if lb != Some(*la) {
            out.push(SymbolDiff {
                table: table.into(),
                name: k.0.clone(),
                a: Some(*la),
                b: lb,
            });
        }
    }
    for (k, lb) in b {
        if !ma.contains_key(k) {
            out.push(SymbolDiff {
                table: table.into(),
                name: k.0.clone(),
                a: None,
                b: Some(*lb),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Same source name in its own directory, so that only the string differs;
    /// `None` when `cc` cannot run.
    fn compile(dir: &std::path::Path, name: &str, greeting: &str) -> Option<Vec<u8>> {
        let dir = dir.join(name);
        std::fs::create_dir(&dir).unwrap();
        let src = dir.join("prog.c");
        std::fs::write(
            &src,
            format!(
                "#include <stdio.h>\nconst char *greeting = \"{greeting}\";\nint main(void) {{ puts(greeting); return 0; }}\n"
            ),
        )
        .unwrap();
        let out = dir.join("prog");
        let ok = Command::new("cc")
            .current_dir(&dir)
            .arg("-O1")
            .arg("-Wl,--build-id=sha1")
            .arg("-o")
            .arg(&out)
            .arg("prog.c")
            .status()
            .ok()?
            .success();
        assert!(ok, "cc failed");
        Some(std::fs::read(out).unwrap())
    }

    #[test]
    fn elf_names_the_differing_section_and_offset() {
        let t = tempfile::tempdir().unwrap();
        let a = compile(t.path(), "a", "hello, world");
        let Some(a) = crate::test_skip::or_skip(a, "no C compiler (scripts/test.sh installs gcc)")
        else {
            return;
        };
        let b = compile(t.path(), "b", "hello, wOrld").unwrap();
        let d = super::super::content::explain_bytes(&a, &b, &DiffOptions::default(), 0);
        let ContentDiff::Elf {
            sections,
            symbols,
            build_id,
            ..
        } = &d
        else {
            panic!("{d:?}")
        };
        let rodata = sections
            .iter()
            .find(|s| s.name == ".rodata")
            .unwrap_or_else(|| panic!("no .rodata in {sections:#?}"));
        let (la, lb) = (rodata.a.unwrap(), rodata.b.unwrap());
        assert_eq!(la, lb, "same layout, only a byte differs");
        // The string sits somewhere in .rodata; 'O' is its 9th character.
        let off = rodata.first_difference.unwrap() as usize;
        let data = &a[la.offset.unwrap() as usize..][..la.size as usize];
        assert_eq!(&data[off - 8..off + 1], b"hello, wo");
        assert!(matches!(
            rodata.detail.as_deref(),
            Some(ContentDiff::Binary {
                differing_bytes: 1,
                ..
            })
        ));
        assert!(symbols.is_empty(), "{symbols:?}");
        // The build ID hashes the contents, so it differs too.
        assert!(build_id.is_some());
        assert!(sections.iter().any(|s| s.name == ".note.gnu.build-id"));
    }
}
