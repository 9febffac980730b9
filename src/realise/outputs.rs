//! Checks on a finished build output, run before it is registered in the store:
//!
//! * [`scan_references`]: which of the candidate store paths the output refers to,
//!   found the way Nix finds them, by searching its NAR for their hash parts.
//! * [`check_needed`]: whether every ELF file's interpreter and `DT_NEEDED` libraries
//!   can be found in the runtime closure, and if not, which package has them.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

use buildit_store::store_path::HASH_PART_LEN;
use buildit_store::{nar, nix32, StoreError, StorePath};

// ---------------------------------------------------------------------------
// References
// ---------------------------------------------------------------------------

/// A `Write` sink that looks for store path hash parts in whatever is written to
/// it, like Nix's `RefScanSink`. It keeps only the last `HASH_PART_LEN - 1` bytes
/// between writes, so it can sit behind any streaming producer (alone, or teed
/// with a hasher).
pub struct RefScanner {
    /// Hash parts still being looked for. Found ones are removed, so each costs one
    /// lookup hit however often it occurs and a finished search stops early.
    pending: HashMap<[u8; HASH_PART_LEN], Vec<StorePath>>,
    found: BTreeSet<StorePath>,
    /// The end of the previous write: a hash part may start there.
    tail: Vec<u8>,
    is_nix32: [bool; 256],
    /// How many pending hash parts fall in each [`prefix_bucket`]: in long runs of
    /// nix32 characters (`00000…`, `aaaa…`) every byte starts a window, and this
    /// spares hashing nearly all of them.
    buckets: Box<[u16]>,
}

const BUCKETS: usize = 1 << 16;

/// A bucket (below `BUCKETS`) for the first bytes of a window.
fn prefix_bucket(window: &[u8; HASH_PART_LEN]) -> usize {
    let head = u32::from_le_bytes([window[0], window[1], window[2], window[3]]);
    (head.wrapping_mul(0x9e37_79b1) >> 16) as usize
}

impl RefScanner {
    pub fn new<'a>(candidates: impl IntoIterator<Item = &'a StorePath>) -> Self {
        let mut pending: HashMap<[u8; HASH_PART_LEN], Vec<StorePath>> = HashMap::new();
        for p in candidates {
            let key: [u8; HASH_PART_LEN] = p
                .hash_part()
                .as_bytes()
                .try_into()
                .expect("store path hash parts have a fixed length");
            pending.entry(key).or_default().push(p.clone());
        }
        let mut buckets = vec![0u16; BUCKETS].into_boxed_slice();
        for key in pending.keys() {
            let b = &mut buckets[prefix_bucket(key)];
            *b = b.saturating_add(1);
        }
        RefScanner {
            pending,
            found: BTreeSet::new(),
            tail: Vec::with_capacity(2 * HASH_PART_LEN),
            is_nix32: std::array::from_fn(|b| nix32::is_nix32_char(b as u8)),
            buckets,
        }
    }

    /// The candidates seen so far.
    pub fn found(&self) -> &BTreeSet<StorePath> {
        &self.found
    }

    pub fn into_found(self) -> BTreeSet<StorePath> {
        self.found
    }

    /// Finds every candidate hash part that lies entirely inside `s`.
    fn search(&mut self, s: &[u8]) {
        let mut i = 0;
        // `s[i..i + good]` is known to be nix32 already: after a full window only
        // the byte entering it needs checking, so runs of nix32 cost O(1) a byte.
        let mut good = 0;
        'windows: while i + HASH_PART_LEN <= s.len() && !self.pending.is_empty() {
            // Checking back to front lets a non-nix32 byte at `j` rule out every
            // window that contains it in one step, so ordinary data is skipped in
            // strides of up to 32 bytes.
            let mut j = HASH_PART_LEN;
            while j > good {
                j -= 1;
                if !self.is_nix32[s[i + j] as usize] {
                    i += j + 1;
                    good = 0;
                    continue 'windows;
                }
            }
            let window: &[u8; HASH_PART_LEN] = s[i..i + HASH_PART_LEN]
                .try_into()
                .expect("window has the length of a hash part");
            let bucket = prefix_bucket(window);
            if self.buckets[bucket] != 0 {
                if let Some(paths) = self.pending.remove(window) {
                    self.found.extend(paths);
                    // A saturated count is never decremented: it stays a hint.
                    if self.buckets[bucket] != u16::MAX {
                        self.buckets[bucket] -= 1;
                    }
                }
            }
            i += 1;
            good = HASH_PART_LEN - 1;
        }
    }
}

impl Write for RefScanner {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.pending.is_empty() {
            return Ok(data.len());
        }
        // Windows that straddle the previous write and this one: they start in the
        // tail and end within the first HASH_PART_LEN - 1 bytes of `data`.
        let keep = HASH_PART_LEN - 1;
        if !self.tail.is_empty() {
            let head = data.len().min(keep);
            let tail_len = self.tail.len();
            self.tail.extend_from_slice(&data[..head]);
            let joined = std::mem::take(&mut self.tail);
            self.search(&joined);
            self.tail = joined;
            self.tail.truncate(tail_len);
        }
        self.search(data);
        if data.len() >= keep {
            self.tail.clear();
            self.tail.extend_from_slice(&data[data.len() - keep..]);
        } else {
            self.tail.extend_from_slice(data);
            let excess = self.tail.len().saturating_sub(keep);
            self.tail.drain(..excess);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The subset of `candidates` whose hash part occurs anywhere in the NAR of `tree`
/// (file contents, symlink targets or names). The NAR is streamed through a
/// [`RefScanner`], never held in memory.
pub fn scan_references(
    tree: &Path,
    candidates: &BTreeSet<StorePath>,
) -> Result<BTreeSet<StorePath>, StoreError> {
    if candidates.is_empty() {
        return Ok(BTreeSet::new());
    }
    let mut scanner = RefScanner::new(candidates);
    nar::dump_path(tree, &mut scanner)?;
    Ok(scanner.into_found())
}

// ---------------------------------------------------------------------------
// ELF dependencies
// ---------------------------------------------------------------------------

/// A tree of files laid out like `/`: a package's store path, or the output itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryTree {
    /// How reports name the tree, e.g. the store path name `libssl3-3.0.11-1`.
    pub label: String,
    /// Where the tree is on disk.
    pub root: PathBuf,
}

/// An ELF file's interpreter or needed library that the runtime closure lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingLibrary {
    /// The `DT_NEEDED` name (`libssl.so.3`), or the `PT_INTERP` path.
    pub library: String,
    /// The ELF file that needs it, as a path inside the output (`/usr/sbin/nginx`).
    pub needed_by: String,
    /// The label of the first of the `providers` that has it, if any.
    pub provider: Option<String>,
}

