//! NAR (Nix ARchive): the canonical serialisation of a file, symlink or directory
//! tree that Nix hashes and ships (see `nix-formats.md` §4).
//!
//! ```text
//! nar  = str("nix-archive-1") node
//! node = "(" "type" ( "regular" ["executable" ""] "contents" str(bytes)
//!                   | "symlink" "target" str(target)
//!                   | "directory" { "entry" "(" "name" str(name) "node" node ")" } ) ")"
//! ```
//!
//! Every item is a `str`: a u64 little-endian length, the bytes, then zero padding
//! to a multiple of 8.
//!
//! * [`writer`]: [`NarWriter`] (an event-driven encoder that refuses to produce
//!   anything but a canonical NAR) and, on top of it, [`dump_path`], [`hash_path`]
//!   and [`dump_path_hashed`] for trees on disk.
//! * [`reader`]: a strict streaming parser ([`parse`], [`parse_embedded`]) that drives a
//!   [`NarSink`], and the sinks behind [`restore`], [`validate`] and [`list`].
//!
//! Both sides enforce the same rules, so anything [`NarWriter`] emits is accepted by
//! [`parse`] and a tree has exactly one NAR: entries strictly sorted by raw name
//! bytes, names that are valid single path components, bounded name and symlink
//! target lengths, and nesting no deeper than [`MAX_DEPTH`].
//!
//! Entry paths handed to sinks and shown in errors are relative to the NAR's root:
//! names joined by `/`, and the empty string for the root itself.

use std::fmt;
use std::io;
use std::path::PathBuf;

use thiserror::Error;

pub mod reader;
pub mod writer;

pub use reader::{
    list, parse, parse_embedded, restore, validate, ListSink, NarEntry, NarEntryKind, NarSink,
    NarSummary, RestoreSink, ValidateSink,
};
pub use writer::{dump_path, dump_path_hashed, hash_path, NarWriter};

/// The first `str` of every NAR.
pub const MAGIC: &[u8] = b"nix-archive-1";

/// Longest entry name accepted (Linux `NAME_MAX`): nothing on disk can have a
/// longer one, and it bounds what a hostile length prefix can make us allocate.
pub const MAX_NAME_LEN: usize = 255;

/// Longest symlink target accepted (Linux `PATH_MAX` minus the NUL): `readlink`
/// can never return more.
pub const MAX_TARGET_LEN: usize = 4095;

/// Deepest directory nesting accepted; the root directory is depth 1. Both sides
/// use explicit stacks, so this is not about the call stack: it keeps a NAR
/// restorable with ordinary path lengths and stops hostile input from making sinks
/// track absurd paths.
pub const MAX_DEPTH: usize = 1024;

/// Longest keyword (`nix-archive-1` is 13 bytes); a longer length prefix where a
/// keyword belongs is rejected before anything is read.
pub(crate) const MAX_TOKEN_LEN: usize = 16;

/// Size of the buffer both sides move file contents through. Large enough that a
/// hasher or the kernel sees few calls, small enough to stay in L2 cache while
/// the hasher reads it back.
pub(crate) const CHUNK_SIZE: usize = 256 * 1024;

/// Keywords of the grammar.
pub(crate) mod tok {
    pub const OPEN: &[u8] = b"(";
    pub const CLOSE: &[u8] = b")";
    pub const TYPE: &[u8] = b"type";
    pub const REGULAR: &[u8] = b"regular";
    pub const EXECUTABLE: &[u8] = b"executable";
    pub const CONTENTS: &[u8] = b"contents";
    pub const SYMLINK: &[u8] = b"symlink";
    pub const TARGET: &[u8] = b"target";
    pub const DIRECTORY: &[u8] = b"directory";
    pub const ENTRY: &[u8] = b"entry";
    pub const NAME: &[u8] = b"name";
    pub const NODE: &[u8] = b"node";
}

/// Number of zero bytes that follow a `str` of `len` bytes.
pub(crate) fn padding_len(len: u64) -> usize {
    // The result is 0..=7, so the narrowing cannot truncate.
    ((8 - len % 8) % 8) as usize
}

/// Checks that `name` can be a directory entry: one non-empty path component.
pub(crate) fn check_name(name: &[u8]) -> Result<(), Malformed> {
    if name.len() > MAX_NAME_LEN {
        return Err(Malformed::TooLong {
            what: "entry name",
            len: name.len() as u64,
            max: MAX_NAME_LEN,
        });
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(Malformed::InvalidName(name.to_vec()));
    }
    Ok(())
}

/// Checks that `name` may follow `prev` in a directory: strictly increasing bytes,
/// which rules out duplicates as well.
pub(crate) fn check_order(prev: Option<&[u8]>, name: &[u8]) -> Result<(), Malformed> {
    match prev {
        Some(prev) if prev == name => Err(Malformed::DuplicateName(name.to_vec())),
        Some(prev) if prev > name => Err(Malformed::UnsortedNames {
            prev: prev.to_vec(),
            name: name.to_vec(),
        }),
        _ => Ok(()),
    }
}

