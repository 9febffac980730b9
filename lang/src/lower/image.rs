//! Lowering `image` steps: one `builtin:image` derivation per step, whose inputs
//! are the container's packages (their runtime closures come with them as
//! references), the synced files (added to the store as sources) and everything
//! that decides the image's bytes, carried in its environment: the base, the
//! manifest or config, the compression, the reference name.

use std::collections::BTreeMap;

use buildit_store::{Derivation, DerivationOutput, FileIngestion, HashAlgo, LocalStore, StorePath};
use serde::{Deserialize, Serialize};

use super::plan::PlannedPackage;
use crate::lower::debian::{store_name, DrvSet, BUILTIN_SYSTEM};
use crate::model::container::{Compression, IdOrName, ImageFormat, ImageStep, Layout, OciConfig};
use crate::model::{Located, Spec, Step};
use crate::yaml::SpecError;

pub const IMAGE: &str = "builtin:image";

/// How `builtin:image` writes bytes (tar layout, compressors and their levels). It
/// is part of every image derivation, so that a buildit that writes different bytes
/// for the same inputs makes different paths instead of disagreeing with a cache.
/// Change it whenever the bytes of an image would change.
pub const IMAGE_WRITER: &str = "buildit-image-1 (gnu tar mtime 1; gzip zlib-rs 6; zstd 3; xz 6)";

/// Layers an OCI image may have before the smallest neighbours are merged (Docker
/// refuses more than 125).
pub const DEFAULT_MAX_LAYERS: usize = 100;

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
        let links = buildit_store::usrmerge::MERGED_USR_LINKS;
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

/// The users and groups of [`ImageBase`], for `owner:` names.
fn base_id(name: &str) -> Option<u32> {
    match name {
        "root" => Some(0),
        "nobody" | "nogroup" => Some(65534),
        _ => None,
    }
}

/// One `sync` step as the image builder reads it (env `syncs`, a JSON array).
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

/// The OCI config (env `config`, JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciImageConfig {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub os: String,
    pub architecture: String,
}

/// One image of the plan.
#[derive(Debug, Clone)]
pub struct PlannedImage {
    pub format: ImageFormat,
    /// `author/name-version`, for messages.
    pub title: String,
    pub drv: StorePath,
    pub out: StorePath,
}

fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Xz => "xz",
        Compression::Zstd => "zstd",
    }
}

fn owner_id(v: &IdOrName, loc: &Located<crate::model::container::Owner>) -> Result<u32, SpecError> {
    match v {
        IdOrName::Id(n) => Ok(*n),
        IdOrName::Name(n) => base_id(n).ok_or_else(|| {
            loc.error(
                format!("unknown user or group '{n}' in the image"),
                Some("the image knows root, nobody and nogroup; give other owners by number, e.g. \"101:101\"".into()),
            )
        }),
    }
}

