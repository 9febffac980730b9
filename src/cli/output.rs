//! How results and errors reach the user: errors rendered by miette, exit codes.
//!
//! A closed stdout or stderr (`buildit … 2>&1 | head -c 10`) ends the command
//! quietly with status 0, as ripgrep does: SIGPIPE stays ignored (Rust's default),
//! so that a write into a pipe whose reader died — a child process, an ssh
//! connection — is an error buildit reports rather than a silent death in the
//! middle of a substitution or a push; a write error on stdout travels up to
//! [`finish`] like any other, and nothing on the way may panic on it. So the CLI
//! never uses `println!`/`eprintln!` (they panic on EPIPE; clippy's
//! `print_stdout`/`print_stderr` lints keep them out): stdout is written with
//! `writeln!(…)?`, and messages on stderr with [`note!`], which drops a line that
//! cannot be written.

use std::io::Write;
use std::process::ExitCode;

use miette::Diagnostic;
use thiserror::Error;

/// An error at the edge of the program. Library errors convert into it and are
/// rendered with miette.
#[derive(Debug, Error, Diagnostic)]
pub enum CliError {
    #[error(transparent)]
    #[diagnostic(code(buildit::store))]
    Store(#[from] buildit_store::StoreError),

    #[error("{message}")]
    #[diagnostic(code(buildit::usage))]
    Usage {
        message: String,
        #[help]
        help: Option<String>,
    },

    #[error("{0}")]
    #[diagnostic(code(buildit::io))]
    Io(#[from] std::io::Error),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Spec(#[from] buildit_lang::yaml::SpecError),

    #[error(transparent)]
    #[diagnostic(code(buildit::realise))]
    Build(#[from] crate::realise::BuildError),

    #[error(transparent)]
    #[diagnostic(code(buildit::cache))]
    Cache(#[from] crate::cache::CacheError),

    #[error(transparent)]
    #[diagnostic(transparent)]
    BuildRoot(#[from] crate::ops::debian::BuildRootError),

    #[error(transparent)]
    #[diagnostic(transparent)]
    SpecOp(#[from] crate::ops::load::SpecOpError),

    /// The command ran and found problems it already reported (e.g. verify);
    /// exit with this status without printing anything more.
    #[error("")]
    Reported(u8),
}

impl CliError {
    pub fn usage(message: impl Into<String>, help: Option<&str>) -> Self {
        CliError::Usage {
            message: message.into(),
            help: help.map(String::from),
        }
    }
}

impl From<buildit_store::nar::NarError> for CliError {
    fn from(e: buildit_store::nar::NarError) -> Self {
        CliError::Store(e.into())
    }
}

impl From<buildit_store::store_path::StorePathError> for CliError {
    fn from(e: buildit_store::store_path::StorePathError) -> Self {
        CliError::Store(e.into())
    }
}

impl From<crate::ops::cache::CacheRequestError> for CliError {
    fn from(e: crate::ops::cache::CacheRequestError) -> Self {
        use crate::ops::cache::CacheRequestError;
        match e {
            CacheRequestError::TrustedKey { key, reason } => {
                CliError::usage(format!("--trusted-public-key {key}: {reason}"), None)
            }
            CacheRequestError::Cache(e) => e.into(),
        }
    }
}

impl From<crate::ops::realise::TargetError> for CliError {
    fn from(e: crate::ops::realise::TargetError) -> Self {
        use crate::ops::realise::TargetError;
        match e {
            TargetError::NotADerivation(_) => CliError::usage(
                e.to_string(),
                Some("`buildit eval DIR` prints the derivations of a spec"),
            ),
            TargetError::NotInStore(_) => CliError::usage(e.to_string(), None),
            TargetError::Store(e) => e.into(),
            TargetError::Load(e) => e.into(),
            TargetError::Spec(e) => e.into(),
        }
    }
}

impl From<crate::ops::build::BuildOpError> for CliError {
    fn from(e: crate::ops::build::BuildOpError) -> Self {
        use crate::ops::build::BuildOpError;
        match e {
            BuildOpError::Load(e) => e.into(),
            BuildOpError::Spec(e) => e.into(),
            BuildOpError::Target(e) => e.into(),
            BuildOpError::Store(e) => e.into(),
            BuildOpError::Caches(e) => e.into(),
            BuildOpError::Cache(e) => e.into(),
            BuildOpError::Build(e) => e.into(),
            BuildOpError::NoRepository => CliError::usage(
                e.to_string(),
                Some("add `repository:` with `upload-type` and `upload-path` to .buildit-config.yaml"),
            ),
        }
    }
}

pub type CliResult<T> = Result<T, CliError>;

/// Print a JSON value on stdout, one document per line.
pub fn print_json(value: &serde_json::Value) -> CliResult<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

/// `eprintln!` that cannot panic: a line that cannot be written to stderr (closed
/// by `2>&1 | head`) is dropped.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
pub(crate) use note;

/// One warning per configuration file passed over, with why and how to allow it.
pub fn warn_untrusted(u: &buildit_lang::model::trust::Untrusted) {
    note!(
        "warning: ignoring the configuration {u}\n  help: {}",
        u.help()
    );
}

/// Whether `e` comes from writing into a closed pipe that is our own stdout or
/// stderr: the whole chain is looked at, since the write may be deep inside (a
/// NAR dump). A broken pipe to anything else (an ssh cache's connection, a
/// child process) is a failure like any other and must not pass for success,
/// so the descriptors themselves are asked too.
pub fn is_broken_pipe(e: &(dyn std::error::Error + 'static)) -> bool {
    has_broken_pipe(e) && {
        use std::os::fd::AsFd;
        stdio_closed(std::io::stdout().as_fd()) || stdio_closed(std::io::stderr().as_fd())
    }
}

/// Whether `fd` is a pipe (or socket) whose reading end is gone: `poll`
/// reports `POLLERR` (`POLLHUP` for a socket) on such a writing end.
fn stdio_closed(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(fd, PollFlags::empty())];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP))
}

fn has_broken_pipe(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::BrokenPipe {
                return true;
            }
        }
        // Its io::Error is in the message, not the source chain.
        if let Some(buildit_store::StoreError::Io { error, .. }) =
            err.downcast_ref::<buildit_store::StoreError>()
        {
            if error.kind() == std::io::ErrorKind::BrokenPipe {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

pub fn finish(result: CliResult<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Reported(code)) => ExitCode::from(code),
        // A closed stdout (`buildit store dump x | head`) is not worth a message.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            note!("{:?}", miette::Report::new(e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A broken pipe that is not our stdout or stderr (a cache connection, a
    /// child process) stays an error: the test's own output is still read.
    #[test]
    fn a_broken_pipe_elsewhere_is_an_error() {
        let e = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(has_broken_pipe(&e));
        assert!(!is_broken_pipe(&e));
        let (r, w) = nix::unistd::pipe().unwrap();
        use std::os::fd::AsFd;
        assert!(!stdio_closed(w.as_fd()));
        drop(r);
        assert!(stdio_closed(w.as_fd()));
    }
}
