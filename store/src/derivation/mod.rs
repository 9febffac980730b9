//! Derivations: Nix's `.drv` files (ATerm), their hashing and their JSON form
//! (see `nix-formats.md` §3).
//!
//! A [`Derivation`] is the in-memory form of one `.drv` file:
//!
//! ```text
//! Derive([outputs],[inputDrvs],[inputSrcs],"system","builder",[args],[env])
//! ```
//!
//! * [`Derivation::from_aterm`] and [`Derivation::to_aterm`] (module `aterm`) read and
//!   write the exact bytes Nix 2.8 writes. Both sides enforce the order Nix writes
//!   (sorted, unique outputs, input derivations, input sources, env keys and
//!   output-name lists) so that one derivation has one byte form, and hence one
//!   `.drv` path.
//! * [`Derivation::hash_modulo`], [`Derivation::fill_output_paths`] and
//!   [`Derivation::drv_path`] (module `hashing`) compute `hashDerivationModulo`, the
//!   output paths and the `.drv` store path. Input derivations are looked up through a
//!   caller-supplied closure; [`DerivationHasher`] wraps a loader and memoises the
//!   modulo hash of every node so a large graph is hashed once per node.
//! * [`Derivation::to_nix_json`], [`Derivation::from_nix_json_body`] and
//!   [`parse_nix_show_derivation`] (module `json`)
//!   speak the shape `nix show-derivation` prints.
//!
//! Validation ([`Derivation::validate`]) is stricter than Nix 2.8 where Nix writes
//! something it cannot read back (a `system` containing `"`), or where buildit's
//! own rules are tighter (output names must be store-path name characters, input
//! derivations must be `.drv` paths and list at least one output). Everything Nix's
//! `derivation` builtin produces passes.
//!
//! Floating content-addressed outputs (`ca-derivations`, experimental in 2.8) are
//! represented ([`DerivationOutput::Floating`]) so such files parse and print back
//! exactly, but hashing them is refused with [`DerivationError::FloatingUnsupported`].

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use crate::hash::{Hash, HashAlgo, HashError};
use crate::store_path::{self, StorePath, StorePathError};
use crate::FileIngestion;

mod aterm;
mod hashing;
mod json;

pub use aterm::{AtermError, AtermErrorKind, MAX_ATERM_LEN};
pub use hashing::DerivationHasher;
pub use json::{parse_nix_show_derivation, JsonError};

/// One `.drv` file. Field order and meaning follow Nix's `Derivation`; the maps are
/// sorted exactly as Nix writes them (`StorePath`'s order is the full path's).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Derivation {
    /// Output id (`out`, `lib`, …) to its tuple.
    pub outputs: BTreeMap<String, DerivationOutput>,
    /// Input `.drv` paths and which of their outputs are used.
    pub input_drvs: BTreeMap<StorePath, BTreeSet<String>>,
    /// Plain store paths used as inputs (sources, `builtins.toFile` files).
    pub input_srcs: BTreeSet<StorePath>,
    /// Platform, e.g. `x86_64-linux`.
    pub system: String,
    pub builder: String,
    /// In the given order; the only unsorted part of a derivation.
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

/// One output tuple `("id","path","hashAlgo","hash")` (§3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DerivationOutput {
    /// `("id","/store/…","","")`.
    InputAddressed(StorePath),
    /// `("id","/store/…","[r:]algo","hex")`. `path` is `None` only while a front
    /// end builds the derivation; [`Derivation::fill_output_paths`] sets it, and a
    /// derivation with `None` here can be hashed for its output path but neither
    /// printed nor given a `.drv` path.
    Fixed {
        path: Option<StorePath>,
        method: FileIngestion,
        hash: Hash,
    },
    /// `("id","","","")`: an input-addressed output whose path is not known yet
    /// (what a front end builds, and what masking writes).
    Deferred,
    /// `("id","","[r:]algo","")`: a floating content-addressed output. Parsed and
    /// printed, not hashed.
    Floating {
        method: FileIngestion,
        algo: HashAlgo,
    },
}

impl DerivationOutput {
    /// The output path, if it is known.
    pub fn path(&self) -> Option<&StorePath> {
        match self {
            Self::InputAddressed(p) => Some(p),
            Self::Fixed { path, .. } => path.as_ref(),
            Self::Deferred | Self::Floating { .. } => None,
        }
    }

    pub fn is_fixed(&self) -> bool {
        matches!(self, Self::Fixed { .. })
    }

    /// The tuple's third field: `""`, `sha256`, `r:sha256`, …
    pub fn hash_algo_field(&self) -> String {
        match self {
            Self::InputAddressed(_) | Self::Deferred => String::new(),
            Self::Fixed { method, hash, .. } => format!("{}{}", method.prefix(), hash.algo()),
            Self::Floating { method, algo } => format!("{}{}", method.prefix(), algo),
        }
    }

