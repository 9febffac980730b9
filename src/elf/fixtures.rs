//! ELF files for tests: built by the C compiler (skipped without one) or written
//! byte by byte in every class and byte order ([`Synth`]), and what readelf makes
//! of them.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{read_elf_deps, ElfAbi, ElfDeps, ELF_MAGIC};
use crate::test_skip::{require_tool, skip};

pub(crate) const ET_DYN: u16 = 3;
pub(crate) const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_STRSZ: u64 = 10;
const DT_RUNPATH: u64 = 29;

pub(crate) fn put(root: &Path, rel: &str, contents: &[u8]) -> PathBuf {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, contents).unwrap();
    p
}

pub(crate) fn link(root: &Path, rel: &str, target: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, p).unwrap();
}

pub(crate) fn copy(from: &Path, root: &Path, rel: &str) {
    let to = root.join(rel);
    fs::create_dir_all(to.parent().unwrap()).unwrap();
    fs::copy(from, to).unwrap();
}

/// `cc` with `args` in `dir`; `None` if there is no C compiler.
pub(crate) fn cc(dir: &Path, args: &[&str]) -> Option<bool> {
    match Command::new("cc").current_dir(dir).args(args).output() {
        Ok(out) => {
            if !out.status.success() {
                eprintln!("cc {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
            Some(out.status.success())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => panic!("running cc: {e}"),
    }
}

pub(crate) struct Demo {
    pub(crate) dir: tempfile::TempDir,
    /// `libdemo.so.1`, and a program linked against it without a search path.
    pub(crate) lib: PathBuf,
    pub(crate) exe: PathBuf,
    pub(crate) deps: ElfDeps,
}

/// Builds the demo library and program, or `None` after `skip` (a failure under
/// CI) if there is no C compiler.
/// `demo-runpath` and `demo-rpath` in `dir` (beside [`demo`]'s library): the demo
/// program linked with `$ORIGIN/../lib` as its RUNPATH and as its RPATH.
pub(crate) fn build_with_search_paths(dir: &Path) {
    for (name, flags) in [
        ("demo-runpath", "-Wl,--enable-new-dtags"),
        ("demo-rpath", "-Wl,--disable-new-dtags"),
    ] {
        let args = [
            "-o",
            name,
            "main.c",
            "./libdemo.so.1",
            "-Wl,-rpath,$ORIGIN/../lib",
            flags,
        ];
        assert_eq!(cc(dir, &args), Some(true));
    }
}

pub(crate) fn demo() -> Option<Demo> {
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), "demo.c", b"int demo(void) { return 42; }\n");
    put(
        dir.path(),
        "main.c",
        b"int demo(void);\nint main(void) { return demo(); }\n",
    );
    let built = cc(
        dir.path(),
        &[
            "-shared",
            "-fPIC",
            "-Wl,-soname,libdemo.so.1",
            "-o",
            "libdemo.so.1",
            "demo.c",
        ],
    );
    if built.is_none() {
        skip("no C compiler (scripts/test.sh installs gcc)");
        return None;
    }
    assert_eq!(built, Some(true));
    assert_eq!(
        cc(dir.path(), &["-o", "demo", "main.c", "./libdemo.so.1"]),
        Some(true)
    );
    let exe = dir.path().join("demo");
    let deps = read_elf_deps(&exe).unwrap().unwrap();
    assert!(
        deps.needed.contains(&OsString::from("libdemo.so.1")),
        "{deps:?}"
    );
    Some(Demo {
        lib: dir.path().join("libdemo.so.1"),
        exe,
        deps,
        dir,
    })
}

/// What two independent readers make of the ELF file at PATH: binutils'
/// `readelf` (class, byte order, `PT_INTERP`, and `DT_NEEDED`, `DT_RUNPATH`,
/// `DT_RPATH` through the string table) and the `object` crate (class, byte
/// order, `e_machine`, `PT_INTERP`), which must agree where they overlap.
/// `None` after `skip` without readelf.
pub(crate) fn oracle_deps(path: &Path) -> Option<ElfDeps> {
    use object::read::elf::{FileHeader, ProgramHeader};
    use object::Endian;
    fn by_object<H: FileHeader<Endian = object::Endianness>>(
        data: &[u8],
    ) -> (ElfAbi, Option<OsString>) {
        let h = H::parse(data).unwrap();
        let e = h.endian().unwrap();
        let interpreter = h
            .program_headers(e, data)
            .unwrap()
            .iter()
            .find_map(|p| p.interpreter(e, data).unwrap())
            .map(|i| OsString::from(std::str::from_utf8(i).unwrap()));
        let abi = ElfAbi {
            is64: h.is_type_64(),
            big_endian: e.is_big_endian(),
            machine: h.e_machine(e).0,
        };
        (abi, interpreter)
    }
    let readelf = require_tool("readelf", "binutils: scripts/test.sh installs it")?;
    let data = fs::read(path).unwrap();
    use object::elf::{FileHeader32, FileHeader64};
    use object::{Endianness, FileKind};
    let (abi, interpreter) = match FileKind::parse(&data[..]) {
        Ok(FileKind::Elf32) => by_object::<FileHeader32<Endianness>>(&data),
        Ok(FileKind::Elf64) => by_object::<FileHeader64<Endianness>>(&data),
        other => panic!("{}: object reads {other:?}", path.display()),
    };
    let out = Command::new(readelf)
        .arg("-hldW")
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let complaints = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && complaints.is_empty(),
        "{complaints}"
    );
    let field = |name: &str| {
        let line = text.lines().find(|l| l.trim_start().starts_with(name));
        line.unwrap_or_else(|| panic!("no {name} in:\n{text}"))
            .to_string()
    };
    let bracketed = |l: &str| {
        let inner = l.split_once('[').unwrap().1.rsplit_once(']').unwrap().0;
        OsString::from(inner)
    };
    assert_eq!(field("Class:").ends_with("ELF64"), abi.is64, "{text}");
    assert_eq!(
        field("Data:").ends_with("big endian"),
        abi.big_endian,
        "{text}"
    );
    let dynamic = |tag: &str| -> Vec<OsString> {
        let tag = format!("({tag})");
        let lines = text.lines().filter(|l| l.contains(&tag));
        lines.map(bracketed).collect()
    };
    let requested = text.lines().find(|l| l.contains("program interpreter:"));
    let readelf_interpreter = requested.map(|l| {
        let inner = bracketed(l);
        let i = inner.to_str().unwrap();
        OsString::from(i.strip_prefix("Requesting program interpreter: ").unwrap())
    });
    assert_eq!(readelf_interpreter, interpreter, "{text}");
    Some(ElfDeps {
        abi,
        interpreter,
        needed: dynamic("NEEDED"),
        runpath: dynamic("RUNPATH").pop(),
        rpath: dynamic("RPATH").pop(),
    })
}

