//! `builtin:unpack-deb`: the file tree of a fetched `.deb`.

use std::collections::BTreeMap;

use super::{builtin_drv, ContractError, EnvReader};
use crate::{Derivation, StorePath};

pub const BUILDER: &str = "builtin:unpack-deb";

pub mod keys {
    /// Store path of the fetched `.deb`.
    pub const DEB: &str = "deb";
    /// The Debian package name.
    pub const PACKAGE: &str = "package";
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackDeb {
    pub name: String,
    pub deb: StorePath,
    pub package: String,
}

impl UnpackDeb {
    pub fn to_env(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (keys::DEB.into(), self.deb.to_string()),
            (keys::PACKAGE.into(), self.package.clone()),
        ])
    }

    /// Without its input (the fetch `.drv`), which the caller adds.
    pub fn to_derivation(&self) -> Derivation {
        builtin_drv(&self.name, BUILDER, self.to_env())
    }

    pub fn from_derivation(d: &Derivation) -> Result<UnpackDeb, ContractError> {
        let r = EnvReader::new(d);
        let deb = r.str(keys::DEB)?;
        Ok(UnpackDeb {
            name: r.name(),
            deb: deb.parse().map_err(|e| r.invalid(keys::DEB, e))?,
            package: r.string(keys::PACKAGE)?,
        })
    }
}
