//! Adding paths to the store. Every add follows one protocol, so that a crash at
//! any point leaves either nothing or a complete, valid path:
//!
//! 1. build the tree under `var/tmp/` (beside a held lock file);
//! 2. take the store path's lock; if it became valid meanwhile, discard ours;
//! 3. normalise, flush the filesystem, note the path as pending in the database;
//! 4. rename into `store/` (never replacing anything) and fsync the directory;
//! 5. register the metadata in one transaction, which also clears the pending note.
//!
//! A crash before 4 leaves an unheld temp tree; between 4 and 5 a pending path that
//! is not valid. `LocalStore::open` removes both.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};

use crate::hash::{HashingReader, HashingWriter};
use crate::path_info::PathInfo;
use crate::store_path::{make_fixed_output_path, make_text_path};
use crate::{nar, ContentAddress, FileIngestion, Hash, HashAlgo, StorePath};

use super::fsutil::{normalise_below, remove_tree, seal_root, sync_dir, sync_tree};
use super::{now, FileLock, LocalStore, StoreError};

/// A tree under construction in `var/tmp/`, removed on drop unless moved away.
pub struct TempTree {
    path: PathBuf,
    lock_file: PathBuf,
    _lock: FileLock,
}

impl TempTree {
    fn new(store: &LocalStore) -> Result<TempTree, StoreError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut rand = [0u8; 8];
        getrandom::fill(&mut rand)
            .map_err(|e| StoreError::Invalid(format!("no randomness: {e}")))?;
        let name = format!(
            "add-{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            crate::hex::encode(&rand)
        );
        let tmp = store.var_dir.join("tmp");
        let lock_file = tmp.join(format!("{name}.lock"));
        let lock = FileLock::exclusive(&lock_file)?;
        Ok(TempTree {
            path: tmp.join(name),
            lock_file,
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        let _ = remove_tree(&self.path);
        let _ = fs::remove_file(&self.lock_file);
    }
}

impl LocalStore {
    /// A fresh temp location (not yet created) for building a tree that will be
    /// registered with `add_built_tree`; removed when dropped.
    pub fn temp_tree(&self) -> Result<TempTree, StoreError> {
        self.begin_write()?;
        TempTree::new(self)
    }

    /// Add a file or tree by content, as `nix-store --add` (recursive sha256) and
    /// `nix-store --add-fixed [--recursive] ALGO` do. Returns the store path, which
    /// depends only on `name`, the method, the algorithm and the content.
    pub fn add_path(
        &self,
        src: &Path,
        name: &str,
        method: FileIngestion,
        algo: HashAlgo,
    ) -> Result<StorePath, StoreError> {
        crate::store_path::validate_name(name)?;
        self.begin_write()?;
        let tmp = TempTree::new(self)?;
        let (ca_hash, nar_hash, nar_size) = match method {
            FileIngestion::Recursive => copy_tree_hashing(src, tmp.path(), algo)?,
            FileIngestion::Flat => {
                let md = fs::symlink_metadata(src).map_err(|e| StoreError::io(src, e))?;
                if !md.is_file() {
                    return Err(StoreError::FlatNeedsFile(src.to_path_buf()));
                }
                let mut input = HashingReader::new(
                    fs::File::open(src).map_err(|e| StoreError::io(src, e))?,
                    algo,
                );
                let mut out =
                    fs::File::create_new(tmp.path()).map_err(|e| StoreError::io(tmp.path(), e))?;
                io::copy(&mut input, &mut out).map_err(|e| StoreError::io(src, e))?;
                let (flat, _, _) = input.finish();
                let (nar_hash, nar_size) = nar::hash_path(tmp.path(), HashAlgo::Sha256)?;
                (flat, nar_hash, nar_size)
            }
        };
        let path = make_fixed_output_path(name, method, &ca_hash, [], false)?;
        let info = PathInfo {
            path: path.clone(),
            nar_hash,
            nar_size,
            references: Default::default(),
            deriver: None,
            sigs: vec![],
            registration_time: now(),
            ca: Some(ContentAddress::Fixed(method, ca_hash)),
        };
        self.commit_if_absent(&tmp, info, &[])?;
        Ok(path)
    }

    /// Add a text file (`builtins.toFile`; every `.drv`) with the given references.
    pub fn add_text(
        &self,
        name: &str,
        contents: &[u8],
        references: &std::collections::BTreeSet<StorePath>,
    ) -> Result<StorePath, StoreError> {
        self.add_text_with_outputs(name, contents, references, &[])
    }

