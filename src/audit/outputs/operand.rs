//! What an operand is (directory, NAR, image of some format), and turning it into
//! trees to compare: NARs restored, image layers unpacked into temporary
//! directories, one layer pair at a time.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use super::content::json_diff;
use super::read_full;
use super::tree::{diff_trees, TreeDiff};
use super::{invalid, io_at, DiffOptions, OutputDiff, OutputDiffError, PartChange, PartDiff};
use crate::codec::{sniffed_decoder, Codec};
use crate::image::layout::{Layout, MAX_DOCUMENT};

const NAR_MAGIC: &[u8] = b"\x0d\0\0\0\0\0\0\0nix-archive-1";

/// Tar headers looked at in a compressed file to tell an ACI (its `manifest` comes
/// first) from any other tarball; plain tars are scanned fully, by seeking.
const SNIFF_ENTRIES: usize = 64;

/// The annotation buildit puts on each OCI layer: the packages it holds.
const ANNOTATION_PACKAGE: &str = crate::image::oci::ANNOTATION_PACKAGE;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    /// A directory, regular file or symlink, compared as a tree (a store path).
    Dir(PathBuf),
    /// A NAR file.
    Nar(PathBuf),
    /// An OCI image layout directory (`index.json` and `oci-layout`).
    OciLayout(PathBuf),
    /// A tar of an OCI image layout.
    OciArchive(PathBuf),
    /// An appc image: a tar (plain, gzip, xz or zstd) of `manifest` and `rootfs/`.
    Aci(PathBuf),
    /// A `builtin:image` output directory holding `oci/` and/or `*.aci` files.
    ImageOutput(PathBuf),
}

impl Operand {
    pub fn path(&self) -> &Path {
        match self {
            Operand::Dir(p)
            | Operand::Nar(p)
            | Operand::OciLayout(p)
            | Operand::OciArchive(p)
            | Operand::Aci(p)
            | Operand::ImageOutput(p) => p,
        }
    }

    fn is_image(&self) -> bool {
        !matches!(self, Operand::Dir(_) | Operand::Nar(_))
    }
}

/// Tell what `path` is by looking at it (not at its name).
pub fn classify(path: &Path) -> Result<Operand, OutputDiffError> {
    let md = fs::symlink_metadata(path).map_err(io_at(path))?;
    let p = path.to_path_buf();
    if md.is_dir() {
        if path.join("index.json").is_file() && path.join("oci-layout").is_file() {
            return Ok(Operand::OciLayout(p));
        }
        if path.join("oci/index.json").is_file() || !image_files(path)?.is_empty() {
            return Ok(Operand::ImageOutput(p));
        }
        return Ok(Operand::Dir(p));
    }
    if !md.is_file() {
        return Ok(Operand::Dir(p));
    }
    let mut head = [0u8; 512];
    let n =
        read_full(&mut File::open(path).map_err(io_at(path))?, &mut head).map_err(io_at(path))?;
    let head = &head[..n];
    if head.starts_with(NAR_MAGIC) {
        return Ok(Operand::Nar(p));
    }
    // A file that is not a readable tar is just a file.
    Ok(match sniff_tar(path, head) {
        Ok(Some(TarKind::OciArchive)) => Operand::OciArchive(p),
        Ok(Some(TarKind::Aci)) => Operand::Aci(p),
        _ => Operand::Dir(p),
    })
}

enum TarKind {
    OciArchive,
    Aci,
}

