//! Reading NARs: a strict streaming parser that reports each node to a [`NarSink`],
//! and the sinks behind [`restore`], [`validate`] and [`list`].
//!
//! The parser accepts only canonical NARs, the ones [`NarWriter`](super::NarWriter)
//! produces: it is stricter than Nix 2.8, which also takes unsorted entries and
//! trailing bytes. It never allocates more than a bounded amount per item, whatever
//! the length prefixes claim, streams file contents, walks directories with an
//! explicit stack, and reports every problem as a typed [`NarError`] with the byte
//! offset and entry path.

use std::ffi::OsStr;
use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{
    check_name, check_order, check_target, padding_len, pop_name, push_name, tok, Malformed,
    NarError, CHUNK_SIZE, MAGIC, MAX_DEPTH, MAX_NAME_LEN, MAX_TARGET_LEN, MAX_TOKEN_LEN,
};

/// Receives the nodes of a NAR in order, parents before children and entries in
/// name order. `path` is the entry path relative to the root (names joined by `/`,
/// empty for the root); every name in it has been validated.
///
/// An error from a callback stops the parse and is returned as it is.
pub trait NarSink {
    fn create_directory(&mut self, path: &[u8]) -> Result<(), NarError>;

    /// `contents` yields exactly `size` bytes. The sink may read all, part or none
    /// of them; the parser skips what is left. If reading fails, the parser
    /// returns its own error (truncation, with the offset) rather than the sink's.
    fn create_file(
        &mut self,
        path: &[u8],
        executable: bool,
        size: u64,
        contents: &mut dyn Read,
    ) -> Result<(), NarError>;

    fn create_symlink(&mut self, path: &[u8], target: &[u8]) -> Result<(), NarError>;

    /// Called after the last entry of the directory at `path`.
    fn close_directory(&mut self, _path: &[u8]) -> Result<(), NarError> {
        Ok(())
    }
}

/// Parses a NAR that makes up all of `reader`, and returns its size. Bytes after
/// the archive are an error. `reader` is buffered internally.
pub fn parse(
    reader: &mut (impl Read + ?Sized),
    sink: &mut (impl NarSink + ?Sized),
) -> Result<u64, NarError> {
    // Safe to read ahead: anything after the archive is an error anyway.
    let mut input = Input::new(BufReader::with_capacity(CHUNK_SIZE, reader));
    parse_nodes(&mut input, sink)?;
    input.expect_end()?;
    Ok(input.offset)
}

/// Parses a NAR at the start of `reader` and stops right after it, leaving the
/// rest of the stream unread, e.g. for a NAR embedded in a larger protocol stream.
/// Reads only the bytes it needs, so give it a buffered reader.
pub fn parse_embedded(
    reader: &mut (impl Read + ?Sized),
    sink: &mut (impl NarSink + ?Sized),
) -> Result<u64, NarError> {
    let mut input = Input::new(reader);
    parse_nodes(&mut input, sink)?;
    Ok(input.offset)
}

/// Restores a NAR into `target`, which must not exist yet, and returns the NAR's
/// size. Files get mode 0644 or 0755, directories 0755, whatever the umask.
///
/// Nothing is written outside `target`: names are single path components, every
/// file and symlink is created exclusively (an existing path is an error, never
/// written through), and entries are unique. On error, `target` may hold a partial
/// tree that the caller should remove.
pub fn restore(reader: &mut (impl Read + ?Sized), target: &Path) -> Result<u64, NarError> {
    // Fail before consuming the NAR; creating the root exclusively below still
    // catches a target that appears in between.
    match fs::symlink_metadata(target) {
        Ok(_) => return Err(NarError::TargetExists(target.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(NarError::Io {
                op: "stat",
                path: target.to_path_buf(),
                source,
            })
        }
    }
    parse(reader, &mut RestoreSink::new(target))
}

/// Checks that `reader` holds exactly one canonical NAR, writing nothing.
pub fn validate(reader: &mut (impl Read + ?Sized)) -> Result<NarSummary, NarError> {
    let mut sink = ValidateSink::default();
    let nar_size = parse(reader, &mut sink)?;
    Ok(NarSummary {
        nar_size,
        ..sink.summary
    })
}

/// The entries of a NAR, in NAR order (as for `ls -R`).
pub fn list(reader: &mut (impl Read + ?Sized)) -> Result<Vec<NarEntry>, NarError> {
    let mut sink = ListSink::default();
    parse(reader, &mut sink)?;
    Ok(sink.entries)
}

/// What [`validate`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NarSummary {
    pub nar_size: u64,
    pub directories: u64,
    pub regular_files: u64,
    pub executables: u64,
    pub symlinks: u64,
    /// Sum of the regular files' sizes.
    pub contents_size: u64,
}