pub(crate) struct Synth {
    pub(crate) is64: bool,
    pub(crate) big_endian: bool,
    pub(crate) machine: u16,
    pub(crate) e_type: u16,
    pub(crate) interp: Option<&'static str>,
    pub(crate) needed: Vec<&'static str>,
    pub(crate) runpath: Option<&'static str>,
}

impl Synth {
    pub(crate) fn new(is64: bool, big_endian: bool) -> Self {
        Synth {
            is64,
            big_endian,
            machine: EM_X86_64,
            e_type: ET_DYN,
            interp: Some("/lib/ld.so.1"),
            needed: vec!["libc.so.6", "libm.so.6"],
            runpath: Some("$ORIGIN"),
        }
    }

    /// Header, program headers (PT_LOAD of the whole file at a base address,
    /// PT_INTERP when there is an interpreter, PT_DYNAMIC), the interpreter,
    /// the string table and the dynamic section.
    pub(crate) fn build(&self) -> Vec<u8> {
        const BASE: u64 = 0x40_0000;
        let word = if self.is64 { 8 } else { 4 };
        let (ehsize, phentsize) = if self.is64 { (64, 56) } else { (52, 32) };
        let phnum = if self.interp.is_some() { 3 } else { 2 };
        let interp_off = ehsize + phnum * phentsize;
        let interp = self.interp.map(|i| format!("{i}\0")).unwrap_or_default();
        let strtab_off = interp_off + interp.len();
        let mut strtab = vec![0u8];
        let mut offsets = Vec::new();
        for s in self.needed.iter().chain(&self.runpath) {
            offsets.push(strtab.len() as u64);
            strtab.extend_from_slice(s.as_bytes());
            strtab.push(0);
        }
        let dyn_off = (strtab_off + strtab.len()).next_multiple_of(8);
        let mut dynamic: Vec<(u64, u64)> = Vec::new();
        for &o in &offsets[..self.needed.len()] {
            dynamic.push((DT_NEEDED, o));
        }
        if self.runpath.is_some() {
            dynamic.push((DT_RUNPATH, *offsets.last().unwrap()));
        }
        dynamic.push((DT_STRTAB, BASE + strtab_off as u64));
        dynamic.push((DT_STRSZ, strtab.len() as u64));
        dynamic.push((DT_NULL, 0));
        let dyn_len = dynamic.len() * 2 * word;
        let total = (dyn_off + dyn_len) as u64;

        let mut b = Vec::new();
        let be = self.big_endian;
        let put = |b: &mut Vec<u8>, v: u64, n: usize| {
            let bytes = if be {
                v.to_be_bytes()[8 - n..].to_vec()
            } else {
                v.to_le_bytes()[..n].to_vec()
            };
            b.extend_from_slice(&bytes);
        };
        b.extend_from_slice(ELF_MAGIC);
        b.extend_from_slice(&[if self.is64 { 2 } else { 1 }, if be { 2 } else { 1 }, 1]);
        b.resize(16, 0);
        put(&mut b, u64::from(self.e_type), 2);
        put(&mut b, u64::from(self.machine), 2);
        put(&mut b, 1, 4); // e_version
        put(&mut b, 0, word); // e_entry
        put(&mut b, ehsize as u64, word); // e_phoff
        put(&mut b, 0, word); // e_shoff
        put(&mut b, 0, 4); // e_flags
        put(&mut b, ehsize as u64, 2);
        put(&mut b, phentsize as u64, 2);
        put(&mut b, phnum as u64, 2); // e_phnum
        put(&mut b, 0, 6); // e_shentsize, e_shnum, e_shstrndx
        assert_eq!(b.len(), ehsize);
        let phdrs = [
            (PT_LOAD, 0, total),
            (PT_INTERP, interp_off as u64, interp.len() as u64),
            (PT_DYNAMIC, dyn_off as u64, dyn_len as u64),
        ];
        let phdrs = phdrs.into_iter().filter(|p| p.0 != PT_INTERP || phnum == 3);
        for (kind, offset, size) in phdrs {
            put(&mut b, u64::from(kind), 4);
            if self.is64 {
                put(&mut b, 4, 4); // p_flags
            }
            put(&mut b, offset, word);
            put(&mut b, BASE + offset, word); // p_vaddr
            put(&mut b, BASE + offset, word); // p_paddr
            put(&mut b, size, word); // p_filesz
            put(&mut b, size, word); // p_memsz
            if !self.is64 {
                put(&mut b, 4, 4); // p_flags
            }
            put(&mut b, 8, word); // p_align
        }
        b.extend_from_slice(interp.as_bytes());
        b.extend_from_slice(&strtab);
        b.resize(dyn_off, 0);
        for (tag, val) in dynamic {
            put(&mut b, tag, word);
            put(&mut b, val, word);
        }
        b
    }
}