fn sniff_tar(path: &Path, head: &[u8]) -> io::Result<Option<TarKind>> {
    let file = File::open(path)?;
    let (mut index, mut layout, mut manifest, mut rootfs) = (false, false, false, false);
    let mut note = |name: &Path| {
        let s = name.to_string_lossy();
        let s = s.trim_start_matches("./").trim_end_matches('/');
        match s {
            "index.json" => index = true,
            "oci-layout" => layout = true,
            "manifest" => manifest = true,
            _ if s == "rootfs" || s.starts_with("rootfs/") => rootfs = true,
            _ => {}
        }
    };
    let codec = Codec::sniff(head);
    if codec != Codec::None {
        let mut ar = tar::Archive::new(codec.decoder(BufReader::new(file))?);
        for e in ar.entries()?.take(SNIFF_ENTRIES) {
            note(&e?.path()?);
        }
    } else if super::archive::is_tar(head) {
        let mut ar = tar::Archive::new(file);
        for e in ar.entries_with_seek()? {
            note(&e?.path()?);
        }
    } else {
        return Ok(None);
    }
    Ok(if index && layout {
        Some(TarKind::OciArchive)
    } else if manifest && rootfs {
        Some(TarKind::Aci)
    } else {
        None
    })
}

/// Top-level files of an image output directory that are images themselves.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>, OutputDiffError> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(io_at(dir))? {
        let p = e.map_err(io_at(dir))?.path();
        let is_file = fs::symlink_metadata(&p).is_ok_and(|m| m.is_file());
        if is_file && p.extension().is_some_and(|x| x == "aci" || x == "tar") {
            let mut head = [0u8; 512];
            let n =
                read_full(&mut File::open(&p).map_err(io_at(&p))?, &mut head).map_err(io_at(&p))?;
            if let Ok(Some(_)) = sniff_tar(&p, &head[..n]) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A temporary directory removed on drop even when unpacked modes made parts of it
/// read-only. (tempfile is only a dev-dependency; this is all that is needed.)
pub(crate) struct Scratch(PathBuf);

impl Scratch {
    pub(crate) fn new() -> Result<Scratch, OutputDiffError> {
        use std::os::unix::fs::DirBuilderExt;
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let tmp = std::env::temp_dir();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let p = tmp.join(format!("buildit-diff-{}-{n}-{nanos:x}", std::process::id()));
            // Exclusive creation: a name someone else holds is skipped, never reused.
            match fs::DirBuilder::new().mode(0o700).create(&p) {
                Ok(()) => return Ok(Scratch(p)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_at(&tmp)(e)),
            }
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        make_writable(&self.0);
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn make_writable(dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(md) = fs::symlink_metadata(&d) {
            if md.is_dir() {
                let _ = fs::set_permissions(&d, fs::Permissions::from_mode(0o700));
                if let Ok(rd) = fs::read_dir(&d) {
                    stack.extend(rd.flatten().map(|e| e.path()));
                }
            }
        }
    }
}

/// Unpack a tar stream into `dest` (an existing directory): modes and symlinks
/// kept, ownership not applied, hard links made as links within `dest`; devices
/// and fifos skipped (an unprivileged process cannot create them). A member that
/// would land outside `dest` is an error, not skipped: the operand is suspect.
pub(crate) fn unpack_tar(r: impl Read, dest: &Path, origin: &Path) -> Result<(), OutputDiffError> {
    let mut dirs = DirModes::new();
    unpack_tar_into(r, dest, origin, &mut dirs)?;
    set_dir_modes(dirs)
}

/// Directories unpacked so far and the modes they get once nothing more is
/// written into them (the last layer to name a directory decides).
type DirModes = std::collections::BTreeMap<PathBuf, u32>;

fn set_dir_modes(dirs: DirModes) -> Result<(), OutputDiffError> {
    // Children first: a parent made read-only must not stop anything after it.
    for (d, mode) in dirs.into_iter().rev() {
        fs::set_permissions(&d, fs::Permissions::from_mode(mode)).map_err(io_at(&d))?;
    }
    Ok(())
}

/// [`unpack_tar`], leaving directories writable and their modes in `dirs`, so
/// that more layers can be unpacked on top.
fn unpack_tar_into(
    r: impl Read,
    dest: &Path,
    origin: &Path,
    dirs: &mut DirModes,
) -> Result<(), OutputDiffError> {
    let mut ar = tar::Archive::new(r);
    ar.set_preserve_ownerships(false);
    ar.set_overwrite(true);
    for e in ar.entries().map_err(io_at(origin))? {
        let mut e = e.map_err(io_at(origin))?;
        let path = e.path().map_err(io_at(origin))?.into_owned();
        let unsafe_path = path.is_absolute()
            || path
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
        let link_escapes = e.header().entry_type() == tar::EntryType::Link
            && e.link_name().ok().flatten().is_some_and(|l| {
                l.is_absolute() || l.components().any(|c| matches!(c, Component::ParentDir))
            });
        if unsafe_path || link_escapes {
            return Err(OutputDiffError::UnsafePath {
                path: origin.to_path_buf(),
                member: path.display().to_string(),
            });
        }
        match e.header().entry_type() {
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => continue,
            tar::EntryType::Directory => {
                // Created writable now, given their modes last: a 0555 directory
                // must still receive its files.
                let d = dest.join(&path);
                fs::create_dir_all(&d).map_err(io_at(&d))?;
                dirs.insert(d, e.header().mode().unwrap_or(0o755) & 0o7777);
                continue;
            }
            _ => {}
        }
        // Symlinks in earlier members are not followed: unpack_in checks each
        // parent stays inside dest.
        if !e.unpack_in(dest).map_err(io_at(origin))? {
            return Err(OutputDiffError::UnsafePath {
                path: origin.to_path_buf(),
                member: path.display().to_string(),
            });
        }
    }
    Ok(())
}

/// A tree to compare, with the scratch space it lives in (if any).
struct Tree {
    root: PathBuf,
    _scratch: Option<Scratch>,
}

fn materialise_tree(op: &Operand) -> Result<Tree, OutputDiffError> {
    match op {
        Operand::Nar(p) => {
            let s = Scratch::new()?;
            let root = s.path().join("root");
            let mut f = BufReader::with_capacity(1 << 20, File::open(p).map_err(io_at(p))?);
            buildit_store::nar::restore(&mut f, &root).map_err(|source| OutputDiffError::Nar {
                path: p.clone(),
                source,
            })?;
            Ok(Tree {
                root,
                _scratch: Some(s),
            })
        }
        other => Ok(Tree {
            root: other.path().to_path_buf(),
            _scratch: None,
        }),
    }
}

/// Compare two operands: images per layer when both are images, otherwise as trees.
pub(crate) fn diff_operands(
    a: &Operand,
    b: &Operand,
    opts: &DiffOptions,
) -> Result<OutputDiff, OutputDiffError> {
    if a.is_image() && b.is_image() {
        let (ia, ib) = (images_of(a)?, images_of(b)?);
        let mut parts = Vec::new();
        if ia.len() == 1 && ib.len() == 1 {
            parts.extend(diff_images(&ia[0], &ib[0], "", opts)?);
        } else {
            let mut used = vec![false; ib.len()];
            for x in &ia {
                match ib.iter().position(|y| y.label == x.label) {
                    Some(j) => {
                        used[j] = true;
                        parts.extend(diff_images(x, &ib[j], &format!("{}: ", x.label), opts)?);
                    }
                    None => parts.push(PartDiff {
                        name: x.label.clone(),
                        change: PartChange::Removed { entries: 0 },
                    }),
                }
            }
            for (j, y) in ib.iter().enumerate() {
                if !used[j] {
                    parts.push(PartDiff {
                        name: y.label.clone(),
                        change: PartChange::Added { entries: 0 },
                    });
                }
            }
        }
        return Ok(OutputDiff { parts });
    }
    // An image against anything else: compare what is there, as files.
    let as_tree = |o: &Operand| {
        if o.is_image() {
            Operand::Dir(o.path().to_path_buf())
        } else {
            o.clone()
        }
    };
    let (ta, tb) = (
        materialise_tree(&as_tree(a))?,
        materialise_tree(&as_tree(b))?,
    );
    let diff = diff_trees(&ta.root, &tb.root, opts)?;
    Ok(OutputDiff {
        parts: vec![PartDiff {
            name: String::new(),
            change: PartChange::Tree { diff },
        }],
    })
}

/// One image: its JSON documents and its layers (not unpacked yet).
struct Image {
    /// "oci", or the file name of an ACI / oci-archive in an image output.
    label: String,
    docs: Vec<(String, Value)>,
    layers: Vec<Layer>,
    _scratch: Option<Scratch>,
}

impl Image {
    /// An ACI has its one rootfs, already unpacked; an OCI image has blobs.
    fn is_aci(&self) -> bool {
        self.layers
            .iter()
            .all(|l| matches!(l.source, LayerSource::Dir(_)))
    }

    fn kind(&self) -> &'static str {
        if self.is_aci() {
            "ACI rootfs"
        } else {
            "OCI layers applied in order"
        }
    }
}

struct Layer {
    /// Pairs layers across images: the package label without store hashes.
    key: String,
    /// Digest of the blob; equal digests mean equal layers, unread.
    digest: Option<String>,
    source: LayerSource,
}

enum LayerSource {
    /// An OCI blob (a tar, maybe compressed).
    Blob(Box<BlobRef>),
    /// Already unpacked (an ACI's rootfs).
    Dir(PathBuf),
}

fn images_of(op: &Operand) -> Result<Vec<Image>, OutputDiffError> {
    Ok(match op {
        Operand::OciLayout(p) => vec![oci_image(p, "oci".into(), None)?],
        Operand::OciArchive(p) => vec![oci_archive(p)?],
        Operand::Aci(p) => vec![aci_image(p)?],
        Operand::ImageOutput(dir) => {
            let mut out = Vec::new();
            let oci = dir.join("oci");
            if fs::symlink_metadata(&oci).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(invalid(&oci, "a symlink: an image is read inside itself"));
            }
            if dir.join("oci/index.json").is_file() {
                out.push(oci_image(&dir.join("oci"), "oci".into(), None)?);
            }
            for f in image_files(dir)? {
                out.push(match classify(&f)? {
                    Operand::OciArchive(p) => oci_archive(&p)?,
                    _ => aci_image(&f)?,
                });
            }
            out
        }
        Operand::Dir(p) | Operand::Nar(p) => return Err(invalid(p, "not an image")),
    })
}

