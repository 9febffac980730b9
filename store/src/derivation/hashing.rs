//! `hashDerivationModulo`, output paths and `.drv` paths (§3.6, §3.7).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::aterm::InputDrvs;
use super::{Derivation, DerivationError, DerivationOutput, DerivationType};
use crate::hash::Hash;
use crate::store_path::{make_fixed_output_path, make_output_path, make_text_path, StorePath};

impl Derivation {
    /// The exact string [`hash_modulo`](Self::hash_modulo) hashes: for a
    /// fixed-output derivation `fixed:out:[r:]algo:hex:/store/…`, otherwise the
    /// ATerm with each input `.drv` replaced by the hex of its (unmasked) modulo hash,
    /// re-sorted by that hex with duplicate keys merged, and, with `mask_outputs`,
    /// output paths and output env vars blanked. Useful to explain why two
    /// derivations hash differently.
    ///
    /// `input_hash` returns the modulo hash of an input `.drv` (computed with
    /// `mask_outputs = false`); [`DerivationHasher`](super::DerivationHasher) provides
    /// one that loads and memoises.
    pub fn hash_modulo_preimage<E>(
        &self,
        mask_outputs: bool,
        mut input_hash: impl FnMut(&StorePath) -> Result<Hash, E>,
    ) -> Result<String, E>
    where
        E: From<DerivationError>,
    {
        self.validate().map_err(DerivationError::from)?;
        match self.derivation_type().map_err(DerivationError::from)? {
            DerivationType::FixedOutput => self.fixed_preimage().map_err(E::from),
            DerivationType::Floating => Err(DerivationError::FloatingUnsupported.into()),
            DerivationType::InputAddressed | DerivationType::DeferredInputAddressed => {
                let mut inputs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
                for (drv, outputs) in &self.input_drvs {
                    // Two inputs with the same modulo hash (FODs that differ only in
                    // how they are built) share one entry: Nix merges the sets.
                    inputs
                        .entry(input_hash(drv)?.to_hex())
                        .or_default()
                        .extend(outputs.iter().cloned());
                }
                let mut out = String::new();
                self.write_aterm(&mut out, InputDrvs::Replaced(&inputs), mask_outputs);
                Ok(out)
            }
        }
    }

    /// A FOD is identified by what it produces, not how: its modulo hash covers only
    /// the expected hash and the output path.
    fn fixed_preimage(&self) -> Result<String, DerivationError> {
        match self.outputs.get("out") {
            Some(DerivationOutput::Fixed {
                path: Some(path),
                method,
                hash,
            }) => Ok(format!(
                "fixed:out:{}{}:{}:{}",
                method.prefix(),
                hash.algo(),
                hash.to_hex(),
                path
            )),
            // validate() has already ruled these out.
            _ => Err(super::ValidationError::FixedWithoutPath.into()),
        }
    }

    /// Nix's `hashDerivationModulo`: sha256 of
    /// [`hash_modulo_preimage`](Self::hash_modulo_preimage). With `mask_outputs`
    /// it is the hash that input-addressed output paths are made from; without, it is
    /// what replaces this derivation where it is an input. For a leaf derivation
    /// (no input derivations) the unmasked hash is the sha256 of its `.drv` bytes.
    pub fn hash_modulo<E>(
        &self,
        mask_outputs: bool,
        input_hash: impl FnMut(&StorePath) -> Result<Hash, E>,
    ) -> Result<Hash, E>
    where
        E: From<DerivationError>,
    {
        let preimage = self.hash_modulo_preimage(mask_outputs, input_hash)?;
        Ok(Hash::sha256(preimage.as_bytes()))
    }

