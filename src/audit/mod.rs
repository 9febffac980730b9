//! Reproducibility audits: why two builds differ.
//!
//! * [`drv`]: two derivation graphs (two `.drv`s, two spec directories, two lock
//!   files) walked together; the causes of the difference as typed reasons.
//! * [`outputs`]: two build results (store paths, NARs, directories, images):
//!   which files differ and how, with a content diff that suits each file's type.

#![forbid(unsafe_code)]

pub mod drv;
pub mod outputs;
