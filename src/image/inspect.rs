//! `buildit image inspect`: what is in an image buildit wrote — its layers and the
//! package each comes from, and optionally every file.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;

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

fn invalid(path: &Path, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {why}", path.display()),
    )
}

fn read_json(path: &Path) -> io::Result<serde_json::Value> {
    let f = File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    serde_json::from_reader(BufReader::new(f)).map_err(|e| invalid(path, e))
}

/// Inspect an image: an image output directory (holding `oci/` or a `.aci`), an
/// OCI layout directory, or an `.aci` file.
pub fn inspect(path: &Path, files: bool) -> io::Result<Vec<ImageInfo>> {
    if path.is_file() {
        return Ok(vec![inspect_aci(path, files)?]);
    }
    if path.join("index.json").is_file() {
        return Ok(vec![inspect_oci(path, files)?]);
    }
    let mut out = Vec::new();
    if path.join("oci/index.json").is_file() {
        out.push(inspect_oci(&path.join("oci"), files)?);
    }
    let mut acis: Vec<PathBuf> = std::fs::read_dir(path)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "aci"))
        .collect();
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

fn blob(layout: &Path, digest: &str) -> io::Result<PathBuf> {
    let (algo, hex) = digest
        .split_once(':')
        .ok_or_else(|| invalid(layout, format!("bad digest {digest}")))?;
    Ok(layout.join("blobs").join(algo).join(hex))
}

fn inspect_oci(layout: &Path, files: bool) -> io::Result<ImageInfo> {
    let index = read_json(&layout.join("index.json"))?;
    let desc = index["manifests"]
        .get(0)
        .ok_or_else(|| invalid(layout, "index.json lists no manifest"))?;
    let digest = desc["digest"].as_str().unwrap_or_default().to_string();
    let name = desc["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let manifest = read_json(&blob(layout, &digest)?)?;
    let mut layers = Vec::new();
    for l in manifest["layers"].as_array().into_iter().flatten() {
        let d = l["digest"].as_str().unwrap_or_default().to_string();
        let media_type = l["mediaType"].as_str().unwrap_or_default().to_string();
        let list = if files {
            let f = File::open(blob(layout, &d)?)?;
            let reader: Box<dyn Read> = if media_type.ends_with("+gzip") {
                Box::new(flate2::read::GzDecoder::new(BufReader::new(f)))
            } else if media_type.ends_with("+zstd") {
                Box::new(zstd::Decoder::new(f)?)
            } else {
                Box::new(BufReader::new(f))
            };
            tar_paths(reader)?
        } else {
            Vec::new()
        };
        layers.push(LayerInfo {
            package: l["annotations"]["io.buildit.package"]
                .as_str()
                .unwrap_or("?")
                .to_string(),
            digest: d,
            size: l["size"].as_u64().unwrap_or(0),
            media_type,
            files: list,
        });
    }
    Ok(ImageInfo {
        format: "oci",
        name,
        id: digest,
        layers,
    })
}

fn inspect_aci(file: &Path, files: bool) -> io::Result<ImageInfo> {
    let mut magic = [0u8; 6];
    let n = File::open(file)?.read(&mut magic)?;
    let f = BufReader::new(File::open(file)?);
    let reader: Box<dyn Read> = if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(f))
    } else if n >= 6 && magic == [0xfd, b'7', b'z', b'X', b'Z', 0] {
        Box::new(liblzma::read::XzDecoder::new(f))
    } else {
        Box::new(f)
    };
    // One pass: the manifest, the image ID (sha512 of the tar) and the paths.
    let mut hashing =
        buildit_store::hash::HashingReader::new(reader, buildit_store::HashAlgo::Sha512);
    let mut manifest = serde_json::Value::Null;
    let mut paths = Vec::new();
    {
        let mut archive = tar::Archive::new(&mut hashing);
        for e in archive.entries()? {
            let mut e = e?;
            let p = e.path()?.display().to_string();
            if p == "manifest" {
                let mut s = String::new();
                e.read_to_string(&mut s)?;
                manifest = serde_json::from_str(&s).map_err(|x| invalid(file, x))?;
            } else if files {
                paths.push(p);
            }
        }
    }
    io::copy(&mut hashing, &mut io::sink())?;
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
