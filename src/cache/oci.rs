//! `oci://host[:port]/repo[/more]`: a cache kept in an OCI registry, one artifact
//! per key.
//!
//! Each key becomes a manifest tagged with the key, `/` turned into `-`
//! (`nar/abc.nar.zst` → `nar-abc.nar.zst`): its one layer is the object's bytes,
//! with a media type saying what they are, and its config is `{}` typed
//! [`CONFIG_MEDIA_TYPE`], as the OCI guidance for artifacts has it. The blob is
//! pushed before the manifest, so a key appears only once its object is whole.
//!
//! Registries on a loopback address are spoken to over plain HTTP, as docker does;
//! `?insecure=1` makes any registry plain HTTP. Access is anonymous.

use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol, SizedStream};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{OciDescriptor, OciImageManifest, OciManifest, OCI_IMAGE_MEDIA_TYPE};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use tokio::runtime::Runtime;

use super::location;
use super::{Backend, CacheError};
use crate::io_util::read_full;

/// The config of every cache artifact (its content is `{}`).
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.buildit.cache.config.v1+json";
const CONFIG: &[u8] = b"{}";

/// Objects up to this size are pushed from memory in one request (which falls
/// back to a monolithic upload on registries that mishandle chunks); larger ones
/// are streamed from the file in chunks of this size.
const CHUNK: usize = 4 * 1024 * 1024;

/// The media type of the layer holding `key`'s bytes.
pub fn media_type(key: &str) -> &'static str {
    if key == "nix-cache-info" {
        "application/vnd.buildit.nix-cache-info.v1"
    } else if key.ends_with(".narinfo") {
        "application/vnd.buildit.narinfo.v1"
    } else if key.starts_with("nar/") && key.ends_with(".nar.zst") {
        "application/vnd.buildit.nar.v1+zstd"
    } else if key.starts_with("nar/") && key.ends_with(".nar.xz") {
        "application/vnd.buildit.nar.v1+xz"
    } else if key.starts_with("nar/") && key.ends_with(".nar") {
        "application/vnd.buildit.nar.v1"
    } else {
        "application/octet-stream"
    }
}

/// The tag for `key`. Tags allow `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`; the cache's
/// keys (`nix-cache-info`, `<hash>.narinfo`, `nar/<hash>.nar.zst`) all fit once
/// `/` is `-`. The mapping is not injective (`nar/x` and `nar-x` share a tag),
/// which the cache's own key shapes never run into.
pub fn tag(key: &str) -> Result<String, CacheError> {
    let bad = || CacheError::Invalid(format!("cache key '{key}' cannot be an OCI tag"));
    if key.is_empty()
        || key
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(CacheError::Invalid(format!("bad cache key '{key}'")));
    }
    let t = key.replace('/', "-");
    let mut chars = t.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first_ok || !rest_ok || t.len() > 128 {
        return Err(bad());
    }
    Ok(t)
}

/// A repository name as the distribution spec allows it: `/`-separated
/// components of `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`.
fn valid_repository(repo: &str) -> bool {
    let component = |c: &str| {
        let b = c.as_bytes();
        let alnum = |x: &u8| x.is_ascii_lowercase() || x.is_ascii_digit();
        if b.is_empty() || !alnum(&b[0]) || !alnum(&b[b.len() - 1]) {
            return false;
        }
        let mut i = 0;
        while i < b.len() {
            if alnum(&b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && !alnum(&b[i]) {
                i += 1;
            }
            let sep = &c[start..i];
            if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
                return false;
            }
        }
        true
    };
    !repo.is_empty() && repo.len() <= 255 && repo.split('/').all(component)
}

fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether the registry said the tag, repository or blob does not exist.
fn not_found(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                OciErrorCode::ManifestUnknown
                    | OciErrorCode::NameUnknown
                    | OciErrorCode::BlobUnknown
                    | OciErrorCode::NotFound
            )
        }),
        OciDistributionError::ServerError { code: 404, .. } => true,
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        _ => false,
    }
}

