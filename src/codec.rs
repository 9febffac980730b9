//! Which decompressor a stream needs, chosen in one place: by its magic bytes
//! (what the data says it is), by an OCI media type, or by a file name's suffix
//! (what its container says it is), and the streaming decoder for each.
//!
//! Decoders accept concatenated members and streams (multi-member gzip,
//! multi-stream xz), as `gzip -d` and `xz -d` do: a stream cut after its first
//! member would be silently short.

use std::io::{self, BufRead, Read};

/// A compression format, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    None,
    Gzip,
    Xz,
    Zstd,
}

/// The most bytes [`Codec::sniff`] looks at: xz's magic.
pub const MAGIC_LEN: usize = 6;

impl Codec {
    /// The format whose magic `head` starts with; [`Codec::None`] for anything
    /// else, including a `head` too short to tell.
    pub fn sniff(head: &[u8]) -> Codec {
        if head.starts_with(&[0x1f, 0x8b]) {
            Codec::Gzip
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Codec::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Codec::Zstd
        } else {
            Codec::None
        }
    }

    /// The format an OCI layer media type names by its `+gzip` or `+zstd`
    /// suffix; [`Codec::None`] without one (`…tar`, and media types that do not
    /// describe a tar at all).
    pub fn from_media_type(media_type: &str) -> Codec {
        if media_type.ends_with("+gzip") {
            Codec::Gzip
        } else if media_type.ends_with("+zstd") {
            Codec::Zstd
        } else {
            Codec::None
        }
    }

    /// The format a file name's suffix names (`data.tar.xz`, `control.tar`):
    /// `.gz`, `.xz`, `.zst`, or [`Codec::None`] for `suffix` empty. `None` for
    /// any other suffix, which the caller reports as it sees fit.
    pub fn from_suffix(suffix: &str) -> Option<Codec> {
        match suffix {
            "" => Some(Codec::None),
            ".gz" => Some(Codec::Gzip),
            ".xz" => Some(Codec::Xz),
            ".zst" => Some(Codec::Zstd),
            _ => None,
        }
    }

    /// The format's name as tools and reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Gzip => "gzip",
            Codec::Xz => "xz",
            Codec::Zstd => "zstd",
        }
    }

    /// A streaming decoder over `r`; `r` itself for [`Codec::None`].
    pub fn decoder<'a>(self, r: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Codec::None => Box::new(r),
            Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
            Codec::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(r)),
            Codec::Zstd => Box::new(zstd::Decoder::new(r)?),
        })
    }

    /// [`Codec::decoder`] over a reader that is buffered already, without a
    /// second buffer in between.
    pub fn buf_decoder<'a>(self, r: impl BufRead + 'a) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Codec::None => Box::new(r),
            Codec::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
            Codec::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(r)),
            Codec::Zstd => Box::new(zstd::Decoder::with_buffer(r)?),
        })
    }

    /// At most `cap` bytes of `r` decoded, and whether there were more.
    pub fn decompress_capped(self, r: impl Read, cap: u64) -> io::Result<(Vec<u8>, bool)> {
        read_capped(self.decoder(r)?, cap)
    }
}

/// Sniffs the codec from the head of `r` without consuming it and returns it
/// with a decoder over all of `r`. The head is what one `fill_buf` gives: a
/// reader that returns fewer than [`MAGIC_LEN`] bytes at first is taken as
/// uncompressed.
pub fn sniffed_decoder<'a>(mut r: impl BufRead + 'a) -> io::Result<(Codec, Box<dyn Read + 'a>)> {
    let codec = Codec::sniff(r.fill_buf()?);
    Ok((codec, codec.buf_decoder(r)?))
}

/// At most `cap` bytes of `r`, and whether there were more: a bomb costs `cap`.
pub fn read_capped(r: impl Read, cap: u64) -> io::Result<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    let n = r.take(cap.saturating_add(1)).read_to_end(&mut out)?;
    if n as u64 > cap {
        out.truncate(cap as usize);
        return Ok((out, true));
    }
    Ok((out, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn compress(codec: Codec, data: &[u8]) -> Vec<u8> {
        match codec {
            Codec::None => data.to_vec(),
            Codec::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Codec::Xz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Codec::Zstd => zstd::encode_all(data, 1).unwrap(),
        }
    }

    #[test]
    fn every_codec_sniffed_and_decoded_both_ways() {
        let data = b"hello, world\n".repeat(100);
        for codec in [Codec::None, Codec::Gzip, Codec::Xz, Codec::Zstd] {
            let packed = compress(codec, &data);
            assert_eq!(Codec::sniff(&packed), codec, "{}", codec.name());
            let mut out = Vec::new();
            codec
                .decoder(&packed[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data, "{}", codec.name());
            let (sniffed, mut d) = sniffed_decoder(io::BufReader::new(&packed[..])).unwrap();
            assert_eq!(sniffed, codec);
            out.clear();
            d.read_to_end(&mut out).unwrap();
            assert_eq!(out, data, "{} through sniffed_decoder", codec.name());
        }
    }

    #[test]
    fn concatenated_members_are_all_read() {
        for codec in [Codec::Gzip, Codec::Xz, Codec::Zstd] {
            let mut packed = compress(codec, b"one ");
            packed.extend(compress(codec, b"two"));
            let mut out = String::new();
            codec
                .decoder(&packed[..])
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            assert_eq!(out, "one two", "{}", codec.name());
        }
    }

    #[test]
    fn names_media_types_suffixes_and_caps() {
        assert_eq!(Codec::sniff(b"\x1f"), Codec::None);
        assert_eq!(Codec::sniff(b""), Codec::None);
        let oci = "application/vnd.oci.image.layer.v1.tar";
        assert_eq!(Codec::from_media_type(&format!("{oci}+gzip")), Codec::Gzip);
        assert_eq!(Codec::from_media_type(&format!("{oci}+zstd")), Codec::Zstd);
        assert_eq!(Codec::from_media_type(oci), Codec::None);
        assert_eq!(Codec::from_suffix(".zst"), Some(Codec::Zstd));
        assert_eq!(Codec::from_suffix(""), Some(Codec::None));
        assert_eq!(Codec::from_suffix(".bz2"), None);

        let packed = compress(Codec::Gzip, &[7u8; 1000]);
        let (out, more) = Codec::Gzip.decompress_capped(&packed[..], 10).unwrap();
        assert_eq!((out.len(), more), (10, true));
        let (out, more) = Codec::Gzip.decompress_capped(&packed[..], 1000).unwrap();
        assert_eq!((out.len(), more), (1000, false));
    }
}