    /// `add_text` that also records, for a `.drv`, the outputs it declares.
    pub fn add_text_with_outputs(
        &self,
        name: &str,
        contents: &[u8],
        references: &std::collections::BTreeSet<StorePath>,
        drv_outputs: &[(String, StorePath)],
    ) -> Result<StorePath, StoreError> {
        let content_hash = Hash::sha256(contents);
        let path = make_text_path(name, &content_hash, references)?;
        if self.is_valid(&path)? {
            return Ok(path);
        }
        self.begin_write()?;
        let tmp = TempTree::new(self)?;
        fs::write(tmp.path(), contents).map_err(|e| StoreError::io(tmp.path(), e))?;
        let (nar_hash, nar_size) = nar::hash_path(tmp.path(), HashAlgo::Sha256)?;
        let info = PathInfo {
            path: path.clone(),
            nar_hash,
            nar_size,
            references: references.clone(),
            deriver: None,
            sigs: vec![],
            registration_time: now(),
            ca: Some(ContentAddress::Text(content_hash)),
        };
        self.commit_if_absent(&tmp, info, drv_outputs)?;
        Ok(path)
    }

    /// Import a NAR whose metadata is known in advance (from a binary cache or an
    /// export): restores it, checks its hash and size against `info`, and registers
    /// it. A content address in `info` is checked too — it must make the path and
    /// hold for the content — since nothing signs it. Nothing is registered when
    /// any check fails.
    pub fn add_nar(&self, info: &PathInfo, nar: &mut impl Read) -> Result<(), StoreError> {
        if self.is_valid(&info.path)? {
            // Drain nothing: the caller's stream is simply not needed.
            return Ok(());
        }
        info.check_ca_path()?;
        self.begin_write()?;
        let tmp = TempTree::new(self)?;
        let mut reader = HashingReader::new(nar, info.nar_hash.algo());
        nar::restore(&mut reader, tmp.path())?;
        let (hash, size, _) = reader.finish();
        if hash != info.nar_hash {
            return Err(StoreError::HashMismatch {
                path: info.path.to_string(),
                expected: info.nar_hash.clone(),
                actual: hash,
            });
        }
        if size != info.nar_size {
            return Err(StoreError::SizeMismatch {
                path: info.path.to_string(),
                expected: info.nar_size,
                actual: size,
            });
        }
        check_ca_content(tmp.path(), info)?;
        let mut info = info.clone();
        info.registration_time = now();
        self.commit_if_absent(&tmp, info, &[])
    }

    /// Register a tree that a caller built at `tree` (a build output) under `info.path`.
    /// The caller must hold the path's lock; the NAR hash is computed here.
    pub fn add_built_tree(
        &self,
        tree: &Path,
        mut info: PathInfo,
        _lock: &FileLock,
    ) -> Result<PathInfo, StoreError> {
        self.begin_write()?;
        normalise_below(tree)?;
        let (nar_hash, nar_size) = nar::hash_path(tree, HashAlgo::Sha256)?;
        info.nar_hash = nar_hash;
        info.nar_size = nar_size;
        info.registration_time = now();
        self.move_into_store(tree, &info, &[])?;
        Ok(info)
    }

    /// Steps 2–5 of the protocol for a finished temp tree.
    fn commit_if_absent(
        &self,
        tmp: &TempTree,
        info: PathInfo,
        drv_outputs: &[(String, StorePath)],
    ) -> Result<(), StoreError> {
        let _lock = self.lock_path(&info.path)?;
        if self.is_valid(&info.path)? {
            return Ok(());
        }
        fault_point("before-normalise");
        normalise_below(tmp.path())?;
        self.move_into_store(tmp.path(), &info, drv_outputs)
    }

