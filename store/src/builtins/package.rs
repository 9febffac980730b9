//! A package build from source: buildit's phase runner in the sandbox, over a
//! build root made of layers, with the sources, patches, options and phases in
//! the env (the phase runner reads them there).

use std::collections::BTreeMap;

use super::{join_paths, keys as common, ContractError, EnvReader, OUT};
use crate::{Derivation, DerivationOutput, StorePath};

/// The builder of package builds; the phase runner is its argument.
pub const BUILDER: &str = "/bin/bash";
/// The system of package builds (the only one for now).
pub const SYSTEM: &str = "x86_64-linux";

pub mod keys {
    pub const PNAME: &str = "pname";
    pub const VERSION: &str = "version";
    /// Space-separated fetched sources.
    pub const SRC: &str = "src";
    /// Space-separated patches, in the order they are applied.
    pub const PATCHES: &str = "patches";
    pub const BUILD_OPTIONS: &str = "buildOptions";
    pub const CONFIGURE_FLAGS: &str = "configureFlags";
    /// The layers of `/`, the build root first.
    pub const BUILD_ROOT: &str = "buildRoot";
    /// Extra references of every output.
    pub const RUNTIME_DEPS: &str = "runtimeDeps";
    /// A non-empty value turns on the check phase.
    pub const DO_CHECK: &str = "doCheck";
    /// `<phase>Phase` for each of [`super::PHASES`].
    pub const PHASE_SUFFIX: &str = "Phase";
}

/// Phases a recipe may set; each becomes the env var `<name>Phase`.
pub const PHASES: [&str; 6] = ["unpack", "patch", "configure", "build", "check", "install"];

/// The env var of a phase.
pub fn phase_key(phase: &str) -> String {
    format!("{phase}{}", keys::PHASE_SUFFIX)
}

/// The keys this kind sets itself (the rest of the env is the recipe's).
pub const OWN_KEYS: [&str; 12] = [
    common::NAME,
    common::BUILDER,
    common::SYSTEM,
    common::OUT,
    keys::PNAME,
    keys::VERSION,
    keys::SRC,
    keys::PATCHES,
    keys::BUILD_OPTIONS,
    keys::CONFIGURE_FLAGS,
    keys::BUILD_ROOT,
    keys::RUNTIME_DEPS,
];

/// Whether `d` is a package build: a derivation that names its build root and
/// its package. Anything else outside the builtins is a plain derivation.
pub(crate) fn is_package(d: &Derivation) -> bool {
    d.env.contains_key(keys::PNAME) && d.env.contains_key(keys::BUILD_ROOT)
}

/// Whether `key` is one a package build sets itself (not the recipe's `env`).
pub fn is_own_key(key: &str) -> bool {
    OWN_KEYS.contains(&key) || is_phase_key(key)
}

/// Whether `key` is a `<phase>Phase` variable.
pub fn is_phase_key(key: &str) -> bool {
    PHASES
        .iter()
        .any(|p| key.strip_prefix(p) == Some(keys::PHASE_SUFFIX))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageBuild {
    pub name: String,
    pub builder: String,
    pub system: String,
    /// The phase runner (a text store path).
    pub args: Vec<String>,
    pub pname: String,
    pub version: String,
    pub src: Vec<StorePath>,
    pub patches: Vec<StorePath>,
    pub build_options: Vec<String>,
    pub configure_flags: Vec<String>,
    /// The layers of `/`: the build root first, then build dependencies.
    pub build_root: Vec<StorePath>,
    pub runtime_deps: Vec<StorePath>,
    /// Phase name (`configure`, …) → shell snippet.
    pub phases: BTreeMap<String, String>,
    /// The recipe's, its options' and the package's own variables.
    pub env: BTreeMap<String, String>,
}

impl PackageBuild {
    pub fn to_env(&self) -> BTreeMap<String, String> {
        let mut env = self.env.clone();
        for (k, v) in [
            (common::NAME, self.name.clone()),
            (keys::PNAME, self.pname.clone()),
            (keys::VERSION, self.version.clone()),
            (common::BUILDER, self.builder.clone()),
            (common::SYSTEM, self.system.clone()),
            (keys::SRC, join_paths(&self.src)),
            (keys::PATCHES, join_paths(&self.patches)),
            (keys::BUILD_OPTIONS, self.build_options.join(" ")),
            (keys::CONFIGURE_FLAGS, self.configure_flags.join(" ")),
            (keys::BUILD_ROOT, join_paths(&self.build_root)),
            (keys::RUNTIME_DEPS, join_paths(&self.runtime_deps)),
        ] {
            env.insert(k.to_string(), v);
        }
        for (phase, script) in &self.phases {
            env.insert(phase_key(phase), script.clone());
        }
        env
    }

    /// Without its inputs, which the caller adds.
    pub fn to_derivation(&self) -> Derivation {
        let mut d = Derivation {
            system: self.system.clone(),
            builder: self.builder.clone(),
            args: self.args.clone(),
            env: self.to_env(),
            ..Default::default()
        };
        d.outputs.insert(OUT.into(), DerivationOutput::Deferred);
        d
    }

    pub fn from_derivation(d: &Derivation) -> Result<PackageBuild, ContractError> {
        let r = EnvReader::new(d);
        let build_root = r.paths(keys::BUILD_ROOT)?;
        if build_root.is_empty() {
            return Err(r.invalid(
                keys::BUILD_ROOT,
                "no layers: a package build needs a root to run in",
            ));
        }
        let phases = PHASES
            .iter()
            .filter_map(|p| Some((p.to_string(), d.env.get(&phase_key(p))?.clone())))
            .collect();
        let env = d
            .env
            .iter()
            .filter(|(k, _)| !is_own_key(k) && !d.outputs.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(PackageBuild {
            name: r.name(),
            builder: d.builder.clone(),
            system: d.system.clone(),
            args: d.args.clone(),
            pname: r.string(keys::PNAME)?,
            version: r.opt(keys::VERSION).unwrap_or_default().to_string(),
            src: r.paths(keys::SRC)?,
            patches: r.paths(keys::PATCHES)?,
            build_options: r.words(keys::BUILD_OPTIONS),
            configure_flags: r.words(keys::CONFIGURE_FLAGS),
            build_root,
            runtime_deps: r.paths(keys::RUNTIME_DEPS)?,
            phases,
            env,
        })
    }
}
