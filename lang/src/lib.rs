//! buildit's spec front end: `container.yaml`, `pkg.yaml`, recipes, build roots,
//! `.buildit-config.yaml` and the lock file, read with positions, confined to the
//! spec's directory, and lowered to derivations.

#![forbid(unsafe_code)]

pub mod inroot;
pub mod lockfile;
pub mod lower;
pub mod model;
pub mod resolve;
pub mod yaml;