pub struct OciBackend {
    url: String,
    registry: String,
    repository: String,
    client: Client,
    auth: RegistryAuth,
    rt: Arc<Runtime>,
}

impl OciBackend {
    pub fn open(url: &str) -> Result<OciBackend, CacheError> {
        let bad = |why: &str| CacheError::Invalid(format!("{url}: {why}"));
        let rest = url
            .strip_prefix("oci://")
            .ok_or_else(|| CacheError::UnsupportedUrl(url.to_string()))?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (registry, repository) = rest
            .split_once('/')
            .ok_or_else(|| bad("expected oci://host[:port]/repository"))?;
        let repository = repository.trim_end_matches('/');
        if registry.is_empty() {
            return Err(bad("no registry host"));
        }
        if !valid_repository(repository) {
            return Err(bad(&format!(
                "'{repository}' is not a valid repository name (lowercase letters, digits, and . _ - between them)"
            )));
        }
        let mut insecure = false;
        for (name, value) in location::query_pairs(query, url)? {
            match (name.as_str(), value.as_str()) {
                ("insecure", "1" | "true") => insecure = true,
                ("insecure", "0" | "false") => insecure = false,
                // A misspelt option silently ignored would change the transport.
                _ => return Err(bad(&format!("unknown parameter '{name}={value}'"))),
            }
        }
        let protocol = if insecure {
            ClientProtocol::Http
        } else if is_loopback(registry) {
            ClientProtocol::HttpsExcept(vec![registry.to_string()])
        } else {
            ClientProtocol::Https
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CacheError::Transport {
                url: url.to_string(),
                message: format!("cannot start an async runtime: {e}"),
            })?;
        let client = Client::new(ClientConfig {
            protocol,
            connect_timeout: Some(Duration::from_secs(30)),
            read_timeout: Some(Duration::from_secs(300)),
            ..Default::default()
        });
        Ok(OciBackend {
            url: url.to_string(),
            registry: registry.to_string(),
            repository: repository.to_string(),
            client,
            auth: RegistryAuth::Anonymous,
            rt: Arc::new(rt),
        })
    }

    fn err(&self, key: &str, message: impl std::fmt::Display) -> CacheError {
        CacheError::Transport {
            url: self.url.clone(),
            message: format!("{key}: {message}"),
        }
    }

    fn reference(&self, key: &str) -> Result<Reference, CacheError> {
        Ok(Reference::with_tag(
            self.registry.clone(),
            self.repository.clone(),
            tag(key)?,
        ))
    }

