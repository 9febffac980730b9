//! `builtin:fetchurl`: a fixed-output download, as Nix's builtin of the same name.

use std::collections::BTreeMap;

use super::{builtin_drv, ContractError, EnvReader, OUT};
use crate::{Derivation, DerivationOutput, FileIngestion, Hash, HashAlgo};

pub const BUILDER: &str = "builtin:fetchurl";

pub mod keys {
    /// Space-separated alternatives (`mirror://debian/…` for `.deb`s).
    pub const URLS: &str = "urls";
    /// Nix's spelling for one URL; read, never written.
    pub const URL: &str = "url";
    pub const OUTPUT_HASH: &str = "outputHash";
    pub const OUTPUT_HASH_ALGO: &str = "outputHashAlgo";
    pub const OUTPUT_HASH_MODE: &str = "outputHashMode";
}

/// The URL scheme of `.deb`s: the `.drv` is the same whichever mirror a machine
/// uses (the fetcher expands it).
pub const DEBIAN_MIRROR: &str = "mirror://debian/";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchUrl {
    pub name: String,
    pub urls: Vec<String>,
    pub method: FileIngestion,
    pub hash: Hash,
}

fn mode_name(m: FileIngestion) -> &'static str {
    match m {
        FileIngestion::Flat => "flat",
        FileIngestion::Recursive => "recursive",
    }
}

impl FetchUrl {
    /// The file at `urls`, which must hash (flat) to `hash`.
    pub fn flat(name: &str, urls: &str, hash: Hash) -> FetchUrl {
        FetchUrl {
            name: name.into(),
            urls: urls.split_whitespace().map(String::from).collect(),
            method: FileIngestion::Flat,
            hash,
        }
    }

    pub fn to_env(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (keys::URLS.into(), self.urls.join(" ")),
            (keys::OUTPUT_HASH.into(), self.hash.to_hex()),
            (keys::OUTPUT_HASH_ALGO.into(), self.hash.algo().to_string()),
            (keys::OUTPUT_HASH_MODE.into(), mode_name(self.method).into()),
        ])
    }

    pub fn to_derivation(&self) -> Derivation {
        let mut d = builtin_drv(&self.name, BUILDER, self.to_env());
        d.outputs.insert(
            OUT.into(),
            DerivationOutput::Fixed {
                path: None,
                method: self.method,
                hash: self.hash.clone(),
            },
        );
        d
    }

    pub fn from_derivation(d: &Derivation) -> Result<FetchUrl, ContractError> {
        let r = EnvReader::new(d);
        let urls: Vec<String> = match r.opt(keys::URLS).or_else(|| r.opt(keys::URL)) {
            Some(u) => u.split_whitespace().map(String::from).collect(),
            None => return Err(r.missing(keys::URLS)),
        };
        // The fixed output is what Nix hashes; env repeats it.
        let (method, hash) = match d.outputs.get(OUT) {
            Some(DerivationOutput::Fixed { method, hash, .. }) => (*method, hash.clone()),
            _ => {
                let algo: HashAlgo = r
                    .str(keys::OUTPUT_HASH_ALGO)?
                    .parse()
                    .map_err(|e| r.invalid(keys::OUTPUT_HASH_ALGO, e))?;
                let hash = Hash::parse(r.str(keys::OUTPUT_HASH)?, Some(algo))
                    .map_err(|e| r.invalid(keys::OUTPUT_HASH, e))?;
                let method = match r.opt(keys::OUTPUT_HASH_MODE).unwrap_or("flat") {
                    "flat" => FileIngestion::Flat,
                    "recursive" => FileIngestion::Recursive,
                    other => {
                        return Err(
                            r.invalid(keys::OUTPUT_HASH_MODE, format!("unknown mode '{other}'"))
                        )
                    }
                };
                (method, hash)
            }
        };
        Ok(FetchUrl {
            name: r.name(),
            urls,
            method,
            hash,
        })
    }
}
