//! What the store knows about a valid path: the metadata Nix keeps in its database
//! and prints with `nix path-info --json`.

use std::collections::BTreeSet;

use serde::Serialize;
use thiserror::Error;

use crate::store_path::make_content_addressed_path;
use crate::{ContentAddress, FileIngestion, Hash, HashAlgo, StorePath};

/// A content address that does not hold for its path.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{path}: its content address {ca} is false: {why}")]
pub struct FalseContentAddress {
    pub path: StorePath,
    pub ca: String,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    pub path: StorePath,
    /// sha256 of the path's NAR serialisation.
    pub nar_hash: Hash,
    pub nar_size: u64,
    pub references: BTreeSet<StorePath>,
    /// The derivation said to have built the path: advisory only. A binary
    /// cache's signature does not cover it (Nix signs the path, NAR hash, NAR
    /// size and references), so from a cache it is whatever the narinfo says.
    pub deriver: Option<StorePath>,
    /// Signatures as `keyname:base64`, kept as text so that unknown keys survive.
    pub sigs: Vec<String>,
    /// Seconds since the epoch; metadata only, never part of any hash.
    pub registration_time: i64,
    /// The content address the path claims. Unsigned in a narinfo like `deriver`,
    /// so a claim from elsewhere is checked ([`PathInfo::check_ca_path`], and the
    /// content by `LocalStore::add_nar`) before it is registered.
    pub ca: Option<ContentAddress>,
}

/// The shape of `nix path-info --json` (Nix 2.8).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PathInfoJson<'a> {
    path: &'a StorePath,
    nar_hash: String,
    nar_size: u64,
    references: &'a BTreeSet<StorePath>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deriver: Option<&'a StorePath>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    signatures: &'a Vec<String>,
    registration_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ca: Option<String>,
    valid: bool,
}

impl PathInfo {
    /// Whether the `ca` claim (if any) makes this very path from the path's name
    /// and references, as Nix's `ValidPathInfo::isContentAddressed` requires: a
    /// text path never refers to itself, and only recursive sha256 (`source`)
    /// paths may have references. The content is not looked at here.
    pub fn check_ca_path(&self) -> Result<(), FalseContentAddress> {
        let Some(ca) = &self.ca else {
            return Ok(());
        };
        let false_ca = |why: String| FalseContentAddress {
            path: self.path.clone(),
            ca: ca.to_string(),
            why,
        };
        let self_ref = self.references.contains(&self.path);
        let others = self.references.iter().filter(|r| **r != self.path);
        let source = |method: &FileIngestion, h: &Hash| {
            *method == FileIngestion::Recursive && h.algo() == HashAlgo::Sha256
        };
        match ca {
            ContentAddress::Text(_) if self_ref => {
                return Err(false_ca("a text path cannot refer to itself".into()))
            }
            ContentAddress::Fixed(method, h)
                if !self.references.is_empty() && !source(method, h) =>
            {
                return Err(false_ca(
                    "only recursive sha256 content may have references".into(),
                ))
            }
            _ => {}
        }
        let made = make_content_addressed_path(self.path.name(), ca, others, self_ref)
            .map_err(|e| false_ca(e.to_string()))?;
        if made != self.path {
            return Err(false_ca(format!("it makes the path {made}")));
        }
        Ok(())
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(PathInfoJson {
            path: &self.path,
            nar_hash: self.nar_hash.to_sri(),
            nar_size: self.nar_size,
            references: &self.references,
            deriver: self.deriver.as_ref(),
            signatures: &self.sigs,
            registration_time: self.registration_time,
            ca: self.ca.as_ref().map(|c| c.to_string()),
            valid: true,
        })
        .expect("path info serialises")
    }
}
