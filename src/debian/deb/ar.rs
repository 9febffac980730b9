//! The `ar` container of a `.deb`: member headers, and each member's bytes read
//! straight out of the file buffer, with what went wrong below the decompressor
//! remembered for the error message.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::{io_err, DebError};
use crate::io_util::read_full;

const AR_MAGIC: &[u8; 8] = b"!<arch>\n";
const AR_HEADER_LEN: usize = 60;
/// Large enough that reading the `.deb` costs a handful of system calls per
/// megabyte; small enough that two unpacks at a time stay cheap.
const READ_BUF: usize = 1 << 20;

pub(super) enum Fault {
    Truncated,
    Io(io::Error),
    Corrupt(String),
}

pub(super) type FaultCell = Rc<RefCell<Option<Fault>>>;

pub(super) fn record(fault: &FaultCell, f: Fault) {
    let mut slot = fault.borrow_mut();
    if slot.is_none() {
        *slot = Some(f);
    }
}

pub(super) struct ArReader {
    pub(super) deb: PathBuf,
    pub(super) file: BufReader<File>,
    /// Offset of the next unread byte.
    pub(super) pos: u64,
    /// Unread bytes of the current member.
    pub(super) remaining: u64,
    /// The current member has odd size, so a padding byte follows it.
    pub(super) pad: bool,
    pub(super) fault: FaultCell,
}

impl ArReader {
    pub(super) fn open(deb: &Path) -> Result<ArReader, DebError> {
        let file = File::open(deb).map_err(io_err(deb))?;
        let mut file = BufReader::with_capacity(READ_BUF, file);
        let mut magic = [0u8; 8];
        let n = read_full(&mut file, &mut magic).map_err(io_err(deb))?;
        if n < magic.len() || &magic != AR_MAGIC {
            return Err(DebError::NotAr {
                deb: deb.to_path_buf(),
            });
        }
        Ok(ArReader {
            deb: deb.to_path_buf(),
            file,
            pos: 8,
            remaining: 0,
            pad: false,
            fault: Rc::new(RefCell::new(None)),
        })
    }

    /// The next member's name, or `None` at the end of the archive. The previous
    /// member must have been read or skipped.
    pub(super) fn next_member(&mut self) -> Result<Option<String>, DebError> {
        debug_assert_eq!(self.remaining, 0);
        if self.pad {
            // A missing padding byte at the very end is tolerated, as by ar(1).
            let mut b = [0u8; 1];
            let n = read_full(&mut self.file, &mut b).map_err(io_err(&self.deb))?;
            self.pos += n as u64;
            self.pad = false;
        }
        let offset = self.pos;
        let mut h = [0u8; AR_HEADER_LEN];
        let n = read_full(&mut self.file, &mut h).map_err(io_err(&self.deb))?;
        if n == 0 {
            return Ok(None);
        }
        if n < AR_HEADER_LEN {
            return Err(DebError::Truncated {
                deb: self.deb.clone(),
                member: "an ar member header".into(),
            });
        }
        self.pos += AR_HEADER_LEN as u64;
        let bad = |reason: &str| DebError::BadMemberHeader {
            deb: self.deb.clone(),
            offset,
            reason: reason.to_string(),
        };
        if &h[58..60] != b"`\n" {
            return Err(bad("no header terminator"));
        }
        let raw_name = &h[..16];
        let name_end = raw_name
            .iter()
            .rposition(|&b| b != b' ')
            .map_or(0, |i| i + 1);
        let mut name = &raw_name[..name_end];
        // GNU ar ends names with `/`.
        if let Some(stripped) = name.strip_suffix(b"/") {
            name = stripped;
        }
        if name.is_empty() || !name.iter().all(|b| b.is_ascii_graphic()) {
            return Err(bad("invalid member name"));
        }
        let size = std::str::from_utf8(&h[48..58])
            .ok()
            .map(str::trim_end)
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| bad("invalid member size"))?;
        self.remaining = size;
        self.pad = size % 2 == 1;
        // Checked above to be printable ASCII.
        Ok(Some(String::from_utf8_lossy(name).into_owned()))
    }

    pub(super) fn member_data(&mut self) -> MemberData<'_> {
        MemberData { ar: self }
    }

    pub(super) fn read_error(&self, e: io::Error, member: &str) -> DebError {
        match self.fault.borrow_mut().take() {
            Some(Fault::Truncated) => DebError::Truncated {
                deb: self.deb.clone(),
                member: member.to_string(),
            },
            _ => io_err(&self.deb)(e),
        }
    }

    pub(super) fn skip_member(&mut self) -> Result<(), DebError> {
        let member = "a skipped member";
        io::copy(&mut self.member_data(), &mut io::sink())
            .map_err(|e| self.read_error(e, member))?;
        self.finish_member();
        Ok(())
    }

    pub(super) fn finish_member(&mut self) {
        *self.fault.borrow_mut() = None;
    }

    /// After a compressed member's stream ended: bytes left in the member are
    /// garbage after the stream (or, if missing, a truncation).
    pub(super) fn check_consumed(&mut self, member: &str) -> Result<(), DebError> {
        if self.remaining == 0 {
            return Ok(());
        }
        io::copy(&mut self.member_data(), &mut io::sink())
            .map_err(|e| self.read_error(e, member))?;
        Err(DebError::CorruptStream {
            deb: self.deb.clone(),
            member: member.to_string(),
            reason: "data after the end of the compressed stream".into(),
        })
    }
}

/// The current member's bytes, straight out of the file buffer (it is a `BufRead`,
/// so the decompressors read it without another copy).
pub(super) struct MemberData<'a> {
    ar: &'a mut ArReader,
}

impl BufRead for MemberData<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let ar = &mut *self.ar;
        if ar.remaining == 0 {
            return Ok(&[]);
        }
        let buf = match ar.file.fill_buf() {
            Ok(buf) => buf,
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                record(&ar.fault, Fault::Io(e));
                return Err(copy);
            }
        };
        if buf.is_empty() {
            record(&ar.fault, Fault::Truncated);
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the .deb ends inside a member",
            ));
        }
        let n = buf
            .len()
            .min(usize::try_from(ar.remaining).unwrap_or(usize::MAX));
        Ok(&buf[..n])
    }

    fn consume(&mut self, amt: usize) {
        self.ar.file.consume(amt);
        self.ar.remaining = self.ar.remaining.saturating_sub(amt as u64);
        self.ar.pos += amt as u64;
    }
}

impl Read for MemberData<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let buf = self.fill_buf()?;
        let n = buf.len().min(out.len());
        out[..n].copy_from_slice(&buf[..n]);
        self.consume(n);
        Ok(n)
    }
}
