//! How results and errors reach the user: errors rendered by miette, exit codes.

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
    #[diagnostic(code(buildit::build))]
    Build(#[from] crate::build::BuildError),

    #[error(transparent)]
    #[diagnostic(code(buildit::cache))]
    Cache(#[from] crate::cache::CacheError),

    #[error(transparent)]
    #[diagnostic(transparent)]
    BuildRoot(#[from] crate::ops::debian::BuildRootError),

    #[error(transparent)]
    #[diagnostic(transparent)]
    SpecOp(#[from] crate::ops::spec::SpecOpError),

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

pub type CliResult<T> = Result<T, CliError>;

/// Print a JSON value on stdout, one document per line.
pub fn print_json(value: &serde_json::Value) -> CliResult<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

pub fn finish(result: CliResult<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Reported(code)) => ExitCode::from(code),
        // A closed stdout (`buildit store dump x | head`) is not worth a message.
        Err(CliError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{:?}", miette::Report::new(e));
            ExitCode::FAILURE
        }
    }
}