/// Checks a symlink target: non-empty and NUL-free, since no filesystem can hold
/// anything else and [`restore`] could not recreate it.
pub(crate) fn check_target(target: &[u8]) -> Result<(), Malformed> {
    if target.len() > MAX_TARGET_LEN {
        return Err(Malformed::TooLong {
            what: "symlink target",
            len: target.len() as u64,
            max: MAX_TARGET_LEN,
        });
    }
    if target.is_empty() || target.contains(&0) {
        return Err(Malformed::InvalidTarget(target.to_vec()));
    }
    Ok(())
}

/// Appends `name` to the entry path `path` (see the module docs for its shape).
pub(crate) fn push_name(path: &mut Vec<u8>, name: &[u8]) {
    if !path.is_empty() {
        path.push(b'/');
    }
    path.extend_from_slice(name);
}

/// Removes the last name from an entry path.
pub(crate) fn pop_name(path: &mut Vec<u8>) {
    let cut = path.iter().rposition(|&b| b == b'/').unwrap_or(0);
    path.truncate(cut);
}

/// What is wrong with a NAR, or with what a caller asked [`NarWriter`] to write.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Malformed {
    /// The input ended in the middle of the archive.
    Truncated,
    /// The first string is not `nix-archive-1`.
    BadMagic,
    /// A padding byte after a string is not zero.
    NonZeroPadding,
    /// A keyword other than the one(s) the grammar allows here.
    UnexpectedToken {
        expected: &'static str,
        found: Vec<u8>,
    },
    /// The string after `executable` is not empty.
    NonEmptyExecutableMarker,
    /// A length prefix (or a name or target given to the writer) over its limit.
    TooLong {
        what: &'static str,
        len: u64,
        max: usize,
    },
    /// Empty, `.`, `..`, or containing `/` or NUL.
    InvalidName(Vec<u8>),
    /// The same name twice in one directory.
    DuplicateName(Vec<u8>),
    /// `name` comes after `prev` but sorts before it.
    UnsortedNames { prev: Vec<u8>, name: Vec<u8> },
    /// An empty symlink target or one containing NUL.
    InvalidTarget(Vec<u8>),
    /// Directories nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// Bytes after the end of the archive.
    TrailingBytes,
    /// File contents ended before the declared size.
    ContentsTooShort { expected: u64, actual: u64 },
    /// File contents went on past the declared size.
    ContentsTooLong { expected: u64 },
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("truncated NAR"),
            Self::BadMagic => write!(f, "not a NAR (does not start with '{}')", Lossy(MAGIC)),
            Self::NonZeroPadding => f.write_str("non-zero padding"),
            Self::UnexpectedToken { expected, found } => {
                write!(f, "expected {expected}, found '{}'", Lossy(found))
            }
            Self::NonEmptyExecutableMarker => {
                f.write_str("the 'executable' marker is followed by a non-empty string")
            }
            Self::TooLong { what, len, max } => {
                write!(f, "{what} of {len} bytes exceeds the limit of {max}")
            }
            Self::InvalidName(name) => write!(f, "invalid file name '{}'", Lossy(name)),
            Self::DuplicateName(name) => write!(f, "duplicate entry name '{}'", Lossy(name)),
            Self::UnsortedNames { prev, name } => write!(
                f,
                "entry '{}' comes after '{}' but sorts before it",
                Lossy(name),
                Lossy(prev)
            ),
            Self::InvalidTarget(target) => {
                write!(f, "invalid symlink target '{}'", Lossy(target))
            }
            Self::TooDeep => write!(f, "directories nested deeper than {MAX_DEPTH}"),
            Self::TrailingBytes => f.write_str("trailing bytes after the end of the NAR"),
            Self::ContentsTooShort { expected, actual } => write!(
                f,
                "file contents ended after {actual} of the declared {expected} bytes"
            ),
            Self::ContentsTooLong { expected } => {
                write!(
                    f,
                    "file contents are longer than the declared {expected} bytes"
                )
            }
        }
    }
}

