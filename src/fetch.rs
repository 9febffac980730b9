//! Fixed-output fetches, run by buildit itself: from local directories (matched by
//! file name, checked by hash), from `file://`, `http(s)://` and `mirror://NAME/`
//! URLs. The content must hash to what the derivation declares; otherwise nothing
//! is kept and the next candidate is tried.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use buildit_store::hash::HashingWriter;
use buildit_store::{
    Derivation, DerivationOutput, FileIngestion, Hash, HashAlgo, LocalStore, StorePath,
};
use thiserror::Error;
use ureq::tls::{parse_pem, Certificate, PemItem, RootCerts, TlsConfig};

#[derive(Debug, Error)]
pub enum FetchError {
    #[error("{drv} is not a fixed-output derivation with urls")]
    NotFetchable { drv: String },
    #[error("unknown mirror '{name}' in {url}: configure it, or add it to the host's apt sources")]
    UnknownMirror { name: String, url: String },
    #[error("could not fetch {name}:\n{}", attempts.iter().map(|a| format!("  - {a}")).collect::<Vec<_>>().join("\n"))]
    AllFailed { name: String, attempts: Vec<String> },
    #[error(transparent)]
    Store(#[from] buildit_store::StoreError),
}

/// Where fixed-output content may come from.
#[derive(Debug, Clone, Default)]
pub struct Fetcher {
    /// `mirror://NAME/…` → archive roots to try, in order.
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Directories searched by file name before any download (`--deb-dir`,
    /// `--source-dir`, apt's cache).
    pub local_dirs: Vec<PathBuf>,
    /// Directories whose files are matched by content: any file here whose hash
    /// is the one a fetch expects is used, whatever its name (`--source-dir`,
    /// config `source-dirs`; Debian's `hello_2.10.orig.tar.gz` serves
    /// `hello-2.10.tar.gz`).
    pub source_dirs: Vec<PathBuf>,
    /// Never use the network.
    pub offline: bool,
    /// Hashes of the files in `source_dirs`, computed once per algorithm.
    index: Arc<Mutex<BTreeMap<HashAlgo, BTreeMap<Hash, PathBuf>>>>,
}

/// apt's download cache: `.deb`s the host already has.
pub const APT_CACHE: &str = "/var/cache/apt/archives";

impl Fetcher {
    /// Mirrors from the host's apt sources, plus apt's cache as a local directory.
    pub fn from_host() -> Fetcher {
        let mut f = Fetcher::default();
        if let Ok(archives) = crate::debian::sources::host_archives() {
            let roots = crate::debian::sources::archive_roots(&archives);
            if !roots.is_empty() {
                f.mirrors.insert("debian".into(), roots);
            }
        }
        f.local_dirs.push(PathBuf::from(APT_CACHE));
        f
    }

    /// Realise the output of a fixed-output derivation; returns its store path.
    pub fn fetch(&self, store: &LocalStore, drv: &Derivation) -> Result<StorePath, FetchError> {
        self.fetch_reporting(store, drv, &|_, _| {})
    }

    /// [`Fetcher::fetch`], telling `progress` (bytes so far, total when known) as a
    /// download goes.
    pub fn fetch_reporting(
        &self,
        store: &LocalStore,
        drv: &Derivation,
        progress: &dyn Fn(u64, Option<u64>),
    ) -> Result<StorePath, FetchError> {
        let not = || FetchError::NotFetchable {
            drv: drv
                .env
                .get(buildit_store::builtins::keys::NAME)
                .cloned()
                .unwrap_or_default(),
        };
        let Some(DerivationOutput::Fixed {
            path: Some(out),
            method,
            hash,
        }) = drv.outputs.get("out")
        else {
            return Err(not());
        };
        if store.is_valid(out)? {
            return Ok(out.clone());
        }
        let urls: Vec<String> = buildit_store::builtins::FetchUrl::from_derivation(drv)
            .map(|f| f.urls)
            .unwrap_or_default();
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        if urls.is_empty() {
            return Err(not());
        }
        let mut attempts = Vec::new();
        let mut candidates = self.candidates(&urls)?;
        if *method == FileIngestion::Flat {
            if let Some(p) = self.by_hash(hash) {
                candidates.insert(0, Candidate::File(p));
            }
        }
        for candidate in candidates {
            match self.try_candidate(store, &candidate, out, *method, hash, progress) {
                Ok(()) => return Ok(out.clone()),
                Err(why) => attempts.push(format!("{}: {why}", candidate.describe())),
            }
        }
        if !self.source_dirs.is_empty() {
            attempts.push(format!(
                "no file in the source dirs ({}) has {}",
                self.source_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                hash.to_prefixed_hex()
            ));
        }
        if self.offline {
            attempts.push(format!(
                "--offline rules out downloading {}",
                urls.join(" ")
            ));
        }
        if attempts.is_empty() {
            attempts.push("no source: no mirror, source dir or URL to try".into());
        }
        Err(FetchError::AllFailed {
            name: out.name().to_string(),
            attempts,
        })
    }

