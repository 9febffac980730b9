//! `buildit image inspect`: what is in an image — its layers and the package each
//! comes from, and optionally every file.
//!
//! The image may come from anywhere, so OCI layouts and archives are read through
//! [`super::layout`]: by validated digest, inside the layout, sizes and hashes
//! checked while streaming, documents bounded.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::layout::{Layout, LayoutError, MAX_DOCUMENT};
use crate::codec::{sniffed_decoder, Codec};

/// One layer (OCI) or the whole rootfs (ACI).
#[derive(Debug, Serialize)]
pub struct LayerInfo {
    /// The package (store path name) the layer holds, "image base", "sync", or
    /// several joined with " + " when layers were merged.
    pub package: String,
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    /// Paths in the layer (only when asked).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ImageInfo {
    pub format: &'static str,
    /// OCI: `org.opencontainers.image.ref.name`; ACI: the manifest's name.
    pub name: String,
    /// OCI: the manifest digest; ACI: the image ID.
    pub id: String,
    pub layers: Vec<LayerInfo>,
}

fn invalid(path: &Path, why: impl std::fmt::Display) -> LayoutError {
    LayoutError::Invalid {
        at: path.to_path_buf(),
        why: why.to_string(),
    }
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> LayoutError + '_ {
    move |source| LayoutError::Io {
        at: path.to_path_buf(),
        name: ".".into(),
        source,
    }
}

/// Inspect an image: an image output directory (holding `oci/` or `.aci` files),
/// an OCI layout directory, an `oci-archive` or an `.aci` file.
pub fn inspect(path: &Path, files: bool) -> Result<Vec<ImageInfo>, LayoutError> {
    let md = std::fs::metadata(path).map_err(io_at(path))?;
    if md.is_file() {
        return Ok(vec![if is_oci_archive(path)? {
            inspect_oci(&Layout::open_archive(path)?, files)?
        } else {
            inspect_aci(path, files)?
        }]);
    }
    if !md.is_dir() {
        return Err(invalid(
            path,
            "not an image (neither a file nor a directory)",
        ));
    }
    let dir = Layout::open_dir(path)?;
    if dir.has("index.json") {
        return Ok(vec![inspect_oci(&dir, files)?]);
    }
    // An image output directory: its own entries only, none followed out of it.
    let mut out = Vec::new();
    let oci = path.join("oci");
    if std::fs::symlink_metadata(&oci).is_ok_and(|m| m.is_dir()) {
        out.push(inspect_oci(&Layout::open_dir(&oci)?, files)?);
    }
    let mut acis: Vec<PathBuf> = Vec::new();
    for e in std::fs::read_dir(path).map_err(io_at(path))? {
        let e = e.map_err(io_at(path))?;
        let p = e.path();
        if p.extension().is_some_and(|x| x == "aci") && e.file_type().is_ok_and(|t| t.is_file()) {
            acis.push(p);
        }
    }
    acis.sort();
    for a in acis {
        out.push(inspect_aci(&a, files)?);
    }
    if out.is_empty() {
        return Err(invalid(
            path,
            "not an image (no index.json, oci/ or .aci file)",
        ));
    }
    Ok(out)
}

/// A plain tar holding `index.json` and `oci-layout` (an ACI is a tar too, but
/// holds `manifest` and `rootfs/`, and is usually compressed).
fn is_oci_archive(path: &Path) -> Result<bool, LayoutError> {
    let mut head = [0u8; 512];
    let n = crate::io_util::read_full(&mut File::open(path).map_err(io_at(path))?, &mut head)
        .map_err(io_at(path))?;
    if n < 512 || &head[257..262] != b"ustar" {
        return Ok(false);
    }
    let mut ar = tar::Archive::new(File::open(path).map_err(io_at(path))?);
    let (mut index, mut layout) = (false, false);
    for e in ar.entries_with_seek().map_err(io_at(path))? {
        let e = e.map_err(io_at(path))?;
        let p = e.path().map_err(io_at(path))?;
        match p.to_string_lossy().trim_start_matches("./") {
            "index.json" => index = true,
            "oci-layout" => layout = true,
            "manifest" => return Ok(false),
            _ => {}
        }
        if index && layout {
            return Ok(true);
        }
    }
    Ok(false)
}