fn file_label(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// A JSON document of an unpacked image, at most [`MAX_DOCUMENT`] bytes.
fn read_json(path: &Path) -> Result<Value, OutputDiffError> {
    let f = File::open(path).map_err(io_at(path))?;
    let mut bytes = Vec::new();
    f.take(MAX_DOCUMENT + 1)
        .read_to_end(&mut bytes)
        .map_err(io_at(path))?;
    if bytes.len() as u64 > MAX_DOCUMENT {
        return Err(invalid(path, format!("larger than {MAX_DOCUMENT} bytes")));
    }
    serde_json::from_slice(&bytes).map_err(|e| invalid(path, e))
}

fn oci_archive(p: &Path) -> Result<Image, OutputDiffError> {
    let s = Scratch::new()?;
    let f = BufReader::with_capacity(1 << 20, File::open(p).map_err(io_at(p))?);
    unpack_tar(f, s.path(), p)?;
    let root = s.path().to_path_buf();
    oci_image(&root, file_label(p), Some(s))
}

fn oci_image(
    layout: &Path,
    label: String,
    scratch: Option<Scratch>,
) -> Result<Image, OutputDiffError> {
    // By digest and inside the layout, as `image inspect` reads: the operands of a
    // diff are as untrusted as any image.
    let reader = Layout::open_dir(layout)?;
    let image = reader.first_image()?;
    let (_, config) = reader.config(&image.manifest)?;
    let as_value = |name: &str, bytes: &[u8]| {
        serde_json::from_slice::<Value>(bytes).map_err(|e| invalid(&layout.join(name), e))
    };
    let mut docs = vec![("image config".to_string(), as_value("config", &config)?)];
    let mut layers = Vec::new();
    for (i, l) in image.manifest.layers().iter().enumerate() {
        let key = match l
            .annotations()
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_PACKAGE))
        {
            Some(pkg) => strip_hashes(pkg),
            None => format!("#{}", i + 1),
        };
        layers.push(Layer {
            key,
            digest: Some(l.digest().to_string()),
            source: LayerSource::Blob(Box::new(BlobRef {
                layout: layout.to_path_buf(),
                desc: l.clone(),
            })),
        });
    }
    docs.push((
        "manifest".to_string(),
        as_value("manifest", &image.manifest_bytes)?,
    ));
    Ok(Image {
        label,
        docs,
        layers,
        _scratch: scratch,
    })
}

