//! Lowering Debian packages and build roots to derivations:
//!
//! * a `.deb` is a fixed-output derivation (`builtin:fetchurl`) keyed by its sha256;
//!   its URL is `mirror://debian/<pool path>`, so the `.drv` is the same whichever
//!   mirror a machine uses (buildit expands `mirror://` when it fetches);
//! * its file tree is an input-addressed derivation (`builtin:unpack-deb`);
//! * a build root merges the trees of its locked closure and applies its fix-ups
//!   (`builtin:buildroot`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use buildit_store::builtins::fetchurl::DEBIAN_MIRROR;
use buildit_store::builtins::{BuildRoot, FetchUrl, UnpackDeb};
use buildit_store::derivation::DerivationError;
use buildit_store::{Derivation, Hash, HashAlgo, StorePath};

use crate::lockfile::{DebianPackage, LockFile};
use crate::model::build_root::BuildRootDef;
use crate::yaml::SpecError;

/// A store path name from free text: characters Nix does not allow become `_`.
pub fn store_name(s: &str) -> String {
    let mut n: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+-._?=".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if n.starts_with('.') {
        n.replace_range(0..1, "_");
    }
    n.truncate(buildit_store::store_path::MAX_NAME_LEN);
    n
}

/// Derivations made by the front end, kept in the order they were added (inputs
/// first), with their output paths filled in.
///
/// The set remembers each derivation's unmasked modulo hash (what replaces it where
/// it is an input), so adding one costs the same whatever the size of its input
/// closure: a chain of N packages is lowered in O(N), not O(N²).
#[derive(Default)]
pub struct DrvSet {
    drvs: BTreeMap<StorePath, Derivation>,
    order: Vec<StorePath>,
    /// `hashDerivationModulo` (outputs not masked) of every derivation in the set.
    modulo: HashMap<StorePath, Hash>,
}

impl DrvSet {
    /// Fill in `drv`'s outputs (its inputs must be in the set) and add it; returns its
    /// `.drv` path.
    pub fn add(&mut self, mut drv: Derivation) -> Result<StorePath, DerivationError> {
        // As `DerivationHasher` checks: every input is known and has the outputs used
        // (a fixed-output derivation's inputs do not count).
        if !drv.is_fixed_output() {
            for (input, outputs) in &drv.input_drvs {
                let known = self
                    .drvs
                    .get(input)
                    .ok_or_else(|| DerivationError::UnknownInput(input.clone()))?;
                if let Some(missing) = outputs.iter().find(|o| !known.outputs.contains_key(*o)) {
                    return Err(DerivationError::MissingInputOutput {
                        drv: input.clone(),
                        output: missing.clone(),
                    });
                }
            }
        }
        let modulo = &self.modulo;
        let input_hash = |p: &StorePath| {
            modulo
                .get(p)
                .cloned()
                .ok_or_else(|| DerivationError::UnknownInput(p.clone()))
        };
        drv.fill_output_paths(input_hash)?;
        let path = drv.drv_path()?;
        if !self.drvs.contains_key(&path) {
            let hash = drv.hash_modulo(false, input_hash)?;
            self.modulo.insert(path.clone(), hash);
            self.order.push(path.clone());
            self.drvs.insert(path.clone(), drv);
        }
        Ok(path)
    }

    pub fn get(&self, path: &StorePath) -> Option<&Derivation> {
        self.drvs.get(path)
    }

    /// The output path `out` of a derivation in the set.
    pub fn out(&self, drv: &StorePath) -> Option<&StorePath> {
        self.drvs.get(drv)?.outputs.get("out")?.path()
    }

