//! Images: the runtime closure of a container's packages and its synced files,
//! merged (`tree`), written as deterministic tars (`tar`), packaged as OCI image
//! layouts and archives (`oci`) and as appc ACIs (`aci`); untrusted layouts are
//! read by digest (`layout`).

#![forbid(unsafe_code)]

pub mod aci;
pub mod build;
pub mod inspect;
pub mod layout;
pub mod oci;
pub mod tar;
pub mod tree;