    /// Steps 3–5; the caller holds the path lock and has normalised what is below
    /// `tree` (`normalise_below`); the root is sealed once it is in place.
    fn move_into_store(
        &self,
        tree: &Path,
        info: &PathInfo,
        drv_outputs: &[(String, StorePath)],
    ) -> Result<(), StoreError> {
        for r in info.references.iter().filter(|r| **r != info.path) {
            if !self.is_valid(r)? {
                return Err(StoreError::MissingReference {
                    path: info.path.clone(),
                    reference: r.clone(),
                });
            }
        }
        let dest = self.physical_path(&info.path);
        // An invalid leftover under the final name (from a crash, or a failed build)
        // is ours to replace: we hold the lock and the path is not valid.
        if dest.symlink_metadata().is_ok() {
            remove_tree(&dest)?;
        }
        // The filesystem through the parent: the tree itself may be a (dangling) symlink.
        sync_tree(tree, tree.parent().unwrap_or(&self.store_dir))?;
        fault_point("before-pending");
        self.db().mark_pending(&info.path)?;
        fault_point("before-rename");
        renameat2(
            AT_FDCWD,
            tree,
            AT_FDCWD,
            &dest,
            RenameFlags::RENAME_NOREPLACE,
        )
        .map_err(|e| {
            StoreError::io(
                &dest,
                io::Error::other(format!("moving {} into the store: {e}", tree.display())),
            )
        })?;
        seal_root(&dest)?;
        sync_dir(&self.store_dir)?;
        fault_point("before-register");
        if let Err(e) = self.db().register(info, drv_outputs) {
            // Leave the store as it was; should this cleanup fail too, the pending
            // note makes the next open finish it.
            if remove_tree(&dest).is_ok() {
                let _ = self.db().clear_pending(&info.path);
            }
            return Err(e);
        }
        Ok(())
    }
}

/// Die here by SIGKILL (no destructors, no cleanup) when
/// `BUILDIT_FAULT_POINT` names this point. Lets tests prove that every step of the
/// add protocol is crash-safe.
fn fault_point(name: &str) {
    static POINT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let point = POINT.get_or_init(|| std::env::var("BUILDIT_FAULT_POINT").ok());
    if point.as_deref() == Some(name) {
        eprintln!("buildit: fault injected at {name}");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        std::process::abort();
    }
}

/// Copy a tree by streaming its NAR into a restore, so that it is read once and the
/// NAR hash comes for free. Returns the content hash in `algo`, the sha256 NAR hash
/// and the NAR size.
fn copy_tree_hashing(
    src: &Path,
    dest: &Path,
    algo: HashAlgo,
) -> Result<(Hash, Hash, u64), StoreError> {
    let (reader, writer) = io::pipe().map_err(|e| StoreError::io(src, e))?;
    std::thread::scope(|s| {
        let dumper = s.spawn(move || -> Result<_, StoreError> {
            let mut pipe = writer;
            // The NAR writer buffers itself; only a non-sha256 content address needs a
            // second hasher on the stream.
            if algo == HashAlgo::Sha256 {
                let (nar_hash, size) = nar::dump_path_hashed(src, &mut pipe, HashAlgo::Sha256)?;
                Ok((nar_hash.clone(), nar_hash, size))
            } else {
                let mut ca = HashingWriter::new(pipe, algo);
                let (nar_hash, size) = nar::dump_path_hashed(src, &mut ca, HashAlgo::Sha256)?;
                let (ca, _, _) = ca.finish();
                Ok((ca, nar_hash, size))
            }
        });
        let mut reader = io::BufReader::with_capacity(1 << 16, reader);
        let restored = nar::restore(&mut reader, dest);
        drop(reader);
        let dumped = dumper
            .join()
            .map_err(|_| StoreError::Invalid("NAR writer thread panicked".into()))?;
        // The dump's error explains a failed restore better (e.g. an unsupported file
        // type ends the stream early).
        let dumped = dumped?;
        restored?;
        Ok(dumped)
    })
}

/// Whether the tree restored at `tree` (whose NAR hash `info.nar_hash` was just
/// checked) has the content `info.ca` claims: for recursive ingestion the NAR
/// hash in the claimed algorithm; for flat and text the bytes of a regular,
/// non-executable file, as Nix requires of them.
fn check_ca_content(tree: &Path, info: &PathInfo) -> Result<(), StoreError> {
    let Some(ca) = &info.ca else {
        return Ok(());
    };
    let false_ca = |why: String| crate::path_info::FalseContentAddress {
        path: info.path.clone(),
        ca: ca.to_string(),
        why,
    };
    let (method, claimed) = match ca {
        ContentAddress::Text(h) => (FileIngestion::Flat, h),
        ContentAddress::Fixed(m, h) => (*m, h),
    };
    let actual = match method {
        FileIngestion::Recursive if info.nar_hash.algo() == claimed.algo() => info.nar_hash.clone(),
        FileIngestion::Recursive => nar::hash_path(tree, claimed.algo())?.0,
        FileIngestion::Flat => {
            use std::os::unix::fs::PermissionsExt;
            let md = fs::symlink_metadata(tree).map_err(|e| StoreError::io(tree, e))?;
            if !md.is_file() || md.permissions().mode() & 0o111 != 0 {
                return Err(false_ca(
                    "flat and text content is a regular, non-executable file".into(),
                )
                .into());
            }
            let mut h = crate::Hasher::new(claimed.algo());
            let mut f = fs::File::open(tree).map_err(|e| StoreError::io(tree, e))?;
            io::copy(&mut f, &mut h).map_err(|e| StoreError::io(tree, e))?;
            h.finish()
        }
    };
    if actual != *claimed {
        return Err(false_ca(format!(
            "the content hashes to {}",
            actual.to_prefixed_nix32()
        ))
        .into());
    }
    Ok(())
}
