//! Producing NARs: [`NarWriter`] turns a stream of events into canonical NAR bytes,
//! and [`dump_path`] / [`hash_path`] feed it from a tree on disk.

use std::ffi::OsStr;
use std::fs::{self, FileType, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{
    check_name, check_order, check_target, padding_len, pop_name, push_name, tok, Malformed,
    NarError, CHUNK_SIZE, MAGIC, MAX_DEPTH,
};
use crate::hash::{Hash, HashAlgo, Hasher, HashingWriter};

/// A read smaller than this is not worth a system call while more contents are
/// due: flush the buffer first so the next read can be large.
const MIN_READ: usize = 64 * 1024;

const ZEROS: [u8; 8] = [0; 8];

/// What the writer accepts next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// `regular`, `symlink` or `start_directory` (the root, or after `entry`).
    Node,
    /// `entry` or `end_directory`, inside a directory.
    EntryOrEnd,
    /// `end_entry`, after an entry's node is complete.
    EndEntry,
    /// `finish`: the root node is complete.
    Done,
    /// Nothing: an earlier call failed and the output is incomplete.
    Failed,
}

impl Expect {
    fn describe(self) -> &'static str {
        match self {
            Self::Node => "a node (regular, symlink or start_directory)",
            Self::EntryOrEnd => "entry or end_directory",
            Self::EndEntry => "end_entry",
            Self::Done => "finish",
            Self::Failed => "nothing (an earlier call failed)",
        }
    }
}

/// Why copying a regular file's contents failed; callers turn it into the error
/// that fits their source (an entry path, or a file on disk).
enum ContentsError {
    Read(io::Error),
    TooShort { actual: u64 },
    TooLong,
    Nar(NarError),
}

/// Writes a NAR from events, e.g. for a tree that is not on disk (tar entries).
///
/// ```text
/// start_directory
///   entry(b"bin")  start_directory
///                    entry(b"tool")  regular(true, n, &mut r)  end_entry
///                  end_directory  end_entry
/// end_directory
/// finish
/// ```
///
/// Anything that would make the output non-canonical or malformed is an error:
/// calls out of order, invalid, unsorted or duplicate names, symlink targets that
/// are empty, too long or contain NUL, nesting deeper than [`MAX_DEPTH`], and
/// contents that yield fewer or more bytes than declared. After an error the writer
/// refuses every further call, and what reached `W` is an incomplete NAR to discard.
///
/// Output is gathered in an internal buffer of 256 KiB, so `W` sees
/// few large writes: no `BufWriter` is needed, and a [`Hasher`] gets large updates.
/// Nothing is complete in `W` until [`finish`](Self::finish) returns.
pub struct NarWriter<W: Write> {
    out: W,
    buf: Box<[u8]>,
    /// Bytes of `buf` waiting to be written to `out`.
    len: usize,
    /// Bytes already written to `out`.
    flushed: u64,
    /// For each open directory, the last entry name written (empty before the first,
    /// which no valid name can be).
    dirs: Vec<Vec<u8>>,
    /// Entry path of the node being written, for error messages.
    path: Vec<u8>,
    expect: Expect,
}

impl<W: Write> NarWriter<W> {
    pub fn new(out: W) -> Self {
        let mut buf = vec![0; CHUNK_SIZE].into_boxed_slice();
        // The magic goes straight into the fresh buffer (whose zeros are already its
        // padding) so that creating a writer cannot fail.
        let magic_len = MAGIC.len() as u64;
        buf[..8].copy_from_slice(&magic_len.to_le_bytes());
        buf[8..8 + MAGIC.len()].copy_from_slice(MAGIC);
        NarWriter {
            out,
            buf,
            len: 8 + MAGIC.len() + padding_len(magic_len),
            flushed: 0,
            dirs: Vec::new(),
            path: Vec::new(),
            expect: Expect::Node,
        }
    }

