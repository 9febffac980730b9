//! What the realiser reports while it works. The CLI renders these (an indicatif
//! view on a terminal, one line per step on a pipe); tests can record them.

use std::time::Duration;

use buildit_store::StorePath;

/// What kind of step a derivation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// A fixed-output download (`builtin:fetchurl`).
    Fetch,
    /// A builtin run by buildit itself (`.deb` unpack, build-root merge).
    Builtin,
    /// A build in a sandbox.
    Build,
    /// A rebuild of a valid output to compare it (`realise --check`).
    Check,
    /// Writing an image (`builtin:image`).
    Image,
    /// Downloading a path from a binary cache.
    Substitute,
}

impl StepKind {
    /// The verb a one-line report starts with.
    pub fn verb(self) -> &'static str {
        match self {
            StepKind::Fetch => "Fetching",
            StepKind::Builtin => "Preparing",
            StepKind::Build => "Building",
            StepKind::Check => "Checking",
            StepKind::Image => "Packaging",
            StepKind::Substitute => "Downloading",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// The graph is loaded: `to_do` steps will run, `already_valid` are skipped.
    Planned { to_do: usize, already_valid: usize },
    Started {
        drv: &'a StorePath,
        name: &'a str,
        kind: StepKind,
    },
    /// One line of a sandboxed build's output (without the newline).
    Log { drv: &'a StorePath, line: &'a str },
    /// Bytes received by a download (`total` when the server said).
    Download {
        drv: &'a StorePath,
        done: u64,
        total: Option<u64>,
    },
    Finished {
        drv: &'a StorePath,
        name: &'a str,
        kind: StepKind,
        elapsed: Duration,
        /// `Err(one-line reason)` for a failure.
        result: Result<(), &'a str>,
    },
}

/// The result of a check step whose rebuild differs from the registered output:
/// not a failure of the build, a finding.
pub const CHECK_DIFFERS: &str = "output differs from the registered one";

/// Receives events from every worker thread.
pub trait Progress: Sync {
    fn event(&self, event: Event<'_>);
}

/// Ignores everything.
pub struct Quiet;

impl Progress for Quiet {
    fn event(&self, _: Event<'_>) {}
}

/// Reports starts, ends and failures as plain lines to a function (for commands
/// whose output is a list of steps, like `buildit debian fetch`).
pub struct Lines<'a>(pub &'a (dyn Fn(&str) + Sync));

impl Progress for Lines<'_> {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::Started { name, kind, .. } => (self.0)(&format!("{} {name}", kind.verb())),
            Event::Finished {
                name,
                result: Err(why),
                ..
            } => (self.0)(&format!("FAILED {name}: {why}")),
            Event::Finished { name, .. } => (self.0)(&format!("done {name}")),
            _ => {}
        }
    }
}