    /// Runs `f` on the runtime, with the credentials registered first: the
    /// client's blob calls take none of their own.
    fn run<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.rt.block_on(async {
            self.client
                .store_auth_if_needed(&self.registry, &self.auth)
                .await;
            f.await
        })
    }

    async fn push(
        &self,
        r: &Reference,
        key: &str,
        from: &Path,
    ) -> Result<(), OciDistributionError> {
        let mut file = std::fs::File::open(from)?;
        let size = file.metadata()?.len();
        let mut hasher = buildit_store::Hasher::new(buildit_store::HashAlgo::Sha256);
        io::copy(&mut file, &mut hasher)?;
        let digest = format!("sha256:{}", hasher.finish().to_hex());
        let config_digest = format!("sha256:{}", buildit_store::Hash::sha256(CONFIG).to_hex());

        // Objects are content-addressed in the registry: a NAR shared by several
        // paths, or pushed again, is not uploaded twice.
        if !self.client.blob_exists(r, &digest).await? {
            let mut file = std::fs::File::open(from)?;
            if size <= CHUNK as u64 {
                let mut data = Vec::with_capacity(size as usize);
                file.read_to_end(&mut data)?;
                self.client.push_blob(r, data, &digest).await?;
            } else {
                let chunks = futures_util::stream::try_unfold(file, |mut f| async move {
                    let mut buf = vec![0; CHUNK];
                    let n = read_full(&mut f, &mut buf)?;
                    if n == 0 {
                        return Ok(None);
                    }
                    buf.truncate(n);
                    Ok(Some((Bytes::from(buf), f)))
                });
                self.client
                    .push_blob_stream(r, chunks, &digest, Some(size))
                    .await?;
            }
        }
        if !self.client.blob_exists(r, &config_digest).await? {
            self.client
                .push_blob(r, CONFIG.to_vec(), &config_digest)
                .await?;
        }
        let title = key.rsplit('/').next().unwrap_or(key).to_string();
        let manifest = OciImageManifest {
            schema_version: 2,
            media_type: Some(OCI_IMAGE_MEDIA_TYPE.to_string()),
            config: OciDescriptor {
                media_type: CONFIG_MEDIA_TYPE.to_string(),
                digest: config_digest,
                size: CONFIG.len() as i64,
                ..Default::default()
            },
            layers: vec![OciDescriptor {
                media_type: media_type(key).to_string(),
                digest,
                size: size as i64,
                // What `oras pull` names the file it writes.
                annotations: Some(
                    [("org.opencontainers.image.title".to_string(), title)]
                        .into_iter()
                        .collect(),
                ),
                ..Default::default()
            }],
            annotations: Some(
                [("org.buildit.cache.key".to_string(), key.to_string())]
                    .into_iter()
                    .collect(),
            ),
            ..Default::default()
        };
        self.client
            .push_manifest(r, &OciManifest::Image(manifest))
            .await?;
        Ok(())
    }
}

impl Backend for OciBackend {
    fn url(&self) -> &str {
        &self.url
    }

    fn get(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>, CacheError> {
        let r = self.reference(key)?;
        let manifest = match self.run(self.client.pull_image_manifest(&r, &self.auth)) {
            Ok((m, _)) => m,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(self.err(key, crate::cache::error_chain(&e))),
        };
        let [layer] = manifest.layers.as_slice() else {
            return Err(self.err(
                key,
                format!(
                    "not a cache object: its manifest has {} layers, not one",
                    manifest.layers.len()
                ),
            ));
        };
        let stream = self
            .run(self.client.pull_blob_stream(&r, layer))
            .map_err(|e| self.err(key, crate::cache::error_chain(&e)))?;
        Ok(Some(Box::new(OciReader {
            stream,
            buf: Bytes::new(),
            what: format!("{}: {key}", self.url),
            rt: self.rt.clone(),
        })))
    }

    fn exists(&self, key: &str) -> Result<bool, CacheError> {
        let r = self.reference(key)?;
        match self.run(self.client.fetch_manifest_digest(&r, &self.auth)) {
            Ok(_) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(self.err(key, crate::cache::error_chain(&e))),
        }
    }

    fn put(&self, key: &str, from: &Path) -> Result<(), CacheError> {
        let r = self.reference(key)?;
        self.run(self.push(&r, key, from))
            .map_err(|e| self.err(key, crate::cache::error_chain(&e)))
    }
}

/// Streams a blob; the client checks its digest as the last bytes arrive, so a
/// corrupt blob ends in an error rather than a clean EOF.
struct OciReader {
    stream: SizedStream,
    buf: Bytes,
    /// `URL: key`, for errors.
    what: String,
    rt: Arc<Runtime>,
}

impl Read for OciReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.buf.is_empty() {
                let n = out.len().min(self.buf.len());
                out[..n].copy_from_slice(&self.buf[..n]);
                self.buf.advance(n);
                return Ok(n);
            }
            match self.rt.block_on(self.stream.next()) {
                Some(Ok(b)) => self.buf = b,
                Some(Err(e)) => {
                    return Err(io::Error::new(e.kind(), format!("{}: {e}", self.what)))
                }
                None => return Ok(0),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::testing::{noise, read_all};
    use std::fs;
    use std::net::TcpListener;
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    #[test]
    fn tags_and_media_types() {
        assert_eq!(tag("abc123.narinfo").unwrap(), "abc123.narinfo");
        assert_eq!(tag("nar/xyz.nar.zst").unwrap(), "nar-xyz.nar.zst");
        assert_eq!(tag("nix-cache-info").unwrap(), "nix-cache-info");
        for bad in ["", "../x", "a//b", ".hidden", "-x", "a:b", "a b"] {
            assert!(tag(bad).is_err(), "{bad}");
        }
        assert!(tag(&"x".repeat(128)).is_ok());
        assert!(tag(&"x".repeat(129)).is_err());

        assert_eq!(
            media_type("nar/x.nar.zst"),
            "application/vnd.buildit.nar.v1+zstd"
        );
        assert_eq!(
            media_type("x.narinfo"),
            "application/vnd.buildit.narinfo.v1"
        );
        assert_eq!(
            media_type("nix-cache-info"),
            "application/vnd.buildit.nix-cache-info.v1"
        );
        assert_eq!(media_type("log/x"), "application/octet-stream");
    }

    #[test]
    fn parses_urls() {
        let b = OciBackend::open("oci://127.0.0.1:5000/team/cache/").unwrap();
        assert_eq!(
            (b.registry.as_str(), b.repository.as_str()),
            ("127.0.0.1:5000", "team/cache")
        );
        assert!(OciBackend::open("oci://ghcr.io/o/c?insecure=1").is_ok());
        for bad in [
            "oci://host",
            "oci://host/",
            "oci:///repo",
            "oci://host/Upper",
            "oci://host/a..b",
            "oci://host/a?insecur=1",
        ] {
            assert!(OciBackend::open(bad).is_err(), "{bad}");
        }
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("ghcr.io"));
        assert!(valid_repository("a/b-c__d.e---f"));
        assert!(!valid_repository("a/_b"));
    }

