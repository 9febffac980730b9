//! NAR reader: `validate`, `list`, `parse_embedded` and `restore` must never panic,
//! and a NAR they accept must be canonical: re-encoding it with `NarWriter` (from
//! the parser's events) and dumping the tree `restore` made both give back the
//! input byte for byte, since a tree has exactly one NAR.

#![no_main]

use std::io::{Cursor, Read};
use std::path::Path;

use buildit_store::nar::{self, NarEntry, NarEntryKind, NarError, NarSink, NarSummary, NarWriter};
use libfuzzer_sys::fuzz_target;

/// Drives a `NarWriter` from the parser's events; also records what `list` should
/// report, to compare.
struct Reencode {
    writer: NarWriter<Vec<u8>>,
    entries: Vec<NarEntry>,
}

fn last_name(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

impl Reencode {
    /// A non-root node is the body of a directory entry.
    fn begin(&mut self, path: &[u8]) -> Result<(), NarError> {
        if path.is_empty() {
            Ok(())
        } else {
            self.writer.entry(last_name(path))
        }
    }

    fn end(&mut self, path: &[u8]) -> Result<(), NarError> {
        if path.is_empty() {
            Ok(())
        } else {
            self.writer.end_entry()
        }
    }
}

impl NarSink for Reencode {
    fn create_directory(&mut self, path: &[u8]) -> Result<(), NarError> {
        self.entries.push(NarEntry {
            path: path.to_vec(),
            kind: NarEntryKind::Directory,
        });
        self.begin(path)?;
        self.writer.start_directory()
    }

    fn create_file(
        &mut self,
        path: &[u8],
        executable: bool,
        size: u64,
        contents: &mut dyn Read,
    ) -> Result<(), NarError> {
        self.entries.push(NarEntry {
            path: path.to_vec(),
            kind: NarEntryKind::Regular { executable, size },
        });
        self.begin(path)?;
        self.writer.regular(executable, size, contents)?;
        self.end(path)
    }

    fn create_symlink(&mut self, path: &[u8], target: &[u8]) -> Result<(), NarError> {
        self.entries.push(NarEntry {
            path: path.to_vec(),
            kind: NarEntryKind::Symlink {
                target: target.to_vec(),
            },
        });
        self.begin(path)?;
        self.writer.symlink(target)?;
        self.end(path)
    }

    fn close_directory(&mut self, path: &[u8]) -> Result<(), NarError> {
        self.writer.end_directory()?;
        self.end(path)
    }
}

fn summary_of(entries: &[NarEntry], nar_size: u64) -> NarSummary {
    let mut s = NarSummary {
        nar_size,
        ..NarSummary::default()
    };
    for e in entries {
        match &e.kind {
            NarEntryKind::Directory => s.directories += 1,
            NarEntryKind::Regular { executable, size } => {
                s.regular_files += 1;
                s.executables += u64::from(*executable);
                s.contents_size = s.contents_size.saturating_add(*size);
            }
            NarEntryKind::Symlink { .. } => s.symlinks += 1,
        }
    }
    s
}

/// Restores into a fresh directory (on tmpfs when there is one) and dumps it again.
fn restore_and_dump(data: &[u8]) -> Vec<u8> {
    let shm = Path::new("/dev/shm");
    let tmp = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .expect("creating a temporary directory");
    let root = tmp.path().join("root");
    let size = nar::restore(&mut Cursor::new(data), &root)
        .unwrap_or_else(|e| panic!("restore of a valid NAR failed: {e}"));
    assert_eq!(size, data.len() as u64);
    let mut out = Vec::new();
    let dumped = nar::dump_path(&root, &mut out)
        .unwrap_or_else(|e| panic!("dump of a restored NAR failed: {e}"));
    assert_eq!(dumped, out.len() as u64);
    out
}

fuzz_target!(|data: &[u8]| {
    let validated = nar::validate(&mut Cursor::new(data));
    let listed = nar::list(&mut Cursor::new(data));

    // A NAR embedded in a longer stream: the parser must stop right after it.
    let mut embedded = data.to_vec();
    embedded.extend_from_slice(b"\x01trailer");
    let mut cursor = Cursor::new(embedded.as_slice());
    let embedded_size = nar::parse_embedded(&mut cursor, &mut nar::ValidateSink::default());

    let summary = match validated {
        Ok(summary) => summary,
        Err(_) => {
            assert!(listed.is_err(), "list accepted what validate rejected");
            // A prefix of the stream may still be a NAR (data has trailing bytes);
            // if so, it is strictly shorter than data.
            if let Ok(n) = embedded_size {
                assert!(n < data.len() as u64, "parse_embedded took {n} bytes");
            }
            return;
        }
    };
    assert_eq!(summary.nar_size, data.len() as u64);
    assert_eq!(embedded_size.ok(), Some(data.len() as u64));
    assert_eq!(cursor.position(), data.len() as u64, "read past the NAR");

    let listed = listed.expect("list rejected what validate accepted");
    assert_eq!(summary_of(&listed, summary.nar_size), summary);

    // Re-encode from the parser's events.
    let mut sink = Reencode {
        writer: NarWriter::new(Vec::new()),
        entries: Vec::new(),
    };
    nar::parse(&mut Cursor::new(data), &mut sink)
        .unwrap_or_else(|e| panic!("re-encoding a valid NAR failed: {e}"));
    assert_eq!(sink.entries, listed);
    let (reencoded, size) = sink.writer.finish().expect("finishing the re-encoded NAR");
    assert_eq!(size, data.len() as u64);
    assert!(reencoded == data, "re-encoded NAR differs from the input");

    // Through the filesystem and back.
    let dumped = restore_and_dump(data);
    assert!(
        dumped == data,
        "restored and dumped NAR differs from the input"
    );
});