    /// A file in the source dirs whose content hashes to `hash`.
    fn by_hash(&self, hash: &Hash) -> Option<PathBuf> {
        if self.source_dirs.is_empty() {
            return None;
        }
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let by_algo = index.entry(hash.algo()).or_insert_with(|| {
            let mut m = BTreeMap::new();
            for dir in &self.source_dirs {
                for file in files_below(dir, 4) {
                    if let Ok(mut f) = fs::File::open(&file) {
                        let mut w = HashingWriter::new(io::sink(), hash.algo());
                        if io::copy(&mut f, &mut w).is_ok() {
                            m.entry(w.finish().0).or_insert(file);
                        }
                    }
                }
            }
            m
        });
        by_algo.get(hash).cloned()
    }

    fn candidates(&self, urls: &[&str]) -> Result<Vec<Candidate>, FetchError> {
        let mut local = Vec::new();
        let mut remote = Vec::new();
        for url in urls {
            let file_name = url.rsplit('/').next().unwrap_or(url);
            for dir in &self.local_dirs {
                local.extend(find_in_dir(dir, file_name).into_iter().map(Candidate::File));
            }
            if let Some(rest) = url.strip_prefix("mirror://") {
                let (name, path) = rest.split_once('/').unwrap_or((rest, ""));
                let roots = self
                    .mirrors
                    .get(name)
                    .ok_or_else(|| FetchError::UnknownMirror {
                        name: name.to_string(),
                        url: url.to_string(),
                    })?;
                for r in roots {
                    let url = format!("{}/{path}", r.trim_end_matches('/'));
                    match url.strip_prefix("file://") {
                        // A mirror on disk (a config `mirrors:` entry).
                        Some(p) => local.push(Candidate::File(PathBuf::from(p))),
                        None => remote.push(Candidate::Url(url)),
                    }
                }
            } else if let Some(p) = url.strip_prefix("file://") {
                local.push(Candidate::File(PathBuf::from(p)));
            } else {
                remote.push(Candidate::Url(url.to_string()));
            }
        }
        if self.offline {
            remote.clear();
        }
        local.extend(remote);
        Ok(local)
    }