/// Everything that can go wrong writing, reading or restoring a NAR.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NarError {
    /// The input is not a valid (canonical) NAR. `offset` is where the offending
    /// item starts (for [`Malformed::Truncated`], where the input ended); `path` is
    /// the entry being read, empty for the root.
    #[error("{kind} at offset {offset}{}", InEntry(path))]
    Malformed {
        offset: u64,
        path: Vec<u8>,
        kind: Malformed,
    },
    /// Reading the NAR itself failed.
    #[error("reading NAR at offset {offset}: {source}")]
    Read {
        offset: u64,
        #[source]
        source: io::Error,
    },
    /// Writing the NAR failed.
    #[error("writing NAR: {0}")]
    Write(#[source] io::Error),
    /// A filesystem operation on `path` failed.
    #[error("cannot {op} '{}': {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A FIFO, socket or device: NAR has no way to represent it.
    #[error("file '{}' has an unsupported type ({kind})", path.display())]
    UnsupportedFileType { path: PathBuf, kind: &'static str },
    /// A file changed while it was being archived; the NAR written so far is
    /// incomplete and must be discarded.
    #[error("file '{}' changed while being archived: {detail}", path.display())]
    FileChanged { path: PathBuf, detail: String },
    /// [`NarWriter`] was given something it cannot write canonically (a bad name,
    /// unsorted entries, contents not matching their size). `path` is the entry.
    #[error("cannot write NAR{}: {kind}", InEntry(path))]
    InvalidInput { path: Vec<u8>, kind: Malformed },
    /// Reading file contents handed to [`NarWriter::regular`] failed.
    #[error("reading contents{}: {source}", InEntry(path))]
    Contents {
        path: Vec<u8>,
        #[source]
        source: io::Error,
    },
    /// [`NarWriter`] methods called out of order (a bug in the caller).
    #[error("NarWriter: {call} called while expecting {expected}")]
    Misuse {
        call: &'static str,
        expected: &'static str,
    },
    /// [`restore`] only creates new trees.
    #[error("restore target '{}' already exists", .0.display())]
    TargetExists(PathBuf),
}

/// Shows bytes as text, replacing invalid UTF-8, for messages only.
struct Lossy<'a>(&'a [u8]);

impl fmt::Display for Lossy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Escape control characters so a hostile name cannot mangle a terminal.
        for c in String::from_utf8_lossy(self.0).chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// ` in entry 'a/b'`, or nothing for the root.
struct InEntry<'a>(&'a [u8]);

impl fmt::Display for InEntry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, " in entry '{}'", Lossy(self.0))
        }
    }
}

/// Frames byte strings the way a NAR does, for tests that build NARs by hand.
#[cfg(test)]
pub(crate) fn framed(items: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for s in items {
        v.extend_from_slice(&(s.len() as u64).to_le_bytes());
        v.extend_from_slice(s);
        v.resize(v.len() + padding_len(s.len() as u64), 0);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_rounds_up_to_eight() {
        let pads: Vec<usize> = (0..=9).map(padding_len).collect();
        assert_eq!(pads, [0, 7, 6, 5, 4, 3, 2, 1, 0, 7]);
        assert_eq!(padding_len(u64::MAX), 1);
    }

    #[test]
    fn names_must_be_single_components() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"/", b"a\0b"] {
            assert_eq!(check_name(bad), Err(Malformed::InvalidName(bad.to_vec())));
        }
        for good in [&b"..."[..], b".a", b"a b", "ü".as_bytes(), &[0xff]] {
            assert_eq!(check_name(good), Ok(()));
        }
        assert!(check_name(&[b'x'; 255]).is_ok());
        assert!(matches!(
            check_name(&[b'x'; 256]),
            Err(Malformed::TooLong { len: 256, .. })
        ));
    }

    #[test]
    fn order_is_strict_byte_order() {
        assert_eq!(check_order(None, b"a"), Ok(()));
        assert_eq!(check_order(Some(b"B"), b"a"), Ok(()));
        assert_eq!(check_order(Some(b"a"), b"a-b"), Ok(()));
        assert_eq!(
            check_order(Some(b"a"), b"a"),
            Err(Malformed::DuplicateName(b"a".to_vec()))
        );
        assert!(matches!(
            check_order(Some(b"b"), b"a"),
            Err(Malformed::UnsortedNames { .. })
        ));
    }

    #[test]
    fn targets_are_non_empty_without_nul() {
        assert!(check_target(b"../x").is_ok());
        assert!(check_target(b"").is_err());
        assert!(check_target(b"a\0").is_err());
        assert!(check_target(&[b'a'; 4095]).is_ok());
        assert!(check_target(&[b'a'; 4096]).is_err());
    }

    #[test]
    fn entry_paths_push_and_pop() {
        let mut p = Vec::new();
        push_name(&mut p, b"a");
        push_name(&mut p, b"b");
        assert_eq!(p, b"a/b");
        pop_name(&mut p);
        assert_eq!(p, b"a");
        pop_name(&mut p);
        assert_eq!(p, b"");
    }

    #[test]
    fn messages_name_offset_and_entry() {
        let e = NarError::Malformed {
            offset: 40,
            path: b"a/b".to_vec(),
            kind: Malformed::Truncated,
        };
        assert_eq!(e.to_string(), "truncated NAR at offset 40 in entry 'a/b'");
        let e = NarError::Malformed {
            offset: 0,
            path: Vec::new(),
            kind: Malformed::InvalidName(b"a\nb".to_vec()),
        };
        assert_eq!(e.to_string(), "invalid file name 'a\\nb' at offset 0");
    }
}
