//! Checks on a finished build output, run before it is registered in the store:
//!
//! * [`scan_references`]: which of the candidate store paths the output refers to,
//!   found the way Nix finds them, by searching its NAR for their hash parts.
//! * [`check_needed`]: whether every ELF file's interpreter and `DT_NEEDED` libraries
//!   can be found in the runtime closure, and if not, which package has them.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
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
        RefScanner {
            pending,
            found: BTreeSet::new(),
            tail: Vec::with_capacity(2 * HASH_PART_LEN),
            is_nix32: std::array::from_fn(|b| nix32::is_nix32_char(b as u8)),
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
            if let Some(paths) = self.pending.remove(window) {
                self.found.extend(paths);
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

/// What the dynamic loader needs to run an ELF file, read from its program headers
/// (section headers are never used: stripped files may not have them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElfDeps {
    /// `PT_INTERP`: the dynamic loader's path.
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
            .map(|d| {
                let d = replace(d, b"${ORIGIN}", origin.as_os_str().as_bytes());
                let d = replace(&d, b"$ORIGIN", origin.as_os_str().as_bytes());
                PathBuf::from(OsString::from_vec(d))
            })
            .collect()
    }
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
/// `PATH_MAX`, which bounds the interpreter, library names and search paths alike.
const MAX_STRING: u64 = 4096;

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
        let end = offset
            .checked_add(len)
            .filter(|&end| end <= self.size)
            .ok_or_else(|| {
                malformed(format!(
                    "{what} ({len} bytes at offset {offset}) extends past the end of the \
                     file ({} bytes)",
                    self.size
                ))
            })?;
        debug_assert!(end <= self.size);
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
        // e_ident plus the fields up to e_shstrndx: 52 bytes in ELF32, 64 in ELF64.
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
        let header = self.read(0, if layout.is64 { 64 } else { 52 }, "ELF header")?;
        let e_type = layout.u16(&header, 16);
        if e_type != ET_EXEC && e_type != ET_DYN {
            return Ok(ElfDeps::default());
        }
        let phdrs = self.program_headers(layout, &header)?;

        let mut deps = ElfDeps::default();
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
/// fill in. Names containing `/`, and relative search directories, are taken
/// relative to `/`.
///
/// Each missing library names the first of `providers` that has it in the same
/// places. Files that are not valid ELF are skipped: a corrupt or foreign test
/// fixture is no reason to fail a build. The result is sorted by `needed_by`,
/// then `library`.
pub fn check_needed(
    output: &Path,
    runtime: &[LibraryTree],
    providers: &[LibraryTree],
) -> io::Result<Vec<MissingLibrary>> {
    let mut roots = vec![output.to_path_buf()];
    roots.extend(runtime.iter().map(|t| t.root.clone()));
    let closure_len = roots.len();
    roots.extend(providers.iter().map(|t| t.root.clone()));
    let mut conf_dirs = Vec::new();
    for root in &roots[..closure_len] {
        conf_dirs.extend(ld_so_conf_dirs(root)?);
    }
    let mut provider_conf_dirs = Vec::new();
    for root in &roots[closure_len..] {
        provider_conf_dirs.extend(ld_so_conf_dirs(root)?);
    }
    let union = Union::new(roots, closure_len);

    let mut missing = Vec::new();
    for (logical, physical) in files_below(output)? {
        let deps = match read_elf_deps(&physical) {
            Ok(Some(deps)) => deps,
            Ok(None) => continue,
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

        let mut report = |library: &OsStr, in_dirs: Option<(&[PathBuf], &[PathBuf])>| {
            let root = Path::new("/");
            let paths = |dirs: &[PathBuf]| -> Vec<PathBuf> {
                dirs.iter().map(|d| root.join(d).join(library)).collect()
            };
            let (closure_paths, provider_paths) = match in_dirs {
                Some((closure, providers)) => (paths(closure), paths(providers)),
                None => (vec![root.join(library)], vec![root.join(library)]),
            };
            if closure_paths.iter().any(|p| union.in_closure(p)) {
                return;
            }
            let provider = provider_paths
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
            report(interp, None);
        }
        for lib in &deps.needed {
            if lib.as_bytes().contains(&b'/') {
                report(lib, None);
            } else {
                report(lib, Some((&closure_dirs, &provider_dirs)));
            }
        }
    }
    missing.sort_by(|a, b| (&a.needed_by, &a.library).cmp(&(&b.needed_by, &b.library)));
    missing.dedup();
    Ok(missing)
}

/// Every regular file below `root` (symlinks not followed), as its path inside the
/// tree (`/usr/bin/x`) and on disk, in sorted order.
fn files_below(root: &Path) -> io::Result<Vec<(PathBuf, PathBuf)>> {
    let mut files = Vec::new();
    let mut stack = vec![PathBuf::from("/")];
    while let Some(logical) = stack.pop() {
        let dir = root.join(
            logical
                .strip_prefix("/")
                .expect("logical paths are absolute"),
        );
        let mut entries = fs::read_dir(&dir)
            .and_then(|entries| entries.collect::<io::Result<Vec<_>>>())
            .map_err(in_file(&dir))?;
        entries.sort_by_key(|e| e.file_name());
        // Reversed so that the stack yields directories in sorted order.
        for entry in entries.into_iter().rev() {
            let kind = entry.file_type().map_err(in_file(&entry.path()))?;
            let path = logical.join(entry.file_name());
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                files.push((path, entry.path()));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The absolute directories listed in `root/etc/ld.so.conf.d/*.conf`.
/// `include` lines are not followed: Debian's only one is in `/etc/ld.so.conf`
/// and includes this very directory.
fn ld_so_conf_dirs(root: &Path) -> io::Result<Vec<PathBuf>> {
    let conf_d = root.join("etc/ld.so.conf.d");
    // Only real directories: a symlinked `etc` could lead out of the tree.
    let real_dir = |p: &Path| fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    if !real_dir(&root.join("etc")) || !real_dir(&conf_d) {
        return Ok(Vec::new());
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
    let mut dirs = Vec::new();
    for conf in confs {
        let text = fs::read(&conf).map_err(in_file(&conf))?;
        for line in text.split(|&b| b == b'\n') {
            let line = line.split(|&b| b == b'#').next().unwrap_or_default();
            let line = line.trim_ascii();
            if line.starts_with(b"/") {
                dirs.push(PathBuf::from(OsStr::from_bytes(line)));
            }
        }
    }
    Ok(dirs)
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
