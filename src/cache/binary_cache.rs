//! The Nix binary cache format over a [`Backend`]: narinfo lookup and signature
//! checks, substitution (download → decompress → NAR hash verified → restored into
//! the store atomically), and pushing closures (NAR first, narinfo last, so that a
//! cache never lists what it cannot serve).

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, BufWriter, Read, Write};

use buildit_store::hash::HashingWriter;
use buildit_store::narinfo::{Compression, NarInfo, NixCacheInfo};
use buildit_store::signing::{SecretKey, TrustedKeys};
use buildit_store::{nix32, HashAlgo, LocalStore, PathInfo, StorePath};

use super::{Backend, CacheError};

/// The zstd level of pushed NARs: fast to write, a good ratio for binaries.
pub const NAR_ZSTD_LEVEL: i32 = 3;

/// What a substitution brought.
#[derive(Debug, Clone)]
pub struct Substituted {
    pub path: StorePath,
    pub file_size: u64,
    pub nar_size: u64,
}

/// One cache: a backend, its priority (lower first, as in Nix) and the keys it is
/// trusted with.
pub struct BinaryCache {
    backend: Box<dyn Backend>,
    pub priority: i64,
    trusted: TrustedKeys,
}

impl BinaryCache {
    pub fn new(backend: Box<dyn Backend>, priority: i64, trusted: TrustedKeys) -> BinaryCache {
        BinaryCache {
            backend,
            priority,
            trusted,
        }
    }

    pub fn url(&self) -> &str {
        self.backend.url()
    }

    fn read_to_string(&self, key: &str) -> Result<Option<String>, CacheError> {
        let Some(mut r) = self.backend.get(key)? else {
            return Ok(None);
        };
        let mut s = String::new();
        // A narinfo is small; a hostile server must not make us read gigabytes.
        r.by_ref()
            .take(1 << 20)
            .read_to_string(&mut s)
            .map_err(|e| self.err(format!("{key}: {e}")))?;
        Ok(Some(s))
    }

    fn err(&self, message: String) -> CacheError {
        CacheError::Transport {
            url: self.url().to_string(),
            message,
        }
    }

    /// The cache's `nix-cache-info`; a cache for another store dir is an error.
    pub fn info(&self) -> Result<Option<NixCacheInfo>, CacheError> {
        match self.read_to_string("nix-cache-info")? {
            None => Ok(None),
            Some(text) => NixCacheInfo::parse(&text)
                .map(Some)
                .map_err(|e| self.err(format!("nix-cache-info: {e}"))),
        }
    }

    /// The narinfo of `path`, signature not yet checked; `None` when absent.
    pub fn narinfo(&self, path: &StorePath) -> Result<Option<NarInfo>, CacheError> {
        let key = format!("{}.narinfo", path.hash_part());
        let Some(text) = self.read_to_string(&key)? else {
            return Ok(None);
        };
        let info = NarInfo::parse(&text).map_err(|e| self.err(format!("{key}: {e}")))?;
        if &info.store_path != path {
            return Err(self.err(format!("{key} describes {}, not {path}", info.store_path)));
        }
        Ok(Some(info))
    }

