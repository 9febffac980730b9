//! The typed causes of a difference between two derivation graphs, each rendered as
//! one line for people (a phase change adds its short diff below) and serialised,
//! tagged by `kind`, for `--json`.

use std::fmt;

use buildit_store::StorePath;
use serde::Serialize;

/// Why two derivation graphs differ: one cause each, in words of the spec (packages,
/// options, patches, Debian packages), never in derivation paths.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Reason {
    /// The n-th source of a package is another file (URL and/or hash).
    SourceChanged {
        package: String,
        url_old: String,
        url_new: String,
        sha256_old: String,
        sha256_new: String,
    },
    SourceAdded {
        package: String,
        url: String,
        sha256: String,
    },
    SourceRemoved {
        package: String,
        url: String,
        sha256: String,
    },
    /// The same patch file name with other contents. `old`/`new` are the sha256 of a
    /// remote patch, or the store hash of a local one.
    PatchChanged {
        package: String,
        patch: String,
        old: String,
        new: String,
        /// `+3 -1 lines`, when both files could be read from the store.
        #[serde(skip_serializing_if = "Option::is_none")]
        lines: Option<String>,
    },
    PatchAdded {
        package: String,
        patch: String,
    },
    PatchRemoved {
        package: String,
        patch: String,
    },
    /// The same patches applied in another order.
    PatchesReordered {
        package: String,
        old: Vec<String>,
        new: Vec<String>,
    },
    /// A build option turned on, with the configure flags and recipe environment
    /// that came (or went) with it.
    OptionOn {
        package: String,
        option: String,
        flags_added: Vec<String>,
        flags_removed: Vec<String>,
        /// `+VAR=value` / `-VAR`: recipe variables set only on one side.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        env: Vec<String>,
    },
    OptionOff {
        package: String,
        option: String,
        flags_added: Vec<String>,
        flags_removed: Vec<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        env: Vec<String>,
    },
    /// Configure flags changed while the options stayed the same.
    ConfigureFlagsChanged {
        package: String,
        added: Vec<String>,
        removed: Vec<String>,
    },
    PhaseChanged {
        package: String,
        phase: String,
        /// A short unified diff of the script.
        diff: String,
    },
    EnvChanged {
        package: String,
        var: String,
        old: Option<String>,
        new: Option<String>,
    },
    DebianPackageChanged {
        package: String,
        old_version: String,
        new_version: String,
        old_sha256: String,
        new_sha256: String,
    },
    DebianPackageAdded {
        package: String,
        version: String,
        sha256: String,
    },
    DebianPackageRemoved {
        package: String,
        version: String,
        sha256: String,
    },
    BuildRootGained {
        build_root: String,
        package: String,
    },
    BuildRootLost {
        build_root: String,
        package: String,
    },
    /// The build root's fix-ups (alternatives, files, directories) changed; `changed`
    /// names what, e.g. `alternatives./usr/bin/awk`.
    BuildRootFixupsChanged {
        build_root: String,
        changed: Vec<String>,
    },
    /// A lock's build root that the other lock does not have.
    BuildRootAdded {
        build_root: String,
        packages: Vec<String>,
    },
    BuildRootRemoved {
        build_root: String,
        packages: Vec<String>,
    },
    /// Build dependencies (build root, Debian packages, recipes) gained or lost.
    BuildDependsChanged {
        package: String,
        added: Vec<String>,
        removed: Vec<String>,
    },
    RuntimeDependsChanged {
        package: String,
        added: Vec<String>,
        removed: Vec<String>,
    },
    /// One field of an image (`syncs`, `base`, `manifest`, `config`, …): JSON fields
    /// are named by their path (`config.exposed_ports`), syncs by destination.
    ImageChanged {
        image: String,
        field: String,
        old: Option<String>,
        new: Option<String>,
    },
    /// A synced file's contents (its source is another store path).
    SyncFileChanged {
        image: String,
        dest: String,
        old: String,
        new: String,
        /// A short unified diff, when both files are text in the store.
        #[serde(skip_serializing_if = "Option::is_none")]
        diff: Option<String>,
    },
    BuilderChanged {
        drv: String,
        old: String,
        new: String,
    },
    VersionChanged {
        package: String,
        old: String,
        new: String,
    },
    /// A package's recipe in the lock (`CATEGORY/NAME-VERSION`).
    RecipeChanged {
        package: String,
        old: String,
        new: String,
    },
    /// A plain store input (e.g. buildit's phase runner) with other contents.
    InputSourceChanged {
        drv: String,
        name: String,
        old: StorePath,
        new: StorePath,
    },
    /// A package entry of one lock only.
    PackageAdded {
        package: String,
        recipe: String,
    },
    PackageRemoved {
        package: String,
        recipe: String,
    },
    /// A top-level derivation present only on one side.
    RootAdded {
        name: String,
        drv: StorePath,
    },
    RootRemoved {
        name: String,
        drv: StorePath,
    },
    /// Anything the walk cannot put in better words.
    Other {
        drv: String,
        detail: String,
    },
}

