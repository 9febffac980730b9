//! A derivation that is none of buildit's kinds (a Nix front end writes any):
//! run as written, in a sandbox that holds only its input closure.

use std::collections::BTreeMap;

use crate::Derivation;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plain {
    pub builder: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

impl Plain {
    pub fn from_derivation(d: &Derivation) -> Plain {
        Plain {
            builder: d.builder.clone(),
            args: d.args.clone(),
            env: d.env.clone(),
        }
    }

    /// Builder, args and env only: system, inputs and outputs are the caller's.
    pub fn to_derivation(&self) -> Derivation {
        Derivation {
            builder: self.builder.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
            ..Default::default()
        }
    }
}
