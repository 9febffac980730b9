//! Lowering `image` steps: one `builtin:image` derivation per step, whose inputs
//! are the container's packages (their runtime closures come with them as
//! references), the synced files (added to the store as sources) and everything
//! that decides the image's bytes, carried in its environment: the base, the
//! manifest or config, the compression, the reference name.

use buildit_store::builtins::image::{
    AciLayout, Compression as ImageCompression, Format, ImageBase, ImageConfig, SyncEntry,
    DEFAULT_MAX_LAYERS, WRITER,
};
use buildit_store::builtins::Image;
use buildit_store::{FileIngestion, HashAlgo, LocalStore};

use crate::lower::debian::{store_name, DrvSet};
use crate::lower::planned::{PlannedImage, PlannedPackage};
use crate::model::container::{Compression, IdOrName, ImageFormat, ImageStep, Layout, OciConfig};
use crate::model::{Located, Spec, Step};
use crate::yaml::SpecError;

/// The users and groups of [`ImageBase`], for `owner:` names.
fn base_id(name: &str) -> Option<u32> {
    match name {
        "root" => Some(0),
        "nobody" | "nogroup" => Some(65534),
        _ => None,
    }
}

fn compression(c: Compression) -> ImageCompression {
    match c {
        Compression::None => ImageCompression::None,
        Compression::Gzip => ImageCompression::Gzip,
        Compression::Xz => ImageCompression::Xz,
        Compression::Zstd => ImageCompression::Zstd,
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
) -> ImageConfig {
    let mut c = ImageConfig {
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
    let syncs_of_image: Vec<SyncEntry> = syncs.iter().map(|(_, e)| e.clone()).collect();

    let mut images = Vec::new();
    for step in spec.steps.iter().filter_map(|s| match s {
        Step::Image(i) => Some(i),
        _ => None,
    }) {
        let suffix = match step.format {
            ImageFormat::Aci => "aci",
            ImageFormat::Oci => "oci",
        };
        let drv_name = store_name(&format!(
            "{name}{}-{suffix}",
            version
                .as_ref()
                .map(|v| format!("-{v}"))
                .unwrap_or_default()
        ));
        let direct: Vec<&PlannedPackage> = packages.iter().filter(|p| p.direct).collect();
        let format = match step.format {
            ImageFormat::Aci => Format::Aci {
                manifest: step
                    .content
                    .as_ref()
                    .map(|c| c.value.clone())
                    .ok_or_else(|| {
                        step.loc
                            .error("an aci image needs `content:`, its image manifest", None)
                    })?,
                layout: match step.layout {
                    Layout::Single => AciLayout::Single,
                    Layout::PerPackage => AciLayout::PerPackage,
                },
            },
            ImageFormat::Oci => {
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
                Format::Oci {
                    config: Box::new(oci_config(step, aci_manifest, &os, &arch)),
                    ref_name: reference,
                    max_layers: step.max_layers.unwrap_or(DEFAULT_MAX_LAYERS),
                }
            }
        };
        let image = Image {
            name: drv_name,
            writer: WRITER.to_string(),
            title: title.clone(),
            base: ImageBase::default(),
            syncs: syncs_of_image.clone(),
            compression: compression(step.compression),
            packages: direct.iter().map(|p| p.out.clone()).collect(),
            format,
        };
        let mut d = image.to_derivation();
        for p in &direct {
            d.input_drvs
                .entry(p.drv.clone())
                .or_default()
                .insert("out".to_string());
        }
        for (sp, _) in &syncs {
            d.input_srcs.insert(sp.clone());
        }
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