fn aci_image(p: &Path) -> Result<Image, OutputDiffError> {
    let s = Scratch::new()?;
    let f = BufReader::with_capacity(1 << 20, File::open(p).map_err(io_at(p))?);
    let (_, tar) = sniffed_decoder(f).map_err(io_at(p))?;
    unpack_tar(tar, s.path(), p)?;
    let manifest = read_json(&s.path().join("manifest"))?;
    let rootfs = s.path().join("rootfs");
    if !rootfs.is_dir() {
        fs::create_dir(&rootfs).map_err(io_at(&rootfs))?;
    }
    Ok(Image {
        label: file_label(p),
        docs: vec![("ACI manifest".to_string(), manifest)],
        layers: vec![Layer {
            key: "rootfs".into(),
            digest: None,
            source: LayerSource::Dir(rootfs),
        }],
        _scratch: Some(s),
    })
}

/// "0123…xyz-nginx-1.22.1 + sync" → "nginx-1.22.1 + sync": a rebuilt package keeps
/// its name but not its hash, and must still pair with its old layer.
pub(crate) fn strip_hashes(label: &str) -> String {
    label
        .split(" + ")
        .map(|part| {
            let b = part.as_bytes();
            if b.len() > 33
                && b[32] == b'-'
                && b[..32]
                    .iter()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
            {
                &part[33..]
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join(" + ")
}

fn layer_name(key: &str) -> String {
    if key == "sync" {
        "layer files (sync)".into()
    } else {
        format!("layer {key}")
    }
}

/// Layers paired by key (and occurrence), in the first image's order, then those
/// only in the second; then the documents.
fn diff_images(
    a: &Image,
    b: &Image,
    prefix: &str,
    opts: &DiffOptions,
) -> Result<Vec<PartDiff>, OutputDiffError> {
    let keys = |img: &Image| {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        img.layers
            .iter()
            .map(|l| {
                let n = seen.entry(l.key.as_str()).or_default();
                *n += 1;
                (l.key.clone(), *n)
            })
            .collect::<Vec<_>>()
    };
    if a.is_aci() != b.is_aci() {
        return diff_flattened(a, b, prefix, opts);
    }
    let (ka, kb) = (keys(a), keys(b));
    let mut used = vec![false; kb.len()];
    let mut parts = Vec::new();
    let name = |k: &(String, usize)| {
        let base = layer_name(&k.0);
        if k.1 > 1 {
            format!("{prefix}{base} #{}", k.1)
        } else {
            format!("{prefix}{base}")
        }
    };
    for (i, k) in ka.iter().enumerate() {
        let la = &a.layers[i];
        let change = match kb.iter().position(|x| x == k) {
            Some(j) => {
                used[j] = true;
                let lb = &b.layers[j];
                let diff = if la.digest.is_some() && la.digest == lb.digest {
                    TreeDiff::default()
                } else {
                    diff_layers(la, lb, opts)?
                };
                PartChange::Tree { diff }
            }
            None => PartChange::Removed {
                entries: count_layer(la)?,
            },
        };
        parts.push(PartDiff {
            name: name(k),
            change,
        });
    }
    for (j, k) in kb.iter().enumerate() {
        if !used[j] {
            parts.push(PartDiff {
                name: name(k),
                change: PartChange::Added {
                    entries: count_layer(&b.layers[j])?,
                },
            });
        }
    }
    for (dname, da) in &a.docs {
        let name = format!("{prefix}{dname}");
        match b.docs.iter().find(|(n, _)| n == dname) {
            Some((_, db)) => parts.push(PartDiff {
                name,
                change: PartChange::Document {
                    diff: json_diff(da, db, opts),
                },
            }),
            None => parts.push(PartDiff {
                name,
                change: PartChange::Removed { entries: 0 },
            }),
        }
    }
    for (dname, _) in &b.docs {
        if !a.docs.iter().any(|(n, _)| n == dname) {
            parts.push(PartDiff {
                name: format!("{prefix}{dname}"),
                change: PartChange::Added { entries: 0 },
            });
        }
    }
    Ok(parts)
}

/// An ACI against an OCI image: their layers cannot pair, so the file systems
/// they make are compared (the ACI's rootfs, the OCI layers applied in order),
/// then their documents, each only on its side.
fn diff_flattened(
    a: &Image,
    b: &Image,
    prefix: &str,
    opts: &DiffOptions,
) -> Result<Vec<PartDiff>, OutputDiffError> {
    let (ra, _sa) = flat_root(a)?;
    let (rb, _sb) = flat_root(b)?;
    let mut parts = vec![PartDiff {
        name: format!("{prefix}file system ({} vs {})", a.kind(), b.kind()),
        change: PartChange::Tree {
            diff: diff_trees(&ra, &rb, opts)?,
        },
    }];
    for (dname, _) in &a.docs {
        parts.push(PartDiff {
            name: format!("{prefix}{dname}"),
            change: PartChange::Removed { entries: 0 },
        });
    }
    for (dname, _) in &b.docs {
        parts.push(PartDiff {
            name: format!("{prefix}{dname}"),
            change: PartChange::Added { entries: 0 },
        });
    }
    Ok(parts)
}

/// The file system an image makes: one layer as it is, several applied in order
/// into scratch space, whiteouts (`.wh.NAME`) removing what lower layers put
/// there. An opaque-directory marker is left in place, so it shows in the diff.
fn flat_root(img: &Image) -> Result<(PathBuf, Option<Scratch>), OutputDiffError> {
    if let [one] = img.layers.as_slice() {
        return layer_root(one);
    }
    let s = Scratch::new()?;
    let mut dirs = DirModes::new();
    for l in &img.layers {
        match &l.source {
            LayerSource::Blob(b) => with_blob(b, |r, origin| {
                unpack_tar_into(r, s.path(), origin, &mut dirs)
            })?,
            LayerSource::Dir(d) => return Err(invalid(d, "an unpacked layer among several")),
        }
        apply_whiteouts(s.path())?;
    }
    // What a whiteout removed has no mode to set.
    dirs.retain(|d, _| d.is_dir());
    set_dir_modes(dirs)?;
    Ok((s.path().to_path_buf(), Some(s)))
}

fn apply_whiteouts(root: &Path) -> Result<(), OutputDiffError> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut names = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_at(&dir))? {
            names.push(e.map_err(io_at(&dir))?.file_name());
        }
        // Whiteouts first: what they hide is not walked.
        for name in &names {
            let name = name.to_string_lossy();
            let Some(hidden) = name.strip_prefix(".wh.") else {
                continue;
            };
            if hidden.starts_with(".wh.") {
                continue;
            }
            let target = dir.join(hidden);
            if let Ok(md) = fs::symlink_metadata(&target) {
                if md.is_dir() {
                    make_writable(&target);
                    fs::remove_dir_all(&target).map_err(io_at(&target))?;
                } else {
                    fs::remove_file(&target).map_err(io_at(&target))?;
                }
            }
            let marker = dir.join(name.as_ref());
            fs::remove_file(&marker).map_err(io_at(&marker))?;
        }
        for name in names {
            let path = dir.join(name);
            if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                stack.push(path);
            }
        }
    }
    Ok(())
}

