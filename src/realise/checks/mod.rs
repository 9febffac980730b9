//! Checks on a finished build output, run before it is registered in the store.
//! Which store paths it refers to is the store's business
//! ([`buildit_store::references`]); here: whether every ELF file's interpreter and
//! `DT_NEEDED` libraries can be found in the runtime closure ([`check_needed`]).

mod needed;
mod union;

use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::elf::ElfError;
pub use needed::{check_needed, LibraryTree, MissingLibrary, DEFAULT_LIBRARY_DIRS, NATIVE_ABI};

#[derive(Debug, Error)]
pub enum CheckError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Elf(#[from] ElfError),
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> CheckError + '_ {
    move |source| CheckError::Io {
        path: path.to_path_buf(),
        source,
    }
}
