//! ELF files as the output checks and the output diff see them, read with the
//! `object` crate: the dynamic loader's needs of a file ([`read_elf_deps`]), and
//! the magic that tells an ELF file from anything else ([`is_elf`]).
//!
//! Lives below `realise` and `audit` so that both use the same reader.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use object::elf::{self as abi, FileHeader32, FileHeader64};
use object::read::elf::{Dyn, FileHeader, ProgramHeader};
use object::{Endianness, ReadCache, ReadRef};
use thiserror::Error;

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;

pub const ELF_MAGIC: &[u8; 4] = b"\x7fELF";

/// Whether `d` starts with the ELF magic. Such a file is ELF or broken: nothing
/// else begins with these bytes.
pub fn is_elf(d: &[u8]) -> bool {
    d.starts_with(ELF_MAGIC)
}

#[derive(Debug, Error)]
pub enum ElfError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file starts with the ELF magic but is not a well-formed ELF file.
    #[error("{}: malformed ELF file: {why}", path.display())]
    Malformed { path: PathBuf, why: String },
}

/// The kind of machine code in an ELF file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ElfAbi {
    pub is64: bool,
    pub big_endian: bool,
    /// `e_machine`.
    pub machine: u16,
}

/// What the dynamic loader needs to run an ELF file, read from its program headers
/// (section headers are never used: stripped files may not have them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElfDeps {
    pub abi: ElfAbi,
    /// `PT_INTERP`: the dynamic loader's path. Executables have one, shared
    /// libraries do not.
    pub interpreter: Option<OsString>,
    /// `DT_NEEDED` entries, in file order.
    pub needed: Vec<OsString>,
    /// `DT_RUNPATH`, unsplit and unexpanded.
    pub runpath: Option<OsString>,
    /// `DT_RPATH`, unsplit and unexpanded (ignored by the loader if there is a
    /// `DT_RUNPATH`).
    pub rpath: Option<OsString>,
}

impl ElfDeps {
    /// The directories searched for this file's own `DT_NEEDED` entries before the
    /// system ones: `DT_RUNPATH` if present, else `DT_RPATH`, split on `:` with
    /// `$ORIGIN` replaced by `origin`. Empty entries are dropped.
    pub fn search_path(&self, origin: &Path) -> Vec<PathBuf> {
        let Some(list) = self.runpath.as_ref().or(self.rpath.as_ref()) else {
            return Vec::new();
        };
        list.as_bytes()
            .split(|&b| b == b':')
            .filter(|d| !d.is_empty())
            .map(|d| expand_origin(d, origin))
            .collect()
    }
}

/// `s` with the loader's `$ORIGIN` (or `${ORIGIN}`) replaced by `origin`, the
/// directory of the file that names it.
pub fn expand_origin(s: &[u8], origin: &Path) -> PathBuf {
    let origin = origin.as_os_str().as_bytes();
    let s = replace(s, b"${ORIGIN}", origin);
    PathBuf::from(OsString::from_vec(replace(&s, b"$ORIGIN", origin)))
}