    /// Bytes of NAR produced so far (written to `W` or still buffered).
    pub fn bytes_written(&self) -> u64 {
        self.flushed + self.len as u64
    }

    /// Writes a regular file whose contents are exactly `size` bytes read from
    /// `contents`, which must then be at end of input.
    pub fn regular(
        &mut self,
        executable: bool,
        size: u64,
        contents: &mut (impl Read + ?Sized),
    ) -> Result<(), NarError> {
        self.write_regular(executable, size, contents, false)
            .map_err(|e| match e {
                ContentsError::Read(source) => NarError::Contents {
                    path: self.path.clone(),
                    source,
                },
                ContentsError::TooShort { actual } => NarError::InvalidInput {
                    path: self.path.clone(),
                    kind: Malformed::ContentsTooShort {
                        expected: size,
                        actual,
                    },
                },
                ContentsError::TooLong => NarError::InvalidInput {
                    path: self.path.clone(),
                    kind: Malformed::ContentsTooLong { expected: size },
                },
                ContentsError::Nar(e) => e,
            })
    }

    /// Writes a symlink. The target is stored as given and never interpreted.
    pub fn symlink(&mut self, target: &[u8]) -> Result<(), NarError> {
        self.begin("symlink", Expect::Node)?;
        if let Err(kind) = check_target(target) {
            return Err(self.invalid(kind));
        }
        self.put_tokens(&[tok::OPEN, tok::TYPE, tok::SYMLINK, tok::TARGET])?;
        self.put_str(target).map_err(|e| self.write_failed(e))?;
        self.put_tokens(&[tok::CLOSE])?;
        self.node_done();
        Ok(())
    }

    /// Opens a directory node; follow with `entry` … `end_entry` pairs in strictly
    /// increasing name order, then `end_directory`.
    pub fn start_directory(&mut self) -> Result<(), NarError> {
        self.begin("start_directory", Expect::Node)?;
        if self.dirs.len() >= MAX_DEPTH {
            return Err(self.invalid(Malformed::TooDeep));
        }
        self.put_tokens(&[tok::OPEN, tok::TYPE, tok::DIRECTORY])?;
        self.dirs.push(Vec::new());
        self.expect = Expect::EntryOrEnd;
        Ok(())
    }

    /// Starts the entry `name` of the current directory; its node comes next.
    pub fn entry(&mut self, name: &[u8]) -> Result<(), NarError> {
        self.begin("entry", Expect::EntryOrEnd)?;
        let prev = self
            .dirs
            .last()
            .filter(|p| !p.is_empty())
            .map(Vec::as_slice);
        if let Err(kind) = check_name(name).and_then(|()| check_order(prev, name)) {
            return Err(self.invalid(kind));
        }
        if let Some(last) = self.dirs.last_mut() {
            last.clear();
            last.extend_from_slice(name);
        }
        self.put_tokens(&[tok::ENTRY, tok::OPEN, tok::NAME])?;
        self.put_str(name).map_err(|e| self.write_failed(e))?;
        self.put_tokens(&[tok::NODE])?;
        push_name(&mut self.path, name);
        self.expect = Expect::Node;
        Ok(())
    }

    /// Closes the entry whose node was just completed.
    pub fn end_entry(&mut self) -> Result<(), NarError> {
        self.begin("end_entry", Expect::EndEntry)?;
        self.put_tokens(&[tok::CLOSE])?;
        pop_name(&mut self.path);
        self.expect = Expect::EntryOrEnd;
        Ok(())
    }

    /// Closes the current directory node.
    pub fn end_directory(&mut self) -> Result<(), NarError> {
        self.begin("end_directory", Expect::EntryOrEnd)?;
        self.put_tokens(&[tok::CLOSE])?;
        self.dirs.pop();
        self.node_done();
        Ok(())
    }

