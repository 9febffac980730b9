//! `builtin:image`: an OCI layout (plus its `oci-archive`) or an ACI, from the
//! runtime closure of a container's packages over an image base, with synced
//! files on top. Everything that decides the image's bytes is in the env.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{builtin_drv, ContractError, EnvReader};
use crate::{Derivation, StorePath};

pub const BUILDER: &str = "builtin:image";

pub mod keys {
    /// `oci` or `aci`.
    pub const FORMAT: &str = "format";
    /// [`super::WRITER`].
    pub const WRITER: &str = "writer";
    /// `author/name-version`, for messages.
    pub const TITLE: &str = "title";
    /// JSON of [`super::ImageBase`].
    pub const BASE: &str = "base";
    /// JSON list of [`super::SyncEntry`].
    pub const SYNCS: &str = "syncs";
    pub const COMPRESSION: &str = "compression";
    /// Space-separated outputs of the container's own packages.
    pub const PACKAGES: &str = "packages";
    /// OCI: JSON of [`super::ImageConfig`].
    pub const CONFIG: &str = "config";
    /// OCI: the reference name.
    pub const REF_NAME: &str = "refName";
    /// OCI: layers before the smallest neighbours are merged.
    pub const MAX_LAYERS: &str = "maxLayers";
    /// ACI: the image manifest (the step's `content`).
    pub const MANIFEST: &str = "manifest";
    /// ACI: `single` or `per-package`.
    pub const LAYOUT: &str = "layout";
}

/// How `builtin:image` writes bytes (tar layout, compressors and their levels). It
/// is part of every image derivation, so that a buildit that writes different bytes
/// for the same inputs makes different paths instead of disagreeing with a cache.
/// Change it whenever the bytes of an image would change.
pub const WRITER: &str = "buildit-image-1 (gnu tar mtime 1; gzip zlib-rs 6; zstd 3; xz 6)";

/// Layers an OCI image may have before the smallest neighbours are merged (Docker
/// refuses more than 125).
pub const DEFAULT_MAX_LAYERS: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        }
    }

    pub fn parse(s: &str) -> Option<Compression> {
        [
            Compression::None,
            Compression::Gzip,
            Compression::Xz,
            Compression::Zstd,
        ]
        .into_iter()
        .find(|c| c.name() == s)
    }
}

/// What every image holds besides its packages: Debian 12's merged-usr links, the
/// directories runtimes and programs expect, and the users and groups base-passwd's
/// maintainer scripts would have made (they never run). Part of the derivation, so
/// changing it changes every image's path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageBase {
    /// Path (relative) → mode.
    pub dirs: BTreeMap<String, u32>,
    pub symlinks: BTreeMap<String, String>,
    /// Path → contents (mode 0644).
    pub files: BTreeMap<String, String>,
}

impl Default for ImageBase {
    fn default() -> Self {
        let dirs = [
            ("usr/bin", 0o755),
            ("usr/sbin", 0o755),
            ("usr/lib", 0o755),
            ("usr/lib64", 0o755),
            ("etc", 0o755),
            ("root", 0o700),
            ("tmp", 0o1777),
            ("var/tmp", 0o1777),
            ("run", 0o755),
            ("proc", 0o555),
            ("sys", 0o555),
            ("dev", 0o755),
        ];
        let links = crate::usrmerge::MERGED_USR_LINKS;
        let files = [
            (
                "etc/passwd",
                "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
            ),
            ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
            (
                "etc/nsswitch.conf",
                "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n",
            ),
        ];
        ImageBase {
            dirs: dirs.iter().map(|(p, m)| (p.to_string(), *m)).collect(),
            symlinks: links
                .iter()
                .map(|(p, t)| (p.to_string(), t.to_string()))
                .collect(),
            files: files
                .iter()
                .map(|(p, c)| (p.to_string(), c.to_string()))
                .collect(),
        }
    }
}

/// One `sync` step as the image builder reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncEntry {
    /// The file or tree, a store path.
    pub src: String,
    /// Absolute in the image.
    pub dest: String,
    pub recursive: bool,
    pub mode: Option<u32>,
    pub uid: u32,
    pub gid: u32,
}

/// The OCI image config's runtime part and platform: what the front end writes
/// into the derivation and what the OCI writer puts in the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// `K=V`, in order.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// `443/tcp`.
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// GOOS: `linux`.
    pub os: String,
    /// GOARCH: `amd64`, `arm64`, …
    pub architecture: String,
}