/// The kind of machine code in an ELF file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ElfAbi {
    pub is64: bool,
    pub big_endian: bool,
    /// `e_machine`.
    pub machine: u16,
}

/// The ABI [`check_needed`] checks: x86-64, whose loader searches
/// [`DEFAULT_LIBRARY_DIRS`]. Files for other ABIs (the i386 helpers that valgrind
/// and perf ship) need a loader and libraries of their own, which nothing here
/// provides or looks for, so they are not checked.
pub const NATIVE_ABI: ElfAbi = ElfAbi {
    is64: true,
    big_endian: false,
    machine: 62, // EM_X86_64
};

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
fn expand_origin(s: &[u8], origin: &Path) -> PathBuf {
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

/// Where the loader looks when a file's own search path does not have a library:
/// Debian's multiarch directories (from `ld.so.conf`), then the built-in ones.
pub const DEFAULT_LIBRARY_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
    "/usr/local/lib",
];

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";

/// Reads the dynamic-loading needs of the ELF file at `path`.
///
/// `Ok(None)` if the file does not start with the ELF magic. ELF files that are
/// not executables or shared objects (relocatable `.o`, core dumps) and ones
/// without `PT_DYNAMIC` (static executables, separate debug files) have no needs.
/// A malformed or truncated file is an error of kind [`io::ErrorKind::InvalidData`]
/// naming it. Only the headers and the strings needed are read.
pub fn read_elf_deps(path: &Path) -> io::Result<Option<ElfDeps>> {
    let file = File::open(path).map_err(in_file(path))?;
    let size = file.metadata().map_err(in_file(path))?.len();
    let mut magic = [0u8; 4];
    if size < 4 {
        return Ok(None);
    }
    file.read_exact_at(&mut magic, 0).map_err(in_file(path))?;
    if &magic != ELF_MAGIC {
        return Ok(None);
    }
    let elf = Elf { file: &file, size };
    elf.deps().map(Some).map_err(|e| match e {
        ElfError::Malformed(what) => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: malformed ELF file: {what}", path.display()),
        ),
        ElfError::Io(e) => in_file(path)(e),
    })
}