/// A sink that only counts, for [`validate`].
#[derive(Debug, Default)]
pub struct ValidateSink {
    pub summary: NarSummary,
}

impl NarSink for ValidateSink {
    fn create_directory(&mut self, _path: &[u8]) -> Result<(), NarError> {
        self.summary.directories += 1;
        Ok(())
    }

    fn create_file(
        &mut self,
        _path: &[u8],
        executable: bool,
        size: u64,
        _contents: &mut dyn Read,
    ) -> Result<(), NarError> {
        self.summary.regular_files += 1;
        self.summary.executables += u64::from(executable);
        self.summary.contents_size = self.summary.contents_size.saturating_add(size);
        Ok(())
    }

    fn create_symlink(&mut self, _path: &[u8], _target: &[u8]) -> Result<(), NarError> {
        self.summary.symlinks += 1;
        Ok(())
    }
}

/// One node of a NAR, as [`list`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarEntry {
    /// Relative to the root, `/`-separated; empty for the root.
    pub path: Vec<u8>,
    pub kind: NarEntryKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NarEntryKind {
    Directory,
    Regular { executable: bool, size: u64 },
    Symlink { target: Vec<u8> },
}

/// A sink that records every node, for [`list`].
#[derive(Debug, Default)]
pub struct ListSink {
    pub entries: Vec<NarEntry>,
}

impl NarSink for ListSink {
    fn create_directory(&mut self, path: &[u8]) -> Result<(), NarError> {
        self.entries.push(NarEntry {
            path: path.to_vec(),
            kind: NarEntryKind::Directory,
        });
        Ok(())
    }

    fn create_file(
        &mut self,
        path: &[u8],
        executable: bool,
        size: u64,
        _contents: &mut dyn Read,
    ) -> Result<(), NarError> {
        self.entries.push(NarEntry {
            path: path.to_vec(),
            kind: NarEntryKind::Regular { executable, size },
        });
        Ok(())
    }

    fn create_symlink(&mut self, path: &[u8], target: &[u8]) -> Result<(), NarError> {
        self.entries.push(NarEntry {
            path: path.to_vec(),
            kind: NarEntryKind::Symlink {
                target: target.to_vec(),
            },
        });
        Ok(())
    }
}

/// A sink that recreates the tree under a root directory, for [`restore`].
pub struct RestoreSink {
    root: PathBuf,
    buf: Vec<u8>,
}

impl RestoreSink {
    /// `root` must not exist; the NAR's root node is created at `root` itself.
    pub fn new(root: &Path) -> Self {
        RestoreSink {
            root: root.to_path_buf(),
            buf: Vec::new(),
        }
    }

    fn full_path(&self, path: &[u8]) -> PathBuf {
        if path.is_empty() {
            self.root.clone()
        } else {
            self.root.join(OsStr::from_bytes(path))
        }
    }

    /// Error for creating `full`: an existing root gets its own variant so callers
    /// can tell "pick another target" from real failures.
    fn create_error(&self, op: &'static str, full: PathBuf, source: io::Error) -> NarError {
        if source.kind() == io::ErrorKind::AlreadyExists && full == self.root {
            NarError::TargetExists(full)
        } else {
            NarError::Io {
                op,
                path: full,
                source,
            }
        }
    }
}

impl NarSink for RestoreSink {
    fn create_directory(&mut self, path: &[u8]) -> Result<(), NarError> {
        let full = self.full_path(path);
        if let Err(e) = DirBuilder::new().mode(0o755).create(&full) {
            return Err(self.create_error("create directory", full, e));
        }
        // The umask may have stripped bits from the mode given to mkdir.
        fs::set_permissions(&full, Permissions::from_mode(0o755)).map_err(|source| NarError::Io {
            op: "set permissions of",
            path: full,
            source,
        })
    }

