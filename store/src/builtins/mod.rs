//! The derivation contract: every kind of derivation buildit makes and runs, each
//! with a typed environment, and the conversions to and from a [`Derivation`].
//!
//! Builder names and env keys are spelled here and nowhere else: front ends build
//! these values and turn them into derivations; the realiser, the image writer,
//! `check` and the audits read them back with [`Builder::from_derivation`]. A
//! derivation that is none of the kinds is [`Plain`] and runs as Nix would run it.
//!
//! Conventions every kind follows (Nix's): one output `out`, and `env` repeats
//! `name`, `builder` and `system`. Builtins have `system = "builtin"`.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::{Derivation, DerivationOutput, StorePath};

pub mod build_root;
pub mod fetchurl;
pub mod image;
pub mod package;
pub mod plain;
pub mod unpack_deb;

pub use build_root::{BuildRoot, Fixups};
pub use fetchurl::FetchUrl;
pub use image::{Image, ImageConfig};
pub use package::PackageBuild;
pub use plain::Plain;
pub use unpack_deb::UnpackDeb;

/// `system` of derivations that buildit runs itself: they do not depend on the
/// machine's architecture.
pub const BUILTIN_SYSTEM: &str = "builtin";
/// The prefix of builders buildit runs in-process; an unknown one is refused
/// rather than run in a sandbox.
pub const BUILTIN_PREFIX: &str = "builtin:";

/// Keys every derivation's env carries (Nix's conventions).
pub mod keys {
    pub const NAME: &str = "name";
    pub const BUILDER: &str = "builder";
    pub const SYSTEM: &str = "system";
    /// The output, filled in with its path when output paths are computed.
    pub const OUT: &str = "out";
}

/// The one output of every kind.
pub const OUT: &str = keys::OUT;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ContractError {
    #[error("{builder}: env '{key}' is missing")]
    Missing { builder: String, key: &'static str },
    #[error("{builder}: env '{key}' is invalid: {reason}")]
    Invalid {
        builder: String,
        key: &'static str,
        reason: String,
    },
    #[error("builder '{0}' is not supported yet")]
    UnknownBuiltin(String),
}

/// The kind of a derivation, from its builder (and, for package builds, its env)
/// alone: cheap, nothing parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    FetchUrl,
    UnpackDeb,
    BuildRoot,
    Image,
    Package,
    /// A `builtin:` name buildit does not know.
    UnknownBuiltin,
    Plain,
}

impl Kind {
    pub fn of(d: &Derivation) -> Kind {
        match d.builder.as_str() {
            fetchurl::BUILDER => Kind::FetchUrl,
            unpack_deb::BUILDER => Kind::UnpackDeb,
            build_root::BUILDER => Kind::BuildRoot,
            image::BUILDER => Kind::Image,
            b if b.starts_with(BUILTIN_PREFIX) => Kind::UnknownBuiltin,
            _ if package::is_package(d) => Kind::Package,
            _ => Kind::Plain,
        }
    }

    /// Run by buildit itself rather than in a sandbox.
    pub fn is_builtin(self) -> bool {
        matches!(
            self,
            Kind::FetchUrl | Kind::UnpackDeb | Kind::BuildRoot | Kind::Image | Kind::UnknownBuiltin
        )
    }
}

/// A derivation read through the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Builder {
    FetchUrl(FetchUrl),
    UnpackDeb(UnpackDeb),
    BuildRoot(BuildRoot),
    Image(Image),
    Package(PackageBuild),
    Plain(Plain),
}

impl Builder {
    pub fn from_derivation(d: &Derivation) -> Result<Builder, ContractError> {
        Ok(match Kind::of(d) {
            Kind::FetchUrl => Builder::FetchUrl(FetchUrl::from_derivation(d)?),
            Kind::UnpackDeb => Builder::UnpackDeb(UnpackDeb::from_derivation(d)?),
            Kind::BuildRoot => Builder::BuildRoot(BuildRoot::from_derivation(d)?),
            Kind::Image => Builder::Image(Image::from_derivation(d)?),
            Kind::Package => Builder::Package(PackageBuild::from_derivation(d)?),
            Kind::UnknownBuiltin => return Err(ContractError::UnknownBuiltin(d.builder.clone())),
            Kind::Plain => Builder::Plain(Plain::from_derivation(d)),
        })
    }