    /// Compute and set the output paths, as `derivation { … }` does at
    /// instantiation: each output tuple and the env var named after each output.
    ///
    /// Input-addressed: every output is first made deferred and its env var `""`
    /// (added if missing, as the front end always has it), then
    /// `h = hash_modulo(mask = true)` and output `id` becomes
    /// `make_output_path(id, h, name)`. Existing paths are ignored, so this is also how
    /// to recompute them. Fixed-output: the path is `make_fixed_output_path` of the
    /// name, method and hash, and `input_hash` is not called.
    ///
    /// On error `self` is left unchanged.
    pub fn fill_output_paths<E>(
        &mut self,
        input_hash: impl FnMut(&StorePath) -> Result<Hash, E>,
    ) -> Result<(), E>
    where
        E: From<DerivationError>,
    {
        let kind = self.validate_shape().map_err(DerivationError::from)?;
        let name = self.name()?.into_owned();
        let mut drv = self.clone();
        match kind {
            DerivationType::Floating => return Err(DerivationError::FloatingUnsupported.into()),
            DerivationType::FixedOutput => {
                for (id, output) in drv.outputs.iter_mut() {
                    if let DerivationOutput::Fixed { path, method, hash } = output {
                        let p = make_fixed_output_path(&name, *method, hash, [], false).map_err(
                            |source| DerivationError::BadName {
                                name: name.clone(),
                                source,
                            },
                        )?;
                        drv.env.insert(id.clone(), p.to_absolute());
                        *path = Some(p);
                    }
                }
            }
            DerivationType::InputAddressed | DerivationType::DeferredInputAddressed => {
                for (id, output) in drv.outputs.iter_mut() {
                    *output = DerivationOutput::Deferred;
                    drv.env.insert(id.clone(), String::new());
                }
                let h = drv.hash_modulo(true, input_hash)?;
                for (id, output) in drv.outputs.iter_mut() {
                    let p = make_output_path(id, &h, &name).map_err(|source| {
                        DerivationError::BadName {
                            name: crate::store_path::output_path_name(&name, id),
                            source,
                        }
                    })?;
                    drv.env.insert(id.clone(), p.to_absolute());
                    *output = DerivationOutput::InputAddressed(p);
                }
            }
        }
        *self = drv;
        Ok(())
    }

    /// Nix's check when it reads a `.drv`: recompute the output paths and require the
    /// tuples and the output env vars to match ("has incorrect output …").
    pub fn check_output_paths<E>(
        &self,
        input_hash: impl FnMut(&StorePath) -> Result<Hash, E>,
    ) -> Result<(), E>
    where
        E: From<DerivationError>,
    {
        self.validate().map_err(DerivationError::from)?;
        let mut expected = self.clone();
        expected.fill_output_paths(input_hash)?;
        for (id, want) in &expected.outputs {
            let (Some(want_path), found) = (want.path(), self.outputs.get(id)) else {
                continue;
            };
            if found.and_then(DerivationOutput::path) != Some(want_path) {
                return Err(DerivationError::IncorrectOutput {
                    output: id.clone(),
                    found: found
                        .and_then(DerivationOutput::path)
                        .map(StorePath::to_absolute)
                        .unwrap_or_default(),
                    expected: want_path.clone(),
                }
                .into());
            }
            let want_env = want_path.to_absolute();
            if self.env.get(id) != Some(&want_env) {
                return Err(DerivationError::IncorrectEnv {
                    var: id.clone(),
                    found: self.env.get(id).cloned(),
                    expected: want_env,
                }
                .into());
            }
        }
        Ok(())
    }

    /// The `.drv` store path: a text path named `<name>.drv` whose content is
    /// [`to_aterm`](Self::to_aterm) and whose references are the input sources and
    /// input derivations (not the outputs).
    pub fn drv_path(&self) -> Result<StorePath, DerivationError> {
        let aterm = self.to_aterm()?;
        let name = format!("{}.drv", self.name()?);
        let refs = self.input_srcs.iter().chain(self.input_drvs.keys());
        make_text_path(&name, &Hash::sha256(aterm.as_bytes()), refs)
            .map_err(|source| DerivationError::BadName { name, source })
    }
}

/// What the hasher remembers about one input `.drv`.
struct Known {
    hash: Hash,
    outputs: BTreeSet<String>,
}

/// Computes modulo hashes over a derivation graph, loading each input `.drv` through
/// `loader` at most once and remembering its hash. The walk is iterative, so a deep
/// chain of inputs cannot overflow the stack, and a cycle (impossible for real store
/// paths, possible for a buggy loader) is an error rather than a hang.
///
/// The loader is trusted to return the derivation stored at the path it is given;
/// the hasher does not re-derive the path from the contents.
///
/// ```
/// # use std::collections::HashMap;
/// # use buildit_store::derivation::{Derivation, DerivationError, DerivationHasher};
/// # use buildit_store::StorePath;
/// let store: HashMap<StorePath, Vec<u8>> = HashMap::new();
/// let mut hasher = DerivationHasher::new(|p: &StorePath| -> Result<Derivation, DerivationError> {
///     let bytes = store.get(p).ok_or_else(|| DerivationError::UnknownInput(p.clone()))?;
///     Ok(Derivation::from_aterm(bytes)?)
/// });
/// # let _ = &mut hasher;
/// ```
pub struct DerivationHasher<L> {
    loader: L,
    known: HashMap<StorePath, Known>,
}

