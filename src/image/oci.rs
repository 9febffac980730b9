//! OCI image-spec 1.1 image layouts and `oci-archive` tars, byte-identical for the
//! same tree on any machine.
//!
//! Layers stream from the store through a hasher (the diff_id), a compressor and a
//! second hasher (the blob digest) into a temp file renamed to its digest: no layer
//! is ever held in memory. The JSON documents are built with `oci-spec`'s types but
//! serialised through a key-sorted [`serde_json::Value`], because `oci-spec` keeps
//! labels, annotations and exposed ports in `HashMap`s whose order changes per run.
//!
//! Compressed bytes depend on the compressor's implementation (flate2's miniz_oxide
//! backend, libzstd), which Cargo.lock pins; a different backend or version would
//! give different digests for the same tree.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use buildit_store::hash::{HashAlgo, HashingWriter};
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, Digest, HistoryBuilder,
    ImageConfigurationBuilder, ImageIndexBuilder, ImageManifestBuilder, MediaType,
    OciLayoutBuilder, Os, PlatformBuilder, RootFsBuilder, ANNOTATION_REF_NAME,
};
use serde::Serialize;
use std::collections::HashMap;
use thiserror::Error;

/// The image config and layer compression are the derivation contract's.
pub use buildit_store::builtins::image::{host_goarch, Compression, ImageConfig};

use super::tree::{Kind, Node};

/// `created` of the config and of every history entry: the store's mtime, so the
/// config digest does not depend on when the image was built.
pub const CREATED: &str = "1970-01-01T00:00:01Z";

/// Annotation on each manifest layer descriptor: the packages (store path names,
/// "sync", "image base") the layer holds, joined with " + " when layers were merged.
pub const ANNOTATION_PACKAGE: &str = "io.buildit.package";

/// Docker's default and gzip's own: layers are pulled far more often than built,
/// and level 6 is within a few percent of 9 at a fraction of the time.
pub const GZIP_LEVEL: u32 = 6;

/// libzstd's default level; single-threaded (the `zstd` crate's default), since
/// multi-threaded zstd frames depend on the worker count.
pub const ZSTD_LEVEL: i32 = 3;