/// Unpack (if needed) both layers and compare them; the scratch space goes as soon
/// as the pair is done.
fn diff_layers(a: &Layer, b: &Layer, opts: &DiffOptions) -> Result<TreeDiff, OutputDiffError> {
    let (ra, _sa) = layer_root(a)?;
    let (rb, _sb) = layer_root(b)?;
    diff_trees(&ra, &rb, opts)
}

fn layer_root(l: &Layer) -> Result<(PathBuf, Option<Scratch>), OutputDiffError> {
    match &l.source {
        LayerSource::Dir(d) => Ok((d.clone(), None)),
        LayerSource::Blob(b) => {
            let s = Scratch::new()?;
            with_blob(b, |r, origin| unpack_tar(r, s.path(), origin))?;
            Ok((s.path().to_path_buf(), Some(s)))
        }
    }
}

/// A layer blob of an OCI layout, read through [`Layout::open_blob`].
struct BlobRef {
    layout: PathBuf,
    desc: oci_spec::image::Descriptor,
}

/// Run `f` on a blob's tar stream, decompressed by its magic (the media type can
/// lie), its size and digest checked to the last byte: `f`'s result counts only
/// for a blob that matches its descriptor.
fn with_blob<T>(
    b: &BlobRef,
    f: impl FnOnce(&mut dyn Read, &Path) -> Result<T, OutputDiffError>,
) -> Result<T, OutputDiffError> {
    let layout = Layout::open_dir(&b.layout)?;
    let mut blob = layout.open_blob(&b.desc)?;
    let origin = b.layout.join(blob.name());
    let result = {
        let r = BufReader::with_capacity(1 << 20, &mut blob);
        match sniffed_decoder(r) {
            Ok((_, mut d)) => f(&mut d, &origin),
            Err(e) => Err(io_at(&origin)(e)),
        }
    };
    match result {
        // What `f` failed on may be the mismatch the blob found.
        Err(e) => Err(blob.take_failure().map(Into::into).unwrap_or(e)),
        Ok(v) => {
            blob.finish()?;
            Ok(v)
        }
    }
}

