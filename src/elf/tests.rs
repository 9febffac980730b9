//! The reader against real files from the C compiler, readelf as an oracle, and
//! synthetic files of every class and byte order, broken in many ways.

use std::fs;
use std::path::{Path, PathBuf};

use super::fixtures::{build_with_search_paths, cc, demo, oracle_deps, put, Synth, EM_X86_64};
use super::*;
use crate::test_skip::skip;

#[test]
fn runpath_and_rpath_read_and_expanded() {
    let Some(d) = demo() else { return };
    let dir = d.dir.path();
    build_with_search_paths(dir);
    let runpath = read_elf_deps(&dir.join("demo-runpath")).unwrap().unwrap();
    assert_eq!(runpath.runpath, Some("$ORIGIN/../lib".into()));
    assert_eq!(runpath.rpath, None);
    let rpath = read_elf_deps(&dir.join("demo-rpath")).unwrap().unwrap();
    assert_eq!(rpath.rpath, Some("$ORIGIN/../lib".into()));
    assert_eq!(rpath.runpath, None);
    assert_eq!(
        rpath.search_path(Path::new("/opt/demo/bin")),
        vec![PathBuf::from("/opt/demo/bin/../lib")]
    );
}

#[test]
fn stripped_binary_without_section_headers() {
    let Some(d) = demo() else { return };
    let dir = d.dir.path();
    assert_eq!(
        cc(
            dir,
            &["-s", "-o", "demo-stripped", "main.c", "./libdemo.so.1"]
        ),
        Some(true)
    );
    // Drop the section header table from the header too (e_shoff, e_shentsize,
    // e_shnum, e_shstrndx): only program headers may be used.
    let path = dir.join("demo-stripped");
    let mut bytes = fs::read(&path).unwrap();
    assert_eq!(bytes[4], 2, "a 64-bit compiler");
    bytes[40..48].fill(0);
    bytes[58..64].fill(0);
    fs::write(&path, &bytes).unwrap();
    let stripped = read_elf_deps(&path).unwrap().unwrap();
    assert_eq!(stripped, d.deps);
}

#[test]
fn static_binary_needs_nothing() {
    let Some(d) = demo() else { return };
    let dir = d.dir.path();
    put(dir, "static.c", b"int main(void) { return 0; }\n");
    if cc(dir, &["-static", "-o", "static", "static.c"]) != Some(true) {
        return skip("no static C library (scripts/test.sh installs libc6-dev)");
    }
    let deps = read_elf_deps(&dir.join("static")).unwrap().unwrap();
    assert_eq!(deps.interpreter, None);
    assert!(deps.needed.is_empty(), "{deps:?}");
}

#[test]
fn non_elf_truncated_and_corrupt_files() {
    let Some(d) = demo() else { return };
    let dir = d.dir.path();
    let text = put(dir, "text", b"#!/bin/sh\necho hi\n");
    let tiny = put(dir, "tiny", b"\x7fEL");
    assert_eq!(read_elf_deps(&text).unwrap(), None);
    assert_eq!(read_elf_deps(&tiny).unwrap(), None);

    let magic_only = put(dir, "magic-only", ELF_MAGIC);
    let err = read_elf_deps(&magic_only).unwrap_err();
    assert!(matches!(err, ElfError::Malformed { .. }), "{err}");
    assert!(err.to_string().contains("magic-only"), "{err}");

    // Every truncation and many corruptions of a real file: errors of the
    // right kind, or some answer, but never a panic.
    let bytes = fs::read(&d.exe).unwrap();
    let broken = dir.join("broken");
    let check = |contents: &[u8]| {
        fs::write(&broken, contents).unwrap();
        if let Err(e) = read_elf_deps(&broken) {
            assert!(matches!(e, ElfError::Malformed { .. }), "{e}");
        }
    };
    for len in (0..bytes.len()).step_by(61) {
        check(&bytes[..len]);
    }
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..300 {
        let mut corrupt = bytes.clone();
        for _ in 0..4 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = (seed % 4096) as usize % corrupt.len();
            corrupt[at] = (seed >> 32) as u8;
        }
        check(&corrupt);
    }
}

/// Real files made by the C compiler and the system's `ls`: all that the
/// reader finds is what readelf and the `object` crate find.
#[test]
fn real_files_match_readelf_and_object() {
    let Some(d) = demo() else { return };
    let dir = d.dir.path();
    // A search path of each kind.
    for (name, dtags) in [
        ("rpath", "--disable-new-dtags"),
        ("runpath", "--enable-new-dtags"),
    ] {
        let link = format!("-Wl,{dtags},-rpath,$ORIGIN/../lib:/opt/x");
        let args = ["-o", name, "main.c", "./libdemo.so.1", link.as_str()];
        assert_eq!(cc(dir, &args), Some(true));
    }
    let (rpath, runpath) = (dir.join("rpath"), dir.join("runpath"));
    let ls = Path::new("/bin/ls");
    let ls_is_elf = fs::read(ls).is_ok_and(|b| b.starts_with(ELF_MAGIC));
    if !ls_is_elf {
        skip("/bin/ls is not an ELF file here");
    }
    let paths = [ls, &d.exe, &d.lib, &rpath, &runpath];
    for path in paths.into_iter().filter(|p| *p != ls || ls_is_elf) {
        let ours = read_elf_deps(path).unwrap().expect("an ELF file");
        let Some(theirs) = oracle_deps(path) else {
            return;
        };
        assert_eq!(ours, theirs, "{}", path.display());
    }
    let deps = |p: &Path| read_elf_deps(p).unwrap().unwrap();
    assert!(deps(&rpath).rpath.is_some() && deps(&runpath).runpath.is_some());
}