impl<L> DerivationHasher<L> {
    pub fn new(loader: L) -> Self {
        DerivationHasher {
            loader,
            known: HashMap::new(),
        }
    }

    /// The memoised (unmasked) modulo hash of an input `.drv`, if already computed.
    pub fn cached(&self, drv_path: &StorePath) -> Option<&Hash> {
        self.known.get(drv_path).map(|k| &k.hash)
    }

    /// How many `.drv`s have been hashed.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// Lookup for [`Derivation::hash_modulo`] once every input is known.
    fn lookup(&self, drv: &Derivation) -> Result<(), DerivationError> {
        if drv.is_fixed_output() {
            return Ok(());
        }
        for (path, outputs) in &drv.input_drvs {
            let known = self
                .known
                .get(path)
                .ok_or_else(|| DerivationError::UnknownInput(path.clone()))?;
            // Nix looks up each used output's hash and fails on a missing one.
            if let Some(missing) = outputs.iter().find(|o| !known.outputs.contains(*o)) {
                return Err(DerivationError::MissingInputOutput {
                    drv: path.clone(),
                    output: missing.clone(),
                });
            }
        }
        Ok(())
    }

    fn known_hash(&self, path: &StorePath) -> Result<Hash, DerivationError> {
        self.known
            .get(path)
            .map(|k| k.hash.clone())
            .ok_or_else(|| DerivationError::UnknownInput(path.clone()))
    }
}