    fn create_file(
        &mut self,
        path: &[u8],
        executable: bool,
        _size: u64,
        contents: &mut dyn Read,
    ) -> Result<(), NarError> {
        let full = self.full_path(path);
        let mode = if executable { 0o755 } else { 0o644 };
        // create_new is O_CREAT|O_EXCL: never reuse or write through anything that
        // exists, symlinks included.
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&full)
        {
            Ok(f) => f,
            Err(e) => return Err(self.create_error("create file", full, e)),
        };
        let io_err = |op, source| NarError::Io {
            op,
            path: full.clone(),
            source,
        };
        if self.buf.is_empty() {
            self.buf = vec![0; CHUNK_SIZE];
        }
        loop {
            let n = match contents.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The parser replaces this with the truncation it recorded.
                Err(e) => return Err(io_err("read contents for", e)),
            };
            file.write_all(&self.buf[..n])
                .map_err(|e| io_err("write", e))?;
        }
        // The umask may have stripped bits from the creation mode.
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(|e| io_err("set permissions of", e))
    }

    fn create_symlink(&mut self, path: &[u8], target: &[u8]) -> Result<(), NarError> {
        let full = self.full_path(path);
        match std::os::unix::fs::symlink(OsStr::from_bytes(target), &full) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.create_error("create symlink", full, e)),
        }
    }
}

/// The input stream with the position and entry path that errors report.
struct Input<R> {
    inner: R,
    offset: u64,
    /// Entry path of the node being read.
    path: Vec<u8>,
    /// An error met while a sink was reading contents; it wins over what the sink
    /// made of it, because it carries the offset.
    failure: Option<NarError>,
    /// Holds names and targets, reused so each costs no allocation.
    scratch: Vec<u8>,
    /// For skipping contents a sink did not read; allocated on first use.
    skip_buf: Vec<u8>,
}

impl<R: Read> Input<R> {
    fn new(inner: R) -> Self {
        Input {
            inner,
            offset: 0,
            path: Vec::new(),
            failure: None,
            scratch: Vec::new(),
            skip_buf: Vec::new(),
        }
    }

    fn malformed(&self, offset: u64, kind: Malformed) -> NarError {
        NarError::Malformed {
            offset,
            path: self.path.clone(),
            kind,
        }
    }