impl Default for ImageConfig {
    /// Nothing to run, for Linux on the host's architecture.
    fn default() -> Self {
        ImageConfig {
            entrypoint: None,
            cmd: None,
            env: Vec::new(),
            working_dir: None,
            user: None,
            exposed_ports: Vec::new(),
            labels: BTreeMap::new(),
            os: "linux".into(),
            architecture: host_goarch().into(),
        }
    }
}

/// The host's architecture as Go (and so OCI) names it.
pub fn host_goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AciLayout {
    Single,
    /// appc's "one image per package", joined by dependencies.
    PerPackage,
}

impl AciLayout {
    pub fn name(self) -> &'static str {
        match self {
            AciLayout::Single => "single",
            AciLayout::PerPackage => "per-package",
        }
    }
}

/// The format-specific part of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    Oci {
        config: Box<ImageConfig>,
        ref_name: String,
        max_layers: usize,
    },
    Aci {
        /// The manifest as the user wrote it (its bytes go into the image).
        manifest: String,
        layout: AciLayout,
    },
}

impl Format {
    pub fn name(&self) -> &'static str {
        match self {
            Format::Oci { .. } => "oci",
            Format::Aci { .. } => "aci",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub name: String,
    pub writer: String,
    pub title: String,
    pub base: ImageBase,
    pub syncs: Vec<SyncEntry>,
    pub compression: Compression,
    pub packages: Vec<StorePath>,
    pub format: Format,
}

impl Image {
    pub fn to_env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::from([
            (keys::FORMAT.into(), self.format.name().into()),
            (keys::WRITER.into(), self.writer.clone()),
            (keys::TITLE.into(), self.title.clone()),
            (
                keys::BASE.into(),
                serde_json::to_string(&self.base).expect("serialisable"),
            ),
            (
                keys::SYNCS.into(),
                serde_json::to_string(&self.syncs).expect("serialisable"),
            ),
            (keys::COMPRESSION.into(), self.compression.name().into()),
            (
                keys::PACKAGES.into(),
                self.packages
                    .iter()
                    .map(|p| p.to_absolute())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
        ]);
        match &self.format {
            Format::Oci {
                config,
                ref_name,
                max_layers,
            } => {
                env.insert(
                    keys::CONFIG.into(),
                    serde_json::to_string(config).expect("serialisable"),
                );
                env.insert(keys::REF_NAME.into(), ref_name.clone());
                env.insert(keys::MAX_LAYERS.into(), max_layers.to_string());
            }
            Format::Aci { manifest, layout } => {
                env.insert(keys::MANIFEST.into(), manifest.clone());
                env.insert(keys::LAYOUT.into(), layout.name().into());
            }
        }
        env
    }

    /// Without its inputs (the packages' `.drv`s and the synced sources), which the
    /// caller adds.
    pub fn to_derivation(&self) -> Derivation {
        builtin_drv(&self.name, BUILDER, self.to_env())
    }

    pub fn from_derivation(d: &Derivation) -> Result<Image, ContractError> {
        let r = EnvReader::new(d);
        let compression = r.str(keys::COMPRESSION)?;
        let compression = Compression::parse(compression).ok_or_else(|| {
            r.invalid(
                keys::COMPRESSION,
                format!("'{compression}' is not a compression (none, gzip, xz, zstd)"),
            )
        })?;
        let format = match r.str(keys::FORMAT)? {
            "oci" => {
                let max = r.str(keys::MAX_LAYERS)?;
                Format::Oci {
                    config: Box::new(r.json(keys::CONFIG)?),
                    ref_name: r.string(keys::REF_NAME)?,
                    max_layers: max.parse().map_err(|e| r.invalid(keys::MAX_LAYERS, e))?,
                }
            }
            "aci" => Format::Aci {
                manifest: r.string(keys::MANIFEST)?,
                layout: match r.str(keys::LAYOUT)? {
                    "per-package" => AciLayout::PerPackage,
                    // As before the contract was typed: anything else is one image.
                    _ => AciLayout::Single,
                },
            },
            other => return Err(r.invalid(keys::FORMAT, format!("unknown format '{other}'"))),
        };
        Ok(Image {
            name: r.name(),
            writer: r.opt(keys::WRITER).unwrap_or_default().to_string(),
            title: r.opt(keys::TITLE).unwrap_or_default().to_string(),
            base: r.json(keys::BASE)?,
            syncs: r.json(keys::SYNCS)?,
            compression,
            packages: r.paths(keys::PACKAGES)?,
            format,
        })
    }
}
