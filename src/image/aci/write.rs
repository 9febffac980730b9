//! Writing an ACI: the manifest and the rootfs as one deterministic tar, hashed
//! before compression (the image ID is over the tar), compressed at fixed levels.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use buildit_store::hash::{HashAlgo, Hasher, HashingWriter};
use serde_json::Value;

use super::{check_manifest, io_err, AciCompression, AciError};
use crate::image::tree::ImageTree;

/// The compressor between the hashed tar stream and the file.
enum Sink {
    Plain(BufWriter<File>),
    Gzip(flate2::write::GzEncoder<BufWriter<File>>),
    Xz(liblzma::write::XzEncoder<BufWriter<File>>),
}

/// Fixed levels: the bytes (and so any signature over them) must not depend on
/// a default that a crate upgrade could change.
const GZIP_LEVEL: u32 = 6;
const XZ_PRESET: u32 = 6;

impl Sink {
    fn new(file: File, compression: AciCompression) -> Sink {
        let out = BufWriter::with_capacity(1 << 20, file);
        match compression {
            AciCompression::None => Sink::Plain(out),
            // No mtime, no file name, so the header is the same everywhere.
            AciCompression::Gzip => Sink::Gzip(
                flate2::GzBuilder::new().write(out, flate2::Compression::new(GZIP_LEVEL)),
            ),
            // Single-threaded: the multi-threaded encoder splits into blocks
            // whose boundaries depend on its settings.
            AciCompression::Xz => Sink::Xz(liblzma::write::XzEncoder::new(out, XZ_PRESET)),
        }
    }

    fn finish(self) -> io::Result<File> {
        let out = match self {
            Sink::Plain(w) => w,
            Sink::Gzip(w) => w.finish()?,
            Sink::Xz(w) => w.finish()?,
        };
        out.into_inner().map_err(|e| e.into_error())
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Gzip(w) => w.write(buf),
            Sink::Xz(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Gzip(w) => w.flush(),
            Sink::Xz(w) => w.flush(),
        }
    }
}