/// The four classes and byte orders, as written by `Synth` and as readelf and
/// the `object` crate read the same files: a `Synth` bug cannot hide a reader
/// bug of the same shape.
#[test]
fn synthetic_classes_and_byte_orders() {
    let dir = tempfile::tempdir().unwrap();
    let mut written = Vec::new();
    for is64 in [false, true] {
        for big_endian in [false, true] {
            let synth = Synth::new(is64, big_endian);
            let name = format!("synth-{}-{}", if is64 { 64 } else { 32 }, big_endian);
            let path = put(dir.path(), &name, &synth.build());
            let deps = read_elf_deps(&path).unwrap().unwrap();
            assert_eq!(
                deps,
                ElfDeps {
                    abi: ElfAbi {
                        is64,
                        big_endian,
                        machine: EM_X86_64,
                    },
                    interpreter: Some("/lib/ld.so.1".into()),
                    needed: vec!["libc.so.6".into(), "libm.so.6".into()],
                    runpath: Some("$ORIGIN".into()),
                    rpath: None,
                },
                "64-bit: {is64}, big-endian: {big_endian}"
            );
            written.push((path, deps));
        }
    }
    // A library without interpreter or search path, 32-bit big-endian.
    let lib = Synth {
        interp: None,
        runpath: None,
        ..Synth::new(false, true)
    };
    let path = put(dir.path(), "synth-lib", &lib.build());
    written.push((path.clone(), read_elf_deps(&path).unwrap().unwrap()));
    for (path, ours) in written {
        let Some(theirs) = oracle_deps(&path) else {
            return;
        };
        assert_eq!(ours, theirs, "{}", path.display());
    }
}

#[test]
fn synthetic_odd_files() {
    let dir = tempfile::tempdir().unwrap();
    let read = |synth: &Synth, edit: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = synth.build();
        edit(&mut bytes);
        let path = put(dir.path(), "odd", &bytes);
        read_elf_deps(&path)
    };
    let invalid = |r: Result<Option<ElfDeps>, ElfError>| {
        let e = r.unwrap_err();
        assert!(matches!(e, ElfError::Malformed { .. }), "{e}");
        e.to_string()
    };

    // Relocatable objects need nothing, whatever their program headers say.
    let mut object = Synth::new(true, false);
    object.e_type = 1;
    let deps = ElfDeps {
        abi: ElfAbi {
            is64: true,
            big_endian: false,
            machine: EM_X86_64,
        },
        ..ElfDeps::default()
    };
    assert_eq!(read(&object, &|_| {}).unwrap(), Some(deps));

    // No interpreter, no search path: a plain shared library.
    let mut lib = Synth::new(false, true);
    lib.interp = None;
    lib.runpath = None;
    let deps = read(&lib, &|_| {}).unwrap().unwrap();
    assert_eq!(deps.interpreter, None);
    assert_eq!(deps.needed.len(), 2);

    let synth = Synth::new(true, false);
    let len = synth.build().len();
    // An unknown class.
    assert!(invalid(read(&synth, &|b| b[4] = 3)).contains("class"));
    // The dynamic section cut off.
    invalid(read(&synth, &|b| b.truncate(len - 8)));
    // DT_STRTAB pointing outside every PT_LOAD.
    let bad_strtab = |b: &mut Vec<u8>| {
        let at = b.len() - 16 * 3 + 8;
        b[at..at + 8].copy_from_slice(&0x10u64.to_le_bytes());
    };
    assert!(invalid(read(&synth, &bad_strtab)).contains("DT_STRTAB"));
    // A string table cut short by DT_STRSZ: the names are not terminated.
    let short_strsz = |b: &mut Vec<u8>| {
        let at = b.len() - 16 * 2 + 8;
        b[at..at + 8].copy_from_slice(&3u64.to_le_bytes());
    };
    invalid(read(&synth, &short_strsz));
    // Absurd program header counts and sizes.
    invalid(read(&synth, &|b| {
        b[56..58].copy_from_slice(&0xfffeu16.to_le_bytes())
    }));
    invalid(read(&synth, &|b| {
        b[54..56].copy_from_slice(&8u16.to_le_bytes())
    }));
}
