//! Two build results compared: which files were added, removed or changed, and for
//! each changed file an explanation that suits its type (a unified diff for text,
//! members for archives, sections and symbols for ELF, hexdump windows otherwise).
//!
//! Operands are store paths, directories, single files, NARs and images (OCI
//! layouts, oci-archives, ACIs, and the output directory of a `builtin:image`
//! derivation). Images are compared per layer, layers paired by the package they
//! hold, so the answer reads "only the sync layer changed: etc/nginx/nginx.conf
//! line 12" rather than "every blob digest differs".
//!
//! Files that are equal are read exactly once (both sides in lock-step, stopping
//! at the first difference); only changed files are read again to explain them.

mod archive;
mod bytes;
mod content;
mod elf;
mod operand;
mod render;
mod tree;

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use serde::Serialize;
use thiserror::Error;

pub use bytes::{
    ContentDiff, HexRow, HexWindow, MemberChange, MemberDiff, MetaField, SectionDiff, SectionLoc,
    SymbolDiff, SymbolLoc,
};
pub use operand::{classify, Operand};
pub use tree::{diff_trees, EntryChange, EntryDiff, EntryKind, MetaChange, TreeDiff};

/// How much detail to give per changed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffOptions {
    /// Cap on unified-diff lines shown per text file.
    pub max_text_lines: usize,
    /// Lines of context around each text change.
    pub context: usize,
    /// Cap on hexdump windows shown per binary file.
    pub max_hex_windows: usize,
    /// Compare modes as a NAR keeps them: only whether a file is executable.
    /// Store paths are read-only whatever they were built as, so anything more
    /// would flag every file of a store path against a copy of it.
    pub nar_modes: bool,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            max_text_lines: 200,
            context: 3,
            max_hex_windows: 4,
            nar_modes: false,
        }
    }
}

#[derive(Debug, Error)]
pub enum OutputDiffError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {source}", path.display())]
    Nar {
        path: PathBuf,
        source: buildit_store::nar::NarError,
    },
    #[error("{}: {why}", path.display())]
    Invalid { path: PathBuf, why: String },
    #[error("{}: member '{member}' would be unpacked outside the tree (absolute or '..' path)", path.display())]
    UnsafePath { path: PathBuf, member: String },
    #[error("running diffoscope: {0}")]
    Diffoscope(#[source] io::Error),
    /// An OCI layout refused (bad digest, a blob outside it, content that does
    /// not match its digest, a document too large).
    #[error(transparent)]
    Layout(#[from] crate::image::layout::LayoutError),
}

pub(crate) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> OutputDiffError + '_ {
    move |source| OutputDiffError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn invalid(path: &Path, why: impl std::fmt::Display) -> OutputDiffError {
    OutputDiffError::Invalid {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

/// The differences between two build results, one part per layer (images) or a
/// single part (plain trees).
#[derive(Debug, Clone, Serialize)]
pub struct OutputDiff {
    pub parts: Vec<PartDiff>,
}

impl OutputDiff {
    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(PartDiff::is_same)
    }
}

/// One layer, one tree, or one metadata document (image config, manifest).
#[derive(Debug, Clone, Serialize)]
pub struct PartDiff {
    /// "layer files (sync)", "layer nginx-1.22.1", "image config"; empty for the
    /// single part of a plain tree comparison.
    pub name: String,
    #[serde(flatten)]
    pub change: PartChange,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PartChange {
    /// Both sides have the part; `diff` is empty when its files are identical.
    Tree { diff: TreeDiff },
    /// A JSON document on both sides, compared pretty-printed; `None` when equal.
    Document { diff: Option<ContentDiff> },
    /// Only the second operand has the part (`entries`: files and directories in it).
    Added { entries: usize },
    /// Only the first operand has the part.
    Removed { entries: usize },
}

impl PartDiff {
    pub fn is_same(&self) -> bool {
        match &self.change {
            PartChange::Tree { diff } => diff.is_empty(),
            PartChange::Document { diff } => diff.is_none(),
            PartChange::Added { .. } | PartChange::Removed { .. } => false,
        }
    }
}

/// Compare two build results of any supported kind (see [`classify`]). Images are
/// compared with images, per layer; anything else is materialised as a tree (NARs
/// are restored into a temporary directory) and compared file by file.
pub fn diff(a: &Path, b: &Path, opts: &DiffOptions) -> Result<OutputDiff, OutputDiffError> {
    let (oa, ob) = (classify(a)?, classify(b)?);
    if matches!(oa, Operand::Nar(_)) || matches!(ob, Operand::Nar(_)) {
        let opts = DiffOptions {
            nar_modes: true,
            ..opts.clone()
        };
        return operand::diff_operands(&oa, &ob, &opts);
    }
    operand::diff_operands(&oa, &ob, opts)
}

/// Hand the pair to diffoscope, which knows far more formats; `Ok(None)` when it is
/// not installed.
pub fn run_diffoscope(a: &Path, b: &Path) -> Result<Option<ExitStatus>, OutputDiffError> {
    let found = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| is_executable(&d.join("diffoscope")))
    });
    if !found {
        return Ok(None);
    }
    Command::new("diffoscope")
        .arg(a)
        .arg(b)
        .status()
        .map(Some)
        .map_err(OutputDiffError::Diffoscope)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

pub(crate) use crate::io_util::read_full;