    /// Writes the tree at `path` on disk as the next node, exactly as [`dump_path`]
    /// would; lets a NAR built from events embed a tree from disk.
    pub fn write_path(&mut self, path: &Path) -> Result<(), NarError> {
        let result = dump_tree(self, path);
        if result.is_err() {
            self.expect = Expect::Failed;
        }
        result
    }

    /// Flushes everything to `W` once the root node is complete, and returns `W`
    /// and the NAR's size.
    pub fn finish(mut self) -> Result<(W, u64), NarError> {
        self.begin("finish", Expect::Done)?;
        self.flush_buf().map_err(NarError::Write)?;
        self.out.flush().map_err(NarError::Write)?;
        let size = self.flushed;
        Ok((self.out, size))
    }

    fn write_regular(
        &mut self,
        executable: bool,
        size: u64,
        contents: &mut (impl Read + ?Sized),
        short_read_is_eof: bool,
    ) -> Result<(), ContentsError> {
        self.begin("regular", Expect::Node)
            .map_err(ContentsError::Nar)?;
        let header: &[&[u8]] = if executable {
            &[
                tok::OPEN,
                tok::TYPE,
                tok::REGULAR,
                tok::EXECUTABLE,
                b"",
                tok::CONTENTS,
            ]
        } else {
            &[tok::OPEN, tok::TYPE, tok::REGULAR, tok::CONTENTS]
        };
        self.put_tokens(header).map_err(ContentsError::Nar)?;
        let copied = self
            .put(&size.to_le_bytes())
            .map_err(|e| ContentsError::Nar(self.write_failed(e)))
            .and_then(|()| self.copy_contents(size, contents, short_read_is_eof));
        if copied.is_err() {
            self.expect = Expect::Failed;
        }
        copied?;
        self.put(&ZEROS[..padding_len(size)])
            .map_err(|e| ContentsError::Nar(self.write_failed(e)))?;
        self.put_tokens(&[tok::CLOSE]).map_err(ContentsError::Nar)?;
        self.node_done();
        Ok(())
    }

    /// Moves exactly `size` bytes from `contents` into the output, reading straight
    /// into the output buffer so each byte is copied once, then checks that
    /// `contents` is exhausted.
    ///
    /// Each read asks for one byte more than is still due, so a source that is too
    /// long shows itself without an extra call. With `short_read_is_eof` (regular
    /// files, where a short read only happens at end of file) a short final read is
    /// taken as end of input, which saves a system call per file.
    fn copy_contents(
        &mut self,
        size: u64,
        contents: &mut (impl Read + ?Sized),
        short_read_is_eof: bool,
    ) -> Result<(), ContentsError> {
        let mut remaining = size;
        loop {
            let want = remaining.saturating_add(1);
            if ((self.buf.len() - self.len) as u64) < want.min(MIN_READ as u64) {
                self.flush_buf()
                    .map_err(|e| ContentsError::Nar(NarError::Write(e)))?;
            }
            let spare = self.buf.len() - self.len;
            // Bounded by `spare`, so the narrowing is lossless.
            let ask = want.min(spare as u64) as usize;
            let got = match contents.read(&mut self.buf[self.len..self.len + ask]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ContentsError::Read(e)),
            };
            if got == 0 {
                return if remaining == 0 {
                    Ok(())
                } else {
                    Err(ContentsError::TooShort {
                        actual: size - remaining,
                    })
                };
            }
            if got as u64 > remaining {
                return Err(ContentsError::TooLong);
            }
            self.len += got;
            remaining -= got as u64;
            if remaining == 0 && short_read_is_eof && got < ask {
                return Ok(());
            }
        }
    }

    /// Checks the writer is in state `want` for `call`; a wrong state poisons it,
    /// since the caller's idea of the tree no longer matches the output.
    fn begin(&mut self, call: &'static str, want: Expect) -> Result<(), NarError> {
        if self.expect == want {
            return Ok(());
        }
        let expected = self.expect.describe();
        self.expect = Expect::Failed;
        Err(NarError::Misuse { call, expected })
    }

    fn node_done(&mut self) {
        self.expect = if self.dirs.is_empty() {
            Expect::Done
        } else {
            Expect::EndEntry
        };
    }

    fn invalid(&mut self, kind: Malformed) -> NarError {
        self.expect = Expect::Failed;
        NarError::InvalidInput {
            path: self.path.clone(),
            kind,
        }
    }

    fn write_failed(&mut self, e: io::Error) -> NarError {
        self.expect = Expect::Failed;
        NarError::Write(e)
    }

    fn put_tokens(&mut self, tokens: &[&[u8]]) -> Result<(), NarError> {
        for t in tokens {
            self.put_str(t).map_err(|e| self.write_failed(e))?;
        }
        Ok(())
    }

    /// Frames `s` as a NAR string: length, bytes, zero padding.
    fn put_str(&mut self, s: &[u8]) -> io::Result<()> {
        let len = s.len() as u64;
        self.put(&len.to_le_bytes())?;
        self.put(s)?;
        self.put(&ZEROS[..padding_len(len)])
    }

    fn put(&mut self, data: &[u8]) -> io::Result<()> {
        if data.len() > self.buf.len() - self.len {
            self.flush_buf()?;
            if data.len() > self.buf.len() {
                self.out.write_all(data)?;
                self.flushed += data.len() as u64;
                return Ok(());
            }
        }
        self.buf[self.len..self.len + data.len()].copy_from_slice(data);
        self.len += data.len();
        Ok(())
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        if self.len > 0 {
            self.out.write_all(&self.buf[..self.len])?;
            self.flushed += self.len as u64;
            self.len = 0;
        }
        Ok(())
    }
}