    /// Fills `buf` completely; end of input is truncation.
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), NarError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => return Err(self.malformed(self.offset, Malformed::Truncated)),
                Ok(n) => {
                    filled += n;
                    self.offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(NarError::Read {
                        offset: self.offset,
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    fn read_u64(&mut self) -> Result<u64, NarError> {
        let mut b = [0; 8];
        self.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads and checks the zero padding after a string of `len` bytes.
    fn read_padding(&mut self, len: u64) -> Result<(), NarError> {
        let mut pad = [0; 8];
        let pad = &mut pad[..padding_len(len)];
        let start = self.offset;
        self.read_exact(pad)?;
        match pad.iter().position(|&b| b != 0) {
            None => Ok(()),
            Some(i) => Err(self.malformed(start + i as u64, Malformed::NonZeroPadding)),
        }
    }

    /// Reads a string of at most `max` bytes into `scratch`; a longer length prefix
    /// is rejected before anything is allocated.
    fn read_bounded(&mut self, max: usize, what: &'static str) -> Result<(), NarError> {
        let start = self.offset;
        let len = self.read_u64()?;
        if len > max as u64 {
            return Err(self.malformed(start, Malformed::TooLong { what, len, max }));
        }
        let mut s = std::mem::take(&mut self.scratch);
        // `len <= max`, a small constant, so it fits in usize.
        s.resize(len as usize, 0);
        let read = self.read_exact(&mut s);
        self.scratch = s;
        read?;
        self.read_padding(len)
    }

    /// Reads a keyword; returns its bytes (in a fixed array, no allocation) and the
    /// offset it started at.
    fn read_token(&mut self) -> Result<(Token, u64), NarError> {
        let start = self.offset;
        let len = self.read_u64()?;
        if len > MAX_TOKEN_LEN as u64 {
            return Err(self.malformed(
                start,
                Malformed::TooLong {
                    what: "keyword",
                    len,
                    max: MAX_TOKEN_LEN,
                },
            ));
        }
        let mut t = Token {
            bytes: [0; MAX_TOKEN_LEN],
            // Bounded by MAX_TOKEN_LEN just above.
            len: len as usize,
        };
        self.read_exact(&mut t.bytes[..t.len])?;
        self.read_padding(len)?;
        Ok((t, start))
    }

    fn expect(&mut self, want: &[u8], expected: &'static str) -> Result<(), NarError> {
        let (t, start) = self.read_token()?;
        if t.as_bytes() == want {
            Ok(())
        } else {
            Err(self.unexpected(start, expected, &t))
        }
    }

    fn unexpected(&self, offset: u64, expected: &'static str, found: &Token) -> NarError {
        self.malformed(
            offset,
            Malformed::UnexpectedToken {
                expected,
                found: found.as_bytes().to_vec(),
            },
        )
    }

    /// Checks that nothing follows the archive.
    fn expect_end(&mut self) -> Result<(), NarError> {
        let mut b = [0; 1];
        loop {
            return match self.inner.read(&mut b) {
                Ok(0) => Ok(()),
                Ok(_) => Err(self.malformed(self.offset, Malformed::TrailingBytes)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => Err(NarError::Read {
                    offset: self.offset,
                    source,
                }),
            };
        }
    }

    /// Hands `size` bytes of contents to the sink, then skips what it left.
    fn file_contents(
        &mut self,
        sink: &mut (impl NarSink + ?Sized),
        executable: bool,
        size: u64,
    ) -> Result<(), NarError> {
        // The sink borrows the input through `ContentsReader`, so lend it the path.
        let path = std::mem::take(&mut self.path);
        let mut contents = ContentsReader {
            input: self,
            remaining: size,
        };
        let result = sink.create_file(&path, executable, size, &mut contents);
        let remaining = contents.remaining;
        self.path = path;
        if let Some(failure) = self.failure.take() {
            return Err(failure);
        }
        result?;
        self.skip(remaining)
    }

    fn skip(&mut self, mut n: u64) -> Result<(), NarError> {
        if n > 0 && self.skip_buf.is_empty() {
            self.skip_buf = vec![0; 64 * 1024];
        }
        while n > 0 {
            let mut buf = std::mem::take(&mut self.skip_buf);
            // Bounded by the buffer's length, so the narrowing is lossless.
            let k = n.min(buf.len() as u64) as usize;
            let read = self.read_exact(&mut buf[..k]);
            self.skip_buf = buf;
            read?;
            n -= k as u64;
        }
        Ok(())
    }
}

/// A keyword read from the input.
struct Token {
    bytes: [u8; MAX_TOKEN_LEN],
    len: usize,
}

impl Token {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The contents of one regular file, as handed to a sink: at most `remaining` more
/// bytes, and end of input before that is recorded as truncation.
struct ContentsReader<'a, R> {
    input: &'a mut Input<R>,
    remaining: u64,
}

impl<R: Read> Read for ContentsReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let n = self.remaining.min(buf.len() as u64) as usize;
        match self.input.inner.read(&mut buf[..n]) {
            Ok(0) => {
                let offset = self.input.offset;
                self.input.failure = Some(self.input.malformed(offset, Malformed::Truncated));
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("truncated NAR at offset {offset}"),
                ))
            }
            Ok(k) => {
                self.input.offset += k as u64;
                self.remaining -= k as u64;
                Ok(k)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.input.failure = Some(NarError::Read {
                    offset: self.input.offset,
                    source: e,
                });
                Err(copy)
            }
        }
    }
}

/// What a node turned out to be.
enum Node {
    /// A file or symlink, read completely.
    Leaf,
    /// A directory whose entries come next.
    Directory,
}