    /// The narinfo of `path` if present and signed by a trusted key: `Ok(None)` when
    /// absent, `Err` (with the reason) when present but not acceptable.
    pub fn trusted_narinfo(&self, path: &StorePath) -> Result<Option<NarInfo>, CacheError> {
        let Some(info) = self.narinfo(path)? else {
            return Ok(None);
        };
        if info.sigs.is_empty() {
            return Err(self.err(format!("{path}: the narinfo is not signed")));
        }
        info.verify(&self.trusted).map_err(|e| {
            self.err(format!(
                "{path}: no valid signature by a trusted key ({e}; signed by {})",
                info.sigs
                    .iter()
                    .map(|s| s.key_name().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        // The signature does not cover `CA:`: a claim that does not make this path
        // is refused here, before any download; the content is checked as the NAR
        // is restored (LocalStore::add_nar).
        path_info(&info)
            .check_ca_path()
            .map_err(|e| self.err(e.to_string()))?;
        Ok(Some(info))
    }

    /// Download the NAR of `info` (already checked) and add it to `store`: the NAR
    /// hash and size are verified while it is restored; nothing is registered on
    /// any mismatch. The references must be valid already.
    pub fn substitute(
        &self,
        store: &LocalStore,
        info: &NarInfo,
        progress: &dyn Fn(u64),
    ) -> Result<Substituted, CacheError> {
        let body = self.backend.get(&info.url)?.ok_or_else(|| {
            self.err(format!(
                "{}: the NAR {} is missing",
                info.store_path, info.url
            ))
        })?;
        let mut counted = CountingReader {
            inner: body,
            n: 0,
            reported: 0,
            progress,
        };
        let mut nar: Box<dyn Read> = match &info.compression {
            Compression::None => Box::new(&mut counted),
            Compression::Zstd => {
                Box::new(zstd::Decoder::new(&mut counted).map_err(|e| self.err(e.to_string()))?)
            }
            Compression::Xz => Box::new(liblzma::read::XzDecoder::new(&mut counted)),
            other => {
                return Err(self.err(format!(
                    "{}: compression '{}' is not supported (zstd, xz, none)",
                    info.store_path,
                    other.as_str()
                )))
            }
        };
        store
            .add_nar(&path_info(info), &mut nar)
            .map_err(|e| self.err(format!("{}: {e}", info.store_path)))?;
        drop(nar);
        Ok(Substituted {
            path: info.store_path.clone(),
            file_size: counted.n,
            nar_size: info.nar_size,
        })
    }

    /// Download the NAR of `info` and unpack it at `target` (outside the store,
    /// e.g. to compare it with a local build); the NAR hash is verified on the
    /// way, and nothing is left at `target` on a mismatch.
    pub fn restore_nar(&self, info: &NarInfo, target: &std::path::Path) -> Result<(), CacheError> {
        let body = self.backend.get(&info.url)?.ok_or_else(|| {
            self.err(format!(
                "{}: the NAR {} is missing",
                info.store_path, info.url
            ))
        })?;
        let nar: Box<dyn Read> = match &info.compression {
            Compression::None => body,
            Compression::Zstd => {
                Box::new(zstd::Decoder::new(body).map_err(|e| self.err(e.to_string()))?)
            }
            Compression::Xz => Box::new(liblzma::read::XzDecoder::new(body)),
            other => {
                return Err(self.err(format!(
                    "{}: compression '{}' is not supported (zstd, xz, none)",
                    info.store_path,
                    other.as_str()
                )))
            }
        };
        let mut hashing = buildit_store::hash::HashingReader::new(nar, info.nar_hash.algo());
        let restored = buildit_store::nar::restore(&mut hashing, target);
        let (actual, _, _) = hashing.finish();
        let fail = |why: String| {
            let _ = buildit_store::local::remove_tree(target);
            self.err(format!("{}: {why}", info.store_path))
        };
        restored.map_err(|e| fail(e.to_string()))?;
        if actual != info.nar_hash {
            return Err(fail(format!(
                "NAR hash mismatch: narinfo says {}, the NAR is {actual}",
                info.nar_hash
            )));
        }
        Ok(())
    }

    /// Upload the closure of `paths` that the cache does not have, references
    /// before referrers, each NAR before its narinfo; returns what was uploaded.
    pub fn push(
        &self,
        store: &LocalStore,
        paths: &[StorePath],
        key: &SecretKey,
        progress: &dyn Fn(&StorePath),
    ) -> Result<Vec<StorePath>, CacheError> {
        if self.info()?.is_none() {
            let info = NixCacheInfo {
                want_mass_query: Some(true),
                priority: Some(40),
                ..Default::default()
            };
            let tmp = store.temp_tree()?;
            fs::write(tmp.path(), info.to_string()).map_err(|e| self.err(e.to_string()))?;
            self.backend.put("nix-cache-info", tmp.path())?;
        }
        let closure = store.closure(paths)?;
        let mut pushed = Vec::new();
        for path in topological(store, &closure)? {
            if self
                .backend
                .exists(&format!("{}.narinfo", path.hash_part()))?
            {
                continue;
            }
            progress(&path);
            self.push_one(store, &path, key)?;
            pushed.push(path);
        }
        Ok(pushed)
    }

    fn push_one(
        &self,
        store: &LocalStore,
        path: &StorePath,
        key: &SecretKey,
    ) -> Result<(), CacheError> {
        let info = store.require_info(path)?;
        // NAR → zstd → sha256 of the file, into a temp file: never in memory.
        let tmp = store.temp_tree()?;
        let (file_hash, file_size) = {
            let f = fs::File::create(tmp.path()).map_err(|e| self.err(e.to_string()))?;
            let hashing =
                HashingWriter::new(BufWriter::with_capacity(1 << 16, f), HashAlgo::Sha256);
            let mut z =
                zstd::Encoder::new(hashing, NAR_ZSTD_LEVEL).map_err(|e| self.err(e.to_string()))?;
            buildit_store::nar::dump_path(&store.physical_path(path), &mut z)
                .map_err(|e| self.err(format!("{path}: {e}")))?;
            let mut hashing = z.finish().map_err(|e| self.err(e.to_string()))?;
            hashing.flush().map_err(|e| self.err(e.to_string()))?;
            let (hash, size, mut w) = hashing.finish();
            w.flush().map_err(|e| self.err(e.to_string()))?;
            (hash, size)
        };
        let url = format!("nar/{}.nar.zst", nix32::encode(file_hash.digest()));
        self.backend.put(&url, tmp.path())?;
        let mut narinfo = NarInfo {
            store_path: path.clone(),
            url,
            compression: Compression::Zstd,
            file_hash: Some(file_hash),
            file_size: Some(file_size),
            nar_hash: info.nar_hash.clone(),
            nar_size: info.nar_size,
            references: info.references.clone(),
            deriver: info.deriver.clone(),
            sigs: Vec::new(),
            ca: info.ca.clone(),
            system: None,
        };
        narinfo.sign(key);
        let text = store.temp_tree()?;
        fs::write(text.path(), narinfo.to_string()).map_err(|e| self.err(e.to_string()))?;
        self.backend.put(&narinfo.file_name(), text.path())
    }
}

/// What the store registers for a substituted path. `deriver` and `ca` are not
/// signed: the deriver is kept as the advisory hint it is in Nix, and the content
/// address is checked by the store before it is registered.
fn path_info(info: &NarInfo) -> PathInfo {
    PathInfo {
        path: info.store_path.clone(),
        nar_hash: info.nar_hash.clone(),
        nar_size: info.nar_size,
        references: info.references.clone(),
        deriver: info.deriver.clone(),
        sigs: info.sigs.iter().map(|s| s.to_string()).collect(),
        registration_time: 0,
        ca: info.ca.clone(),
    }
}

/// Counts the bytes of a download and reports them every 256 KiB and at the end.
struct CountingReader<'a, R> {
    inner: R,
    n: u64,
    reported: u64,
    progress: &'a dyn Fn(u64),
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        if k == 0 || self.n - self.reported >= 256 * 1024 {
            self.reported = self.n;
            (self.progress)(self.n);
        }
        Ok(k)
    }
}

/// `paths` with every path after its references (those inside `paths`).
pub fn topological(
    store: &LocalStore,
    paths: &BTreeSet<StorePath>,
) -> Result<Vec<StorePath>, CacheError> {
    let mut out = Vec::new();
    let mut done = BTreeSet::new();
    for p in paths {
        visit(store, p, paths, &mut done, &mut out)?;
    }
    Ok(out)
}

fn visit(
    store: &LocalStore,
    p: &StorePath,
    within: &BTreeSet<StorePath>,
    done: &mut BTreeSet<StorePath>,
    out: &mut Vec<StorePath>,
) -> Result<(), CacheError> {
    // Iterative would be kinder to deep graphs; closures are shallow (tens deep).
    if !done.insert(p.clone()) {
        return Ok(());
    }
    let info = store.require_info(p)?;
    for r in info
        .references
        .iter()
        .filter(|r| *r != p && within.contains(*r))
    {
        visit(store, r, within, done, out)?;
    }
    out.push(p.clone());
    Ok(())
}
