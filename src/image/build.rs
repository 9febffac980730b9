//! `builtin:image`: the image derivation's builder. It merges the runtime closure
//! of the container's packages over the image base, lays the synced files on top,
//! and writes an OCI image layout plus its `oci-archive`, or an ACI, into the
//! output.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use buildit_store::builtins::image::{AciLayout, Compression, Format};
use buildit_store::builtins::Image;
use buildit_store::{LocalStore, StorePath};
use thiserror::Error;

use super::tree::{ImageTree, Kind, TreeError};

#[derive(Debug, Error)]
pub enum ImageBuildError {
    #[error("the image's {0} is not valid: {1}")]
    Invalid(&'static str, String),
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error(transparent)]
    Store(#[from] buildit_store::StoreError),
    #[error(transparent)]
    Oci(#[from] super::oci::OciError),
    #[error(transparent)]
    Aci(#[from] super::aci::AciError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImageBuildError + '_ {
    move |source| ImageBuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the builder made, for the CLI to report.
#[derive(Debug, Default)]
pub struct ImageSummary {
    /// OCI: the manifest digest; ACI: the image ID.
    pub id: String,
    pub layers: usize,
    /// Layers merged to stay within the budget.
    pub merged: usize,
}

/// The merged tree of an image derivation: base, packages' closure, syncs. Base
/// files are written under `scratch` (they need a file to be read from).
pub fn image_tree(
    store: &LocalStore,
    image: &Image,
    scratch: &Path,
) -> Result<(ImageTree, Vec<usize>), ImageBuildError> {
    image_tree_of(store, image, scratch, &image.packages)
}

/// The closure of `packages` as a tree of its own (no base, no syncs).
fn closure_tree(store: &LocalStore, packages: &[StorePath]) -> Result<ImageTree, ImageBuildError> {
    let mut tree = ImageTree::new();
    for p in ordered_closure(store, packages)? {
        tree.add_tree(p.name(), &store.physical_path(&p))?;
    }
    Ok(tree)
}

/// The runtime closure of `packages` in name order (then hash): a stable layer
/// order whatever the hashes.
fn ordered_closure(
    store: &LocalStore,
    packages: &[StorePath],
) -> Result<Vec<StorePath>, ImageBuildError> {
    let closure: BTreeSet<StorePath> = store.closure(packages)?;
    let mut ordered: Vec<StorePath> = closure.into_iter().collect();
    ordered.sort_by(|a, b| (a.name(), a.hash_part()).cmp(&(b.name(), b.hash_part())));
    Ok(ordered)
}

fn image_tree_of(
    store: &LocalStore,
    image: &Image,
    scratch: &Path,
    packages: &[StorePath],
) -> Result<(ImageTree, Vec<usize>), ImageBuildError> {
    let (base, syncs) = (&image.base, &image.syncs);

    let mut tree = ImageTree::new();
    for (dir, mode) in &base.dirs {
        tree.add_base(dir, Kind::Dir, *mode);
    }
    for (link, target) in &base.symlinks {
        tree.add_base(
            link,
            Kind::Symlink {
                target: target.into(),
            },
            0o777,
        );
    }
    fs::create_dir_all(scratch).map_err(io_err(scratch))?;
    for (i, (path, contents)) in base.files.iter().enumerate() {
        let f = scratch.join(format!("base-{i}"));
        fs::write(&f, contents).map_err(io_err(&f))?;
        tree.add_base(
            path,
            Kind::File {
                src: f,
                size: contents.len() as u64,
            },
            0o644,
        );
    }
    let mut package_providers = Vec::new();
    for p in ordered_closure(store, packages)? {
        tree.add_tree(p.name(), &store.physical_path(&p))?;
        package_providers.push(tree.providers.len() - 1);
    }
    for s in syncs {
        let src = StorePath::from_absolute(&s.src)
            .map_err(|e| ImageBuildError::Invalid("synced file", e.to_string()))?;
        tree.add_sync(
            &store.physical_path(&src),
            &s.dest,
            s.mode,
            (s.uid, s.gid),
            s.recursive,
        )?;
    }
    Ok((tree, package_providers))
}

/// Build `image` into `out` (a directory that does not exist yet).
pub fn build_image(
    store: &LocalStore,
    image: &Image,
    out: &Path,
    scratch: &Path,
) -> Result<ImageSummary, ImageBuildError> {
    let (tree, _) = image_tree(store, image, scratch)?;
    fs::create_dir(out).map_err(io_err(out))?;
    match &image.format {
        Format::Oci {
            config,
            ref_name,
            max_layers,
        } => {
            let compression = match image.compression {
                Compression::Xz => {
                    return Err(ImageBuildError::Invalid(
                        "compression",
                        "'xz' is not an OCI layer compression (gzip, zstd, none)".into(),
                    ))
                }
                c => c,
            };
            // One layer per provider that has entries: the base, each store path,
            // the synced files.
            let layers: Vec<super::oci::LayerSpec> = (0..tree.providers.len())
                .map(|p| super::oci::LayerSpec {
                    label: tree.providers[p].clone(),
                    entries: super::tar::entries(&tree, Some(p)),
                })
                .filter(|l| !l.entries.is_empty())
                .collect();
            let (layers, merged) = super::oci::merge_layers(layers, *max_layers);
            let layout = out.join("oci");
            let written =
                super::oci::write_layout(&layout, &layers, config, ref_name, compression)?;
            super::oci::write_archive(&layout, &out.join("image.oci.tar"))?;
            Ok(ImageSummary {
                id: written.manifest_digest,
                layers: written.layers.len(),
                merged,
            })
        }
        Format::Aci {
            manifest: manifest_text,
            layout,
        } => {
            let manifest: serde_json::Value = serde_json::from_str(manifest_text)
                .map_err(|e| ImageBuildError::Invalid("manifest", e.to_string()))?;
            super::aci::check_manifest(&manifest, &tree)?;
            let compression = match image.compression {
                Compression::Gzip => super::aci::AciCompression::Gzip,
                Compression::Xz => super::aci::AciCompression::Xz,
                Compression::None => super::aci::AciCompression::None,
                Compression::Zstd => {
                    return Err(ImageBuildError::Invalid(
                        "compression",
                        "'zstd' is not an ACI compression (gzip, xz, none)".into(),
                    ))
                }
            };
            let name = manifest
                .get("name")
                .and_then(|n| n.as_str())
                .unwrap_or("image")
                .to_string();
            let file = out.join(format!("{}.aci", name.replace('/', "-")));
            let id = if *layout == AciLayout::PerPackage {
                per_package(
                    store,
                    image,
                    scratch,
                    out,
                    &name,
                    manifest,
                    compression,
                    &file,
                )?
            } else {
                super::aci::write_aci(manifest_text.as_bytes(), &tree, &file, compression)?
            };
            fs::write(out.join("image-id"), format!("{id}\n")).map_err(io_err(out))?;
            Ok(ImageSummary {
                id,
                layers: 1,
                merged: 0,
            })
        }
    }
}

/// An AC identifier made from a store path name: lowercase, and characters the
/// spec does not allow replaced by `-`.
fn ac_name(s: &str) -> String {
    s.to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._~".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// appc's "one container per package": each package's runtime closure becomes its
/// own ACI, and the container's ACI (base and synced files) depends on them by
/// image ID. The manifest is checked against the whole merged tree, which is what
/// a runtime renders.
#[allow(clippy::too_many_arguments)]
fn per_package(
    store: &LocalStore,
    image: &Image,
    scratch: &Path,
    out: &Path,
    name: &str,
    mut manifest: serde_json::Value,
    compression: super::aci::AciCompression,
    file: &Path,
) -> Result<String, ImageBuildError> {
    let labels: Vec<serde_json::Value> = manifest
        .get("labels")
        .and_then(|l| l.as_array())
        .map(|l| {
            l.iter()
                .filter(|x| matches!(x["name"].as_str(), Some("os" | "arch")))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let mut deps = Vec::new();
    for p in &image.packages {
        let dep_name = format!("{name}/{}", ac_name(p.name()));
        let dep_manifest = serde_json::json!({
            "acKind": "ImageManifest",
            "acVersion": "0.8.11",
            "name": dep_name,
            "labels": labels,
        });
        let text = serde_json::to_vec_pretty(&dep_manifest).expect("serialisable");
        let tree = closure_tree(store, std::slice::from_ref(p))?;
        let dep_file = out.join(format!("{}.aci", dep_name.replace('/', "-")));
        let id = super::aci::write_aci(&text, &tree, &dep_file, compression)?;
        deps.push(serde_json::json!({
            "imageName": dep_name,
            "imageID": id,
            "labels": labels,
        }));
    }
    let deps_value = serde_json::Value::Array(deps);
    match manifest
        .get_mut("dependencies")
        .and_then(|d| d.as_array_mut())
    {
        Some(existing) => existing.extend(deps_value.as_array().cloned().unwrap_or_default()),
        None => {
            manifest["dependencies"] = deps_value;
        }
    }
    let (own, _) = image_tree_of(store, image, &scratch.join("own"), &[])?;
    let text = serde_json::to_vec_pretty(&manifest).expect("serialisable");
    Ok(super::aci::write_aci(&text, &own, file, compression)?)
}