/// Streams the NAR of `path` (a file, symlink or directory; symlinks are never
/// followed) to `out` and returns its size.
///
/// Entries are sorted by raw name bytes; a file is executable iff its owner-execute
/// bit is set. FIFOs, sockets and devices are errors, and so is a file whose size
/// changes while it is read: the NAR written so far is then incomplete.
pub fn dump_path(path: &Path, out: &mut (impl Write + ?Sized)) -> Result<u64, NarError> {
    let mut w = NarWriter::new(out);
    w.write_path(path)?;
    let (_, size) = w.finish()?;
    Ok(size)
}

/// The NAR hash and NAR size of `path`, without writing the NAR anywhere.
pub fn hash_path(path: &Path, algo: HashAlgo) -> Result<(Hash, u64), NarError> {
    let mut hasher = Hasher::new(algo);
    let size = dump_path(path, &mut hasher)?;
    Ok((hasher.finish(), size))
}

/// [`dump_path`] that also hashes what it writes, in one pass over the tree.
pub fn dump_path_hashed(
    path: &Path,
    out: &mut (impl Write + ?Sized),
    algo: HashAlgo,
) -> Result<(Hash, u64), NarError> {
    let mut hashing = HashingWriter::new(out, algo);
    dump_path(path, &mut hashing)?;
    let (hash, size, _) = hashing.finish();
    Ok((hash, size))
}

/// The sorted entries of a directory still to be written.
struct Listing {
    entries: std::vec::IntoIter<(Vec<u8>, FileType)>,
}

/// Writes the tree at `root` as the writer's next node. Walks with an explicit
/// stack so deep trees cannot overflow the call stack.
fn dump_tree<W: Write>(w: &mut NarWriter<W>, root: &Path) -> Result<(), NarError> {
    let meta = fs::symlink_metadata(root).map_err(io_err("stat", root))?;
    let mut path = root.to_path_buf();
    let mut stack: Vec<Listing> = Vec::new();
    if let Some(listing) = dump_node(w, &path, meta.file_type())? {
        stack.push(listing);
    }
    while let Some(top) = stack.last_mut() {
        match top.entries.next() {
            Some((name, file_type)) => {
                path.push(OsStr::from_bytes(&name));
                w.entry(&name)?;
                match dump_node(w, &path, file_type)? {
                    Some(listing) => stack.push(listing),
                    None => {
                        w.end_entry()?;
                        path.pop();
                    }
                }
            }
            None => {
                stack.pop();
                w.end_directory()?;
                if !stack.is_empty() {
                    w.end_entry()?;
                    path.pop();
                }
            }
        }
    }
    Ok(())
}