    /// Debian's `docker-registry` on a loopback port, with its storage in a temp
    /// dir.
    struct Registry {
        child: Child,
        _dir: tempfile::TempDir,
        port: u16,
    }

    impl Registry {
        /// A running registry, or `None` after `skip` says why (a failure under CI).
        fn start() -> Option<Registry> {
            let bin = crate::test_skip::require_tool(
                "docker-registry",
                "scripts/image-tools.sh installs it",
            )?;
            let dir = tempfile::tempdir().unwrap();
            let storage = dir.path().join("storage");
            fs::create_dir(&storage).unwrap();
            let log = dir.path().join("registry.log");
            for attempt in 0..5 {
                let port = TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port();
                let cfg = dir.path().join(format!("config-{attempt}.yml"));
                fs::write(
                    &cfg,
                    format!(
                        "version: 0.1\n\
                         log: {{level: error, accesslog: {{disabled: true}}}}\n\
                         storage: {{filesystem: {{rootdirectory: {}}}}}\n\
                         http: {{addr: 127.0.0.1:{port}}}\n",
                        storage.display()
                    ),
                )
                .unwrap();
                let out = fs::File::create(&log).unwrap();
                let mut child = Command::new(&bin)
                    .arg("serve")
                    .arg(&cfg)
                    .stdin(Stdio::null())
                    .stdout(out.try_clone().unwrap())
                    .stderr(out)
                    .spawn()
                    .expect("start docker-registry");
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                        return Some(Registry {
                            child,
                            _dir: dir,
                            port,
                        });
                    }
                    let exited = child.try_wait().unwrap().is_some();
                    if exited || Instant::now() > deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        let text = fs::read_to_string(&log).unwrap_or_default();
                        if text.contains("address already in use") {
                            break;
                        }
                        panic!("docker-registry did not start:\n{text}");
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            panic!("docker-registry: no free port after 5 attempts");
        }
    }