impl<L, E> DerivationHasher<L>
where
    L: FnMut(&StorePath) -> Result<Derivation, E>,
    E: From<DerivationError>,
{
    /// Inputs still to hash before `drv` can be. A FOD's inputs never matter.
    fn pending(&self, drv: &Derivation) -> Vec<StorePath> {
        if drv.is_fixed_output() {
            return Vec::new();
        }
        drv.input_drvs
            .keys()
            .filter(|p| !self.known.contains_key(*p))
            .cloned()
            .collect()
    }

    /// Hash `root` and everything it needs, depth first, without recursion.
    fn ensure(&mut self, root: &StorePath) -> Result<(), E> {
        if self.known.contains_key(root) {
            return Ok(());
        }
        struct Frame {
            path: StorePath,
            drv: Derivation,
            pending: Vec<StorePath>,
        }
        let drv = (self.loader)(root)?;
        let pending = self.pending(&drv);
        let mut on_stack = HashSet::from([root.clone()]);
        let mut stack = vec![Frame {
            path: root.clone(),
            drv,
            pending,
        }];
        while let Some(top) = stack.last_mut() {
            if let Some(next) = top.pending.pop() {
                if self.known.contains_key(&next) {
                    continue;
                }
                if on_stack.contains(&next) {
                    return Err(DerivationError::Cycle(next).into());
                }
                let drv = (self.loader)(&next)?;
                let pending = self.pending(&drv);
                on_stack.insert(next.clone());
                stack.push(Frame {
                    path: next,
                    drv,
                    pending,
                });
            } else if let Some(Frame { path, drv, .. }) = stack.pop() {
                on_stack.remove(&path);
                self.lookup(&drv)?;
                let hash = drv.hash_modulo(false, |p| self.known_hash(p))?;
                let outputs = drv.outputs.into_keys().collect();
                self.known.insert(path, Known { hash, outputs });
            }
        }
        Ok(())
    }

    fn ensure_inputs(&mut self, drv: &Derivation) -> Result<(), E> {
        if !drv.is_fixed_output() {
            for path in drv.input_drvs.keys() {
                self.ensure(path)?;
            }
        }
        self.lookup(drv)?;
        Ok(())
    }

    /// The unmasked modulo hash of the `.drv` at `drv_path`: what replaces it in the
    /// derivations that use it.
    pub fn input_hash(&mut self, drv_path: &StorePath) -> Result<Hash, E> {
        self.ensure(drv_path)?;
        Ok(self.known_hash(drv_path)?)
    }

    /// [`Derivation::hash_modulo`] with inputs loaded through this hasher.
    pub fn hash_modulo(&mut self, drv: &Derivation, mask_outputs: bool) -> Result<Hash, E> {
        self.ensure_inputs(drv)?;
        Ok(drv.hash_modulo(mask_outputs, |p| self.known_hash(p))?)
    }

    /// [`Derivation::hash_modulo_preimage`] with inputs loaded through this hasher.
    pub fn hash_modulo_preimage(
        &mut self,
        drv: &Derivation,
        mask_outputs: bool,
    ) -> Result<String, E> {
        self.ensure_inputs(drv)?;
        Ok(drv.hash_modulo_preimage(mask_outputs, |p| self.known_hash(p))?)
    }

    /// [`Derivation::fill_output_paths`] with inputs loaded through this hasher.
    pub fn fill_output_paths(&mut self, drv: &mut Derivation) -> Result<(), E> {
        self.ensure_inputs(drv)?;
        let this = &*self;
        Ok(drv.fill_output_paths(|p| this.known_hash(p))?)
    }

    /// [`Derivation::check_output_paths`] with inputs loaded through this hasher.
    pub fn check_output_paths(&mut self, drv: &Derivation) -> Result<(), E> {
        self.ensure_inputs(drv)?;
        Ok(drv.check_output_paths(|p| self.known_hash(p))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::HashAlgo;
    use crate::FileIngestion;

    fn leaf(name: &str, builder: &str) -> Derivation {
        let mut d = Derivation {
            outputs: [("out".into(), DerivationOutput::Deferred)].into(),
            system: "x86_64-linux".into(),
            builder: builder.into(),
            env: [("name".into(), name.into())].into(),
            ..Default::default()
        };
        d.fill_output_paths(no_inputs).unwrap();
        d
    }

    fn no_inputs(p: &StorePath) -> Result<Hash, DerivationError> {
        Err(DerivationError::UnknownInput(p.clone()))
    }

    #[test]
    fn minimal_matches_spec_example() {
        let mut d = Derivation {
            outputs: [("out".into(), DerivationOutput::Deferred)].into(),
            system: "x86_64-linux".into(),
            builder: "/bin/sh".into(),
            env: [
                ("builder".into(), "/bin/sh".into()),
                ("name".into(), "minimal".into()),
                ("system".into(), "x86_64-linux".into()),
            ]
            .into(),
            ..Default::default()
        };
        d.fill_output_paths(no_inputs).unwrap();
        assert_eq!(
            d.outputs["out"].path().unwrap().to_absolute(),
            "/store/6jk0gx7z7vqazaw4svlm0pg46d5f82w8-minimal"
        );
        assert_eq!(
            d.drv_path().unwrap().to_absolute(),
            "/store/9a77j6s1lb6b70j6m7mmpmi2yj24i9p6-minimal.drv"
        );
        // Leaf: unmasked modulo hash = sha256 of the .drv bytes.
        assert_eq!(
            d.hash_modulo(false, no_inputs).unwrap(),
            Hash::sha256(d.to_aterm().unwrap().as_bytes())
        );
        assert_eq!(d.check_output_paths(no_inputs), Ok(()));
    }

    #[test]
    fn check_output_paths_finds_tampering() {
        let d = leaf("minimal", "/bin/sh");
        let mut bad = d.clone();
        bad.builder = "/bin/bash".into();
        assert!(matches!(
            bad.check_output_paths(no_inputs),
            Err(DerivationError::IncorrectOutput { .. })
        ));
        let mut bad = d.clone();
        bad.env.insert("out".into(), "/store/x".into());
        assert!(matches!(
            bad.check_output_paths(no_inputs),
            Err(DerivationError::IncorrectEnv { .. })
        ));
    }

    #[test]
    fn fill_errors_leave_derivation_unchanged() {
        let mut d = leaf("x", "/bin/sh");
        d.input_drvs.insert(
            StorePath::from_base_name("9a77j6s1lb6b70j6m7mmpmi2yj24i9p6-minimal.drv").unwrap(),
            ["out".into()].into(),
        );
        let before = d.clone();
        assert!(matches!(
            d.fill_output_paths(no_inputs),
            Err(DerivationError::UnknownInput(_))
        ));
        assert_eq!(d, before);

        let mut d = leaf("x", "/bin/sh");
        d.env.insert("name".into(), "a".repeat(207));
        d.outputs
            .insert("longer".into(), DerivationOutput::Deferred);
        d.outputs.insert("out".into(), DerivationOutput::Deferred);
        let before = d.clone();
        assert!(matches!(
            d.fill_output_paths(no_inputs),
            Err(DerivationError::BadName { .. })
        ));
        assert_eq!(d, before);
    }

    #[test]
    fn floating_is_not_hashed() {
        let mut d = leaf("x", "/bin/sh");
        d.outputs.insert(
            "out".into(),
            DerivationOutput::Floating {
                method: FileIngestion::Recursive,
                algo: HashAlgo::Sha256,
            },
        );
        assert_eq!(
            d.hash_modulo(true, no_inputs),
            Err(DerivationError::FloatingUnsupported)
        );
        assert_eq!(
            d.fill_output_paths(no_inputs),
            Err(DerivationError::FloatingUnsupported)
        );
        assert!(d.to_aterm().is_ok());
    }

    fn fod(builder: &str) -> Derivation {
        let mut d = leaf("twin", builder);
        d.outputs.insert(
            "out".into(),
            DerivationOutput::Fixed {
                path: None,
                method: FileIngestion::Flat,
                hash: Hash::sha256(b"hello\n"),
            },
        );
        d.fill_output_paths(no_inputs).unwrap();
        d
    }

    /// A store of derivations keyed by their `.drv` paths, and a loader that counts.
    fn store(drvs: &[&Derivation]) -> HashMap<StorePath, Derivation> {
        drvs.iter()
            .map(|d| (d.drv_path().unwrap(), (*d).clone()))
            .collect()
    }

    #[test]
    fn hasher_memoises_and_merges_twins() {
        let a = fod("/bin/a");
        let b = fod("/bin/b");
        assert_ne!(a.drv_path().unwrap(), b.drv_path().unwrap());
        assert_eq!(a.outputs, b.outputs);
        let store = store(&[&a, &b]);
        let mut loads = 0;
        let mut hasher = DerivationHasher::new(|p: &StorePath| {
            loads += 1;
            store
                .get(p)
                .cloned()
                .ok_or_else(|| DerivationError::UnknownInput(p.clone()))
        });
        let mut consumer = leaf("consumer", "/bin/sh");
        for d in [&a, &b] {
            consumer
                .input_drvs
                .insert(d.drv_path().unwrap(), ["out".into()].into());
        }
        hasher.fill_output_paths(&mut consumer).unwrap();
        let pre = hasher.hash_modulo_preimage(&consumer, true).unwrap();
        let twin = hasher.input_hash(&a.drv_path().unwrap()).unwrap();
        assert_eq!(hasher.input_hash(&b.drv_path().unwrap()).unwrap(), twin);
        assert!(pre.contains(&format!(r#"[("{}",["out"])]"#, twin.to_hex())));
        hasher.check_output_paths(&consumer).unwrap();
        assert_eq!(hasher.len(), 2);
        drop(hasher);
        assert_eq!(loads, 2);
    }

    #[test]
    fn hasher_reports_missing_output_and_cycles() {
        let a = leaf("a", "/bin/sh");
        let a_path = a.drv_path().unwrap();
        let store = store(&[&a]);
        let mut hasher = DerivationHasher::new(|p: &StorePath| {
            store
                .get(p)
                .cloned()
                .ok_or_else(|| DerivationError::UnknownInput(p.clone()))
        });
        let mut c = leaf("c", "/bin/sh");
        c.input_drvs.insert(a_path.clone(), ["dev".into()].into());
        assert_eq!(
            hasher.hash_modulo(&c, true),
            Err(DerivationError::MissingInputOutput {
                drv: a_path.clone(),
                output: "dev".into()
            })
        );

        // A loader that claims a.drv depends on itself.
        let mut looped = a.clone();
        looped
            .input_drvs
            .insert(a_path.clone(), ["out".into()].into());
        let mut hasher = DerivationHasher::new(|_: &StorePath| -> Result<_, DerivationError> {
            Ok(looped.clone())
        });
        assert_eq!(
            hasher.input_hash(&a_path),
            Err(DerivationError::Cycle(a_path))
        );
    }

    #[test]
    fn deep_chain_does_not_overflow() {
        let mut store = HashMap::new();
        let mut prev: Option<StorePath> = None;
        for i in 0..3000 {
            // Outputs do not matter for the walk; leave them deferred.
            let mut d = Derivation {
                outputs: [("out".into(), DerivationOutput::Deferred)].into(),
                system: "x86_64-linux".into(),
                builder: "/bin/sh".into(),
                env: [("name".into(), format!("n{i}"))].into(),
                ..Default::default()
            };
            if let Some(p) = prev.take() {
                d.input_drvs.insert(p, ["out".into()].into());
            }
            let p = d.drv_path().unwrap();
            store.insert(p.clone(), d);
            prev = Some(p);
        }
        let top = prev.unwrap();
        let mut hasher = DerivationHasher::new(|p: &StorePath| {
            store
                .get(p)
                .cloned()
                .ok_or_else(|| DerivationError::UnknownInput(p.clone()))
        });
        hasher.input_hash(&top).unwrap();
        assert_eq!(hasher.len(), 3000);
    }
}