/// The config of an OCI image: its own `config`, else the `app` of an ACI manifest
/// of the same container (so one spec can describe both the same way).
fn oci_config(
    step: &ImageStep,
    aci_manifest: Option<&serde_json::Value>,
    os: &str,
    arch: &str,
) -> OciImageConfig {
    let mut c = OciImageConfig {
        os: os.to_string(),
        architecture: arch.to_string(),
        ..Default::default()
    };
    // `content` of an OCI step: an image config as JSON (its "config" section).
    if let Some(cfg) = step.manifest.as_ref().map(|m| m.get("config").unwrap_or(m)) {
        let strs = |k: &str| -> Option<Vec<String>> {
            cfg.get(k)?
                .as_array()?
                .iter()
                .map(|s| s.as_str().map(String::from))
                .collect()
        };
        c.entrypoint = strs("Entrypoint");
        c.cmd = strs("Cmd");
        c.env = strs("Env").unwrap_or_default();
        c.working_dir = cfg
            .get("WorkingDir")
            .and_then(|v| v.as_str())
            .map(String::from);
        c.user = cfg.get("User").and_then(|v| v.as_str()).map(String::from);
        if let Some(ports) = cfg.get("ExposedPorts").and_then(|p| p.as_object()) {
            c.exposed_ports = ports.keys().cloned().collect();
        }
        if let Some(labels) = cfg.get("Labels").and_then(|p| p.as_object()) {
            c.labels = labels
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect();
        }
        return c;
    }
    if let Some(OciConfig {
        entrypoint,
        cmd,
        env,
        working_dir,
        user,
        exposed_ports,
        labels,
    }) = &step.config
    {
        c.entrypoint = entrypoint.clone();
        c.cmd = cmd.clone();
        c.env = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        c.working_dir = working_dir.clone();
        c.user = user.clone();
        c.exposed_ports = exposed_ports.clone();
        c.labels = labels.clone();
    } else if let Some(app) = aci_manifest.and_then(|m| m.get("app")) {
        c.entrypoint = app.get("exec").and_then(|v| {
            v.as_array()?
                .iter()
                .map(|s| s.as_str().map(String::from))
                .collect()
        });
        c.working_dir = app
            .get("workingDirectory")
            .and_then(|w| w.as_str())
            .map(String::from);
        if let (Some(u), Some(g)) = (
            app.get("user").and_then(|u| u.as_str()),
            app.get("group").and_then(|g| g.as_str()),
        ) {
            c.user = Some(format!("{u}:{g}"));
        }
        for e in app
            .get("environment")
            .and_then(|e| e.as_array())
            .into_iter()
            .flatten()
        {
            if let (Some(n), Some(v)) = (
                e.get("name").and_then(|n| n.as_str()),
                e.get("value").and_then(|v| v.as_str()),
            ) {
                c.env.push(format!("{n}={v}"));
            }
        }
        for p in app
            .get("ports")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
        {
            if let (Some(port), Some(proto)) = (
                p.get("port").and_then(|p| p.as_u64()),
                p.get("protocol").and_then(|p| p.as_str()),
            ) {
                c.exposed_ports.push(format!("{port}/{proto}"));
            }
        }
    }
    c
}