#[derive(Debug, Error)]
pub enum OciError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("layer '{label}' ({}): {source}", path.display())]
    Layer {
        label: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{}: already exists (an OCI layout is written into a new directory)", .0.display())]
    Exists(PathBuf),
    #[error("{0} compression is not valid for OCI layers (use gzip, zstd or none)")]
    Compression(&'static str),
    #[error("{}: only files and directories belong in an OCI layout", .0.display())]
    FileType(PathBuf),
    #[error("OCI {what}: {source}")]
    Spec {
        what: &'static str,
        source: oci_spec::OciSpecError,
    },
    #[error("serialising the OCI {what}: {source}")]
    Json {
        what: &'static str,
        source: serde_json::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> OciError + '_ {
    move |source| OciError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn spec_err(what: &'static str) -> impl FnOnce(oci_spec::OciSpecError) -> OciError {
    move |source| OciError::Spec { what, source }
}

/// One layer to write: its label (the annotation and history text) and its entries
/// in path order, parent directories included (see [`super::tar::entries`]).
#[derive(Debug, Clone)]
pub struct LayerSpec<'a> {
    pub label: String,
    pub entries: Vec<(&'a PathBuf, &'a Node)>,
}

impl LayerSpec<'_> {
    /// The bytes of file content the layer holds (what merging weighs).
    pub fn file_size(&self) -> u64 {
        self.entries
            .iter()
            .map(|(_, n)| match n.kind {
                Kind::File { size, .. } => size,
                _ => 0,
            })
            .sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenLayer {
    pub label: String,
    /// `sha256:…` of the blob as stored (compressed).
    pub digest: String,
    /// `sha256:…` of the uncompressed tar.
    pub diff_id: String,
    /// Of the blob.
    pub size: u64,
    pub media_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenImage {
    pub manifest_digest: String,
    pub config_digest: String,
    pub layers: Vec<WrittenLayer>,
    pub ref_name: String,
}

/// Merge adjacent layers until at most `budget` (at least 1) remain, each time the
/// pair with the smallest combined file size (the leftmost on a tie): registries cap
/// the layer count (Docker Hub at 125), and small packages cost least to share a
/// layer. Entries of a merged layer are sorted by path; a path in both keeps the
/// right (upper) layer's node, as stacking them would. Returns the merges done.
pub fn merge_layers<'a>(
    mut layers: Vec<LayerSpec<'a>>,
    budget: usize,
) -> (Vec<LayerSpec<'a>>, usize) {
    let budget = budget.max(1);
    let mut sizes: Vec<u64> = layers.iter().map(LayerSpec::file_size).collect();
    let mut merges = 0;
    while layers.len() > budget {
        let i = (0..layers.len() - 1)
            .min_by_key(|&i| (sizes[i] + sizes[i + 1], i))
            .expect("more than one layer");
        let b = layers.remove(i + 1);
        sizes.remove(i + 1);
        let a = &mut layers[i];
        a.label = format!("{} + {}", a.label, b.label);
        a.entries.extend(b.entries);
        // Stable, so among equal paths the upper layer's entry comes last.
        a.entries.sort_by(|x, y| x.0.cmp(y.0));
        let mut merged: Vec<(&PathBuf, &Node)> = Vec::with_capacity(a.entries.len());
        for e in a.entries.drain(..) {
            match merged.last_mut() {
                Some(last) if last.0 == e.0 => *last = e,
                _ => merged.push(e),
            }
        }
        a.entries = merged;
        sizes[i] = a.file_size();
        merges += 1;
    }
    (layers, merges)
}

/// Write an OCI image layout into the new directory `dir`: one layer per spec (in
/// order, bottom first), the config, the manifest, and `index.json` naming the
/// manifest `ref_name` (`org.opencontainers.image.ref.name`, e.g.
/// `localhost/nginx:1.22`, the name podman gives the image). On error the partly
/// written directory is removed.
pub fn write_layout(
    dir: &Path,
    layers: &[LayerSpec],
    config: &ImageConfig,
    ref_name: &str,
    compression: Compression,
) -> Result<WrittenImage, OciError> {
    if compression == Compression::Xz {
        return Err(OciError::Compression("xz"));
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    // create_dir, not a prior exists() check: two writers cannot both win.
    if let Err(e) = fs::create_dir(dir) {
        return Err(if e.kind() == io::ErrorKind::AlreadyExists {
            OciError::Exists(dir.to_path_buf())
        } else {
            io_err(dir)(e)
        });
    }
    let res = write_layout_into(dir, layers, config, ref_name, compression);
    if res.is_err() {
        let _ = fs::remove_dir_all(dir);
    }
    res
}

fn write_layout_into(
    dir: &Path,
    layers: &[LayerSpec],
    config: &ImageConfig,
    ref_name: &str,
    compression: Compression,
) -> Result<WrittenImage, OciError> {
    let blobs = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;

    let layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()
        .map_err(spec_err("layout"))?;
    let path = dir.join("oci-layout");
    fs::write(&path, canonical_json(&layout, "layout")?).map_err(io_err(&path))?;

    let mut written = Vec::with_capacity(layers.len());
    for (i, layer) in layers.iter().enumerate() {
        written.push(write_layer(&blobs, i, layer, compression)?);
    }

    let config_json = canonical_json(&image_configuration(config, &written)?, "config")?;
    let config_desc = descriptor(
        MediaType::ImageConfig,
        &put_blob(&blobs, &config_json)?,
        config_json.len() as u64,
        None,
        None,
    )?;

    let layer_descs = written
        .iter()
        .map(|l| {
            descriptor(
                MediaType::from(l.media_type.as_str()),
                &l.digest,
                l.size,
                Some((ANNOTATION_PACKAGE, &l.label)),
                None,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config_desc.clone())
        .layers(layer_descs)
        .build()
        .map_err(spec_err("manifest"))?;
    let manifest_json = canonical_json(&manifest, "manifest")?;
    let manifest_digest = put_blob(&blobs, &manifest_json)?;

    let platform = PlatformBuilder::default()
        .architecture(Arch::from(config.architecture.as_str()))
        .os(Os::from(config.os.as_str()))
        .build()
        .map_err(spec_err("platform"))?;
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![descriptor(
            MediaType::ImageManifest,
            &manifest_digest,
            manifest_json.len() as u64,
            Some((ANNOTATION_REF_NAME, ref_name)),
            Some(platform),
        )?])
        .build()
        .map_err(spec_err("index"))?;
    let path = dir.join("index.json");
    fs::write(&path, canonical_json(&index, "index")?).map_err(io_err(&path))?;

    Ok(WrittenImage {
        manifest_digest,
        config_digest: config_desc.digest().to_string(),
        layers: written,
        ref_name: ref_name.to_string(),
    })
}

fn descriptor(
    media_type: MediaType,
    digest: &str,
    size: u64,
    annotation: Option<(&str, &str)>,
    platform: Option<oci_spec::image::Platform>,
) -> Result<Descriptor, OciError> {
    let digest = Digest::from_str(digest).map_err(spec_err("digest"))?;
    let mut b = DescriptorBuilder::default()
        .media_type(media_type)
        .digest(digest)
        .size(size);
    if let Some((k, v)) = annotation {
        b = b.annotations(HashMap::from([(k.to_string(), v.to_string())]));
    }
    if let Some(p) = platform {
        b = b.platform(p);
    }
    b.build().map_err(spec_err("descriptor"))
}

fn image_configuration(
    c: &ImageConfig,
    layers: &[WrittenLayer],
) -> Result<oci_spec::image::ImageConfiguration, OciError> {
    let mut run = ConfigBuilder::default();
    if let Some(v) = &c.entrypoint {
        run = run.entrypoint(v.clone());
    }
    if let Some(v) = &c.cmd {
        run = run.cmd(v.clone());
    }
    if !c.env.is_empty() {
        run = run.env(c.env.clone());
    }
    if let Some(v) = &c.working_dir {
        run = run.working_dir(v.clone());
    }
    if let Some(v) = &c.user {
        run = run.user(v.clone());
    }
    if !c.exposed_ports.is_empty() {
        run = run.exposed_ports(c.exposed_ports.clone());
    }
    if !c.labels.is_empty() {
        run = run.labels(c.labels.clone().into_iter().collect::<HashMap<_, _>>());
    }
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>())
        .build()
        .map_err(spec_err("rootfs"))?;
    let history = layers
        .iter()
        .map(|l| {
            HistoryBuilder::default()
                .created(CREATED)
                .created_by(format!("buildit: {}", l.label))
                .empty_layer(false)
                .build()
                .map_err(spec_err("history"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    ImageConfigurationBuilder::default()
        .created(CREATED)
        .architecture(Arch::from(c.architecture.as_str()))
        .os(Os::from(c.os.as_str()))
        .config(run.build().map_err(spec_err("config"))?)
        .rootfs(rootfs)
        .history(history)
        .build()
        .map_err(spec_err("config"))
}

/// Compact JSON with every object's keys sorted, whatever map types `oci-spec` uses
/// and whether or not serde_json's `preserve_order` gets enabled by some crate.
fn canonical_json<T: Serialize>(v: &T, what: &'static str) -> Result<Vec<u8>, OciError> {
    let json = |source| OciError::Json { what, source };
    let mut value = serde_json::to_value(v).map_err(json)?;
    value.sort_all_objects();
    serde_json::to_vec(&value).map_err(json)
}

/// Store a small blob (config, manifest) under its digest; returns `sha256:…`.
fn put_blob(blobs: &Path, data: &[u8]) -> Result<String, OciError> {
    let hash = buildit_store::Hash::sha256(data);
    let path = blobs.join(hash.to_hex());
    fs::write(&path, data).map_err(io_err(&path))?;
    Ok(format!("sha256:{}", hash.to_hex()))
}

fn write_layer(
    blobs: &Path,
    index: usize,
    layer: &LayerSpec,
    compression: Compression,
) -> Result<WrittenLayer, OciError> {
    let tmp = blobs.join(format!(".layer-{index}.tmp"));
    let layer_err = |source| OciError::Layer {
        label: layer.label.clone(),
        path: tmp.clone(),
        source,
    };
    let file = File::create_new(&tmp).map_err(io_err(&tmp))?;
    let blob = HashingWriter::new(BufWriter::with_capacity(1 << 20, file), HashAlgo::Sha256);
    let (media_type, diff_id, blob) = match compression {
        Compression::None => (
            MediaType::ImageLayer,
            None,
            stream_tar(blob, layer).map_err(layer_err)?,
        ),
        Compression::Gzip => {
            let gz = flate2::GzBuilder::new().write(blob, flate2::Compression::new(GZIP_LEVEL));
            let (diff, gz) = stream_tar_hashed(gz, layer).map_err(layer_err)?;
            (
                MediaType::ImageLayerGzip,
                Some(diff),
                gz.finish().map_err(layer_err)?,
            )
        }
        Compression::Zstd => {
            let z = zstd::Encoder::new(blob, ZSTD_LEVEL).map_err(layer_err)?;
            let (diff, z) = stream_tar_hashed(z, layer).map_err(layer_err)?;
            (
                MediaType::ImageLayerZstd,
                Some(diff),
                z.finish().map_err(layer_err)?,
            )
        }
        Compression::Xz => return Err(OciError::Compression("xz")),
    };
    let (digest, size, buf) = blob.finish();
    // Synced before the rename: otherwise a crash can leave a truncated blob under
    // a valid digest name, which only a full re-hash would notice.
    let file = buf.into_inner().map_err(|e| layer_err(e.into_error()))?;
    file.sync_all().map_err(layer_err)?;
    let digest = format!("sha256:{}", digest.to_hex());
    let dest = blobs.join(&digest["sha256:".len()..]);
    fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
    Ok(WrittenLayer {
        label: layer.label.clone(),
        // Uncompressed, the blob is the tar.
        diff_id: diff_id.unwrap_or_else(|| digest.clone()),
        digest,
        size,
        media_type: media_type.to_string(),
    })
}

fn stream_tar<W: Write>(out: W, layer: &LayerSpec) -> io::Result<W> {
    super::tar::write(out, Path::new(""), &[], &layer.entries)
}

/// Write the layer's tar into `out` through a hasher; `sha256:…` of the tar.
fn stream_tar_hashed<W: Write>(out: W, layer: &LayerSpec) -> io::Result<(String, W)> {
    let hashed = stream_tar(HashingWriter::new(out, HashAlgo::Sha256), layer)?;
    let (hash, _, out) = hashed.finish();
    Ok((format!("sha256:{}", hash.to_hex()), out))
}

/// Pack the layout `layout` as an `oci-archive` (a plain tar of the layout
/// directory), written next to `archive` and renamed over it when complete.
/// Entries are in path order with mtime 1 and owner 0, as the layers' are.
pub fn write_archive(layout: &Path, archive: &Path) -> Result<(), OciError> {
    let mut found: Vec<(PathBuf, Node)> = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = layout.join(&rel);
        for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let e = e.map_err(io_err(&dir))?;
            let rel = rel.join(e.file_name());
            let path = layout.join(&rel);
            let md = fs::symlink_metadata(&path).map_err(io_err(&path))?;
            let (kind, mode) = if md.is_dir() {
                stack.push(rel.clone());
                (Kind::Dir, 0o755)
            } else if md.is_file() {
                let size = md.len();
                (Kind::File { src: path, size }, 0o644)
            } else {
                return Err(OciError::FileType(path));
            };
            let node = Node {
                kind,
                mode,
                uid: 0,
                gid: 0,
                provider: 0,
            };
            found.push((rel, node));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let entries: Vec<(&PathBuf, &Node)> = found.iter().map(|(p, n)| (p, n)).collect();

    let name = archive
        .file_name()
        .ok_or_else(|| io_err(archive)(io::Error::other("not a file name")))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = archive.with_file_name(tmp_name);
    let res = (|| {
        let file = File::create(&tmp)?;
        let out = super::tar::write(BufWriter::new(file), Path::new(""), &[], &entries)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(archive)(e));
    }
    fs::rename(&tmp, archive).map_err(io_err(archive))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::tar::entries;
    use crate::image::tree::ImageTree;
    use std::collections::BTreeMap;
    use std::io::Read;
    use std::process::Command;

    const REF: &str = "localhost/buildit-test:1.0-p1";

    fn sha256(data: &[u8]) -> String {
        format!("sha256:{}", buildit_store::Hash::sha256(data).to_hex())
    }

    /// Two packages (one with a nested dir and an executable, one sharing `usr/`)
    /// and a synced config file.
    fn fixture(root: &Path) -> ImageTree {
        let a = root.join("pkg-a");
        fs::create_dir_all(a.join("usr/bin")).unwrap();
        fs::write(a.join("usr/bin/hello"), b"#!/bin/sh\necho hello\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(a.join("usr/bin/hello"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("hello", a.join("usr/bin/hi")).unwrap();
        let b = root.join("pkg-b");
        fs::create_dir_all(b.join("usr/share/b")).unwrap();
        fs::write(b.join("usr/share/b/data"), vec![7u8; 300_000]).unwrap();
        fs::create_dir_all(b.join("etc")).unwrap();
        fs::write(b.join("etc/b.conf"), b"default\n").unwrap();
        let s = root.join("sync.conf");
        fs::write(&s, b"mine\n").unwrap();

        let mut tree = ImageTree::new();
        tree.add_tree("aaaa-pkg-a-1.0", &a).unwrap();
        tree.add_tree("bbbb-pkg-b-2.0", &b).unwrap();
        tree.add_sync(&s, "/etc/b.conf", None, (0, 0), false)
            .unwrap();
        tree
    }

    fn layers(tree: &ImageTree) -> Vec<LayerSpec<'_>> {
        (0..tree.providers.len())
            .map(|p| LayerSpec {
                label: tree.providers[p].clone(),
                entries: entries(tree, Some(p)),
            })
            .collect()
    }

    fn config() -> ImageConfig {
        ImageConfig {
            entrypoint: Some(vec!["/usr/bin/hello".into()]),
            cmd: Some(vec!["--x".into()]),
            env: vec!["PATH=/usr/bin".into(), "A=b".into()],
            working_dir: Some("/".into()),
            user: Some("0:0".into()),
            exposed_ports: vec!["443/tcp".into(), "80/tcp".into(), "53/udp".into()],
            labels: [("z", "1"), ("a", "2"), ("m", "3")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            os: "linux".into(),
            architecture: "amd64".into(),
        }
    }

    fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.insert(
                        p.strip_prefix(dir).unwrap().to_path_buf(),
                        fs::read(&p).unwrap(),
                    );
                }
            }
        }
        out
    }

    fn blob(dir: &Path, digest: &str) -> Vec<u8> {
        fs::read(
            dir.join("blobs/sha256")
                .join(digest.strip_prefix("sha256:").unwrap()),
        )
        .unwrap()
    }

    #[test]
    fn layout_is_deterministic_and_digests_check() {
        let t = tempfile::tempdir().unwrap();
        let tree = fixture(t.path());
        let (d1, d2) = (t.path().join("out1"), t.path().join("out/2"));
        let w1 = write_layout(&d1, &layers(&tree), &config(), REF, Compression::Gzip).unwrap();
        let w2 = write_layout(&d2, &layers(&tree), &config(), REF, Compression::Gzip).unwrap();
        assert_eq!(w1, w2);
        let (f1, f2) = (files(&d1), files(&d2));
        assert_eq!(f1, f2);
        // oci-layout, index.json, config, manifest and three layers; no temp files.
        assert_eq!(f1.len(), 2 + 2 + 3, "{:?}", f1.keys().collect::<Vec<_>>());
        assert_eq!(
            f1[Path::new("oci-layout")],
            br#"{"imageLayoutVersion":"1.0.0"}"#
        );

        let manifest = blob(&d1, &w1.manifest_digest);
        assert_eq!(sha256(&manifest), w1.manifest_digest);
        let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
        assert_eq!(m["config"]["digest"], w1.config_digest.as_str());
        assert_eq!(
            m["layers"][1]["annotations"][ANNOTATION_PACKAGE],
            "bbbb-pkg-b-2.0"
        );
        assert_eq!(m["layers"][2]["annotations"][ANNOTATION_PACKAGE], "sync");

        let index: serde_json::Value =
            serde_json::from_slice(&f1[Path::new("index.json")]).unwrap();
        let desc = &index["manifests"][0];
        assert_eq!(desc["digest"], w1.manifest_digest.as_str());
        assert_eq!(desc["size"], manifest.len() as u64);
        assert_eq!(desc["annotations"][ANNOTATION_REF_NAME], REF);

        let cfg_bytes = blob(&d1, &w1.config_digest);
        assert_eq!(sha256(&cfg_bytes), w1.config_digest);
        let cfg_text = String::from_utf8(cfg_bytes.clone()).unwrap();
        // Sorted keys, whatever order the HashMaps inside oci-spec produced.
        assert!(
            cfg_text.contains(r#""ExposedPorts":{"443/tcp":{},"53/udp":{},"80/tcp":{}}"#),
            "{cfg_text}"
        );
        assert!(
            cfg_text.contains(r#""Labels":{"a":"2","m":"3","z":"1"}"#),
            "{cfg_text}"
        );
        let cfg: serde_json::Value = serde_json::from_slice(&cfg_bytes).unwrap();
        assert_eq!(cfg["created"], CREATED);
        assert_eq!(cfg["rootfs"]["type"], "layers");
        assert_eq!(cfg["config"]["Env"][0], "PATH=/usr/bin");
        assert_eq!(cfg["history"][0]["created_by"], "buildit: aaaa-pkg-a-1.0");
        assert_eq!(cfg["history"].as_array().unwrap().len(), 3);

        for (i, l) in w1.layers.iter().enumerate() {
            let b = blob(&d1, &l.digest);
            assert_eq!(sha256(&b), l.digest);
            assert_eq!(b.len() as u64, l.size);
            assert_eq!(l.media_type, "application/vnd.oci.image.layer.v1.tar+gzip");
            assert_eq!(m["layers"][i]["digest"], l.digest.as_str());
            let mut tar = Vec::new();
            flate2::read::GzDecoder::new(&b[..])
                .read_to_end(&mut tar)
                .unwrap();
            assert_eq!(sha256(&tar), l.diff_id);
            assert_eq!(cfg["rootfs"]["diff_ids"][i], l.diff_id.as_str());
        }

        // The synced file wins, in the last layer.
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&blob(&d1, &w1.layers[2].digest)[..])
            .read_to_end(&mut tar)
            .unwrap();
        let mut ar = ::tar::Archive::new(&tar[..]);
        let mut names = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_path_buf();
            if name == Path::new("etc/b.conf") {
                let mut s = String::new();
                e.read_to_string(&mut s).unwrap();
                assert_eq!(s, "mine\n");
                assert_eq!(e.header().mtime().unwrap(), 1);
            }
            names.push(name);
        }
        assert_eq!(names, [PathBuf::from("etc"), PathBuf::from("etc/b.conf")]);

        // An existing directory is refused and left alone.
        assert!(matches!(
            write_layout(&d1, &layers(&tree), &config(), REF, Compression::Gzip),
            Err(OciError::Exists(_))
        ));
        assert!(d1.join("index.json").exists());
    }

    #[test]
    fn zstd_and_uncompressed_layers_round_trip() {
        let t = tempfile::tempdir().unwrap();
        let tree = fixture(t.path());
        let z = write_layout(
            &t.path().join("z"),
            &layers(&tree),
            &config(),
            REF,
            Compression::Zstd,
        )
        .unwrap();
        let n = write_layout(
            &t.path().join("n"),
            &layers(&tree),
            &config(),
            REF,
            Compression::None,
        )
        .unwrap();
        for (lz, ln) in z.layers.iter().zip(&n.layers) {
            assert_eq!(lz.media_type, "application/vnd.oci.image.layer.v1.tar+zstd");
            assert_eq!(ln.media_type, "application/vnd.oci.image.layer.v1.tar");
            // Same tar, whatever the compression.
            assert_eq!(lz.diff_id, ln.diff_id);
            assert_eq!(ln.digest, ln.diff_id);
            let tar = zstd::decode_all(&blob(&t.path().join("z"), &lz.digest)[..]).unwrap();
            assert_eq!(sha256(&tar), lz.diff_id);
            assert_eq!(tar, blob(&t.path().join("n"), &ln.digest));
        }
        // Only the layer digests differ in the config's inputs: the diff_ids match.
        assert_eq!(z.config_digest, n.config_digest);
        assert_ne!(z.manifest_digest, n.manifest_digest);

        let e = write_layout(
            &t.path().join("x"),
            &layers(&tree),
            &config(),
            REF,
            Compression::Xz,
        );
        assert!(matches!(e, Err(OciError::Compression("xz"))));
        assert!(!t.path().join("x").exists());
    }

    #[test]
    fn merge_layers_joins_smallest_neighbours() {
        let node = |size: u64| Node {
            kind: Kind::File {
                src: PathBuf::from("/nonexistent"),
                size,
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
            provider: 0,
        };
        let dir = Node {
            kind: Kind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            provider: 0,
        };
        let paths: Vec<PathBuf> = ["d", "d/a", "d/b", "d/c", "d/e", "x"]
            .iter()
            .map(PathBuf::from)
            .collect();
        let nodes = [
            dir.clone(),
            node(100),
            node(5),
            node(7),
            node(1000),
            node(1),
        ];
        let spec = |label: &str, idx: &[usize]| LayerSpec {
            label: label.into(),
            entries: idx.iter().map(|&i| (&paths[i], &nodes[i])).collect(),
        };
        // Sizes 100, 5, 7, 1000 (+1): merging b+c (12) first, then a+(b+c) (112).
        let input = vec![
            spec("a", &[0, 1]),
            spec("b", &[0, 2]),
            spec("c", &[0, 3]),
            spec("e", &[0, 4, 5]),
        ];
        let all: std::collections::BTreeSet<_> = input
            .iter()
            .flat_map(|l| l.entries.iter().map(|e| e.0))
            .collect();

        let (same, n) = merge_layers(input.clone(), 4);
        assert_eq!(n, 0);
        assert_eq!(same.len(), 4);

        let (out, n) = merge_layers(input.clone(), 3);
        assert_eq!(n, 1);
        assert_eq!(
            out.iter().map(|l| l.label.as_str()).collect::<Vec<_>>(),
            ["a", "b + c", "e"]
        );
        let bc: Vec<_> = out[1]
            .entries
            .iter()
            .map(|e| e.0.to_str().unwrap())
            .collect();
        assert_eq!(bc, ["d", "d/b", "d/c"]);

        let (out, n) = merge_layers(input.clone(), 2);
        assert_eq!(n, 2);
        assert_eq!(
            out.iter().map(|l| l.label.as_str()).collect::<Vec<_>>(),
            ["a + b + c", "e"]
        );
        let kept: std::collections::BTreeSet<_> = out
            .iter()
            .flat_map(|l| l.entries.iter().map(|e| e.0))
            .collect();
        assert_eq!(kept, all);
        let abc: Vec<_> = out[0]
            .entries
            .iter()
            .map(|e| e.0.to_str().unwrap())
            .collect();
        assert_eq!(abc, ["d", "d/a", "d/b", "d/c"]);
        assert_eq!(out[0].file_size(), 112);

        // Ties go to the leftmost pair; a budget of 0 still leaves one layer.
        let ties = vec![spec("p", &[1]), spec("q", &[1]), spec("r", &[1])];
        let (out, _) = merge_layers(ties, 2);
        assert_eq!(out[0].label, "p + q");
        let (out, n) = merge_layers(input, 0);
        assert_eq!((out.len(), n), (1, 3));
        assert_eq!(out[0].entries.len(), paths.len());
    }

    #[test]
    fn archive_is_deterministic() {
        let t = tempfile::tempdir().unwrap();
        let tree = fixture(t.path());
        let l = t.path().join("layout");
        write_layout(&l, &layers(&tree), &config(), REF, Compression::Gzip).unwrap();
        let (a1, a2) = (t.path().join("a1.tar"), t.path().join("a2.tar"));
        write_archive(&l, &a1).unwrap();
        write_archive(&l, &a2).unwrap();
        let bytes = fs::read(&a1).unwrap();
        assert_eq!(bytes, fs::read(&a2).unwrap());
        let mut ar = ::tar::Archive::new(&bytes[..]);
        let mut names = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            assert_eq!(e.header().mtime().unwrap(), 1);
            assert_eq!(e.header().uid().unwrap(), 0);
            names.push(e.path().unwrap().to_string_lossy().into_owned());
        }
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(names[..2], ["blobs", "blobs/sha256"]);
        assert_eq!(names[names.len() - 2..], ["index.json", "oci-layout"]);
        assert_eq!(names.len(), 2 + 5 + 2);
    }

    fn run(cmd: &mut Command) -> Result<(), String> {
        let out = cmd.output().unwrap();
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "{cmd:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    /// umoci is the one validator that checks diff_ids; oci-image-tool checks
    /// digests, sizes, media types and schemas.
    #[test]
    fn validators_accept_layout() {
        let need =
            |tool| crate::test_skip::require_tool(tool, "scripts/image-tools.sh installs it");
        let (Some(umoci), Some(oit)) = (need("umoci"), need("oci-image-tool")) else {
            return;
        };
        let t = tempfile::tempdir().unwrap();
        let tree = fixture(t.path());
        for (name, c) in [
            ("gz", Compression::Gzip),
            ("zst", Compression::Zstd),
            ("raw", Compression::None),
        ] {
            let l = t.path().join(name);
            write_layout(&l, &layers(&tree), &config(), REF, c).unwrap();
            // Debian 12's validators predate zstd layers (umoci 0.4.7,
            // oci-image-tool 1.0.0-rc1): they refuse the media type and nothing else.
            let old_tool = |r: Result<(), String>| match r {
                Err(e) if c == Compression::Zstd && e.contains("+zstd") => true,
                r => {
                    r.unwrap();
                    false
                }
            };
            old_tool(run(Command::new(&oit)
                .args(["validate", "--type", "image", "--ref"])
                .arg(format!("name={REF}"))
                .arg(&l)));
            let bundle = t.path().join(format!("bundle-{name}"));
            let unpacked = run(Command::new(&umoci)
                .args(["unpack", "--rootless", "--image"])
                .arg(format!("{}:{REF}", l.display()))
                .arg(&bundle));
            if old_tool(unpacked) {
                continue;
            }
            let rootfs = bundle.join("rootfs");
            assert_eq!(
                fs::read(rootfs.join("usr/bin/hello")).unwrap(),
                b"#!/bin/sh\necho hello\n"
            );
            assert_eq!(
                fs::read_link(rootfs.join("usr/bin/hi")).unwrap(),
                Path::new("hello")
            );
            assert_eq!(fs::read(rootfs.join("etc/b.conf")).unwrap(), b"mine\n");
            assert_eq!(
                fs::metadata(rootfs.join("usr/share/b/data")).unwrap().len(),
                300_000
            );
        }
    }
}