    pub fn kind(&self) -> Kind {
        match self {
            Builder::FetchUrl(_) => Kind::FetchUrl,
            Builder::UnpackDeb(_) => Kind::UnpackDeb,
            Builder::BuildRoot(_) => Kind::BuildRoot,
            Builder::Image(_) => Kind::Image,
            Builder::Package(_) => Kind::Package,
            Builder::Plain(_) => Kind::Plain,
        }
    }

    /// The derivation without its inputs and output paths: the caller adds the
    /// inputs, then output paths are filled in (which also sets env `out`).
    pub fn to_derivation(&self) -> Derivation {
        match self {
            Builder::FetchUrl(x) => x.to_derivation(),
            Builder::UnpackDeb(x) => x.to_derivation(),
            Builder::BuildRoot(x) => x.to_derivation(),
            Builder::Image(x) => x.to_derivation(),
            Builder::Package(x) => x.to_derivation(),
            Builder::Plain(x) => x.to_derivation(),
        }
    }
}

/// A builtin's derivation: `system = "builtin"`, `name`/`builder`/`system` in env,
/// one deferred output `out`.
fn builtin_drv(name: &str, builder: &str, mut env: BTreeMap<String, String>) -> Derivation {
    env.insert(keys::NAME.into(), name.into());
    env.insert(keys::BUILDER.into(), builder.into());
    env.insert(keys::SYSTEM.into(), BUILTIN_SYSTEM.into());
    let mut d = Derivation {
        system: BUILTIN_SYSTEM.into(),
        builder: builder.into(),
        env,
        ..Default::default()
    };
    d.outputs.insert(OUT.into(), DerivationOutput::Deferred);
    d
}

/// Reads a derivation's env for one kind, naming the key that is missing or bad.
pub(crate) struct EnvReader<'d> {
    d: &'d Derivation,
}

impl<'d> EnvReader<'d> {
    pub(crate) fn new(d: &'d Derivation) -> Self {
        EnvReader { d }
    }

    pub(crate) fn missing(&self, key: &'static str) -> ContractError {
        ContractError::Missing {
            builder: self.d.builder.clone(),
            key,
        }
    }

    pub(crate) fn invalid(&self, key: &'static str, reason: impl ToString) -> ContractError {
        ContractError::Invalid {
            builder: self.d.builder.clone(),
            key,
            reason: reason.to_string(),
        }
    }

    pub(crate) fn opt(&self, key: &'static str) -> Option<&'d str> {
        self.d.env.get(key).map(String::as_str)
    }

    pub(crate) fn str(&self, key: &'static str) -> Result<&'d str, ContractError> {
        self.opt(key).ok_or_else(|| self.missing(key))
    }

    pub(crate) fn string(&self, key: &'static str) -> Result<String, ContractError> {
        self.str(key).map(String::from)
    }

    pub(crate) fn name(&self) -> String {
        self.opt(keys::NAME).unwrap_or_default().to_string()
    }

    pub(crate) fn json<T: serde::de::DeserializeOwned>(
        &self,
        key: &'static str,
    ) -> Result<T, ContractError> {
        serde_json::from_str(self.str(key)?).map_err(|e| self.invalid(key, e))
    }

    /// Space-separated store paths (absolute); an absent key is an empty list.
    pub(crate) fn paths(&self, key: &'static str) -> Result<Vec<StorePath>, ContractError> {
        words(self.opt(key).unwrap_or(""))
            .map(|p| {
                StorePath::from_absolute(p).map_err(|e| self.invalid(key, format!("{p}: {e}")))
            })
            .collect()
    }

    pub(crate) fn words(&self, key: &'static str) -> Vec<String> {
        words(self.opt(key).unwrap_or(""))
            .map(String::from)
            .collect()
    }
}

pub(crate) fn words(s: &str) -> impl Iterator<Item = &str> {
    s.split_whitespace()
}

pub(crate) fn join_paths(paths: &[StorePath]) -> String {
    paths
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}