impl Reason {
    /// Where the cause sorts in a report: what people change most, first.
    pub(super) fn rank(&self) -> u8 {
        match self {
            Reason::RootAdded { .. } | Reason::RootRemoved { .. } => 0,
            Reason::PackageAdded { .. }
            | Reason::PackageRemoved { .. }
            | Reason::RecipeChanged { .. }
            | Reason::VersionChanged { .. } => 1,
            Reason::SourceChanged { .. }
            | Reason::SourceAdded { .. }
            | Reason::SourceRemoved { .. } => 2,
            Reason::PatchChanged { .. }
            | Reason::PatchAdded { .. }
            | Reason::PatchRemoved { .. }
            | Reason::PatchesReordered { .. } => 3,
            Reason::OptionOn { .. }
            | Reason::OptionOff { .. }
            | Reason::ConfigureFlagsChanged { .. } => 4,
            Reason::PhaseChanged { .. } | Reason::EnvChanged { .. } => 5,
            Reason::DebianPackageChanged { .. }
            | Reason::DebianPackageAdded { .. }
            | Reason::DebianPackageRemoved { .. } => 6,
            Reason::BuildRootGained { .. }
            | Reason::BuildRootLost { .. }
            | Reason::BuildRootFixupsChanged { .. }
            | Reason::BuildRootAdded { .. }
            | Reason::BuildRootRemoved { .. } => 7,
            Reason::BuildDependsChanged { .. } | Reason::RuntimeDependsChanged { .. } => 8,
            Reason::ImageChanged { .. } | Reason::SyncFileChanged { .. } => 9,
            Reason::BuilderChanged { .. }
            | Reason::InputSourceChanged { .. }
            | Reason::Other { .. } => 10,
        }
    }
}

/// Enough of a hash to tell two apart at a glance.
pub(super) fn short(hash: &str) -> &str {
    match hash.char_indices().nth(12) {
        Some((i, _)) => &hash[..i],
        None => hash,
    }
}

/// A value on one line, cut to a readable length.
pub(super) fn one_line(v: &str) -> String {
    const MAX: usize = 72;
    let flat: String = v.chars().map(|c| if c == '\n' { '⏎' } else { c }).collect();
    if flat.chars().count() <= MAX {
        flat
    } else {
        let cut: String = flat.chars().take(MAX - 1).collect();
        format!("{cut}…")
    }
}

fn words(prefix: char, ws: &[String]) -> impl Iterator<Item = String> + '_ {
    ws.iter().map(move |w| format!("{prefix}{w}"))
}

/// `+a +b -c`.
fn plus_minus(added: &[String], removed: &[String]) -> String {
    words('+', added)
        .chain(words('-', removed))
        .collect::<Vec<_>>()
        .join(" ")
}

fn option_extras(flags_added: &[String], flags_removed: &[String], env: &[String]) -> String {
    let mut parts = Vec::new();
    if !flags_added.is_empty() || !flags_removed.is_empty() {
        parts.push(format!(
            "configure flags {}",
            plus_minus(flags_added, flags_removed)
        ));
    }
    if !env.is_empty() {
        parts.push(format!("env {}", env.join(" ")));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join("; "))
    }
}