fn in_file(path: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

enum ElfError {
    Malformed(String),
    Io(io::Error),
}

fn malformed(what: impl Into<String>) -> ElfError {
    ElfError::Malformed(what.into())
}

const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const PN_XNUM: u16 = 0xffff;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_STRSZ: u64 = 10;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;

/// Bounds on what hostile headers can make us allocate; real files are far below.
const MAX_PHDR_TABLE: u64 = 1 << 20;
const MAX_DYNAMIC: u64 = 1 << 20;
/// Longest interpreter, library name or search path accepted: far beyond
/// `PATH_MAX`, as a search path lists several directories.
const MAX_STRING: u64 = 1 << 16;

/// Byte order and word size, from `e_ident`.
#[derive(Clone, Copy)]
struct Layout {
    is64: bool,
    big_endian: bool,
}

impl Layout {
    fn u16(self, b: &[u8], at: usize) -> u16 {
        let v: [u8; 2] = b[at..at + 2].try_into().expect("2 bytes");
        if self.big_endian {
            u16::from_be_bytes(v)
        } else {
            u16::from_le_bytes(v)
        }
    }

    fn u32(self, b: &[u8], at: usize) -> u32 {
        let v: [u8; 4] = b[at..at + 4].try_into().expect("4 bytes");
        if self.big_endian {
            u32::from_be_bytes(v)
        } else {
            u32::from_le_bytes(v)
        }
    }

    fn u64(self, b: &[u8], at: usize) -> u64 {
        let v: [u8; 8] = b[at..at + 8].try_into().expect("8 bytes");
        if self.big_endian {
            u64::from_be_bytes(v)
        } else {
            u64::from_le_bytes(v)
        }
    }

    /// An address, offset or size: 4 bytes in ELF32, 8 in ELF64.
    fn word(self, b: &[u8], at: usize) -> u64 {
        if self.is64 {
            self.u64(b, at)
        } else {
            u64::from(self.u32(b, at))
        }
    }
}

#[derive(Clone, Copy)]
struct Phdr {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

struct Elf<'f> {
    file: &'f File,
    size: u64,
}

impl Elf<'_> {
    /// Exactly `len` bytes at `offset`, which must lie inside the file.
    fn read(&self, offset: u64, len: u64, what: &str) -> Result<Vec<u8>, ElfError> {
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(malformed(format!(
                "{what} ({len} bytes at offset {offset}) extends past the end of the file \
                 ({} bytes)",
                self.size
            )));
        }
        let mut buf = vec![0; len as usize];
        self.file.read_exact_at(&mut buf, offset).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                malformed(format!("{what}: file shrank while being read"))
            } else {
                ElfError::Io(e)
            }
        })?;
        Ok(buf)
    }

    /// The NUL-terminated string at `offset`, which must end before `limit`.
    /// Read in small pieces: string tables of big C++ libraries run to megabytes.
    fn string(&self, offset: u64, limit: u64, what: &str) -> Result<OsString, ElfError> {
        let limit = limit.min(self.size).min(offset.saturating_add(MAX_STRING));
        let mut out = Vec::new();
        let mut at = offset;
        while at < limit {
            let n = (limit - at).min(256);
            let piece = self.read(at, n, what)?;
            if let Some(nul) = piece.iter().position(|&b| b == 0) {
                out.extend_from_slice(&piece[..nul]);
                return Ok(OsString::from_vec(out));
            }
            out.extend_from_slice(&piece);
            at += n;
        }
        Err(malformed(format!(
            "{what} at offset {offset} is not NUL-terminated"
        )))
    }

    fn deps(&self) -> Result<ElfDeps, ElfError> {
        let ident = self.read(0, 16, "ELF identification")?;
        let layout = Layout {
            is64: match ident[4] {
                1 => false,
                2 => true,
                c => return Err(malformed(format!("unknown ELF class {c}"))),
            },
            big_endian: match ident[5] {
                1 => false,
                2 => true,
                d => return Err(malformed(format!("unknown ELF data encoding {d}"))),
            },
        };
        // Everything up to e_shstrndx: 52 bytes in ELF32, 64 in ELF64.
        let header = self.read(0, if layout.is64 { 64 } else { 52 }, "ELF header")?;
        let mut deps = ElfDeps {
            abi: ElfAbi {
                is64: layout.is64,
                big_endian: layout.big_endian,
                machine: layout.u16(&header, 18),
            },
            ..ElfDeps::default()
        };
        let e_type = layout.u16(&header, 16);
        if e_type != ET_EXEC && e_type != ET_DYN {
            return Ok(deps);
        }
        let phdrs = self.program_headers(layout, &header)?;

        if let Some(interp) = phdrs.iter().find(|p| p.kind == PT_INTERP) {
            // Separate debug files keep the program headers but not the contents:
            // an empty PT_INTERP is no interpreter.
            if interp.filesz > 0 {
                let end = interp.offset.saturating_add(interp.filesz);
                deps.interpreter = Some(self.string(interp.offset, end, "PT_INTERP")?);
            }
        }
        let Some(dynamic) = phdrs.iter().find(|p| p.kind == PT_DYNAMIC) else {
            return Ok(deps);
        };
        if dynamic.filesz == 0 {
            return Ok(deps);
        }
        if dynamic.filesz > MAX_DYNAMIC {
            return Err(malformed(format!(
                "PT_DYNAMIC of {} bytes is implausibly large",
                dynamic.filesz
            )));
        }
        let table = self.read(dynamic.offset, dynamic.filesz, "PT_DYNAMIC")?;
        let entry_size = if layout.is64 { 16 } else { 8 };
        let half = entry_size / 2;
        let mut strtab = None;
        let mut strsz = None;
        let mut needed = Vec::new();
        let mut runpath = None;
        let mut rpath = None;
        for entry in table.chunks_exact(entry_size) {
            let tag = layout.word(entry, 0);
            let val = layout.word(entry, half);
            match tag {
                DT_NULL => break,
                DT_NEEDED => needed.push(val),
                DT_STRTAB => strtab = Some(val),
                DT_STRSZ => strsz = Some(val),
                DT_RUNPATH => runpath = Some(val),
                DT_RPATH => rpath = Some(val),
                _ => {}
            }
        }
        if needed.is_empty() && runpath.is_none() && rpath.is_none() {
            return Ok(deps);
        }
        let strtab_addr = strtab.ok_or_else(|| malformed("PT_DYNAMIC has no DT_STRTAB"))?;
        let strtab_offset = file_offset(&phdrs, strtab_addr).ok_or_else(|| {
            malformed(format!(
                "DT_STRTAB address {strtab_addr:#x} is not in any loaded part of the file"
            ))
        })?;
        let strtab_end = match strsz {
            Some(n) => strtab_offset.saturating_add(n),
            None => self.size,
        };
        let string = |at: u64, what: &str| {
            let offset = strtab_offset
                .checked_add(at)
                .filter(|&o| o < strtab_end)
                .ok_or_else(|| {
                    malformed(format!(
                        "{what} string offset {at} is outside the string table"
                    ))
                })?;
            self.string(offset, strtab_end, what)
        };
        for at in needed {
            deps.needed.push(string(at, "DT_NEEDED")?);
        }
        deps.runpath = runpath.map(|at| string(at, "DT_RUNPATH")).transpose()?;
        deps.rpath = rpath.map(|at| string(at, "DT_RPATH")).transpose()?;
        Ok(deps)
    }

    fn program_headers(&self, layout: Layout, header: &[u8]) -> Result<Vec<Phdr>, ElfError> {
        let (phoff, phentsize, phnum) = if layout.is64 {
            (
                layout.u64(header, 32),
                layout.u16(header, 54),
                layout.u16(header, 56),
            )
        } else {
            (
                u64::from(layout.u32(header, 28)),
                layout.u16(header, 42),
                layout.u16(header, 44),
            )
        };
        if phoff == 0 || phnum == 0 {
            return Ok(Vec::new());
        }
        let phnum = if phnum == PN_XNUM {
            // Too many to count in e_phnum: the real number is section 0's sh_info.
            let (shoff, shentsize) = if layout.is64 {
                (layout.u64(header, 40), layout.u16(header, 58))
            } else {
                (u64::from(layout.u32(header, 32)), layout.u16(header, 46))
            };
            let at = if layout.is64 { 44 } else { 28 };
            if usize::from(shentsize) < at + 4 {
                return Err(malformed(format!("section header size {shentsize}")));
            }
            let sh0 = self.read(shoff, u64::from(shentsize), "section header 0")?;
            u64::from(layout.u32(&sh0, at))
        } else {
            u64::from(phnum)
        };
        let min_size = if layout.is64 { 56 } else { 32 };
        if phentsize < min_size {
            return Err(malformed(format!(
                "program header size {phentsize} is below {min_size}"
            )));
        }
        let table_len = phnum * u64::from(phentsize);
        if table_len > MAX_PHDR_TABLE {
            return Err(malformed(format!("{phnum} program headers")));
        }
        let table = self.read(phoff, table_len, "program header table")?;
        Ok(table
            .chunks_exact(usize::from(phentsize))
            .map(|p| {
                if layout.is64 {
                    Phdr {
                        kind: layout.u32(p, 0),
                        offset: layout.u64(p, 8),
                        vaddr: layout.u64(p, 16),
                        filesz: layout.u64(p, 32),
                    }
                } else {
                    Phdr {
                        kind: layout.u32(p, 0),
                        offset: u64::from(layout.u32(p, 4)),
                        vaddr: u64::from(layout.u32(p, 8)),
                        filesz: u64::from(layout.u32(p, 16)),
                    }
                }
            })
            .collect())
    }
}