    fn try_candidate(
        &self,
        store: &LocalStore,
        candidate: &Candidate,
        out: &StorePath,
        method: FileIngestion,
        expected: &Hash,
        progress: &dyn Fn(u64, Option<u64>),
    ) -> Result<(), String> {
        let tmp = store.temp_tree().map_err(|e| e.to_string())?;
        let file = tmp.path();
        let got = match candidate {
            Candidate::File(p) => {
                let mut src = fs::File::open(p).map_err(|e| e.to_string())?;
                copy_hashing(&mut src, file, expected.algo())?
            }
            Candidate::Url(u) => {
                let (body, total) = http_get_sized(u).map_err(String::from)?;
                let mut counted = Counting {
                    inner: body,
                    done: 0,
                    reported: 0,
                    total,
                    progress,
                };
                copy_hashing(&mut counted, file, expected.algo())?
            }
        };
        if method == FileIngestion::Flat && got != *expected {
            return Err(format!(
                "hash mismatch: expected {}, got {}",
                expected.to_prefixed_hex(),
                got.to_prefixed_hex()
            ));
        }
        let added = store
            .add_path(file, out.name(), method, expected.algo())
            .map_err(|e| e.to_string())?;
        if &added != out {
            // Recursive content whose NAR hash differs: the add produced another path.
            return Err(format!("content hashes to {added}, expected {out}"));
        }
        Ok(())
    }
}

enum Candidate {
    File(PathBuf),
    Url(String),
}

impl Candidate {
    fn describe(&self) -> String {
        match self {
            Candidate::File(p) => p.display().to_string(),
            Candidate::Url(u) => u.clone(),
        }
    }
}

/// Regular files below `dir`, up to `depth` levels down, in a stable order.
fn files_below(dir: &Path, depth: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        match fs::metadata(&p) {
            Ok(m) if m.is_file() => out.push(p),
            Ok(m) if m.is_dir() && depth > 0 => out.extend(files_below(&p, depth - 1)),
            _ => {}
        }
    }
    out
}

/// `dir/name`, and in apt's cache also `name` with the epoch apt puts in cached file
/// names (`pkg_1%3a2.0-1_amd64.deb` for `pkg_2.0-1_amd64.deb`).
fn find_in_dir(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let direct = dir.join(name);
    if direct.is_file() {
        found.push(direct);
    }
    if let (Some((pkg, rest)), Ok(entries)) = (name.split_once('_'), fs::read_dir(dir)) {
        for e in entries.flatten() {
            let n = e.file_name();
            let Some(n) = n.to_str() else { continue };
            if let Some(after) = n.strip_prefix(pkg).and_then(|r| r.strip_prefix('_')) {
                if let Some((epoch, v)) = after.split_once("%3a") {
                    if epoch.chars().all(|c| c.is_ascii_digit()) && v == rest {
                        found.push(e.path());
                    }
                }
            }
        }
    }
    found
}

/// How long a download may stall before it fails: `$BUILDIT_HTTP_TIMEOUT` seconds,
/// else 60. A cache or mirror that hangs then fails over to the next one.
pub fn read_timeout() -> Duration {
    std::env::var("BUILDIT_HTTP_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(60))
}

/// The environment variable naming a PEM bundle of trusted TLS roots, as curl,
/// OpenSSL and git read it.
pub const SSL_CERT_FILE: &str = "SSL_CERT_FILE";

/// The agent every download goes through, built once per process (it keeps the
/// connection pool), and which roots it trusts: exactly the certificates of
/// `$SSL_CERT_FILE` when that is set and not empty, otherwise the built-in webpki
/// roots. A bad bundle is an error of every download, naming the file.
fn agent() -> Result<&'static (ureq::Agent, String), String> {
    static AGENT: OnceLock<Result<(ureq::Agent, String), String>> = OnceLock::new();
    AGENT
        .get_or_init(|| {
            let mut config = ureq::Agent::config_builder()
                .timeout_connect(Some(Duration::from_secs(20)))
                .timeout_per_read(Some(read_timeout()));
            let trusted = match std::env::var_os(SSL_CERT_FILE).filter(|f| !f.is_empty()) {
                Some(file) => {
                    let file = Path::new(&file);
                    let roots = pem_roots(file)?;
                    config = config.tls_config(
                        TlsConfig::builder()
                            .root_certs(RootCerts::from(roots))
                            .build(),
                    );
                    format!("the certificates in {SSL_CERT_FILE}={}", file.display())
                }
                None => format!(
                    "the built-in webpki roots; set {SSL_CERT_FILE} to a PEM bundle to trust others"
                ),
            };
            Ok((config.build().into(), trusted))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The certificates of a PEM bundle; other PEM items (keys, CRLs) are skipped, as
/// OpenSSL does. A file that cannot be read, is not valid PEM or holds no
/// certificate is an error naming it.
fn pem_roots(file: &Path) -> Result<Vec<Certificate<'static>>, String> {
    let bad = |why: String| format!("{SSL_CERT_FILE}={}: {why}", file.display());
    let pem = fs::read(file).map_err(|e| bad(e.to_string()))?;
    let mut certs = Vec::new();
    for item in parse_pem(&pem) {
        if let PemItem::Certificate(c) = item.map_err(|e| bad(format!("invalid PEM: {e}")))? {
            certs.push(c);
        }
    }
    if certs.is_empty() {
        return Err(bad(
            "no certificate in it (expected PEM blocks \"-----BEGIN CERTIFICATE-----\")".into(),
        ));
    }
    Ok(certs)
}

/// Reports the bytes read through it, every 256 KiB and at the end.
struct Counting<'a, R> {
    inner: R,
    done: u64,
    reported: u64,
    total: Option<u64>,
    progress: &'a dyn Fn(u64, Option<u64>),
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if n == 0 || self.done - self.reported >= 256 * 1024 {
            self.reported = self.done;
            (self.progress)(self.done, self.total);
        }
        Ok(n)
    }
}

fn http_get(url: &str) -> Result<impl Read, String> {
    Ok(http_get_sized(url).map_err(String::from)?.0)
}

/// Why a GET gave no body: the server's status (so that callers can tell "not
/// here" from a failure by its code), or anything else, in words.
enum GetError {
    Status(u16),
    Other(String),
}

impl From<GetError> for String {
    fn from(e: GetError) -> String {
        match e {
            GetError::Status(code) => format!("http status: {code}"),
            GetError::Other(why) => why,
        }
    }
}

/// The body of a GET and its length when the server says.
fn http_get_sized(url: &str) -> Result<(impl Read, Option<u64>), GetError> {
    let (agent, trusted) = agent().map_err(GetError::Other)?;
    // A name lookup or connection that fails may work a moment later (a resolver
    // hiccup); an answer from the server, or a TLS failure, will not change.
    let mut attempt = 0;
    let result = loop {
        attempt += 1;
        match agent.get(url).call() {
            Err(ureq::Error::Io(e)) if attempt < 3 && e.kind() != io::ErrorKind::InvalidData => {
                std::thread::sleep(std::time::Duration::from_millis(500 * attempt));
            }
            other => break other,
        }
    };
    let resp = result.map_err(|e| match e {
        ureq::Error::StatusCode(code) => GetError::Status(code),
        e => GetError::Other(match e {
            // TLS failures (an untrusted server certificate, say) reach us as rustls
            // errors, or wrapped by the TLS stream as I/O errors of kind InvalidData (which
            // plain TCP does not produce): say which roots were trusted.
            ureq::Error::Rustls(e) => format!("TLS: {e} (trusted: {trusted})"),
            ureq::Error::Io(e) if e.kind() == io::ErrorKind::InvalidData => {
                format!("TLS: {e} (trusted: {trusted})")
            }
            e => e.to_string(),
        }),
    })?;
    let total = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    Ok((
        resp.into_body().into_with_config().limit(u64::MAX).reader(),
        total,
    ))
}

/// GET `url`: the body, or `None` for 404/410 (a binary cache's "not here").
pub fn http_get_optional(url: &str) -> Result<Option<Box<dyn Read + Send>>, String> {
    match http_get_sized(url) {
        Ok((body, _)) => Ok(Some(Box::new(body))),
        Err(GetError::Status(404 | 410)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Copy into `dest` while hashing with the expected hash's algorithm.
fn copy_hashing(src: &mut impl Read, dest: &Path, algo: HashAlgo) -> Result<Hash, String> {
    let f = fs::File::create_new(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    let mut w = HashingWriter::new(io::BufWriter::with_capacity(1 << 16, f), algo);
    io::copy(src, &mut w).map_err(|e| format!("download failed: {e}"))?;
    w.flush().map_err(|e| e.to_string())?;
    Ok(w.finish().0)
}

/// Download a URL whose hash is not known yet (a remote patch, when locking), keep it
/// in the store as a flat sha256 fixed-output path, and return its sha256 in hex.
pub fn fetch_unpinned(store: &LocalStore, url: &str) -> Result<String, String> {
    let tmp = store.temp_tree().map_err(|e| e.to_string())?;
    let hash = copy_hashing(&mut http_get(url)?, tmp.path(), HashAlgo::Sha256)?;
    let name =
        buildit_lang::lower::debian::store_name(url.rsplit('/').next().unwrap_or("download"));
    store
        .add_path(tmp.path(), &name, FileIngestion::Flat, HashAlgo::Sha256)
        .map_err(|e| e.to_string())?;
    Ok(hash.to_hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn pem_roots_takes_certificates_and_names_a_bad_file() {
        let t = tempfile::tempdir().unwrap();
        // Certificates are kept, other items skipped (DER is checked by rustls later).
        let two = pem(
            t.path(),
            "two.pem",
            "junk before\n-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n\
             -----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n\
             -----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n",
        );
        let certs = pem_roots(&two).unwrap();
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[1].der(), [0x30, 0x03, 0x02, 0x01, 0x01]);

        let missing = t.path().join("missing.pem");
        let e = pem_roots(&missing).unwrap_err();
        assert!(
            e.starts_with(&format!("SSL_CERT_FILE={}: ", missing.display())),
            "{e}"
        );
        for (name, text) in [
            ("empty.pem", ""),
            ("text.pem", "not a certificate\n"),
            (
                "key.pem",
                "-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n",
            ),
        ] {
            let p = pem(t.path(), name, text);
            let e = pem_roots(&p).unwrap_err();
            assert!(e.contains(&p.display().to_string()), "{e}");
            assert!(e.contains("no certificate"), "{name}: {e}");
        }
        let broken = pem(
            t.path(),
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        );
        let e = pem_roots(&broken).unwrap_err();
        assert!(
            e.contains(&broken.display().to_string()) && e.contains("invalid PEM"),
            "{e}"
        );
    }
}
