//! `builtin:buildroot`: unpacked `.deb` trees merged in order, then the fix-ups
//! their maintainer scripts would have made.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{builtin_drv, join_paths, ContractError, EnvReader};
use crate::{Derivation, StorePath};

pub const BUILDER: &str = "builtin:buildroot";

pub mod keys {
    /// Space-separated unpacked trees, in merge order.
    pub const MEMBERS: &str = "members";
    /// JSON of [`super::Fixups`].
    pub const FIXUPS: &str = "fixups";
}

/// What the build-root builder does after merging the member trees. Lives in the
/// derivation's env as canonical JSON, so it is part of the build root's hash.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Fixups {
    /// `bin`, `sbin`, `lib*` at the top as symlinks into `usr/`.
    pub merged_usr: bool,
    /// Absolute link path → target (relative to the link's directory, or absolute).
    pub alternatives: BTreeMap<String, String>,
    /// Absolute path → contents (mode 0644).
    pub files: BTreeMap<String, String>,
    /// Absolute paths of extra (empty) directories.
    pub directories: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRoot {
    pub name: String,
    pub members: Vec<StorePath>,
    pub fixups: Fixups,
}

impl BuildRoot {
    pub fn to_env(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (keys::MEMBERS.into(), join_paths(&self.members)),
            (
                keys::FIXUPS.into(),
                serde_json::to_string(&self.fixups).expect("fixups serialise"),
            ),
        ])
    }

    /// Without its inputs (the members' unpack `.drv`s), which the caller adds.
    pub fn to_derivation(&self) -> Derivation {
        builtin_drv(&self.name, BUILDER, self.to_env())
    }

    pub fn from_derivation(d: &Derivation) -> Result<BuildRoot, ContractError> {
        let r = EnvReader::new(d);
        Ok(BuildRoot {
            name: r.name(),
            members: r.paths(keys::MEMBERS)?,
            fixups: r.json(keys::FIXUPS)?,
        })
    }
}

/// The members a build-root derivation names, without parsing the rest: what
/// explains which package ships a file of a layer.
pub fn members_of(d: &Derivation) -> Option<Vec<StorePath>> {
    if d.builder != BUILDER {
        return None;
    }
    EnvReader::new(d).paths(keys::MEMBERS).ok()
}