/// Where virtual address `addr` comes from in the file, per the PT_LOAD segments.
fn file_offset(phdrs: &[Phdr], addr: u64) -> Option<u64> {
    phdrs
        .iter()
        .filter(|p| p.kind == PT_LOAD)
        .find(|p| addr >= p.vaddr && addr - p.vaddr < p.filesz)
        .and_then(|p| p.offset.checked_add(addr - p.vaddr))
}

/// Checks every ELF executable and shared object in `output` (symlinks are not
/// followed): its interpreter and each `DT_NEEDED` library must exist in `output`
/// itself or in one of the `runtime` trees, where the loader would look for it.
///
/// The loader's search is mimicked over the union of those trees: the file's
/// `DT_RUNPATH` (or `DT_RPATH`) with `$ORIGIN` expanded, the directories named in
/// the trees' `/etc/ld.so.conf.d/*.conf`, then [`DEFAULT_LIBRARY_DIRS`]. Symlinks
/// in directories are followed across trees (a usrmerge `/lib -> usr/lib` from one
/// package, the libraries from another); the library itself only has to exist,
/// since its symlink may point into `/etc/alternatives`, which maintainer scripts
/// fill in. Names containing `/` are paths (`$ORIGIN` expanded); they and
/// relative search directories are taken relative to `/`.
///
/// Two kinds of files are let off. Shared libraries (no interpreter) whose needed
/// library is anywhere in the output by name: the program that loads them may
/// have loaded it already. Files for another ABI than [`NATIVE_ABI`]. Files that
/// are not valid ELF are skipped too: a corrupt or foreign test fixture is no
/// reason to fail a build.
///
/// Each missing library names the first of `providers` that has it in the same
/// places (and those of the providers' own `ld.so.conf.d`), looking at all the
/// trees as if installed together, as a build root's members are. The result is
/// sorted by `needed_by`, then `library`.
pub fn check_needed(
    output: &Path,
    runtime: &[LibraryTree],
    providers: &[LibraryTree],
) -> io::Result<Vec<MissingLibrary>> {
    let mut roots = vec![output.to_path_buf()];
    roots.extend(runtime.iter().map(|t| t.root.clone()));
    let closure_len = roots.len();
    roots.extend(providers.iter().map(|t| t.root.clone()));
    let conf_dirs = ld_so_conf_dirs(&roots[..closure_len])?;
    let provider_conf_dirs = ld_so_conf_dirs(&roots[closure_len..])?;
    let union = Union::new(roots, closure_len);

    let (files, names) = files_below(output)?;
    let mut missing = Vec::new();
    for (logical, physical) in files {
        let deps = match read_elf_deps(&physical) {
            Ok(Some(deps)) if deps.abi == NATIVE_ABI => deps,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => continue,
            Err(e) => return Err(e),
        };
        let origin = logical.parent().unwrap_or(Path::new("/"));
        let own_dirs = deps.search_path(origin);
        let defaults = DEFAULT_LIBRARY_DIRS.iter().map(PathBuf::from);
        let closure_dirs: Vec<PathBuf> = own_dirs
            .iter()
            .chain(&conf_dirs)
            .cloned()
            .chain(defaults.clone())
            .collect();
        let provider_dirs: Vec<PathBuf> = own_dirs
            .iter()
            .chain(&conf_dirs)
            .chain(&provider_conf_dirs)
            .cloned()
            .chain(defaults)
            .collect();
        let needed_by = logical.to_string_lossy().into_owned();

        let root = Path::new("/");
        let mut check = |library: &OsStr, closure: Vec<PathBuf>, provided: Vec<PathBuf>| {
            if closure.iter().any(|p| union.in_closure(p)) {
                return;
            }
            let provider = provided
                .iter()
                .filter_map(|p| union.provider_of(p))
                .min()
                .map(|i| providers[i].label.clone());
            missing.push(MissingLibrary {
                library: library.to_string_lossy().into_owned(),
                needed_by: needed_by.clone(),
                provider,
            });
        };
        if let Some(interp) = &deps.interpreter {
            check(interp, vec![root.join(interp)], vec![root.join(interp)]);
        }
        for lib in &deps.needed {
            if lib.as_bytes().contains(&b'/') {
                let path = root.join(expand_origin(lib.as_bytes(), origin));
                check(lib, vec![path.clone()], vec![path]);
            } else if deps.interpreter.is_none() && names.contains(lib.as_os_str()) {
                // A library's needs may be met by what the program that loads it
                // loaded first (java's libjvm.so, systemd's private
                // libsystemd-shared), which the loader matches by name. Only the
                // program's own search is checked, when the output has the name.
                continue;
            } else {
                let within = |dirs: &[PathBuf]| -> Vec<PathBuf> {
                    dirs.iter().map(|d| root.join(d).join(lib)).collect()
                };
                check(lib, within(&closure_dirs), within(&provider_dirs));
            }
        }
    }
    missing.sort_by(|a, b| (&a.needed_by, &a.library).cmp(&(&b.needed_by, &b.library)));
    missing.dedup();
    Ok(missing)
}

/// Regular files as their path inside a tree (`/usr/bin/x`) and on disk; and the
/// names of all files and symlinks.
type Files = (Vec<(PathBuf, PathBuf)>, HashSet<OsString>);

/// The [`Files`] below `root` (symlinks not followed), files in sorted order.
fn files_below(root: &Path) -> io::Result<Files> {
    let mut files = Vec::new();
    let mut names = HashSet::new();
    let mut stack = vec![PathBuf::from("/")];
    while let Some(logical) = stack.pop() {
        let dir = root.join(
            logical
                .strip_prefix("/")
                .expect("logical paths are absolute"),
        );
        for entry in fs::read_dir(&dir).map_err(in_file(&dir))? {
            let entry = entry.map_err(in_file(&dir))?;
            let kind = entry.file_type().map_err(in_file(&entry.path()))?;
            let path = logical.join(entry.file_name());
            if kind.is_dir() {
                stack.push(path);
                continue;
            }
            if kind.is_file() {
                files.push((path, entry.path()));
            }
            names.insert(entry.file_name());
        }
    }
    files.sort();
    Ok((files, names))
}

