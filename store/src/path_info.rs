//! What the store knows about a valid path: the metadata Nix keeps in its database
//! and prints with `nix path-info --json`.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::{ContentAddress, Hash, StorePath};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    pub path: StorePath,
    /// sha256 of the path's NAR serialisation.
    pub nar_hash: Hash,
    pub nar_size: u64,
    pub references: BTreeSet<StorePath>,
    pub deriver: Option<StorePath>,
    /// Signatures as `keyname:base64`, kept as text so that unknown keys survive.
    pub sigs: Vec<String>,
    /// Seconds since the epoch; metadata only, never part of any hash.
    pub registration_time: i64,
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