fn count_layer(l: &Layer) -> Result<usize, OutputDiffError> {
    match &l.source {
        LayerSource::Dir(d) => Ok(fs::read_dir(d).map_err(io_at(d))?.count()),
        LayerSource::Blob(b) => with_blob(b, |r, origin| {
            let mut ar = tar::Archive::new(r);
            let mut n = 0;
            for e in ar.entries().map_err(io_at(origin))? {
                e.map_err(io_at(origin))?;
                n += 1;
            }
            Ok(n)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::outputs::{diff, EntryChange};

    /// Tests that make scratch space run one at a time: one of them counts what
    /// is left in the temp dir.
    static SCRATCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn scratch_lock() -> std::sync::MutexGuard<'static, ()> {
        SCRATCH.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[test]
    fn nar_operands_are_restored_and_compared() {
        let _one_at_a_time = scratch_lock();
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        for (root, v) in [(&a, "1"), (&b, "2")] {
            fs::create_dir_all(root.join("share")).unwrap();
            fs::write(root.join("share/version"), v).unwrap();
            fs::write(root.join("same"), "x").unwrap();
        }
        let nar = |root: &Path, name: &str| {
            let p = t.path().join(name);
            let mut f = File::create(&p).unwrap();
            buildit_store::nar::dump_path(root, &mut f).unwrap();
            p
        };
        let (na, nb) = (nar(&a, "a.nar"), nar(&b, "b.nar"));
        assert_eq!(classify(&na).unwrap(), Operand::Nar(na.clone()));
        assert_eq!(classify(&a).unwrap(), Operand::Dir(a.clone()));
        // A NAR against its own tree: nothing differs.
        let d = diff(&na, &a, &Default::default()).unwrap();
        assert!(d.is_empty(), "{d}");
        assert_eq!(d.to_string(), "no differences\n");
        let d = diff(&na, &nb, &Default::default()).unwrap();
        let PartChange::Tree { diff: tree } = &d.parts[0].change else {
            panic!()
        };
        assert_eq!(tree.entries.len(), 1);
        assert_eq!(tree.entries[0].path, "share/version");
        assert!(matches!(
            tree.entries[0].change,
            EntryChange::Changed { .. }
        ));
        assert!(
            d.to_string()
                .starts_with("1 changed\nchanged share/version: content (text, line 1)\n"),
            "{d}"
        );
        // Scratch space is cleaned up.
        let left = fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("buildit-diff-{}-", std::process::id()))
            })
            .count();
        assert_eq!(left, 0);
    }

    #[test]
    fn unsafe_member_paths_are_refused() {
        let _one_at_a_time = scratch_lock();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // The tar crate refuses to write '..' via set_path; write the name raw.
        h.as_old_mut().name[..9].copy_from_slice(b"../escape");
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        let data = b.into_inner().unwrap();
        let s = Scratch::new().unwrap();
        let e = unpack_tar(&data[..], s.path(), Path::new("layer.tar")).unwrap_err();
        assert!(matches!(e, OutputDiffError::UnsafePath { .. }), "{e}");
        assert!(!s.path().parent().unwrap().join("escape").exists());
    }

    #[test]
    fn aci_operands_compare_rootfs_and_manifest() {
        let _one_at_a_time = scratch_lock();
        let t = tempfile::tempdir().unwrap();
        let aci = |name: &str, conf: &[u8], label: &str| {
            let mut b = tar::Builder::new(Vec::new());
            let manifest = format!("{{\"acKind\":\"ImageManifest\",\"name\":\"x\",\"labels\":[{{\"name\":\"version\",\"value\":\"{label}\"}}]}}");
            for (path, data, mode) in [
                ("manifest", manifest.as_bytes(), 0o644),
                ("rootfs/etc/app.conf", conf, 0o644),
                ("rootfs/bin/tool", &b"\x7fELF not really"[..], 0o755),
            ] {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(mode);
                h.set_cksum();
                b.append_data(&mut h, path, data).unwrap();
            }
            let tar = b.into_inner().unwrap();
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut gz, &tar).unwrap();
            let p = t.path().join(name);
            fs::write(&p, gz.finish().unwrap()).unwrap();
            p
        };
        let a = aci("a.aci", b"port 80\nuser www\n", "1");
        let b = aci("b.aci", b"port 81\nuser www\n", "2");
        assert_eq!(classify(&a).unwrap(), Operand::Aci(a.clone()));
        let d = diff(&a, &b, &Default::default()).unwrap();
        let names: Vec<&str> = d.parts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["layer rootfs", "ACI manifest"]);
        let text = d.to_string();
        assert!(
            text.contains(
                "layer rootfs: 1 changed\n  changed etc/app.conf: content (text, line 1)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("ACI manifest: changed (text, line "),
            "{text}"
        );
        // An image output directory holding that ACI pairs with another by file name.
        let (oa, ob) = (t.path().join("out-a"), t.path().join("out-b"));
        fs::create_dir(&oa).unwrap();
        fs::create_dir(&ob).unwrap();
        fs::copy(&a, oa.join("img.aci")).unwrap();
        fs::copy(&a, ob.join("img.aci")).unwrap();
        assert_eq!(classify(&oa).unwrap(), Operand::ImageOutput(oa.clone()));
        let d = diff(&oa, &ob, &Default::default()).unwrap();
        assert!(d.is_empty(), "{d}");
    }

    #[test]
    fn whiteouts_remove_what_lower_layers_put_there() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("etc/old.d")).unwrap();
        fs::write(r.join("etc/old.d/x"), "x").unwrap();
        fs::write(r.join("etc/gone"), "g").unwrap();
        fs::write(r.join("etc/kept"), "k").unwrap();
        fs::write(r.join("etc/.wh.gone"), "").unwrap();
        fs::write(r.join("etc/.wh.old.d"), "").unwrap();
        fs::write(r.join("etc/.wh..wh..opq"), "").unwrap();
        apply_whiteouts(r).unwrap();
        let mut left: Vec<String> = fs::read_dir(r.join("etc"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".wh..wh..opq", "kept"]);
    }

    #[test]
    fn store_hashes_are_stripped_for_pairing() {
        assert_eq!(
            strip_hashes("0123456789abcdfghijklmnpqrsvwxyz-nginx-1.22.1 + sync"),
            "nginx-1.22.1 + sync"
        );
        assert_eq!(strip_hashes("image base"), "image base");
    }
}