/// The absolute directories listed in `etc/ld.so.conf.d/*.conf` of the `roots`,
/// each once. `include` lines are not followed: Debian's only one is in
/// `/etc/ld.so.conf` and includes this very directory.
fn ld_so_conf_dirs(roots: &[PathBuf]) -> io::Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for root in roots {
        ld_so_conf_d(root, &mut dirs)?;
    }
    Ok(dirs)
}

fn ld_so_conf_d(root: &Path, dirs: &mut Vec<PathBuf>) -> io::Result<()> {
    let conf_d = root.join("etc/ld.so.conf.d");
    // Only real directories: a symlinked `etc` could lead out of the tree.
    let real_dir = |p: &Path| fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    if !real_dir(&root.join("etc")) || !real_dir(&conf_d) {
        return Ok(());
    }
    let mut confs: Vec<PathBuf> = fs::read_dir(&conf_d)
        .and_then(|entries| {
            entries
                .map(|e| e.map(|e| e.path()))
                .collect::<io::Result<Vec<_>>>()
        })
        .map_err(in_file(&conf_d))?
        .into_iter()
        .filter(|p| p.extension() == Some(OsStr::new("conf")))
        .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
        .collect();
    confs.sort();
    for conf in confs {
        let text = fs::read(&conf).map_err(in_file(&conf))?;
        for line in text.split(|&b| b == b'\n') {
            let line = line.split(|&b| b == b'#').next().unwrap_or_default();
            let line = line.trim_ascii();
            let dir = PathBuf::from(OsStr::from_bytes(line));
            if dir.is_absolute() && !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    Ok(())
}

/// Which trees of a [`Union`] a lookup sees, and which may hold the file itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Scope {
    /// The output and the runtime trees.
    Closure,
    /// Every tree, as the build root would be installed, but the file itself must
    /// be in a provider.
    Providers,
}

/// Symlinks followed per lookup, the kernel's limit.
const MAX_SYMLINKS: u32 = 40;

/// Several trees seen as one filesystem, as they would be once installed together.
struct Union {
    roots: Vec<PathBuf>,
    /// `roots[..closure_len]` are the output and the runtime trees; the rest are
    /// the providers, in order.
    closure_len: usize,
    cache: RefCell<HashMap<(PathBuf, Scope), Option<usize>>>,
}

/// A resolved directory: its path, and for it and each ancestor the trees in which
/// it is a real directory. Only those trees are looked into below it: following a
/// symlink on disk could lead out of its tree, so symlinks are resolved here.
#[derive(Clone)]
struct Cursor {
    dir: PathBuf,
    /// `live[i]`: the trees in which the first `i` components of `dir` are
    /// directories.
    live: Vec<Vec<usize>>,
}

impl Union {
    fn new(roots: Vec<PathBuf>, closure_len: usize) -> Self {
        Union {
            roots,
            closure_len,
            cache: RefCell::new(HashMap::new()),
        }
    }

    /// Whether the absolute `path` names something in the output or the runtime
    /// trees.
    fn in_closure(&self, path: &Path) -> bool {
        self.holder(path, Scope::Closure).is_some()
    }

    /// The index in `providers` of the first provider that holds `path`.
    fn provider_of(&self, path: &Path) -> Option<usize> {
        self.holder(path, Scope::Providers)
            .map(|tree| tree - self.closure_len)
    }

    /// The first tree that `scope` accepts holding the last component of `path`
    /// (anything but a directory; a symlink counts whether or not its target
    /// exists).
    fn holder(&self, path: &Path, scope: Scope) -> Option<usize> {
        let key = (path.to_path_buf(), scope);
        if let Some(&known) = self.cache.borrow().get(&key) {
            return known;
        }
        let trees = match scope {
            Scope::Closure => (0..self.closure_len).collect(),
            Scope::Providers => (0..self.roots.len()).collect(),
        };
        let root = Cursor {
            dir: PathBuf::new(),
            live: vec![trees],
        };
        let mut pending = Vec::new();
        push_components(&mut pending, path);
        let mut budget = MAX_SYMLINKS;
        let found = self.walk(root, pending, scope, &mut budget);
        self.cache.borrow_mut().insert(key, found);
        found
    }

    fn accepts(&self, scope: Scope, tree: usize) -> bool {
        match scope {
            Scope::Closure => true,
            Scope::Providers => tree >= self.closure_len,
        }
    }

    /// Resolves `pending` (components, last first) from `at`. Where trees disagree
    /// (a directory in one, a symlink in another) every reading is tried: any
    /// holder will do for the closure, the first one counts for providers.
    fn walk(
        &self,
        mut at: Cursor,
        mut pending: Vec<OsString>,
        scope: Scope,
        budget: &mut u32,
    ) -> Option<usize> {
        let name = loop {
            // A path ending in `..`, or `/` itself, is a directory, not a file.
            let name = pending.pop()?;
            if name != ".." {
                break name;
            }
            if at.live.len() > 1 {
                at.dir.pop();
                at.live.pop();
            }
        };
        let candidate = at.dir.join(&name);
        let mut dir_in = Vec::new();
        let mut targets: Vec<PathBuf> = Vec::new();
        let mut holder = None;
        for &tree in at.live.last().expect("the root is always there") {
            let path = self.roots[tree].join(&candidate);
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                dir_in.push(tree);
                continue;
            }
            if holder.is_none() && self.accepts(scope, tree) {
                holder = Some(tree);
            }
            if meta.is_symlink() {
                if let Ok(target) = fs::read_link(&path) {
                    if !targets.contains(&target) {
                        targets.push(target);
                    }
                }
            }
        }
        if pending.is_empty() && holder.is_some() {
            return holder;
        }
        // Tree indices are in priority order, so the smallest holder wins.
        let mut best: Option<usize> = None;
        for target in targets {
            if *budget == 0 {
                break;
            }
            *budget -= 1;
            let mut next = pending.clone();
            push_components(&mut next, &target);
            let from = if target.is_absolute() {
                Cursor {
                    dir: PathBuf::new(),
                    live: vec![at.live[0].clone()],
                }
            } else {
                at.clone()
            };
            best = earliest(best, self.walk(from, next, scope, budget));
        }
        let done = best.is_some() && scope == Scope::Closure;
        if !done && !pending.is_empty() && !dir_in.is_empty() {
            at.dir.push(&name);
            at.live.push(dir_in);
            best = earliest(best, self.walk(at, pending, scope, budget));
        }
        best
    }
}