/// Tells concurrent writers in one process apart in temporary names.
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Check the manifest, then write the ACI to `dest`: `manifest` (the bytes as
/// given), `rootfs/` and the whole tree under it, compressed as asked. `dest`
/// appears only once complete. Returns the image ID, `sha512-<hex>`.
pub fn write_aci(
    manifest_json: &[u8],
    tree: &ImageTree,
    dest: &Path,
    compression: AciCompression,
) -> Result<String, AciError> {
    let manifest: Value = serde_json::from_slice(manifest_json).map_err(AciError::Json)?;
    check_manifest(&manifest, tree)?;

    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image.aci".into());
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let written = write_tar(manifest_json, tree, &tmp, compression);
    let id = match written {
        Ok(id) => id,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if let Err(e) = fs::rename(&tmp, dest) {
        let _ = fs::remove_file(&tmp);
        return Err(AciError::Io {
            path: dest.to_path_buf(),
            source: e,
        });
    }
    Ok(id)
}

fn write_tar(
    manifest_json: &[u8],
    tree: &ImageTree,
    tmp: &Path,
    compression: AciCompression,
) -> Result<String, AciError> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(io_err(tmp))?;
    // The ID is over the uncompressed tar, so hash before compressing.
    let out = HashingWriter::new(Sink::new(file, compression), HashAlgo::Sha512);
    let entries = crate::image::tar::entries(tree, None);
    let out = crate::image::tar::write(
        out,
        Path::new("rootfs"),
        &[("manifest", manifest_json)],
        &entries,
    )
    .map_err(io_err(tmp))?;
    let (hash, _, sink) = out.finish();
    let file = sink.finish().map_err(io_err(tmp))?;
    file.sync_all().map_err(io_err(tmp))?;
    Ok(format!("sha512-{}", hash.to_hex()))
}

/// The image ID of an ACI file: `sha512-` and the hex SHA-512 of its tar,
/// decompressed first if it is gzip or xz (appc addresses images by their
/// uncompressed bytes, so the ID does not change with the compression).
pub fn image_id(file: &Path) -> io::Result<String> {
    let mut f = BufReader::new(File::open(file)?);
    let mut magic = [0u8; 6];
    let n = crate::io_util::read_full(&mut f, &mut magic)?;
    let magic = &magic[..n];
    let stream = io::Cursor::new(magic.to_vec()).chain(f);
    let mut reader = decoder(magic, stream)
        .map_err(|(kind, why)| io::Error::new(kind, format!("{}: {why}", file.display())))?;
    let mut h = Hasher::new(HashAlgo::Sha512);
    io::copy(&mut reader, &mut h)?;
    Ok(format!("sha512-{}", h.finish().to_hex()))
}

/// The decompressor for an ACI whose first bytes are `magic`, by the formats'
/// magic numbers (an ACI's name says nothing about its compression). The reverse
/// of [`Sink`]; bzip2, which appc allows, is refused by name like zstd.
fn decoder<'a, R: Read + 'a>(
    magic: &[u8],
    stream: R,
) -> Result<Box<dyn Read + 'a>, (io::ErrorKind, &'static str)> {
    Ok(if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(stream))
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Box::new(liblzma::read::XzDecoder::new_multi_decoder(stream))
    } else if magic.starts_with(b"BZh") {
        return Err((
            io::ErrorKind::Unsupported,
            "bzip2-compressed ACIs are not supported",
        ));
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err((
            io::ErrorKind::InvalidData,
            "zstd-compressed, which is not an ACI",
        ));
    } else {
        Box::new(stream)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    use crate::image::aci::testutil::{fixture, valid};
    use buildit_store::Hash;
    use serde_json::json;

    fn decompress(bytes: &[u8], c: AciCompression) -> Vec<u8> {
        let mut out = Vec::new();
        match c {
            AciCompression::None => out.extend_from_slice(bytes),
            AciCompression::Gzip => {
                flate2::read::GzDecoder::new(bytes)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            AciCompression::Xz => {
                liblzma::read::XzDecoder::new(bytes)
                    .read_to_end(&mut out)
                    .unwrap();
            }
        }
        out
    }

    fn listing(tar_bytes: &[u8]) -> Vec<String> {
        let mut a = ::tar::Archive::new(tar_bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                String::from_utf8(e.path_bytes().into_owned()).unwrap()
            })
            .collect()
    }

    #[test]
    fn writes_are_deterministic_and_well_formed() {
        let f = fixture();
        let manifest = serde_json::to_vec_pretty(&valid()).unwrap();
        for c in [
            AciCompression::None,
            AciCompression::Gzip,
            AciCompression::Xz,
        ] {
            let a = f.dir.join(format!("a-{c}.aci"));
            let b = f.dir.join(format!("b-{c}.aci"));
            let id_a = write_aci(&manifest, &f.tree, &a, c).unwrap();
            let id_b = write_aci(&manifest, &f.tree, &b, c).unwrap();
            assert_eq!(id_a, id_b, "{c}");
            let (bytes_a, bytes_b) = (fs::read(&a).unwrap(), fs::read(&b).unwrap());
            assert!(bytes_a == bytes_b, "{c}: two writes differ");

            let tar_bytes = decompress(&bytes_a, c);
            let want = format!("sha512-{}", Hash::of(HashAlgo::Sha512, &tar_bytes).to_hex());
            assert_eq!(id_a, want, "{c}");
            assert_eq!(image_id(&a).unwrap(), want, "{c}");

            let names = listing(&tar_bytes);
            assert_eq!(names[0], "manifest");
            assert_eq!(names[1].trim_end_matches('/'), "rootfs");
            assert!(
                names[2..].iter().all(|n| n.starts_with("rootfs/")),
                "{names:?}"
            );
            assert_eq!(names.len(), 2 + f.tree.nodes.len());
            assert!(
                names.contains(&"rootfs/usr/sbin/nginx".to_string()),
                "{names:?}"
            );

            let mut ar = ::tar::Archive::new(&tar_bytes[..]);
            let mut first = ar.entries().unwrap().next().unwrap().unwrap();
            assert_eq!(first.header().entry_type(), ::tar::EntryType::Regular);
            assert_eq!(first.header().mode().unwrap(), 0o644);
            let mut body = Vec::new();
            first.read_to_end(&mut body).unwrap();
            assert_eq!(body, manifest);
        }
        // Only the finished files: no temporaries left behind.
        let mut left: Vec<_> = fs::read_dir(&f.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".aci") || n.contains(".tmp-"))
            .collect();
        left.sort();
        assert_eq!(left.len(), 6, "{left:?}");
        // The ID does not depend on the compression.
        let ids: Vec<_> = left
            .iter()
            .map(|n| image_id(&f.dir.join(n)).unwrap())
            .collect();
        assert!(ids.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn invalid_manifest_writes_nothing() {
        let f = fixture();
        let dest = f.dir.join("bad.aci");
        let mut m = valid();
        m["app"]["exec"] = json!([]);
        let e = write_aci(
            &serde_json::to_vec(&m).unwrap(),
            &f.tree,
            &dest,
            AciCompression::Gzip,
        )
        .unwrap_err();
        assert!(matches!(e, AciError::Manifest { .. }), "{e}");
        let e = write_aci(b"{not json", &f.tree, &dest, AciCompression::Gzip).unwrap_err();
        assert!(matches!(e, AciError::Json(_)), "{e}");
        assert!(!dest.exists());
    }

    #[test]
    fn actool_validates_written_images() {
        let actool = crate::test_skip::require_tool("actool", "scripts/image-tools.sh builds it");
        let Some(actool) = actool else { return };
        let f = fixture();
        let manifest = serde_json::to_vec_pretty(&valid()).unwrap();
        for c in [AciCompression::Gzip, AciCompression::Xz] {
            let dest = f.dir.join(format!("img-{c}.aci"));
            write_aci(&manifest, &f.tree, &dest, c).unwrap();
            let out = Command::new(&actool)
                .args(["--debug", "validate"])
                .arg(&dest)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "actool rejected the {c} ACI: {stderr}"
            );
            assert!(
                stderr.contains("valid app container image"),
                "{c}: {stderr}"
            );
        }
    }
}