    /// All derivations, inputs before the derivations that use them.
    pub fn in_order(&self) -> impl Iterator<Item = (&StorePath, &Derivation)> {
        self.order.iter().map(|p| (p, &self.drvs[p]))
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// A `builtin:fetchurl` fixed-output derivation: the file at `urls` (space-separated
/// alternatives), which must hash to `hash` (flat).
pub fn fetchurl(name: &str, urls: &str, hash: Hash) -> Derivation {
    FetchUrl::flat(name, urls, hash).to_derivation()
}

/// The fixed-output derivation of one locked `.deb`.
pub fn fetch_deb(pkg: &DebianPackage) -> Result<Derivation, String> {
    let hash = Hash::parse_bare(&pkg.sha256, HashAlgo::Sha256)
        .map_err(|e| format!("bad sha256 in lock for {}: {e}", pkg.file_name()))?;
    Ok(fetchurl(
        &store_name(pkg.file_name()),
        &format!("{DEBIAN_MIRROR}{}", pkg.filename),
        hash,
    ))
}

/// The derivation that unpacks a fetched `.deb` into its file tree.
pub fn unpack_deb(
    name: &str,
    pkg: &DebianPackage,
    fetch: &StorePath,
    deb: &StorePath,
) -> Derivation {
    let mut d = UnpackDeb {
        name: store_name(&format!("{name}-{}", pkg.version)),
        deb: deb.clone(),
        package: name.into(),
    }
    .to_derivation();
    d.input_drvs
        .insert(fetch.clone(), BTreeSet::from(["out".to_string()]));
    d
}

/// Fetch and unpack derivations for one locked package; returns the unpack `.drv`.
pub fn lower_package(
    set: &mut DrvSet,
    name: &str,
    pkg: &DebianPackage,
) -> Result<StorePath, String> {
    let fetch = set.add(fetch_deb(pkg)?).map_err(|e| e.to_string())?;
    let deb = set
        .out(&fetch)
        .cloned()
        .ok_or("fetch derivation has no output")?;
    set.add(unpack_deb(name, pkg, &fetch, &deb))
        .map_err(|e| e.to_string())
}

/// The build root of `def`, from the packages `lock` pins for it.
pub fn lower_build_root(
    set: &mut DrvSet,
    def: &BuildRootDef,
    lock: &LockFile,
    lock_name: &str,
) -> Result<StorePath, SpecError> {
    let fix = |message: String| SpecError::File {
        path: def.source.path.display().to_string(),
        message,
        help: Some(format!(
            "run `buildit debian lock --build-root {} --lock {lock_name}`",
            def.source.path.display()
        )),
    };
    let locked = lock
        .build_roots
        .get(&def.name)
        .ok_or_else(|| fix(format!("build root '{}' is not in {lock_name}", def.name)))?;
    if locked.requested != def.packages {
        let was: BTreeSet<_> = locked.requested.iter().collect();
        let now: BTreeSet<_> = def.packages.iter().collect();
        let added: Vec<_> = now.difference(&was).map(|s| s.as_str()).collect();
        let removed: Vec<_> = was.difference(&now).map(|s| s.as_str()).collect();
        return Err(fix(format!(
            "build root '{}' changed since it was locked (added: [{}], removed: [{}])",
            def.name,
            added.join(", "),
            removed.join(", ")
        )));
    }
    let mut members = Vec::new();
    let mut inputs = BTreeMap::new();
    for name in &locked.packages {
        let pkg = lock.debian.get(name).ok_or_else(|| {
            fix(format!(
                "package '{name}' of build root '{}' is missing from {lock_name}",
                def.name
            ))
        })?;
        let drv = lower_package(set, name, pkg).map_err(fix)?;
        members.push(set.out(&drv).cloned().expect("unpack has out"));
        inputs.insert(drv, BTreeSet::from(["out".to_string()]));
    }
    let mut d = BuildRoot {
        name: store_name(&format!("buildroot-{}", def.name)),
        members,
        fixups: def.fixups.clone(),
    }
    .to_derivation();
    d.input_drvs = inputs;
    set.add(d).map_err(|e| fix(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lockfile::LockedBuildRoot;
    use crate::yaml::SourceFile;
    use buildit_store::builtins::Plain;
    use buildit_store::DerivationOutput;

    fn base_drv(name: &str, builder: &str) -> Derivation {
        Plain {
            builder: builder.into(),
            args: vec![],
            env: BTreeMap::from([("name".to_string(), name.to_string())]),
        }
        .to_derivation()
    }

    fn pkg(v: &str, sha: &str) -> DebianPackage {
        DebianPackage {
            version: v.into(),
            architecture: "amd64".into(),
            sha256: sha.repeat(32),
            size: 10,
            filename: format!("pool/main/x/x_{v}_amd64.deb"),
        }
    }

    fn setup() -> (BuildRootDef, LockFile) {
        let def = BuildRootDef::parse(SourceFile {
            path: "br.yaml".into(),
            text: "name: t\npackages: [a]\n".into(),
        })
        .unwrap();
        let mut lock = LockFile::default();
        lock.debian.insert("a".into(), pkg("1.0~rc1", "aa"));
        lock.debian.insert("b".into(), pkg("2:3.0", "bb"));
        lock.build_roots.insert(
            "t".into(),
            LockedBuildRoot {
                requested: vec!["a".into()],
                packages: vec!["a".into(), "b".into()],
            },
        );
        (def, lock)
    }

    #[test]
    fn lowering_is_deterministic_and_keyed_by_inputs() {
        let (def, lock) = setup();
        let mut s1 = DrvSet::default();
        let r1 = lower_build_root(&mut s1, &def, &lock, "buildit.lock").unwrap();
        let mut s2 = DrvSet::default();
        let r2 = lower_build_root(&mut s2, &def, &lock, "buildit.lock").unwrap();
        assert_eq!(r1, r2);
        assert_eq!(s1.len(), 5, "2 fetches, 2 unpacks, 1 root");
        let names: Vec<_> = s1.in_order().map(|(p, _)| p.name().to_string()).collect();
        assert_eq!(names.last().unwrap(), "buildroot-t.drv");
        assert!(
            names.contains(&"x_1.0_rc1_amd64.deb.drv".to_string()),
            "{names:?}"
        );

        // One byte of one package's hash changes the root.
        let mut lock2 = lock.clone();
        lock2.debian.get_mut("b").unwrap().sha256 = "bc".repeat(32);
        let r3 = lower_build_root(&mut DrvSet::default(), &def, &lock2, "l").unwrap();
        assert_ne!(r1, r3);
    }

    #[test]
    fn stale_or_missing_lock_says_how_to_fix() {
        let (def, mut lock) = setup();
        lock.build_roots.get_mut("t").unwrap().requested = vec!["a".into(), "c".into()];
        let e = lower_build_root(&mut DrvSet::default(), &def, &lock, "buildit.lock").unwrap_err();
        assert!(e.to_string().contains("changed since it was locked"), "{e}");
        assert!(e.to_string().contains("removed: [c]"), "{e}");
        lock.build_roots.clear();
        let e = lower_build_root(&mut DrvSet::default(), &def, &lock, "buildit.lock").unwrap_err();
        assert!(e.to_string().contains("not in buildit.lock"), "{e}");
        let SpecError::File { help, .. } = e else {
            panic!()
        };
        assert!(help
            .unwrap()
            .contains("buildit debian lock --build-root br.yaml"));
    }

    /// The set's remembered modulo hashes give the output paths a hasher that
    /// reloads the whole closure gives; inputs not in the set are refused as before.
    #[test]
    fn remembered_hashes_match_a_fresh_hasher() {
        use buildit_store::derivation::DerivationHasher;
        let mut set = DrvSet::default();
        let mut prev: Option<StorePath> = None;
        for i in 0..300 {
            let mut d = base_drv(&format!("link-{i}"), "/bin/sh");
            if let Some(p) = &prev {
                d.input_drvs
                    .insert(p.clone(), BTreeSet::from(["out".into()]));
                d.env
                    .insert("prev".into(), set.out(p).unwrap().to_absolute());
            }
            d.outputs.insert("out".into(), DerivationOutput::Deferred);
            prev = Some(set.add(d).unwrap());
        }
        assert_eq!(set.len(), 300);
        let mut hasher = DerivationHasher::new(|p: &StorePath| {
            set.get(p)
                .cloned()
                .ok_or_else(|| DerivationError::UnknownInput(p.clone()))
        });
        for (path, drv) in set.in_order() {
            hasher.check_output_paths(drv).unwrap();
            assert_eq!(&drv.drv_path().unwrap(), path);
        }

        let last = prev.unwrap();
        let mut unknown = base_drv("x", "/bin/sh");
        unknown
            .outputs
            .insert("out".into(), DerivationOutput::Deferred);
        let mut missing_output = unknown.clone();
        let elsewhere = StorePath::from_digest(&[0; 20], "elsewhere.drv").unwrap();
        unknown
            .input_drvs
            .insert(elsewhere, BTreeSet::from(["out".into()]));
        assert!(matches!(
            set.add(unknown),
            Err(DerivationError::UnknownInput(_))
        ));
        missing_output
            .input_drvs
            .insert(last, BTreeSet::from(["dev".into()]));
        assert!(matches!(
            set.add(missing_output),
            Err(DerivationError::MissingInputOutput { .. })
        ));
        assert_eq!(set.len(), 300);
    }

    #[test]
    fn names() {
        assert_eq!(
            store_name("libssl3_3.0.15-1~deb12u1_amd64.deb"),
            "libssl3_3.0.15-1_deb12u1_amd64.deb"
        );
        assert_eq!(store_name(".x:y"), "_x_y");
    }
}