fn earliest(a: Option<usize>, b: Option<usize>) -> Option<usize> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        _ => a.or(b),
    }
}

/// Pushes the components of `path` onto a stack of pending ones, last first, so
/// that they pop in order. `/` and `.` are dropped: resolution starts at the root
/// or the current cursor anyway.
fn push_components(pending: &mut Vec<OsString>, path: &Path) {
    for c in path.components().rev() {
        match c {
            Component::Normal(n) => pending.push(n.to_os_string()),
            Component::ParentDir => pending.push(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_skip::{require_tool, skip};
    use std::os::unix::fs::symlink;
    use std::process::Command;

    fn store_path(n: u8, name: &str) -> StorePath {
        StorePath::from_digest(&[n; 20], name).unwrap()
    }

    fn put(root: &Path, rel: &str, contents: &[u8]) -> PathBuf {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, contents).unwrap();
        p
    }

    fn link(root: &Path, rel: &str, target: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink(target, p).unwrap();
    }

    // --- references ---

    #[test]
    fn finds_references_in_file_contents() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            store_path(1, "bash-5.2"),
            store_path(2, "glibc-2.36"),
            store_path(3, "unused-1"),
        );
        put(
            dir.path(),
            "bin/script",
            format!("#!{}/bin/bash\n", a.to_absolute()).as_bytes(),
        );
        // Hash parts count on their own, whatever surrounds them, as in Nix.
        put(
            dir.path(),
            "lib/blob",
            format!("\0\0{}\x01", b.hash_part()).as_bytes(),
        );
        let candidates = BTreeSet::from([a.clone(), b.clone(), c]);
        let found = scan_references(dir.path(), &candidates).unwrap();
        assert_eq!(found, BTreeSet::from([a, b]));
    }

    #[test]
    fn finds_references_in_symlink_targets_and_single_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = store_path(4, "openssl-3");
        link(
            dir.path(),
            "tree/lib/libssl.so.3",
            &format!("{}/lib/libssl.so.3", a.to_absolute()),
        );
        let candidates = BTreeSet::from([a.clone(), store_path(5, "other")]);
        let found = scan_references(&dir.path().join("tree"), &candidates).unwrap();
        assert_eq!(found, BTreeSet::from([a.clone()]));

        let file = put(dir.path(), "file", a.base_name().as_bytes());
        assert_eq!(
            scan_references(&file, &candidates).unwrap(),
            BTreeSet::from([a])
        );
    }

    #[test]
    fn finds_a_reference_split_across_writes() {
        let a = store_path(6, "split");
        // nix32 filler on both sides makes every window near the hash a candidate.
        let data = format!("0123456789abc/store/{}-split/bin xyz 0000", a.hash_part());
        let data = data.as_bytes();
        for cut in 0..=data.len() {
            let mut s = RefScanner::new([&a]);
            s.write_all(&data[..cut]).unwrap();
            s.write_all(&data[cut..]).unwrap();
            assert!(s.found().contains(&a), "cut at {cut}");
        }
        for chunk in 1..=40 {
            let mut s = RefScanner::new([&a]);
            for piece in data.chunks(chunk) {
                s.write_all(piece).unwrap();
            }
            assert_eq!(s.into_found(), BTreeSet::from([a.clone()]), "chunk {chunk}");
        }
    }

    #[test]
    fn no_false_positives() {
        let dir = tempfile::tempdir().unwrap();
        let a = store_path(7, "wanted");
        let hash = a.hash_part();
        // One character off, cut short at the end of a file, and a long run of
        // nix32 characters that never contains it.
        let mut off_by_one = hash.as_bytes().to_vec();
        off_by_one[16] = if off_by_one[16] == b'0' { b'1' } else { b'0' };
        put(dir.path(), "a", &off_by_one);
        put(dir.path(), "b", &hash.as_bytes()[..31]);
        put(
            dir.path(),
            "c",
            "0123456789abcdfghijklmnpqrsvwxyz".repeat(500).as_bytes(),
        );
        put(
            dir.path(),
            "d",
            store_path(8, "other").to_absolute().as_bytes(),
        );
        let found = scan_references(dir.path(), &BTreeSet::from([a])).unwrap();
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn finds_a_self_reference() {
        let dir = tempfile::tempdir().unwrap();
        let out = store_path(9, "hello-2.12");
        let dep = store_path(10, "glibc");
        put(
            dir.path(),
            "share/hello/prefix",
            out.to_absolute().as_bytes(),
        );
        let found = scan_references(dir.path(), &BTreeSet::from([out.clone(), dep])).unwrap();
        assert_eq!(found, BTreeSet::from([out]));
    }

    // --- the union of trees ---

    #[test]
    fn union_follows_symlinks_across_trees_but_not_out_of_them() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        let libs = dir.path().join("libs");
        let loops = dir.path().join("loops");
        let outside = dir.path().join("outside");
        link(&base, "lib", "usr/lib");
        link(&base, "lib64", "/usr/lib64");
        put(&libs, "usr/lib/x86_64-linux-gnu/libx.so.1.2", b"");
        link(&libs, "usr/lib/x86_64-linux-gnu/libx.so.1", "libx.so.1.2");
        // Dangling: the link is what the loader is pointed at; alternatives and
        // the like are set up later.
        link(
            &libs,
            "usr/lib/x86_64-linux-gnu/liby.so.1",
            "/etc/alternatives/y",
        );
        put(&libs, "usr/lib64/ld.so", b"");
        put(&outside, "secret/libz.so", b"");
        link(&loops, "escape", outside.to_str().unwrap());
        link(&loops, "a", "b");
        link(&loops, "b", "a");
        let union = Union::new(vec![base, libs, loops], 3);
        for (path, want) in [
            ("/lib/x86_64-linux-gnu/libx.so.1", true),
            ("/lib/x86_64-linux-gnu/liby.so.1", true),
            ("/usr/lib/../lib/x86_64-linux-gnu/libx.so.1", true),
            ("/lib64/ld.so", true),
            ("/lib/../lib64/ld.so", true),
            ("/lib/x86_64-linux-gnu/libnone.so", false),
            ("/usr/lib", false),
            ("/escape/secret/libz.so", false),
            // A loop ends the walk; the link itself is there like any other.
            ("/a/libx.so.1", false),
            ("/a", true),
        ] {
            assert_eq!(union.in_closure(Path::new(path)), want, "{path}");
        }
    }

    #[test]
    fn union_names_the_first_provider() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out");
        let base = dir.path().join("base-files");
        let p1 = dir.path().join("p1");
        let p2 = dir.path().join("p2");
        link(&output, "abs", "/usr/lib64");
        link(&base, "lib64", "usr/lib64");
        put(&p1, "usr/lib64/libq.so", b"");
        put(&p2, "lib64/libq.so", b"");
        // base-files is a provider too: its symlink is still followed.
        let union = Union::new(vec![output, base, p2, p1], 1);
        assert_eq!(union.provider_of(Path::new("/lib64/libq.so")), Some(1));
        assert!(!union.in_closure(Path::new("/lib64/libq.so")));
        // A symlink from the closure into a provider: only providers see it there.
        assert_eq!(union.provider_of(Path::new("/abs/libq.so")), Some(2));
        assert!(!union.in_closure(Path::new("/abs/libq.so")));
    }

    // --- ELF files built by the C compiler ---

    /// `cc` with `args` in `dir`; `None` if there is no C compiler.
    fn cc(dir: &Path, args: &[&str]) -> Option<bool> {
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

    struct Demo {
        dir: tempfile::TempDir,
        /// `libdemo.so.1`, and a program linked against it without a search path.
        lib: PathBuf,
        exe: PathBuf,
        deps: ElfDeps,
    }

    /// Builds the demo library and program, or `None` after `skip` (a failure under
    /// CI) if there is no C compiler.
    fn demo() -> Option<Demo> {
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

    fn tree(label: &str, root: &Path) -> LibraryTree {
        LibraryTree {
            label: label.to_string(),
            root: root.to_path_buf(),
        }
    }

    fn copy(from: &Path, root: &Path, rel: &str) {
        let to = root.join(rel);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(from, to).unwrap();
    }

    /// A usrmerged C library in two trees: `base-files` with `/lib -> usr/lib`
    /// and the like, `libc6` with the libraries (other than libdemo) and the
    /// interpreter that `deps` needs, under `/usr`. Their contents do not matter.
    fn libc_trees(dir: &Path, deps: &ElfDeps) -> Vec<LibraryTree> {
        let base = dir.join("base-files");
        let libc = dir.join("libc6");
        for top in ["lib", "lib64"] {
            link(&base, top, &format!("usr/{top}"));
        }
        for lib in &deps.needed {
            let lib = lib.to_str().unwrap();
            if lib != "libdemo.so.1" {
                put(&libc, &format!("usr/lib/x86_64-linux-gnu/{lib}"), b"");
            }
        }
        let interp = deps.interpreter.as_ref().expect("a dynamic executable");
        let interp = interp.to_str().unwrap();
        let rel = interp.trim_start_matches('/');
        let under_usr = rel.starts_with("lib/") || rel.starts_with("lib64/");
        put(
            &libc,
            &if under_usr {
                format!("usr/{rel}")
            } else {
                rel.to_string()
            },
            b"",
        );
        vec![tree("base-files", &base), tree("libc6", &libc)]
    }

    fn missing(library: &str, needed_by: &str, provider: Option<&str>) -> MissingLibrary {
        MissingLibrary {
            library: library.to_string(),
            needed_by: needed_by.to_string(),
            provider: provider.map(str::to_string),
        }
    }

    #[test]
    fn needed_libraries_in_the_closure_or_from_a_provider() {
        let Some(d) = demo() else { return };
        let out = d.dir.path().join("out");
        copy(&d.exe, &out, "usr/bin/demo");
        let mut runtime = libc_trees(d.dir.path(), &d.deps);
        let libdemo = d.dir.path().join("libdemo1");
        copy(&d.lib, &libdemo, "usr/lib/x86_64-linux-gnu/libdemo.so.1.0");
        link(
            &libdemo,
            "usr/lib/x86_64-linux-gnu/libdemo.so.1",
            "libdemo.so.1.0",
        );
        let empty = d.dir.path().join("empty");
        put(&empty, "usr/share/doc/empty/copyright", b"");
        let libdemo = tree("libdemo1", &libdemo);
        let empty = tree("empty", &empty);

        // Found in a runtime tree.
        let mut with_libdemo = runtime.clone();
        with_libdemo.push(libdemo.clone());
        assert_eq!(check_needed(&out, &with_libdemo, &[]).unwrap(), vec![]);

        // Missing, and a provider has it.
        assert_eq!(
            check_needed(&out, &runtime, &[empty.clone(), libdemo.clone()]).unwrap(),
            vec![missing("libdemo.so.1", "/usr/bin/demo", Some("libdemo1"))]
        );
        // Missing, and no provider has it.
        assert_eq!(
            check_needed(&out, &runtime, std::slice::from_ref(&empty)).unwrap(),
            vec![missing("libdemo.so.1", "/usr/bin/demo", None)]
        );

        // No C library at all: the interpreter is missing too; sorted by library.
        runtime.push(libdemo);
        let libc_only = runtime[1].clone();
        let found =
            check_needed(&out, &runtime[2..], &[empty, runtime[0].clone(), libc_only]).unwrap();
        let mut want: Vec<MissingLibrary> = d
            .deps
            .needed
            .iter()
            .filter(|l| *l != "libdemo.so.1")
            .map(|l| missing(l.to_str().unwrap(), "/usr/bin/demo", Some("libc6")))
            .collect();
        want.push(missing(
            d.deps.interpreter.as_ref().unwrap().to_str().unwrap(),
            "/usr/bin/demo",
            Some("libc6"),
        ));
        want.sort_by(|a, b| a.library.cmp(&b.library));
        assert_eq!(found, want);
    }

    #[test]
    fn ld_so_conf_directories_and_symlinks_in_the_output() {
        let Some(d) = demo() else { return };
        let dir = d.dir.path();
        let out = dir.join("out");
        copy(&d.exe, &out, "usr/bin/demo");
        // Not followed: it would bring in whatever /bin/ls needs.
        link(&out, "usr/bin/ls", "/bin/ls");
        let special = dir.join("libdemo-special");
        copy(
            &d.lib,
            &special,
            "usr/lib/x86_64-linux-gnu/special/libdemo.so.1",
        );
        put(
            &special,
            "etc/ld.so.conf.d/special.conf",
            b"# where libdemo lives\n  /usr/lib/x86_64-linux-gnu/special  # really\n",
        );
        let mut runtime = libc_trees(dir, &d.deps);
        let special = tree("libdemo-special", &special);

        // Neither in the default directories nor configured: missing; the
        // provider's own configuration finds it.
        assert_eq!(
            check_needed(&out, &runtime, std::slice::from_ref(&special)).unwrap(),
            vec![missing(
                "libdemo.so.1",
                "/usr/bin/demo",
                Some("libdemo-special")
            )]
        );
        runtime.push(special);
        assert_eq!(check_needed(&out, &runtime, &[]).unwrap(), vec![]);
    }

    #[test]
    fn runpath_and_rpath_with_origin() {
        let Some(d) = demo() else { return };
        let dir = d.dir.path();
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

        // Outside the default directories: only the files with a search path find
        // the library next to them.
        let out = dir.join("out");
        copy(&d.lib, &out, "opt/demo/lib/libdemo.so.1");
        copy(&d.exe, &out, "opt/demo/bin/demo");
        copy(&dir.join("demo-runpath"), &out, "opt/demo/bin/demo-runpath");
        copy(&dir.join("demo-rpath"), &out, "opt/demo/bin/demo-rpath");
        let runtime = libc_trees(dir, &d.deps);
        assert_eq!(
            check_needed(&out, &runtime, &[]).unwrap(),
            vec![missing("libdemo.so.1", "/opt/demo/bin/demo", None)]
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
        let out = dir.join("out");
        copy(&dir.join("static"), &out, "bin/static");
        assert_eq!(check_needed(&out, &[], &[]).unwrap(), vec![]);
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
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("magic-only"), "{err}");

        // Every truncation and many corruptions of a real file: errors of the
        // right kind, or some answer, but never a panic.
        let bytes = fs::read(&d.exe).unwrap();
        let broken = dir.join("broken");
        let check = |contents: &[u8]| {
            fs::write(&broken, contents).unwrap();
            if let Err(e) = read_elf_deps(&broken) {
                assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
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

        // None of it stops the check of a whole tree.
        let out = dir.join("out");
        copy(&text, &out, "bin/script");
        copy(&magic_only, &out, "lib/magic-only");
        fs::write(out.join("lib/truncated"), &bytes[..1000]).unwrap();
        assert_eq!(check_needed(&out, &[], &[]).unwrap(), vec![]);
    }

    /// What two independent readers make of the ELF file at PATH: binutils'
    /// `readelf` (class, byte order, `PT_INTERP`, and `DT_NEEDED`, `DT_RUNPATH`,
    /// `DT_RPATH` through the string table) and the `object` crate (class, byte
    /// order, `e_machine`, `PT_INTERP`), which must agree where they overlap.
    /// `None` after `skip` without readelf.
    fn oracle_deps(path: &Path) -> Option<ElfDeps> {
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

    // --- synthetic ELF files: the other classes and byte orders ---

    struct Synth {
        is64: bool,
        big_endian: bool,
        machine: u16,
        e_type: u16,
        interp: Option<&'static str>,
        needed: Vec<&'static str>,
        runpath: Option<&'static str>,
    }

    impl Synth {
        fn new(is64: bool, big_endian: bool) -> Self {
            Synth {
                is64,
                big_endian,
                machine: NATIVE_ABI.machine,
                e_type: ET_DYN,
                interp: Some("/lib/ld.so.1"),
                needed: vec!["libc.so.6", "libm.so.6"],
                runpath: Some("$ORIGIN"),
            }
        }

        /// Header, program headers (PT_LOAD of the whole file at a base address,
        /// PT_INTERP when there is an interpreter, PT_DYNAMIC), the interpreter,
        /// the string table and the dynamic section.
        fn build(&self) -> Vec<u8> {
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
                            machine: NATIVE_ABI.machine,
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
        let invalid = |r: io::Result<Option<ElfDeps>>| {
            let e = r.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
            e.to_string()
        };

        // Relocatable objects need nothing, whatever their program headers say.
        let mut object = Synth::new(true, false);
        object.e_type = 1;
        let deps = ElfDeps {
            abi: NATIVE_ABI,
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

    #[test]
    fn paths_private_libraries_and_foreign_abis() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let program = |needed: Vec<&'static str>| Synth {
            needed,
            runpath: None,
            ..Synth::new(true, false)
        };
        let library = |needed: Vec<&'static str>| Synth {
            interp: None,
            ..program(needed)
        };
        // `$ORIGIN` in a needed path.
        let by_path = program(vec!["$ORIGIN/../lib/libx.so.1", "libc.so.6"]).build();
        put(&out, "opt/x/bin/x", &by_path);
        put(&out, "opt/x/lib/libx.so.1", b"");
        put(&out, "opt/y/bin/y", &by_path);
        // A private library: a plugin may count on its program having loaded it,
        // the program may not.
        put(&out, "usr/lib/app/private/libapp.so", b"");
        put(
            &out,
            "usr/lib/app/plugins/libplugin.so",
            &library(vec!["libapp.so", "libc.so.6"]).build(),
        );
        put(&out, "usr/bin/app", &program(vec!["libapp.so"]).build());
        // An i386 helper: neither its loader nor its libraries are looked for.
        let helper = Synth {
            machine: 3,
            interp: Some("/lib/ld-linux.so.2"),
            ..Synth::new(false, false)
        };
        put(&out, "usr/libexec/helper", &helper.build());

        let libc = dir.path().join("libc");
        put(&libc, "lib/ld.so.1", b"");
        put(&libc, "lib/x86_64-linux-gnu/libc.so.6", b"");
        assert_eq!(
            check_needed(&out, &[tree("libc", &libc)], &[]).unwrap(),
            vec![
                missing("$ORIGIN/../lib/libx.so.1", "/opt/y/bin/y", None),
                missing("libapp.so", "/usr/bin/app", None),
            ]
        );
    }
}
