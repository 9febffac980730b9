//! Where a spec's own files may be, and the errors about a path written in the spec
//! that leads elsewhere.

use std::path::Path;

use super::config::{self, Config};
use crate::inroot::{AllowedRoots, ResolveError};
use crate::yaml::{short, Located, SpecError};

/// Where a spec's own inputs (container.yaml, sync sources, package directories,
/// pkg.yaml, local patches) may be: the spec directory and the configuration's
/// `allowed-dirs`.
pub fn input_roots(spec_dir: &Path, config: Option<&Config>) -> AllowedRoots {
    let mut roots = AllowedRoots::new().with(spec_dir);
    for d in config.iter().flat_map(|c| &c.allowed_dirs) {
        roots.allow(&d.value);
    }
    roots
}

/// The help of an error about a path that leads outside `roots`.
pub(crate) fn outside_help(roots: &AllowedRoots) -> String {
    let dirs: Vec<String> = roots
        .roots()
        .iter()
        .map(|r| r.display().to_string())
        .collect();
    let dirs = if dirs.is_empty() {
        "(none)".to_string()
    } else {
        dirs.join(", ")
    };
    format!(
        "a spec reads only what is inside its directory, symlinks followed: here {dirs}; another directory can be allowed with `allowed-dirs:` in your own {}",
        config::FILE_NAME
    )
}

/// The error for a path written in a spec (`what`: "the sync source", ...) that
/// does not resolve inside `roots`. A missing file is the caller's to explain.
pub(crate) fn unresolved(
    written: &Located<String>,
    what: &str,
    e: &ResolveError,
    roots: &AllowedRoots,
) -> SpecError {
    match e {
        ResolveError::Outside { resolved } => written.error(
            format!(
                "{what} '{}' resolves to {}, outside the spec directory",
                short(written),
                resolved.display()
            ),
            Some(outside_help(roots)),
        ),
        other => written.error(
            format!("{what} '{}' cannot be read: {other}", short(written)),
            None,
        ),
    }
}