fn inspect_oci(layout: &Layout, files: bool) -> Result<ImageInfo, LayoutError> {
    let image = layout.first_image()?;
    let mut layers = Vec::new();
    for l in image.manifest.layers() {
        let media_type = l.media_type().to_string();
        let list = if files {
            let mut blob = layout.open_blob(l)?;
            let listed = match layer_reader(&mut blob, &media_type) {
                Ok(r) => tar_paths(r),
                Err(e) => Err(e),
            };
            let list = listed.map_err(|e| blob.error(e))?;
            // The tar ends before the blob does (padding, compressed trailers):
            // the rest is read so that the whole blob is checked.
            blob.finish()?;
            list
        } else {
            // Listed without its files, the blob is still checked to be there and
            // a regular file of the right size.
            drop(layout.open_blob(l)?);
            Vec::new()
        };
        layers.push(LayerInfo {
            package: l
                .annotations()
                .as_ref()
                .and_then(|a| a.get(super::oci::ANNOTATION_PACKAGE))
                .cloned()
                .unwrap_or_else(|| "?".into()),
            digest: l.digest().to_string(),
            size: l.size(),
            media_type,
            files: list,
        });
    }
    Ok(ImageInfo {
        format: "oci",
        name: image.ref_name.unwrap_or_default(),
        id: image.manifest_digest.to_string(),
        layers,
    })
}

fn layer_reader<'a>(r: impl Read + 'a, media_type: &str) -> io::Result<Box<dyn Read + 'a>> {
    Codec::from_media_type(media_type).decoder(r)
}

fn inspect_aci(file: &Path, files: bool) -> Result<ImageInfo, LayoutError> {
    let io_err = io_at(file);
    let f = BufReader::new(File::open(file).map_err(&io_err)?);
    let (_, reader) = sniffed_decoder(f).map_err(&io_err)?;
    // One pass: the manifest, the image ID (sha512 of the tar) and the paths.
    let mut hashing =
        buildit_store::hash::HashingReader::new(reader, buildit_store::HashAlgo::Sha512);
    let mut manifest = serde_json::Value::Null;
    let mut paths = Vec::new();
    {
        let mut archive = tar::Archive::new(&mut hashing);
        for e in archive.entries().map_err(&io_err)? {
            let mut e = e.map_err(&io_err)?;
            let p = e.path().map_err(&io_err)?.display().to_string();
            if p == "manifest" {
                if e.size() > MAX_DOCUMENT {
                    return Err(LayoutError::TooLarge {
                        at: file.to_path_buf(),
                        name: p,
                        limit: MAX_DOCUMENT,
                    });
                }
                let mut s = Vec::new();
                e.by_ref()
                    .take(MAX_DOCUMENT)
                    .read_to_end(&mut s)
                    .map_err(&io_err)?;
                manifest = serde_json::from_slice(&s).map_err(|source| LayoutError::Json {
                    at: file.to_path_buf(),
                    name: p,
                    source,
                })?;
            } else if files {
                paths.push(p);
            }
        }
    }
    io::copy(&mut hashing, &mut io::sink()).map_err(&io_err)?;
    let (hash, size, _) = hashing.finish();
    Ok(ImageInfo {
        format: "aci",
        name: manifest["name"].as_str().unwrap_or_default().to_string(),
        id: format!("sha512-{}", hash.to_hex()),
        layers: vec![LayerInfo {
            package: "rootfs".into(),
            digest: String::new(),
            size,
            media_type: "application/x-tar".into(),
            files: paths,
        }],
    })
}

fn tar_paths(r: impl Read) -> io::Result<Vec<String>> {
    let mut archive = tar::Archive::new(r);
    let mut out = Vec::new();
    for e in archive.entries()? {
        out.push(e?.path()?.display().to_string());
    }
    Ok(out)
}