fn replace(s: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.windows(from.len()).position(|w| w == from) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(to);
        rest = &rest[at + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// Bounds on what hostile headers can make us allocate; real files are far below.
const MAX_PHDR_TABLE: u64 = 1 << 20;
const MAX_DYNAMIC: u64 = 1 << 20;
/// Longest interpreter, library name or search path accepted: far beyond
/// `PATH_MAX`, as a search path lists several directories. (`object`'s own
/// string reader stops at 4 KiB, which a long search path can exceed.)
const MAX_STRING: u64 = 1 << 16;

/// Reads the dynamic-loading needs of the ELF file at `path`.
///
/// `Ok(None)` if the file does not start with the ELF magic. ELF files that are
/// not executables or shared objects (relocatable `.o`, core dumps) and ones
/// without `PT_DYNAMIC` (static executables, separate debug files) have no needs.
/// A file with the magic that does not parse is [`ElfError::Malformed`]. Only the
/// headers and the strings needed are read, never the whole file.
pub fn read_elf_deps(path: &Path) -> Result<Option<ElfDeps>, ElfError> {
    let io_err = |source| ElfError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let mut ident = Vec::with_capacity(16);
    (&mut file)
        .take(16)
        .read_to_end(&mut ident)
        .map_err(io_err)?;
    if !is_elf(&ident) {
        return Ok(None);
    }
    let malformed = |why: String| ElfError::Malformed {
        path: path.to_path_buf(),
        why,
    };
    // `object` would call these "unsupported"; the byte says what is wrong.
    match ident.get(4) {
        Some(1 | 2) => {}
        Some(c) => return Err(malformed(format!("unknown ELF class {c}"))),
        None => return Err(malformed("the ELF identification is cut short".into())),
    }
    match ident.get(5) {
        Some(1 | 2) => {}
        Some(d) => return Err(malformed(format!("unknown ELF data encoding {d}"))),
        None => return Err(malformed("the ELF identification is cut short".into())),
    }
    let data = ReadCache::new(file);
    let deps = if ident[4] == 2 {
        deps::<FileHeader64<Endianness>>(&data)
    } else {
        deps::<FileHeader32<Endianness>>(&data)
    };
    deps.map(Some).map_err(malformed)
}

fn deps<H: FileHeader<Endian = Endianness>>(data: &ReadCache<File>) -> Result<ElfDeps, String> {
    let header = H::parse(data).map_err(|e| e.to_string())?;
    let endian = header.endian().map_err(|e| e.to_string())?;
    let mut deps = ElfDeps {
        abi: ElfAbi {
            is64: header.is_type_64(),
            big_endian: endian == Endianness::Big,
            machine: header.e_machine(endian).0,
        },
        ..ElfDeps::default()
    };
    let e_type = header.e_type(endian);
    if e_type != abi::ET_EXEC && e_type != abi::ET_DYN {
        return Ok(deps);
    }
    // `object` reads whatever the header asks for: bound it first.
    let phnum = header.phnum(endian, data).map_err(|e| e.to_string())?;
    let table_len = u64::from(phnum) * u64::from(header.e_phentsize(endian));
    if table_len > MAX_PHDR_TABLE {
        return Err(format!("{phnum} program headers"));
    }
    let phdrs = header
        .program_headers(endian, data)
        .map_err(|e| e.to_string())?;

    if let Some(interp) = phdrs.iter().find(|p| p.p_type(endian) == abi::PT_INTERP) {
        // Separate debug files keep the program headers but not the contents:
        // an empty PT_INTERP is no interpreter.
        if interp.p_filesz(endian).into() > 0 {
            let (offset, size) = interp.file_range(endian);
            let end = offset.saturating_add(size);
            deps.interpreter = Some(string(data, offset, end, "PT_INTERP")?);
        }
    }
    let Some(dynamic) = phdrs.iter().find(|p| p.p_type(endian) == abi::PT_DYNAMIC) else {
        return Ok(deps);
    };
    let filesz: u64 = dynamic.p_filesz(endian).into();
    if filesz == 0 {
        return Ok(deps);
    }
    if filesz > MAX_DYNAMIC {
        return Err(format!("PT_DYNAMIC of {filesz} bytes is implausibly large"));
    }
    let entries = dynamic
        .dynamic(endian, data)
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let mut strtab = None;
    let mut strsz = None;
    let mut needed = Vec::new();
    let mut runpath = None;
    let mut rpath = None;
    for entry in entries {
        let val = entry.val(endian);
        match entry.tag(endian) {
            abi::DT_NULL => break,
            abi::DT_NEEDED => needed.push(val),
            abi::DT_STRTAB => strtab = Some(val),
            abi::DT_STRSZ => strsz = Some(val),
            abi::DT_RUNPATH => runpath = Some(val),
            abi::DT_RPATH => rpath = Some(val),
            _ => {}
        }
    }
    if needed.is_empty() && runpath.is_none() && rpath.is_none() {
        return Ok(deps);
    }
    let strtab_addr = strtab.ok_or("PT_DYNAMIC has no DT_STRTAB")?;
    // The loader finds the string table through the segments, so must we: a
    // stripped file may have no section headers to say where it is.
    let strtab_offset = phdrs
        .iter()
        .filter(|p| p.p_type(endian) == abi::PT_LOAD)
        .find_map(|p| {
            let vaddr: u64 = p.p_vaddr(endian).into();
            let filesz: u64 = p.p_filesz(endian).into();
            let within = addr_in(strtab_addr, vaddr, filesz)?;
            let offset: u64 = p.p_offset(endian).into();
            offset.checked_add(within)
        })
        .ok_or_else(|| {
            format!("DT_STRTAB address {strtab_addr:#x} is not in any loaded part of the file")
        })?;
    let size = data
        .len()
        .map_err(|()| "the file's size is unknown".to_string())?;
    let strtab_end = match strsz {
        Some(n) => strtab_offset.saturating_add(n),
        None => size,
    };
    let entry_string = |at: u64, what: &str| {
        let offset = strtab_offset
            .checked_add(at)
            .filter(|&o| o < strtab_end)
            .ok_or_else(|| format!("{what} string offset {at} is outside the string table"))?;
        string(data, offset, strtab_end, what)
    };
    for at in needed {
        deps.needed.push(entry_string(at, "DT_NEEDED")?);
    }
    deps.runpath = runpath
        .map(|at| entry_string(at, "DT_RUNPATH"))
        .transpose()?;
    deps.rpath = rpath.map(|at| entry_string(at, "DT_RPATH")).transpose()?;
    Ok(deps)
}

/// How far `addr` lies into a segment loaded at `vaddr` with `filesz` bytes from
/// the file, if it does.
fn addr_in(addr: u64, vaddr: u64, filesz: u64) -> Option<u64> {
    let within = addr.checked_sub(vaddr)?;
    (within < filesz).then_some(within)
}

/// The NUL-terminated string at `offset`, which must end before `limit`. Read in
/// small pieces: string tables of big C++ libraries run to megabytes.
fn string(data: &ReadCache<File>, offset: u64, limit: u64, what: &str) -> Result<OsString, String> {
    let size = data
        .len()
        .map_err(|()| "the file's size is unknown".to_string())?;
    let limit = limit.min(size).min(offset.saturating_add(MAX_STRING));
    let mut out = Vec::new();
    let mut at = offset;
    while at < limit {
        let n = (limit - at).min(256);
        let piece = data.read_bytes_at(at, n).map_err(|()| {
            format!("{what} ({n} bytes at offset {at}) could not be read: the file ends at {size}")
        })?;
        if let Some(nul) = piece.iter().position(|&b| b == 0) {
            out.extend_from_slice(&piece[..nul]);
            return Ok(OsString::from_vec(out));
        }
        out.extend_from_slice(piece);
        at += n;
    }
    Err(format!("{what} at offset {offset} is not NUL-terminated"))
}