    impl Drop for Registry {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[test]
    fn round_trip_through_registry() {
        let Some(reg) = Registry::start() else { return };
        let url = format!("oci://127.0.0.1:{}/buildit/cache", reg.port);
        let b = super::super::open(&url).unwrap();
        let work = tempfile::tempdir().unwrap();
        let file = |name: &str, data: &[u8]| {
            let p = work.path().join(name);
            fs::write(&p, data).unwrap();
            p
        };

        // Before anything is pushed the repository itself is unknown.
        assert!(!b.exists("nix-cache-info").unwrap());
        assert!(b.get("nix-cache-info").unwrap().is_none());

        let info = b"StoreDir: /store\nWantMassQuery: 1\nPriority: 40\n";
        b.put("nix-cache-info", &file("info", info)).unwrap();
        assert!(b.exists("nix-cache-info").unwrap());
        assert_eq!(read_all(&*b, "nix-cache-info").unwrap(), info);
        assert!(!b.exists("abc.narinfo").unwrap());
        assert!(b.get("nar/none.nar.zst").unwrap().is_none());

        // Larger than one chunk: streamed up, and streamed down.
        let big = noise(5 * 1024 * 1024 + 777, 3);
        let t = Instant::now();
        b.put("nar/big.nar.zst", &file("big", &big)).unwrap();
        let put_time = t.elapsed();
        let t = Instant::now();
        let got = read_all(&*b, "nar/big.nar.zst").unwrap();
        let get_time = t.elapsed();
        assert!(got == big, "big object differs");

        // Replacing a key, an empty object, and the same bytes under two keys.
        let small = noise(1000, 5);
        b.put("nar/big.nar.zst", &file("small", &small)).unwrap();
        assert_eq!(read_all(&*b, "nar/big.nar.zst").unwrap(), small);
        b.put("empty.narinfo", &file("empty", b"")).unwrap();
        assert_eq!(read_all(&*b, "empty.narinfo").unwrap(), b"");
        b.put("again.narinfo", &file("small2", &small)).unwrap();
        assert_eq!(read_all(&*b, "again.narinfo").unwrap(), small);

        // What landed in the registry: an OCI manifest, typed layer and config.
        let r = Reference::with_tag(
            format!("127.0.0.1:{}", reg.port),
            "buildit/cache".into(),
            "nar-big.nar.zst".into(),
        );
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            ..Default::default()
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (m, _) = rt
            .block_on(client.pull_image_manifest(&r, &RegistryAuth::Anonymous))
            .unwrap();
        assert_eq!(m.media_type.as_deref(), Some(OCI_IMAGE_MEDIA_TYPE));
        assert_eq!(m.config.media_type, CONFIG_MEDIA_TYPE);
        assert_eq!(m.layers.len(), 1);
        assert_eq!(
            m.layers[0].media_type,
            "application/vnd.buildit.nar.v1+zstd"
        );
        assert_eq!(m.layers[0].size, small.len() as i64);

        // A reader outlives its backend.
        let mut r = b.get("nix-cache-info").unwrap().unwrap();
        drop(b);
        let mut v = Vec::new();
        r.read_to_end(&mut v).unwrap();
        assert_eq!(v, info);

        let mib = big.len() as f64 / (1024.0 * 1024.0);
        eprintln!(
            "oci: put {mib:.1} MiB in {put_time:?} ({:.0} MiB/s); get in {get_time:?} ({:.0} MiB/s)",
            mib / put_time.as_secs_f64(),
            mib / get_time.as_secs_f64()
        );
    }

    #[test]
    fn unreachable_registry_errors_name_the_url() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("oci://127.0.0.1:{port}/cache");
        let b = OciBackend::open(&url).unwrap();
        let msg = b.exists("nix-cache-info").unwrap_err().to_string();
        assert!(msg.starts_with(&url), "{msg}");
        assert!(msg.contains("nix-cache-info"), "{msg}");
    }
}
