//! buildit's spec front ends, lowered to derivations: build-root definitions and the
//! lock file today; container.yaml, pkg.yaml and the recipe repository with the spec
//! issue.

pub mod buildroot;
pub mod debian;
pub mod inroot;
pub mod lock;
pub mod lower;
pub mod spec;
pub mod yaml;