/// Lower every `image` step of `spec`. The synced files are added to `store` as
/// sources; the derivations go into `set`.
pub fn lower_images(
    set: &mut DrvSet,
    store: &LocalStore,
    spec: &Spec,
    packages: &[PlannedPackage],
) -> Result<Vec<PlannedImage>, SpecError> {
    let var = |k: &str| spec.vars.get(k).cloned();
    let name = var("name").unwrap_or_else(|| "container".into());
    let version = var("version");
    let title = match (var("author"), &version) {
        (Some(a), Some(v)) => format!("{a}/{name}-{v}"),
        (None, Some(v)) => format!("{name}-{v}"),
        (Some(a), None) => format!("{a}/{name}"),
        (None, None) => name.clone(),
    };
    let os = var("os").unwrap_or_else(|| "linux".into());
    let arch = var("arch").unwrap_or_else(|| "amd64".into());

    let mut syncs = Vec::new();
    for s in spec.syncs() {
        let file = s.src.file_name().and_then(|n| n.to_str()).unwrap_or("sync");
        let sp = store
            .add_path(
                &s.src,
                &store_name(file),
                FileIngestion::Recursive,
                HashAlgo::Sha256,
            )
            .map_err(|e| {
                s.src_written
                    .error(format!("adding it to the store: {e}"), None)
            })?;
        let (uid, gid) = match &s.owner {
            None => (0, 0),
            Some(o) => {
                let uid = owner_id(&o.value.user, o)?;
                let gid = match &o.value.group {
                    Some(g) => owner_id(g, o)?,
                    None => uid,
                };
                (uid, gid)
            }
        };
        syncs.push((
            sp.clone(),
            SyncEntry {
                src: sp.to_absolute(),
                dest: s.dest.value.clone(),
                recursive: s.recursive,
                mode: s.chmod.as_ref().map(|m| m.value),
                uid,
                gid,
            },
        ));
    }
    let aci_manifest = spec.steps.iter().find_map(|s| match s {
        Step::Image(i) if i.format == ImageFormat::Aci => i.manifest.as_ref(),
        _ => None,
    });
    let base = serde_json::to_string(&ImageBase::default()).expect("serialisable");
    let sync_json = serde_json::to_string(&syncs.iter().map(|(_, e)| e).collect::<Vec<_>>())
        .expect("serialisable");

    let mut images = Vec::new();
    for step in spec.steps.iter().filter_map(|s| match s {
        Step::Image(i) => Some(i),
        _ => None,
    }) {
        let (suffix, format) = match step.format {
            ImageFormat::Aci => ("aci", "aci"),
            ImageFormat::Oci => ("oci", "oci"),
        };
        let drv_name = store_name(&format!(
            "{name}{}-{suffix}",
            version
                .as_ref()
                .map(|v| format!("-{v}"))
                .unwrap_or_default()
        ));
        let mut d = Derivation {
            system: BUILTIN_SYSTEM.into(),
            builder: IMAGE.into(),
            ..Default::default()
        };
        let mut env = BTreeMap::new();
        env.insert("name".to_string(), drv_name.clone());
        env.insert("builder".to_string(), IMAGE.to_string());
        env.insert("system".to_string(), BUILTIN_SYSTEM.to_string());
        env.insert("format".to_string(), format.to_string());
        env.insert("writer".to_string(), IMAGE_WRITER.to_string());
        env.insert("title".to_string(), title.clone());
        env.insert("base".to_string(), base.clone());
        env.insert("syncs".to_string(), sync_json.clone());
        env.insert(
            "compression".to_string(),
            compression_name(step.compression).to_string(),
        );
        let mut pkgs = Vec::new();
        for p in packages.iter().filter(|p| p.direct) {
            d.input_drvs
                .entry(p.drv.clone())
                .or_default()
                .insert("out".to_string());
            pkgs.push(p.out.to_absolute());
        }
        env.insert("packages".to_string(), pkgs.join(" "));
        for (sp, _) in &syncs {
            d.input_srcs.insert(sp.clone());
        }
        match step.format {
            ImageFormat::Aci => {
                let manifest = step
                    .content
                    .as_ref()
                    .map(|c| c.value.clone())
                    .ok_or_else(|| {
                        step.loc
                            .error("an aci image needs `content:`, its image manifest", None)
                    })?;
                env.insert("manifest".to_string(), manifest);
                env.insert(
                    "layout".to_string(),
                    match step.layout {
                        Layout::Single => "single",
                        Layout::PerPackage => "per-package",
                    }
                    .to_string(),
                );
            }
            ImageFormat::Oci => {
                let config = oci_config(step, aci_manifest, &os, &arch);
                env.insert(
                    "config".to_string(),
                    serde_json::to_string(&config).expect("serialisable"),
                );
                let reference = match &step.name {
                    Some(n) => n.value.clone(),
                    None => format!(
                        "{name}:{}",
                        version.clone().unwrap_or_else(|| "latest".into())
                    ),
                };
                // A name without a registry part: podman and docker would prefix
                // docker.io; say localhost instead.
                let reference = if reference.split('/').next().is_some_and(|h| {
                    reference.contains('/')
                        && (h.contains('.') || h.contains(':') || h == "localhost")
                }) {
                    reference
                } else {
                    format!("localhost/{reference}")
                };
                env.insert("refName".to_string(), reference);
                env.insert(
                    "maxLayers".to_string(),
                    step.max_layers.unwrap_or(DEFAULT_MAX_LAYERS).to_string(),
                );
            }
        }
        d.env = env;
        d.outputs.insert("out".into(), DerivationOutput::Deferred);
        let drv = set
            .add(d)
            .map_err(|e| step.loc.error(format!("lowering the image: {e}"), None))?;
        let out = set.out(&drv).cloned().expect("image has out");
        images.push(PlannedImage {
            format: step.format,
            title: title.clone(),
            drv,
            out,
        });
    }
    Ok(images)
}
