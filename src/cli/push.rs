//! `buildit push CACHE PATH…|DIR`: upload closures to a binary cache, signed,
//! skipping what the cache already has.

use std::io::Write;
use std::path::PathBuf;

use super::output::{note, warn_untrusted};
use super::{CliError, CliResult, Global};
use crate::ops::push::{push, PushError, PushRequest};

#[derive(clap::Args)]
pub struct Args {
    /// The cache: file:///dir, s3://bucket/prefix, ssh://user@host/path, oci://host/repo.
    cache: String,
    /// Store paths (with their closures), or a spec directory: its derivations,
    /// packages, sources and images.
    #[arg(required = true, value_name = "PATH|DIR")]
    paths: Vec<String>,
    /// The signing key (default: the config's `secret-key-file`).
    #[arg(long, value_name = "FILE")]
    secret_key_file: Option<PathBuf>,
}

pub fn exec(global: &Global, args: Args) -> CliResult<()> {
    let store = global.open_store()?;
    let request = PushRequest {
        cache: args.cache,
        paths: args.paths,
        secret_key_file: args.secret_key_file,
    };
    let outcome = push(
        &store,
        &request,
        &|p| note!("uploading {p}"),
        &warn_untrusted,
    )?;
    let mut out = std::io::stdout().lock();
    for p in &outcome.pushed {
        writeln!(out, "{p}")?;
    }
    note!(
        "{} paths uploaded to {} ({} already there)",
        outcome.pushed.len(),
        request.cache,
        outcome.already_there
    );
    Ok(())
}

impl From<PushError> for CliError {
    fn from(e: PushError) -> Self {
        match e {
            PushError::Load(e) => e.into(),
            PushError::Spec(e) => e.into(),
            PushError::Store(e) => e.into(),
            PushError::Cache(e) => e.into(),
            PushError::NotValid(_) => CliError::usage(e.to_string(), None),
        }
    }
}