    /// The tuple's fourth field: the expected hash in lowercase hex, or `""`.
    pub fn hash_field(&self) -> String {
        match self {
            Self::Fixed { hash, .. } => hash.to_hex(),
            _ => String::new(),
        }
    }
}

/// Parse a tuple's `hashAlgo` field (`sha256`, `r:sha1`, …).
pub(crate) fn parse_method_algo(s: &str) -> Result<(FileIngestion, HashAlgo), HashError> {
    let (method, algo) = match s.strip_prefix("r:") {
        Some(rest) => (FileIngestion::Recursive, rest),
        None => (FileIngestion::Flat, s),
    };
    Ok((method, algo.parse()?))
}

/// What kind of derivation the outputs make it (Nix's `DerivationType`). Nix refuses
/// to mix kinds, and so do we.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DerivationType {
    /// Every output has its path.
    InputAddressed,
    /// Every output is [`DerivationOutput::Deferred`].
    DeferredInputAddressed,
    /// One output `out` with a known hash.
    FixedOutput,
    /// Floating content-addressed outputs.
    Floating,
}

/// A derivation that must not be written (or that Nix could not read back).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ValidationError {
    #[error("a derivation needs at least one output")]
    NoOutputs,
    #[error(
        "output name {0:?} is not valid: it must be non-empty and use only letters, digits and + - . _ ? ="
    )]
    BadOutputName(String),
    #[error(
        "system {system:?} contains {bad:?}: quotes, backslashes and control characters are not allowed (Nix 2.8 writes this field unescaped and cannot read it back)"
    )]
    BadSystem { system: String, bad: char },
    #[error("a derivation's outputs must all be of one kind (input-addressed, deferred, fixed or floating)")]
    MixedOutputs,
    #[error("a fixed-output derivation must have exactly one output, named 'out' (it has: {0})")]
    FixedOutputs(String),
    #[error("floating content-addressed outputs must all use the same hash method and algorithm")]
    FloatingMismatch,
    #[error("fixed output 'out' has no path yet (call fill_output_paths first)")]
    FixedWithoutPath,
    #[error("input derivation {0} is not a .drv store path")]
    InputNotDrv(StorePath),
    #[error("input derivation {0} lists no outputs")]
    InputWithoutOutputs(StorePath),
    #[error("input derivation {drv} names output {output:?}, which is not a valid output name")]
    BadInputOutputName { drv: StorePath, output: String },
}

/// Errors from naming and hashing derivations. Closures handed to the hashing
/// functions return the caller's error type `E`, which must take these via `From`.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DerivationError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    Aterm(#[from] AtermError),
    #[error(
        "derivation has no name: env has neither 'name' nor a '__json' object with a string 'name'"
    )]
    NoName,
    #[error("derivation name {name:?} is not usable in a store path: {source}")]
    BadName {
        name: String,
        #[source]
        source: StorePathError,
    },
    #[error("floating content-addressed outputs (ca-derivations) cannot be hashed by buildit")]
    FloatingUnsupported,
    #[error("the modulo hash of input derivation {0} is not known")]
    UnknownInput(StorePath),
    #[error("input derivations form a cycle through {0}")]
    Cycle(StorePath),
    #[error("input derivation {drv} has no output {output:?}")]
    MissingInputOutput { drv: StorePath, output: String },
    #[error("output {output:?} is {found}, but it should be {expected}")]
    IncorrectOutput {
        output: String,
        found: String,
        expected: StorePath,
    },
    #[error("env variable {var:?} is {found:?}, but it should be {expected:?}")]
    IncorrectEnv {
        var: String,
        found: Option<String>,
        expected: String,
    },
}

/// Output ids become parts of store path names (`name-dev`), so they get the name
/// character set; a leading dot is fine here as it never starts the name.
pub(crate) fn check_output_name(name: &str) -> Result<(), ValidationError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"+-._?=".contains(&c));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::BadOutputName(name.to_string()))
    }
}

/// Nix 2.8 writes `system` without escaping, so anything that would need an escape
/// (or that could confuse its reader) makes a `.drv` Nix cannot read.
pub(crate) fn check_system(system: &str) -> Result<(), ValidationError> {
    match system
        .chars()
        .find(|&c| c == '"' || c == '\\' || c.is_control())
    {
        Some(bad) => Err(ValidationError::BadSystem {
            system: system.to_string(),
            bad,
        }),
        None => Ok(()),
    }
}