/// Parses the magic and the root node. Directories are walked with an explicit
/// stack (`dirs`, the last name seen in each open directory) instead of
/// recursion, so nesting depth costs heap, bounded by [`MAX_DEPTH`].
fn parse_nodes<R: Read>(
    input: &mut Input<R>,
    sink: &mut (impl NarSink + ?Sized),
) -> Result<(), NarError> {
    parse_magic(input)?;
    let mut dirs: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut finished = match parse_node(input, sink, dirs.len())? {
            Node::Leaf => true,
            Node::Directory => {
                dirs.push(Vec::new());
                false
            }
        };
        // Walk up and along until the next entry's node (or the end).
        loop {
            if finished {
                if dirs.is_empty() {
                    return Ok(());
                }
                input.expect(tok::CLOSE, "')' closing the entry")?;
                pop_name(&mut input.path);
            }
            let (t, start) = input.read_token()?;
            match t.as_bytes() {
                tok::ENTRY => {
                    let Some(prev) = dirs.last_mut() else {
                        // No open directory: the root node is complete.
                        return Ok(());
                    };
                    parse_entry_name(input, prev)?;
                    break;
                }
                tok::CLOSE => {
                    sink.close_directory(&input.path)?;
                    dirs.pop();
                    finished = true;
                }
                _ => return Err(input.unexpected(start, "'entry' or ')'", &t)),
            }
        }
    }
}

fn parse_magic<R: Read>(input: &mut Input<R>) -> Result<(), NarError> {
    let len = input.read_u64()?;
    if len != MAGIC.len() as u64 {
        return Err(input.malformed(0, Malformed::BadMagic));
    }
    let mut magic = [0; 13];
    input.read_exact(&mut magic)?;
    if magic[..] != *MAGIC {
        return Err(input.malformed(0, Malformed::BadMagic));
    }
    input.read_padding(len)
}

/// Parses `( type …` of one node; a file or symlink entirely, a directory up to
/// its first entry. `depth` is the number of directories enclosing it.
fn parse_node<R: Read>(
    input: &mut Input<R>,
    sink: &mut (impl NarSink + ?Sized),
    depth: usize,
) -> Result<Node, NarError> {
    input.expect(tok::OPEN, "'('")?;
    input.expect(tok::TYPE, "'type'")?;
    let (t, start) = input.read_token()?;
    match t.as_bytes() {
        tok::REGULAR => {
            let (t, start) = input.read_token()?;
            let executable = match t.as_bytes() {
                tok::EXECUTABLE => {
                    let marker = input.offset;
                    if input.read_u64()? != 0 {
                        return Err(input.malformed(marker, Malformed::NonEmptyExecutableMarker));
                    }
                    input.expect(tok::CONTENTS, "'contents'")?;
                    true
                }
                tok::CONTENTS => false,
                _ => return Err(input.unexpected(start, "'executable' or 'contents'", &t)),
            };
            let size = input.read_u64()?;
            input.file_contents(sink, executable, size)?;
            input.read_padding(size)?;
            input.expect(tok::CLOSE, "')' closing the file")?;
            Ok(Node::Leaf)
        }
        tok::SYMLINK => {
            input.expect(tok::TARGET, "'target'")?;
            let at = input.offset;
            input.read_bounded(MAX_TARGET_LEN, "symlink target")?;
            if let Err(kind) = check_target(&input.scratch) {
                return Err(input.malformed(at, kind));
            }
            sink.create_symlink(&input.path, &input.scratch)?;
            input.expect(tok::CLOSE, "')' closing the symlink")?;
            Ok(Node::Leaf)
        }
        tok::DIRECTORY => {
            if depth >= MAX_DEPTH {
                return Err(input.malformed(start, Malformed::TooDeep));
            }
            sink.create_directory(&input.path)?;
            Ok(Node::Directory)
        }
        _ => Err(input.unexpected(start, "'regular', 'symlink' or 'directory'", &t)),
    }
}