/// Writes a file or symlink node completely, or opens a directory node and returns
/// its entries for the caller to walk.
fn dump_node<W: Write>(
    w: &mut NarWriter<W>,
    path: &Path,
    file_type: FileType,
) -> Result<Option<Listing>, NarError> {
    if file_type.is_file() {
        dump_file(w, path)?;
        Ok(None)
    } else if file_type.is_symlink() {
        let target = fs::read_link(path).map_err(io_err("read symlink", path))?;
        w.symlink(&target.into_os_string().into_vec())?;
        Ok(None)
    } else if file_type.is_dir() {
        let listing = read_sorted(path)?;
        w.start_directory()?;
        Ok(Some(listing))
    } else {
        Err(NarError::UnsupportedFileType {
            path: path.to_path_buf(),
            kind: type_name(file_type),
        })
    }
}

fn dump_file<W: Write>(w: &mut NarWriter<W>, path: &Path) -> Result<(), NarError> {
    // O_NOFOLLOW and fstat on the open file, so what we describe is what we read
    // even if the path is swapped meanwhile; O_NONBLOCK so a FIFO swapped in does
    // not hang the open (it is then rejected by the type check).
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(io_err("open", path))?;
    let meta = file.metadata().map_err(io_err("stat", path))?;
    if !meta.is_file() {
        return Err(changed(
            path,
            "it was replaced by something that is not a file",
        ));
    }
    let size = meta.len();
    let executable = meta.permissions().mode() & 0o100 != 0;
    w.write_regular(executable, size, &mut file, true)
        .map_err(|e| match e {
            ContentsError::Read(source) => NarError::Io {
                op: "read",
                path: path.to_path_buf(),
                source,
            },
            ContentsError::TooShort { actual } => {
                changed(path, format!("it shrank from {size} to {actual} bytes"))
            }
            ContentsError::TooLong => changed(path, format!("it grew beyond {size} bytes")),
            ContentsError::Nar(e) => e,
        })
}

/// A directory's entries sorted by raw name bytes, the order NAR requires.
fn read_sorted(path: &Path) -> Result<Listing, NarError> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(path).map_err(io_err("open directory", path))? {
        let entry = entry.map_err(io_err("read directory", path))?;
        // `file_type` comes from the directory listing itself on most filesystems,
        // which saves an lstat per entry.
        let file_type = entry
            .file_type()
            .map_err(|e| io_err("stat", &entry.path())(e))?;
        entries.push((entry.file_name().into_vec(), file_type));
    }
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(Listing {
        entries: entries.into_iter(),
    })
}