pub(crate) fn check_input_drv(
    drv: &StorePath,
    outputs: &BTreeSet<String>,
) -> Result<(), ValidationError> {
    if !drv.is_derivation() {
        return Err(ValidationError::InputNotDrv(drv.clone()));
    }
    if outputs.is_empty() {
        // Nix's modulo hash drops such an entry entirely in some versions and not in
        // others; no front end writes one, so refuse rather than pick a behaviour.
        return Err(ValidationError::InputWithoutOutputs(drv.clone()));
    }
    for output in outputs {
        if check_output_name(output).is_err() {
            return Err(ValidationError::BadInputOutputName {
                drv: drv.clone(),
                output: output.clone(),
            });
        }
    }
    Ok(())
}

/// Nix's `BasicDerivation::type()`, with its errors.
pub(crate) fn output_kind(
    outputs: &BTreeMap<String, DerivationOutput>,
) -> Result<DerivationType, ValidationError> {
    let mut kinds = outputs.values().map(|o| match o {
        DerivationOutput::InputAddressed(_) => DerivationType::InputAddressed,
        DerivationOutput::Deferred => DerivationType::DeferredInputAddressed,
        DerivationOutput::Fixed { .. } => DerivationType::FixedOutput,
        DerivationOutput::Floating { .. } => DerivationType::Floating,
    });
    let kind = kinds.next().ok_or(ValidationError::NoOutputs)?;
    if kinds.any(|k| k != kind) {
        return Err(ValidationError::MixedOutputs);
    }
    match kind {
        DerivationType::FixedOutput => {
            if outputs.len() != 1 || !outputs.contains_key("out") {
                let names: Vec<&str> = outputs.keys().map(String::as_str).collect();
                return Err(ValidationError::FixedOutputs(names.join(", ")));
            }
        }
        DerivationType::Floating => {
            let mut methods = outputs.values().filter_map(|o| match o {
                DerivationOutput::Floating { method, algo } => Some((*method, *algo)),
                _ => None,
            });
            if let Some(first) = methods.next() {
                if methods.any(|m| m != first) {
                    return Err(ValidationError::FloatingMismatch);
                }
            }
        }
        DerivationType::InputAddressed | DerivationType::DeferredInputAddressed => {}
    }
    Ok(kind)
}

impl Derivation {
    /// Check everything except that a fixed output already has its path: what a
    /// front end's half-built derivation must satisfy before
    /// [`fill_output_paths`](Self::fill_output_paths).
    pub(crate) fn validate_shape(&self) -> Result<DerivationType, ValidationError> {
        check_system(&self.system)?;
        for name in self.outputs.keys() {
            check_output_name(name)?;
        }
        let kind = output_kind(&self.outputs)?;
        for (drv, outputs) in &self.input_drvs {
            check_input_drv(drv, outputs)?;
        }
        Ok(kind)
    }

