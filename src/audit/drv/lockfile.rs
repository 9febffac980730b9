//! Two lock files compared: what they pin differently, in the same reasons as a
//! derivation diff. A lock holds no derivations, so there are causes only.

use std::collections::{BTreeMap, BTreeSet};

use buildit_lang::lockfile::LockFile;

use super::{DrvDiff, Reason};

/// Added and removed entries of two lists, each in its list's order.
fn added_removed(a: &[String], b: &[String]) -> (Vec<String>, Vec<String>) {
    let sa: BTreeSet<&String> = a.iter().collect();
    let sb: BTreeSet<&String> = b.iter().collect();
    (
        b.iter().filter(|x| !sa.contains(x)).cloned().collect(),
        a.iter().filter(|x| !sb.contains(x)).cloned().collect(),
    )
}

/// Keys of both maps, each once, sorted.
fn keys<'m, V>(a: &'m BTreeMap<String, V>, b: &'m BTreeMap<String, V>) -> BTreeSet<&'m String> {
    a.keys().chain(b.keys()).collect()
}

/// What `b` pins differently from `a`: Debian package versions, build roots that
/// gained or lost packages, packages' recipes, closures and remote patch pins.
pub fn diff_locks(a: &LockFile, b: &LockFile) -> DrvDiff {
    let mut d = DrvDiff {
        from_locks: true,
        ..Default::default()
    };
    for name in keys(&a.debian, &b.debian) {
        let package = name.clone();
        match (a.debian.get(name), b.debian.get(name)) {
            (Some(x), Some(y)) if x == y => d.unchanged += 1,
            (Some(x), Some(y)) => d.causes.push(Reason::DebianPackageChanged {
                package,
                old_version: x.version.clone(),
                new_version: y.version.clone(),
                old_sha256: x.sha256.clone(),
                new_sha256: y.sha256.clone(),
            }),
            (Some(x), None) => d.causes.push(Reason::DebianPackageRemoved {
                package,
                version: x.version.clone(),
                sha256: x.sha256.clone(),
            }),
            (None, Some(y)) => d.causes.push(Reason::DebianPackageAdded {
                package,
                version: y.version.clone(),
                sha256: y.sha256.clone(),
            }),
            (None, None) => {}
        }
    }
    for name in keys(&a.build_roots, &b.build_roots) {
        let build_root = name.clone();
        match (a.build_roots.get(name), b.build_roots.get(name)) {
            (Some(x), Some(y)) if x == y => d.unchanged += 1,
            (Some(x), Some(y)) => {
                // `requested` only says whether the lock is stale; the closure is what
                // the build root is made of.
                let (added, removed) = added_removed(&x.packages, &y.packages);
                for package in added {
                    d.causes.push(Reason::BuildRootGained {
                        build_root: build_root.clone(),
                        package,
                    });
                }
                for package in removed {
                    d.causes.push(Reason::BuildRootLost {
                        build_root: build_root.clone(),
                        package,
                    });
                }
            }
            (Some(x), None) => d.causes.push(Reason::BuildRootRemoved {
                build_root,
                packages: x.packages.clone(),
            }),
            (None, Some(y)) => d.causes.push(Reason::BuildRootAdded {
                build_root,
                packages: y.packages.clone(),
            }),
            (None, None) => {}
        }
    }
    for key in keys(&a.packages, &b.packages) {
        let package = key.clone();
        let (x, y) = match (a.packages.get(key), b.packages.get(key)) {
            (Some(x), Some(y)) if x == y => {
                d.unchanged += 1;
                continue;
            }
            (Some(x), Some(y)) => (x, y),
            (Some(x), None) => {
                d.causes.push(Reason::PackageRemoved {
                    package,
                    recipe: x.recipe.clone(),
                });
                continue;
            }
            (None, Some(y)) => {
                d.causes.push(Reason::PackageAdded {
                    package,
                    recipe: y.recipe.clone(),
                });
                continue;
            }
            (None, None) => continue,
        };
        if x.recipe != y.recipe {
            d.causes.push(Reason::RecipeChanged {
                package: package.clone(),
                old: x.recipe.clone(),
                new: y.recipe.clone(),
            });
        }
        let (added, removed) = added_removed(&x.build_closure, &y.build_closure);
        if !added.is_empty() || !removed.is_empty() {
            d.causes.push(Reason::BuildDependsChanged {
                package: package.clone(),
                added,
                removed,
            });
        }
        let (added, removed) = added_removed(&x.runtime_closure, &y.runtime_closure);
        if !added.is_empty() || !removed.is_empty() {
            d.causes.push(Reason::RuntimeDependsChanged {
                package: package.clone(),
                added,
                removed,
            });
        }
        // Remote patches are pinned by URL; the URL names them.
        for url in keys(&x.patches, &y.patches) {
            let patch = url.clone();
            match (x.patches.get(url), y.patches.get(url)) {
                (Some(o), Some(n)) if o != n => d.causes.push(Reason::PatchChanged {
                    package: package.clone(),
                    patch,
                    old: o.clone(),
                    new: n.clone(),
                    lines: None,
                }),
                (Some(_), None) => d.causes.push(Reason::PatchRemoved {
                    package: package.clone(),
                    patch,
                }),
                (None, Some(_)) => d.causes.push(Reason::PatchAdded {
                    package: package.clone(),
                    patch,
                }),
                _ => {}
            }
        }
    }
    d.sort();
    d
}