fn type_name(t: FileType) -> &'static str {
    if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_char_device() {
        "character device"
    } else {
        "unknown"
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> NarError + 'a {
    move |source| NarError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn changed(path: &Path, detail: impl Into<String>) -> NarError {
    NarError::FileChanged {
        path: PathBuf::from(path),
        detail: detail.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::nar::framed;

    fn finish(w: NarWriter<Vec<u8>>) -> Vec<u8> {
        let (out, size) = w.finish().unwrap();
        assert_eq!(size, out.len() as u64);
        out
    }

    #[test]
    fn hello_file_matches_the_spec_layout() {
        let mut w = NarWriter::new(Vec::new());
        w.regular(false, 6, &mut &b"hello\n"[..]).unwrap();
        let out = finish(w);
        let want = framed(&[
            MAGIC,
            b"(",
            b"type",
            b"regular",
            b"contents",
            b"hello\n",
            b")",
        ]);
        assert_eq!(out, want);
        assert_eq!(out.len(), 120);
    }

    #[test]
    fn directory_with_entries() {
        let mut w = NarWriter::new(Vec::new());
        w.start_directory().unwrap();
        w.entry(b"a").unwrap();
        w.regular(true, 0, &mut io::empty()).unwrap();
        w.end_entry().unwrap();
        w.entry(b"b").unwrap();
        w.symlink(b"a").unwrap();
        w.end_entry().unwrap();
        w.end_directory().unwrap();
        let out = finish(w);
        let want = framed(&[
            MAGIC,
            b"(",
            b"type",
            b"directory", //
            b"entry",
            b"(",
            b"name",
            b"a",
            b"node", //
            b"(",
            b"type",
            b"regular",
            b"executable",
            b"",
            b"contents",
            b"",
            b")",
            b")",
            b"entry",
            b"(",
            b"name",
            b"b",
            b"node", //
            b"(",
            b"type",
            b"symlink",
            b"target",
            b"a",
            b")",
            b")", //
            b")",
        ]);
        assert_eq!(out, want);
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0"] {
            let mut w = NarWriter::new(Vec::new());
            w.start_directory().unwrap();
            let err = w.entry(bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    NarError::InvalidInput {
                        kind: Malformed::InvalidName(_),
                        ..
                    }
                ),
                "{err}"
            );
            // Poisoned: nothing else goes.
            assert!(matches!(w.end_directory(), Err(NarError::Misuse { .. })));
        }
    }

    #[test]
    fn rejects_unsorted_and_duplicate_names() {
        let mut w = NarWriter::new(Vec::new());
        w.start_directory().unwrap();
        w.entry(b"b").unwrap();
        w.symlink(b"x").unwrap();
        w.end_entry().unwrap();
        let err = w.entry(b"a").unwrap_err();
        assert!(matches!(
            err,
            NarError::InvalidInput {
                kind: Malformed::UnsortedNames { .. },
                ..
            }
        ));

        let mut w = NarWriter::new(Vec::new());
        w.start_directory().unwrap();
        w.entry(b"b").unwrap();
        w.symlink(b"x").unwrap();
        w.end_entry().unwrap();
        let err = w.entry(b"b").unwrap_err();
        assert!(matches!(
            err,
            NarError::InvalidInput {
                kind: Malformed::DuplicateName(_),
                ..
            }
        ));
    }

    #[test]
    fn rejects_wrong_nesting() {
        let mut w = NarWriter::new(Vec::new());
        assert!(matches!(w.entry(b"a"), Err(NarError::Misuse { .. })));

        let mut w = NarWriter::new(Vec::new());
        w.start_directory().unwrap();
        w.entry(b"a").unwrap();
        assert!(matches!(w.end_directory(), Err(NarError::Misuse { .. })));

        let mut w = NarWriter::new(Vec::new());
        w.start_directory().unwrap();
        assert!(matches!(w.finish(), Err(NarError::Misuse { .. })));

        let mut w = NarWriter::new(Vec::new());
        w.symlink(b"x").unwrap();
        assert!(matches!(w.symlink(b"y"), Err(NarError::Misuse { .. })));

        let mut w = NarWriter::new(Vec::new());
        w.start_directory().unwrap();
        w.entry(b"a").unwrap();
        w.symlink(b"x").unwrap();
        assert!(matches!(w.entry(b"b"), Err(NarError::Misuse { .. })));
    }

    #[test]
    fn rejects_contents_of_the_wrong_size() {
        let mut w = NarWriter::new(Vec::new());
        let err = w.regular(false, 5, &mut &b"abc"[..]).unwrap_err();
        assert!(matches!(
            err,
            NarError::InvalidInput {
                kind: Malformed::ContentsTooShort {
                    expected: 5,
                    actual: 3
                },
                ..
            }
        ));
        assert!(matches!(w.finish(), Err(NarError::Misuse { .. })));

        let mut w = NarWriter::new(Vec::new());
        let err = w.regular(false, 2, &mut &b"abc"[..]).unwrap_err();
        assert!(matches!(
            err,
            NarError::InvalidInput {
                kind: Malformed::ContentsTooLong { expected: 2 },
                ..
            }
        ));
    }

    #[test]
    fn contents_larger_than_the_buffer_are_streamed() {
        let data: Vec<u8> = (0..CHUNK_SIZE * 3 + 5).map(|i| i as u8).collect();
        // A reader that returns odd-sized pieces, as pipes and tar entries do.
        struct Dribble<'a>(&'a [u8]);
        impl Read for Dribble<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(1000);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut w = NarWriter::new(Vec::new());
        w.regular(false, data.len() as u64, &mut Dribble(&data))
            .unwrap();
        let out = finish(w);
        let want = framed(&[MAGIC, b"(", b"type", b"regular", b"contents", &data, b")"]);
        assert_eq!(out, want);
    }

    #[test]
    fn rejects_bad_symlink_targets() {
        for bad in [&b""[..], b"a\0b", &[b'x'; 4096]] {
            let mut w = NarWriter::new(Vec::new());
            assert!(matches!(w.symlink(bad), Err(NarError::InvalidInput { .. })));
        }
    }

    #[test]
    fn rejects_nesting_past_the_limit() {
        let mut w = NarWriter::new(io::sink());
        w.start_directory().unwrap();
        for _ in 1..MAX_DEPTH {
            w.entry(b"d").unwrap();
            w.start_directory().unwrap();
        }
        w.entry(b"d").unwrap();
        assert!(matches!(
            w.start_directory(),
            Err(NarError::InvalidInput {
                kind: Malformed::TooDeep,
                ..
            })
        ));
    }

    #[test]
    fn dump_rejects_fifos_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let err = dump_path(dir.path(), &mut io::sink()).unwrap_err();
        match err {
            NarError::UnsupportedFileType { path, kind } => {
                assert_eq!(path, fifo);
                assert_eq!(kind, "FIFO");
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn dump_of_a_missing_path_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = dump_path(&missing, &mut io::sink()).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn dump_detects_a_file_that_does_not_match_its_size() {
        // A file from fstat of 3 bytes that yields 4 is what growing mid-read looks
        // like to the writer.
        let mut w = NarWriter::new(Vec::new());
        let err = w
            .write_regular(false, 3, &mut &b"abcd"[..], true)
            .err()
            .unwrap();
        assert!(matches!(err, ContentsError::TooLong));
        let mut w = NarWriter::new(Vec::new());
        let err = w
            .write_regular(false, 5, &mut &b"abcd"[..], true)
            .err()
            .unwrap();
        assert!(matches!(err, ContentsError::TooShort { actual: 4 }));
    }

    #[test]
    fn write_path_embeds_a_tree_under_an_entry() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), b"x").unwrap();
        let mut w = NarWriter::new(Vec::new());
        w.start_directory().unwrap();
        w.entry(b"sub").unwrap();
        w.write_path(dir.path()).unwrap();
        w.end_entry().unwrap();
        w.end_directory().unwrap();
        let out = finish(w);
        let want = framed(&[
            MAGIC,
            b"(",
            b"type",
            b"directory", //
            b"entry",
            b"(",
            b"name",
            b"sub",
            b"node", //
            b"(",
            b"type",
            b"directory", //
            b"entry",
            b"(",
            b"name",
            b"f",
            b"node", //
            b"(",
            b"type",
            b"regular",
            b"contents",
            b"x",
            b")",
            b")", //
            b")",
            b")",
            b")",
        ]);
        assert_eq!(out, want);
    }
}