    /// Whether this derivation may be written as a `.drv`: the rules Nix enforces when
    /// reading or instantiating, plus buildit's stricter ones (see the module docs).
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.validate_shape()? == DerivationType::FixedOutput
            && self.outputs.values().any(|o| o.path().is_none())
        {
            return Err(ValidationError::FixedWithoutPath);
        }
        Ok(())
    }

    /// The kind of derivation its outputs make it.
    pub fn derivation_type(&self) -> Result<DerivationType, ValidationError> {
        output_kind(&self.outputs)
    }

    /// A fixed-output derivation: exactly one output, `out`, with a known hash. Its
    /// modulo hash ignores builder, args and inputs.
    pub fn is_fixed_output(&self) -> bool {
        self.outputs.len() == 1
            && matches!(
                self.outputs.get("out"),
                Some(DerivationOutput::Fixed { .. })
            )
    }

    /// The derivation's name: env `name`, or for `__structuredAttrs` derivations
    /// (whose env holds only `__json` and the outputs) the `name` inside `__json`.
    /// It names the outputs and the `.drv` file, so it must be a valid store path
    /// name.
    pub fn name(&self) -> Result<Cow<'_, str>, DerivationError> {
        let name = if let Some(name) = self.env.get("name") {
            Cow::Borrowed(name.as_str())
        } else {
            let json = self.env.get("__json").ok_or(DerivationError::NoName)?;
            let value: serde_json::Value =
                serde_json::from_str(json).map_err(|_| DerivationError::NoName)?;
            match value.get("name") {
                Some(serde_json::Value::String(s)) => Cow::Owned(s.clone()),
                _ => return Err(DerivationError::NoName),
            }
        };
        store_path::validate_name(&name).map_err(|source| DerivationError::BadName {
            name: name.to_string(),
            source,
        })?;
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(s: &str) -> StorePath {
        StorePath::from_base_name(s).unwrap()
    }

    fn minimal() -> Derivation {
        let out = sp("6jk0gx7z7vqazaw4svlm0pg46d5f82w8-minimal");
        Derivation {
            outputs: [("out".into(), DerivationOutput::InputAddressed(out.clone()))].into(),
            system: "x86_64-linux".into(),
            builder: "/bin/sh".into(),
            env: [
                ("builder".into(), "/bin/sh".into()),
                ("name".into(), "minimal".into()),
                ("out".into(), out.to_absolute()),
                ("system".into(), "x86_64-linux".into()),
            ]
            .into(),
            ..Default::default()
        }
    }

    #[test]
    fn validation_accepts_minimal() {
        assert_eq!(minimal().validate(), Ok(()));
        assert_eq!(minimal().name().unwrap(), "minimal");
    }

    #[test]
    fn validation_rejects_bad_system() {
        for bad in ["x86\"64", "a\\b", "a\nb", "a\tb", "a\u{7f}b", "a\u{0}b"] {
            let mut d = minimal();
            d.system = bad.into();
            assert!(
                matches!(d.validate(), Err(ValidationError::BadSystem { .. })),
                "{bad:?}"
            );
            assert!(d.to_aterm().is_err());
        }
        let mut d = minimal();
        d.system = "aarch64-darwin é".into();
        assert_eq!(d.validate(), Ok(()));
    }

    #[test]
    fn validation_rejects_bad_outputs() {
        let mut d = minimal();
        d.outputs.clear();
        assert_eq!(d.validate(), Err(ValidationError::NoOutputs));

        for bad in ["", "a b", "a/b", "é", "a\"b"] {
            let mut d = minimal();
            d.outputs.insert(bad.into(), DerivationOutput::Deferred);
            assert_eq!(
                d.validate(),
                Err(ValidationError::BadOutputName(bad.into())),
                "{bad:?}"
            );
        }

        let mut d = minimal();
        d.outputs.insert("dev".into(), DerivationOutput::Deferred);
        assert_eq!(d.validate(), Err(ValidationError::MixedOutputs));

        let fixed = DerivationOutput::Fixed {
            path: None,
            method: FileIngestion::Flat,
            hash: Hash::sha256(b"x"),
        };
        let mut d = minimal();
        d.outputs = [("out".into(), fixed.clone()), ("dev".into(), fixed.clone())].into();
        assert!(matches!(
            d.validate(),
            Err(ValidationError::FixedOutputs(_))
        ));
        d.outputs = [("bin".into(), fixed.clone())].into();
        assert!(matches!(
            d.validate(),
            Err(ValidationError::FixedOutputs(_))
        ));
        d.outputs = [("out".into(), fixed)].into();
        assert_eq!(d.validate(), Err(ValidationError::FixedWithoutPath));
        assert_eq!(d.validate_shape(), Ok(DerivationType::FixedOutput));
        assert!(d.is_fixed_output());

        let mut d = minimal();
        d.outputs = [
            (
                "a".into(),
                DerivationOutput::Floating {
                    method: FileIngestion::Recursive,
                    algo: HashAlgo::Sha256,
                },
            ),
            (
                "b".into(),
                DerivationOutput::Floating {
                    method: FileIngestion::Flat,
                    algo: HashAlgo::Sha256,
                },
            ),
        ]
        .into();
        assert_eq!(d.validate(), Err(ValidationError::FloatingMismatch));
    }

    #[test]
    fn validation_rejects_bad_input_drvs() {
        let src = sp("w9vc7vp84yq1aga6q1qg585dl061vnd3-builder.sh");
        let drv = sp("9a77j6s1lb6b70j6m7mmpmi2yj24i9p6-minimal.drv");
        let mut d = minimal();
        d.input_drvs.insert(src.clone(), ["out".into()].into());
        assert_eq!(d.validate(), Err(ValidationError::InputNotDrv(src)));
        let mut d = minimal();
        d.input_drvs.insert(drv.clone(), BTreeSet::new());
        assert_eq!(
            d.validate(),
            Err(ValidationError::InputWithoutOutputs(drv.clone()))
        );
        let mut d = minimal();
        d.input_drvs.insert(drv.clone(), ["o t".into()].into());
        assert!(matches!(
            d.validate(),
            Err(ValidationError::BadInputOutputName { .. })
        ));
    }

    #[test]
    fn name_from_structured_attrs() {
        let mut d = minimal();
        d.env.remove("name");
        assert_eq!(d.name(), Err(DerivationError::NoName));
        d.env
            .insert("__json".into(), r#"{"name":"structured","x":1}"#.into());
        assert_eq!(d.name().unwrap(), "structured");
        d.env.insert("__json".into(), r#"{"name":7}"#.into());
        assert_eq!(d.name(), Err(DerivationError::NoName));
        d.env.insert("name".into(), "a b".into());
        assert!(matches!(d.name(), Err(DerivationError::BadName { .. })));
    }
}
