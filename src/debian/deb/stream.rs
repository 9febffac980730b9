//! A member decompressed by the codec its name's suffix names, ready for the tar
//! reader, with the reader's errors turned back into what really went wrong.

use std::io::{self, BufRead, BufReader, Read};
use std::path::PathBuf;

use super::ar::{record, ArReader, Fault, FaultCell};
use super::{io_err, DebError};

/// Between the decompressor and the tar reader, which asks for 512-byte headers:
/// without it every header would be a separate call into the decompressor.
const TAR_BUF: usize = 256 << 10;

/// Records the decompressor's errors as corruption, unless something below it
/// (truncation, I/O) already explains them.
pub(super) struct Tap<R> {
    inner: R,
    fault: FaultCell,
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            record(&self.fault, Fault::Corrupt(e.to_string()));
        })
    }
}

/// What is needed to turn an error from the tar reader into a [`DebError`].
pub(super) struct StreamCtx {
    pub(super) deb: PathBuf,
    pub(super) member: String,
    pub(super) fault: FaultCell,
}

impl StreamCtx {
    pub(super) fn stream_error(&self, e: io::Error, entry: Option<&str>) -> DebError {
        let deb = self.deb.clone();
        let member = self.member.clone();
        match self.fault.borrow_mut().take() {
            Some(Fault::Truncated) => DebError::Truncated { deb, member },
            Some(Fault::Io(source)) => DebError::Io { path: deb, source },
            Some(Fault::Corrupt(reason)) => DebError::CorruptStream {
                deb,
                member,
                reason,
            },
            None => DebError::BadTar {
                deb,
                member,
                entry: entry.map(str::to_string),
                reason: e.to_string(),
            },
        }
    }
}

/// A member, decompressed, ready for the tar reader.
pub(super) struct MemberStream<'a> {
    pub(super) reader: BufReader<Tap<Box<dyn Read + 'a>>>,
    pub(super) ctx: StreamCtx,
}

impl<'a> MemberStream<'a> {
    pub(super) fn open(ar: &'a mut ArReader, member: &str, base: &str) -> Result<Self, DebError> {
        let deb = ar.deb.clone();
        let fault = ar.fault.clone();
        let unsupported = || DebError::UnsupportedCompression {
            deb: deb.clone(),
            member: member.to_string(),
        };
        let suffix = member.strip_prefix(base).ok_or_else(unsupported)?;
        let inner = match decoder(suffix, ar.member_data()) {
            Some(made) => made.map_err(io_err(&deb))?,
            None => return Err(unsupported()),
        };
        Ok(MemberStream {
            reader: BufReader::with_capacity(
                TAR_BUF,
                Tap {
                    inner,
                    fault: fault.clone(),
                },
            ),
            ctx: StreamCtx {
                deb,
                member: member.to_string(),
                fault,
            },
        })
    }

    /// Read the stream to its end: the tar reader stops at the end-of-archive
    /// block, but the padding after it must still decompress (and, for xz, pass the
    /// integrity check) and the member must be complete.
    pub(super) fn finish(&mut self) -> Result<(), DebError> {
        io::copy(&mut self.reader, &mut io::sink())
            .map(drop)
            .map_err(|e| self.ctx.stream_error(e, None))
    }
}

/// The decompressor for a member by its name's suffix after `control.tar` or
/// `data.tar`; `None` for a codec buildit does not read. Multi-stream readers: a
/// member may hold several concatenated streams, and all of it is the member.
fn decoder<'a, R: BufRead + 'a>(suffix: &str, data: R) -> Option<io::Result<Box<dyn Read + 'a>>> {
    Some(Ok(match suffix {
        "" => Box::new(data),
        ".gz" => Box::new(flate2::bufread::MultiGzDecoder::new(data)),
        ".xz" => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(data)),
        ".zst" => match zstd::stream::read::Decoder::with_buffer(data) {
            Ok(d) => Box::new(d),
            Err(e) => return Some(Err(e)),
        },
        _ => return None,
    }))
}
