//! Realising derivations: walk the graph from the requested `.drv`s, skip outputs
//! that are valid, and run what is missing, inputs first, up to `jobs` at a time.
//!
//! The kinds of `buildit_store::builtins` that are builtins run in buildit itself
//! (`builtins`); package builds and plain derivations run in a sandbox
//! (`sandboxed`).

#![forbid(unsafe_code)]

pub mod buildroot;
mod builtins;
mod cancel;
pub mod checks;
pub mod events;
pub mod log;
mod sandboxed;
pub use sandboxed::MERGED_USR;
mod scheduler;
mod substitute;

use std::path::PathBuf;
use std::time::Duration;

use buildit_store::{Hash, LocalStore, StoreError, StorePath};
use thiserror::Error;

use crate::fetch::{FetchError, Fetcher};
pub use cancel::CancelToken;
use events::Progress;

#[derive(Debug, Error)]
pub enum BuildError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Nar(#[from] buildit_store::nar::NarError),
    #[error("{count} of the derivations failed")]
    Several { count: usize },
    /// A step failed; `log` is the log file and its last lines.
    #[error("{drv}: {message}")]
    Failed {
        drv: StorePath,
        message: String,
        log: Option<(PathBuf, Vec<String>)>,
    },
    /// Killed by the scheduler because another step failed or buildit was
    /// interrupted.
    #[error("{drv}: cancelled")]
    Cancelled { drv: StorePath },
    #[error("{drv}: builder '{builder}' is not supported yet")]
    UnsupportedBuilder { drv: StorePath, builder: String },
    #[error("{0}")]
    Invalid(String),
}

impl BuildError {
    fn with_note(self, note: String) -> BuildError {
        match self {
            BuildError::Failed { drv, message, log } => BuildError::Failed {
                drv,
                message: format!("{message}; {note}"),
                log,
            },
            other => other,
        }
    }

    /// The one-line reason, without the derivation.
    pub fn reason(&self) -> String {
        match self {
            BuildError::Failed { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

/// Processes and threads one build may have at once unless told otherwise:
/// far above what `make -j` on a large machine needs, far below what would
/// hurt the host.
pub const DEFAULT_MAX_PROCESSES: u64 = 4096;

/// How to realise.
#[derive(Debug, Clone)]
pub struct Options {
    /// Steps run at once.
    pub jobs: usize,
    /// `NIX_BUILD_CORES` for each build (its own parallelism).
    pub cores: usize,
    /// Go on with what does not depend on a failure.
    pub keep_going: bool,
    /// Kill a build after this long.
    pub timeout: Option<Duration>,
    /// Kill a build that prints nothing for this long.
    pub max_silent_time: Option<Duration>,
    /// At most this many processes and threads at once in one build's
    /// sandbox (`RLIMIT_NPROC`, counted per build); `None` = no limit of our own.
    pub max_processes: Option<u64>,
    /// Keep the build dir of a failed build.
    pub keep_failed: bool,
    /// Rebuild the targets (whose outputs are valid) and compare NAR hashes.
    pub check: bool,
    /// Take missing outputs from the binary caches when they have them.
    pub substitute: bool,
    /// How a check rebuild differs from the first build, to shake out
    /// nondeterminism (`buildit check`). Ordinary builds use the default: none.
    pub variation: Variation,
    /// A check rebuild whose output differs is kept under `var/check/` (outside
    /// the store) so that it can be compared with the registered one.
    pub keep_differing: bool,
    /// Set by the caller (an interrupt) to stop: running builds are
    /// cancelled, their sandboxes killed, and no new step starts.
    pub cancel: CancelToken,
}

/// Changes to the build environment that must not change a reproducible
/// output. `/build`, the uid, the hostname and `SOURCE_DATE_EPOCH` stay fixed:
/// those are part of the sandbox's contract, not nondeterminism.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Variation {
    /// Pass the environment to the builder in reverse order.
    pub reverse_env: bool,
    /// Build in a tmpfs rather than on the store's filesystem: another
    /// filesystem returns directory entries in another order.
    pub build_dir_tmpfs: bool,
    /// Run the build on one CPU (`nproc` says 1, whatever NIX_BUILD_CORES says).
    pub one_cpu: bool,
    /// Report a 2.6 kernel to `uname`.
    pub uname26: bool,
}

impl Default for Options {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Options {
            jobs: 1,
            cores: cpus,
            keep_going: false,
            timeout: None,
            max_silent_time: None,
            max_processes: Some(DEFAULT_MAX_PROCESSES),
            keep_failed: false,
            check: false,
            substitute: true,
            variation: Variation::default(),
            keep_differing: false,
            cancel: CancelToken::new(),
        }
    }
}

/// One failed step.
#[derive(Debug, Clone)]
pub struct Failure {
    pub drv: StorePath,
    pub name: String,
    pub reason: String,
    /// The log file and its last lines, for builds that ran.
    pub log: Option<(PathBuf, Vec<String>)>,
}

/// One output rebuilt by `--check`.
#[derive(Debug, Clone)]
pub struct CheckedOutput {
    pub drv: StorePath,
    pub output: StorePath,
    pub expected: Hash,
    pub actual: Hash,
    /// The differing rebuild, kept (with `keep_differing`).
    pub rebuilt: Option<PathBuf>,
}

impl CheckedOutput {
    pub fn matches(&self) -> bool {
        self.expected == self.actual
    }
}

/// What happened to each derivation of a realisation.
#[derive(Debug, Default)]
pub struct Report {
    pub built: Vec<StorePath>,
    pub already_valid: usize,
    pub failed: Vec<Failure>,
    /// Steps not run because an input failed (or, without keep-going, because
    /// something failed).
    pub skipped: Vec<StorePath>,
    /// Builds killed part way because another step failed (without keep-going)
    /// or buildit was interrupted.
    pub cancelled: Vec<StorePath>,
    pub checked: Vec<CheckedOutput>,
    /// Paths downloaded from binary caches.
    pub substituted: Vec<StorePath>,
    /// Why paths the caches were asked about were not taken from them.
    pub not_substituted: Vec<String>,
    /// (step name, note) for steps that succeeded with something to say.
    pub notes: Vec<(String, String)>,
    /// [`Options::cancel`] was set: running builds were cancelled, nothing more
    /// started.
    pub interrupted: bool,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
            && self.skipped.is_empty()
            && self.cancelled.is_empty()
            && !self.interrupted
    }
}

pub struct Realiser<'a> {
    pub store: &'a LocalStore,
    pub fetcher: &'a Fetcher,
    /// Binary caches to substitute from, lowest priority number first.
    pub caches: &'a [crate::cache::BinaryCache],
    pub options: Options,
    pub progress: &'a dyn Progress,
}

/// The name a derivation is shown by.
pub fn display_name(drv_path: &StorePath, drv: &buildit_store::Derivation) -> String {
    // An image is shown as the design card shows it: "NAME as ACI".
    use buildit_store::builtins::{self, Kind};
    if Kind::of(drv) == Kind::Image {
        if let Ok(image) = builtins::Image::from_derivation(drv) {
            return format!("{} as {}", image.title, image.format.name().to_uppercase());
        }
    }
    drv.env
        .get(builtins::keys::NAME)
        .cloned()
        .unwrap_or_else(|| drv_path.name().trim_end_matches(".drv").to_string())
}