/// Parses `( name <name> node` after `entry`, checks the name against `prev`, the
/// directory's previous name (empty before the first), and descends into it.
fn parse_entry_name<R: Read>(input: &mut Input<R>, prev: &mut Vec<u8>) -> Result<(), NarError> {
    input.expect(tok::OPEN, "'(' opening the entry")?;
    input.expect(tok::NAME, "'name'")?;
    let at = input.offset;
    input.read_bounded(MAX_NAME_LEN, "entry name")?;
    let prev_name = (!prev.is_empty()).then_some(prev.as_slice());
    if let Err(kind) =
        check_name(&input.scratch).and_then(|()| check_order(prev_name, &input.scratch))
    {
        return Err(input.malformed(at, kind));
    }
    prev.clear();
    prev.extend_from_slice(&input.scratch);
    let Input { path, scratch, .. } = input;
    push_name(path, scratch);
    input.expect(tok::NODE, "'node'")
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::nar::framed;

    fn file_nar(contents: &[u8]) -> Vec<u8> {
        framed(&[
            MAGIC,
            b"(",
            b"type",
            b"regular",
            b"contents",
            contents,
            b")",
        ])
    }

    /// A directory NAR with the given (name, symlink target) entries, in the order
    /// given.
    fn dir_nar(entries: &[&[u8]]) -> Vec<u8> {
        let mut items: Vec<&[u8]> = vec![MAGIC, b"(", b"type", b"directory"];
        for name in entries {
            items.extend_from_slice(&[
                b"entry", b"(", b"name", name, b"node", b"(", b"type", b"symlink", b"target", b"t",
                b")", b")",
            ]);
        }
        items.push(b")");
        framed(&items)
    }

    fn malformed(nar: &[u8]) -> (u64, Vec<u8>, Malformed) {
        match validate(&mut &nar[..]) {
            Err(NarError::Malformed { offset, path, kind }) => (offset, path, kind),
            other => panic!("expected a malformed-NAR error, got {other:?}"),
        }
    }

    #[test]
    fn accepts_files_symlinks_and_directories() {
        assert_eq!(
            validate(&mut &file_nar(b"hello\n")[..]).unwrap().nar_size,
            120
        );
        // Trait objects work too, for callers that only have a `dyn Read`.
        let nar = file_nar(b"x");
        let reader: &mut dyn Read = &mut &nar[..];
        let sink: &mut dyn NarSink = &mut ValidateSink::default();
        assert_eq!(parse(reader, sink).unwrap(), nar.len() as u64);
        let nar = dir_nar(&[b"a", b"b"]);
        let s = validate(&mut &nar[..]).unwrap();
        assert_eq!(
            (s.nar_size, s.directories, s.symlinks),
            (nar.len() as u64, 1, 2)
        );
        let entries = list(&mut &nar[..]).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[2].path, b"b");
        assert_eq!(
            entries[2].kind,
            NarEntryKind::Symlink {
                target: b"t".to_vec()
            }
        );
    }

    #[test]
    fn rejects_wrong_magic() {
        let mut nar = file_nar(b"x");
        nar[8] = b'N';
        assert_eq!(malformed(&nar), (0, vec![], Malformed::BadMagic));
        let nar = framed(&[b"nix-archive-2"]);
        assert_eq!(malformed(&nar).2, Malformed::BadMagic);
        // A huge first length is just a bad magic, not an allocation.
        let nar = u64::MAX.to_le_bytes();
        assert_eq!(malformed(&nar).2, Malformed::BadMagic);
    }

    #[test]
    fn rejects_non_zero_padding() {
        let mut nar = file_nar(b"hello\n");
        // The contents' length is at 88, the 6 bytes at 96, then 2 of padding.
        nar[96 + 6 + 1] = 1;
        assert_eq!(malformed(&nar), (103, vec![], Malformed::NonZeroPadding));
        // In the magic's padding too.
        let mut nar = file_nar(b"");
        nar[8 + 13] = 7;
        assert_eq!(malformed(&nar).2, Malformed::NonZeroPadding);
    }

    #[test]
    fn rejects_unknown_tokens() {
        let nar = framed(&[MAGIC, b"(", b"type", b"fifo", b")"]);
        let (offset, _, kind) = malformed(&nar);
        assert_eq!(offset, 56);
        assert!(
            matches!(kind, Malformed::UnexpectedToken { ref found, .. } if found == b"fifo"),
            "{kind}"
        );
        let nar = framed(&[MAGIC, b"[", b"type", b"regular"]);
        assert!(matches!(
            malformed(&nar).2,
            Malformed::UnexpectedToken { .. }
        ));
        // Nix's parser takes attributes in any order; only the canonical one is valid.
        let nar = framed(&[
            MAGIC,
            b"(",
            b"type",
            b"regular",
            b"contents",
            b"",
            b"executable",
            b"",
            b")",
        ]);
        assert!(matches!(
            malformed(&nar).2,
            Malformed::UnexpectedToken { .. }
        ));
        let nar = framed(&[MAGIC, b"(", b"type", b"directory", b"entri"]);
        assert!(matches!(
            malformed(&nar).2,
            Malformed::UnexpectedToken { .. }
        ));
    }

    #[test]
    fn rejects_oversized_length_prefixes() {
        let mut nar = framed(&[MAGIC, b"("]);
        nar.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(matches!(
            malformed(&nar).2,
            Malformed::TooLong {
                what: "keyword",
                ..
            }
        ));

        let mut nar = framed(&[MAGIC, b"(", b"type", b"directory", b"entry", b"(", b"name"]);
        nar.extend_from_slice(&256u64.to_le_bytes());
        nar.extend_from_slice(&[b'a'; 256]);
        assert!(matches!(
            malformed(&nar).2,
            Malformed::TooLong {
                what: "entry name",
                len: 256,
                ..
            }
        ));

        let mut nar = framed(&[MAGIC, b"(", b"type", b"symlink", b"target"]);
        nar.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            malformed(&nar).2,
            Malformed::TooLong {
                what: "symlink target",
                ..
            }
        ));
    }

    #[test]
    fn rejects_invalid_names() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
            let (offset, path, kind) = malformed(&dir_nar(&[bad]));
            assert_eq!(kind, Malformed::InvalidName(bad.to_vec()));
            assert_eq!(path, b"");
            assert_eq!(offset, 128);
        }
    }

    #[test]
    fn rejects_unsorted_and_duplicate_names() {
        let (_, _, kind) = malformed(&dir_nar(&[b"b", b"a"]));
        assert_eq!(
            kind,
            Malformed::UnsortedNames {
                prev: b"b".to_vec(),
                name: b"a".to_vec()
            }
        );
        let (_, _, kind) = malformed(&dir_nar(&[b"a", b"a"]));
        assert_eq!(kind, Malformed::DuplicateName(b"a".to_vec()));
        // Byte order, not locale order: 'B' < 'a'.
        assert!(validate(&mut &dir_nar(&[b"B", b"a"])[..]).is_ok());
        assert!(validate(&mut &dir_nar(&[b"a", b"B"])[..]).is_err());
    }

    #[test]
    fn rejects_bad_symlink_targets() {
        for bad in [&b""[..], b"a\0b"] {
            let nar = framed(&[MAGIC, b"(", b"type", b"symlink", b"target", bad, b")"]);
            assert_eq!(malformed(&nar).2, Malformed::InvalidTarget(bad.to_vec()));
        }
    }

    #[test]
    fn rejects_non_empty_executable_marker() {
        let nar = framed(&[
            MAGIC,
            b"(",
            b"type",
            b"regular",
            b"executable",
            b"x",
            b"contents",
            b"",
            b")",
        ]);
        assert_eq!(malformed(&nar).2, Malformed::NonEmptyExecutableMarker);
    }

    #[test]
    fn rejects_truncation_at_every_byte() {
        let mut nar = dir_nar(&[b"a"]);
        let inner = file_nar(b"some contents");
        nar.truncate(nar.len() - 16);
        // Append a file entry too, so truncation inside contents is covered.
        nar.extend_from_slice(&framed(&[b"entry", b"(", b"name", b"b", b"node"]));
        nar.extend_from_slice(&inner[24..]);
        nar.extend_from_slice(&framed(&[b")", b")"]));
        validate(&mut &nar[..]).unwrap();
        for cut in 0..nar.len() {
            let err = validate(&mut &nar[..cut]).unwrap_err();
            match err {
                NarError::Malformed {
                    offset,
                    kind: Malformed::Truncated,
                    ..
                } => assert_eq!(offset, cut as u64),
                other => panic!("cut at {cut}: {other}"),
            }
        }
        let err = validate(&mut &nar[..nar.len() - 40]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("truncated NAR at offset {}", nar.len() - 40)),
            "{err}"
        );
    }

    #[test]
    fn truncation_inside_contents_wins_over_the_sink_error() {
        let nar = file_nar(b"0123456789");
        let dir = tempfile::tempdir().unwrap();
        let err = restore(&mut &nar[..nar.len() - 20], &dir.path().join("t")).unwrap_err();
        assert!(
            matches!(
                err,
                NarError::Malformed {
                    kind: Malformed::Truncated,
                    offset: 108,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn rejects_trailing_bytes_unless_embedded() {
        let mut nar = file_nar(b"x");
        let len = nar.len() as u64;
        nar.extend_from_slice(b"more");
        assert_eq!(malformed(&nar), (len, vec![], Malformed::TrailingBytes));
        let mut rest = &nar[..];
        let size = parse_embedded(&mut rest, &mut ValidateSink::default()).unwrap();
        assert_eq!(size, len);
        assert_eq!(rest, b"more");
    }

    #[test]
    fn deep_nesting_is_capped_not_a_stack_overflow() {
        let mut nar = framed(&[MAGIC]);
        for _ in 0..=MAX_DEPTH {
            nar.extend_from_slice(&framed(&[
                b"(",
                b"type",
                b"directory",
                b"entry",
                b"(",
                b"name",
                b"d",
                b"node",
            ]));
        }
        let (_, path, kind) = malformed(&nar);
        assert_eq!(kind, Malformed::TooDeep);
        assert_eq!(path.len(), 2 * MAX_DEPTH - 1);

        // Exactly at the limit is fine.
        let mut nar = framed(&[MAGIC]);
        for _ in 1..MAX_DEPTH {
            nar.extend_from_slice(&framed(&[
                b"(",
                b"type",
                b"directory",
                b"entry",
                b"(",
                b"name",
                b"d",
                b"node",
            ]));
        }
        nar.extend_from_slice(&framed(&[b"(", b"type", b"directory", b")"]));
        for _ in 1..MAX_DEPTH {
            nar.extend_from_slice(&framed(&[b")", b")"]));
        }
        assert_eq!(
            validate(&mut &nar[..]).unwrap().directories,
            MAX_DEPTH as u64
        );
    }

    #[test]
    fn errors_name_the_entry_path() {
        let nar = framed(&[
            MAGIC,
            b"(",
            b"type",
            b"directory",
            b"entry",
            b"(",
            b"name",
            b"sub",
            b"node",
            b"(",
            b"type",
            b"directory",
            b"entry",
            b"(",
            b"name",
            b"f",
            b"node",
            b"(",
            b"type",
            b"bogus",
        ]);
        let err = validate(&mut &nar[..]).unwrap_err();
        assert!(err.to_string().ends_with("in entry 'sub/f'"), "{err}");
    }

    #[test]
    fn huge_declared_contents_are_bounded_by_the_input() {
        let mut nar = framed(&[MAGIC, b"(", b"type", b"regular", b"contents"]);
        nar.extend_from_slice(&u64::MAX.to_le_bytes());
        nar.extend_from_slice(b"abc");
        assert_eq!(malformed(&nar).2, Malformed::Truncated);
    }

    #[test]
    fn restore_refuses_an_existing_target() {
        let dir = tempfile::tempdir().unwrap();
        let err = restore(&mut &file_nar(b"x")[..], dir.path()).unwrap_err();
        assert!(matches!(err, NarError::TargetExists(_)), "{err}");
    }

    #[test]
    fn restore_sets_exact_modes() {
        let dir = tempfile::tempdir().unwrap();
        let nar = framed(&[
            MAGIC,
            b"(",
            b"type",
            b"directory", //
            b"entry",
            b"(",
            b"name",
            b"x",
            b"node", //
            b"(",
            b"type",
            b"regular",
            b"executable",
            b"",
            b"contents",
            b"#!",
            b")",
            b")",
            b"entry",
            b"(",
            b"name",
            b"y",
            b"node", //
            b"(",
            b"type",
            b"regular",
            b"contents",
            b"data",
            b")",
            b")", //
            b")",
        ]);
        let target = dir.path().join("t");
        assert_eq!(restore(&mut &nar[..], &target).unwrap(), nar.len() as u64);
        let mode = |p: &str| {
            fs::symlink_metadata(target.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode(""), 0o755);
        assert_eq!(mode("x"), 0o755);
        assert_eq!(mode("y"), 0o644);
        assert_eq!(fs::read(target.join("y")).unwrap(), b"data");
    }
}