fn value(v: &Option<String>) -> String {
    match v {
        Some(v) => format!("'{}'", one_line(v)),
        None => "(unset)".into(),
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::SourceChanged {
                package,
                url_old,
                url_new,
                sha256_old,
                sha256_new,
            } => {
                write!(f, "the source of {package} changed")?;
                if url_old != url_new {
                    write!(f, ": {url_old} → {url_new}")?;
                }
                if sha256_old != sha256_new {
                    write!(
                        f,
                        " (sha256 {}… → {}…)",
                        short(sha256_old),
                        short(sha256_new)
                    )?;
                }
                Ok(())
            }
            Reason::SourceAdded {
                package,
                url,
                sha256,
            } => write!(
                f,
                "{package} gained a source: {url} (sha256 {}…)",
                short(sha256)
            ),
            Reason::SourceRemoved {
                package,
                url,
                sha256,
            } => write!(
                f,
                "{package} lost a source: {url} (sha256 {}…)",
                short(sha256)
            ),
            Reason::PatchChanged {
                package,
                patch,
                old,
                new,
                lines,
            } => {
                write!(
                    f,
                    "patch {patch} of {package} changed ({} → {}",
                    short(old),
                    short(new)
                )?;
                if let Some(l) = lines {
                    write!(f, ", {l}")?;
                }
                write!(f, ")")
            }
            Reason::PatchAdded { package, patch } => write!(f, "{package} gained patch {patch}"),
            Reason::PatchRemoved { package, patch } => write!(f, "{package} lost patch {patch}"),
            Reason::PatchesReordered { package, old, new } => write!(
                f,
                "patches of {package} reordered: {} → {}",
                old.join(", "),
                new.join(", ")
            ),
            Reason::OptionOn {
                package,
                option,
                flags_added,
                flags_removed,
                env,
            } => write!(
                f,
                "option {option} turned on in {package}{}",
                option_extras(flags_added, flags_removed, env)
            ),
            Reason::OptionOff {
                package,
                option,
                flags_added,
                flags_removed,
                env,
            } => write!(
                f,
                "option {option} turned off in {package}{}",
                option_extras(flags_added, flags_removed, env)
            ),
            Reason::ConfigureFlagsChanged {
                package,
                added,
                removed,
            } => write!(
                f,
                "configure flags of {package} changed: {}",
                plus_minus(added, removed)
            ),
            Reason::PhaseChanged {
                package,
                phase,
                diff,
            } => {
                write!(f, "{phase} phase of {package} changed")?;
                for line in diff.lines() {
                    write!(f, "\n    {line}")?;
                }
                Ok(())
            }
            Reason::EnvChanged {
                package,
                var,
                old,
                new,
            } => write!(
                f,
                "variable {var} of {package} changed: {} → {}",
                value(old),
                value(new)
            ),
            Reason::DebianPackageChanged {
                package,
                old_version,
                new_version,
                old_sha256,
                new_sha256,
            } => {
                if old_version != new_version {
                    write!(f, "Debian package {package} {old_version} → {new_version}")
                } else {
                    write!(
                        f,
                        "Debian package {package} {old_version} changed (sha256 {}… → {}…)",
                        short(old_sha256),
                        short(new_sha256)
                    )
                }
            }
            Reason::DebianPackageAdded {
                package, version, ..
            } => write!(f, "Debian package {package} {version} added"),
            Reason::DebianPackageRemoved {
                package, version, ..
            } => write!(f, "Debian package {package} {version} removed"),
            Reason::BuildRootGained {
                build_root,
                package,
            } => write!(f, "build root {build_root} gained {package}"),
            Reason::BuildRootLost {
                build_root,
                package,
            } => write!(f, "build root {build_root} lost {package}"),
            Reason::BuildRootFixupsChanged {
                build_root,
                changed,
            } => write!(
                f,
                "fix-ups of build root {build_root} changed: {}",
                changed.join(", ")
            ),
            Reason::BuildRootAdded {
                build_root,
                packages,
            } => write!(
                f,
                "new build root {build_root} ({} packages)",
                packages.len()
            ),
            Reason::BuildRootRemoved {
                build_root,
                packages,
            } => write!(
                f,
                "build root {build_root} is gone ({} packages)",
                packages.len()
            ),
            Reason::BuildDependsChanged {
                package,
                added,
                removed,
            } => write!(
                f,
                "build dependencies of {package} changed: {}",
                plus_minus(added, removed)
            ),
            Reason::RuntimeDependsChanged {
                package,
                added,
                removed,
            } => write!(
                f,
                "runtime dependencies of {package} changed: {}",
                plus_minus(added, removed)
            ),
            Reason::ImageChanged {
                image,
                field,
                old,
                new,
            } => match (old, new) {
                (None, Some(n)) => write!(f, "image {image}: {field} added: {}", one_line(n)),
                (Some(o), None) => write!(f, "image {image}: {field} removed: {}", one_line(o)),
                _ => write!(
                    f,
                    "image {image}: {field} changed: {} → {}",
                    value(old),
                    value(new)
                ),
            },
            Reason::SyncFileChanged {
                image, dest, diff, ..
            } => {
                write!(f, "image {image}: synced file {dest} changed")?;
                for line in diff.iter().flat_map(|d| d.lines()) {
                    write!(f, "\n    {line}")?;
                }
                Ok(())
            }
            Reason::BuilderChanged { drv, old, new } => {
                write!(f, "builder of {drv} changed: {old} → {new}")
            }
            Reason::VersionChanged { package, old, new } => {
                write!(f, "version of {package} changed: {old} → {new}")
            }
            Reason::RecipeChanged { package, old, new } => {
                write!(f, "recipe of {package} changed: {old} → {new}")
            }
            Reason::InputSourceChanged {
                drv,
                name,
                old,
                new,
            } => write!(
                f,
                "input {name} of {drv} changed ({} → {})",
                short(old.hash_part()),
                short(new.hash_part())
            ),
            Reason::PackageAdded { package, recipe } => {
                write!(f, "new package {package} ({recipe})")
            }
            Reason::PackageRemoved { package, recipe } => {
                write!(f, "package {package} ({recipe}) is gone")
            }
            Reason::RootAdded { name, .. } => write!(f, "new top-level derivation {name}"),
            Reason::RootRemoved { name, .. } => write!(f, "top-level derivation {name} is gone"),
            Reason::Other { drv, detail } => write!(f, "{drv}: {detail}"),
        }
    }
}
