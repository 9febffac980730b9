//! `s3://bucket/optional/prefix`: a cache in a bucket of AWS S3 or of any
//! S3-compatible store (MinIO, Garage, Ceph, R2, moto…), through `object_store`.
//!
//! Configuration comes from the environment as the AWS tools read it
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_REGION` over `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL_S3` over
//! `AWS_ENDPOINT_URL`, and the other `AWS_*` keys `object_store` knows), then
//! from the URL's query as Nix's S3 store takes it, which wins:
//! `s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1`
//! (`endpoint` may also be a bare host, completed by `scheme`, `https` by default).

use std::fs;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, Attributes, ClientConfigKey, ClientOptions, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, RetryConfig, WriteMultipart,
};
use tokio::runtime::Runtime;

use super::location;
use super::{Backend, CacheError};

/// Files above this go up in parts: one request per object would hold the whole
/// file in memory and restart from nothing on any failure.
const MULTIPART_THRESHOLD: u64 = 8 << 20;
/// Well above S3's 5 MiB minimum part, and 10,000 parts of it still reach 80 GiB.
const PART_SIZE: usize = 8 << 20;
/// Parts in flight at once, which bounds the memory a large upload holds.
const PARTS_IN_FLIGHT: usize = 4;
/// How much of the file is read between turns of the runtime.
const READ_SIZE: usize = 1 << 20;

pub struct S3Backend {
    url: String,
    bucket: String,
    /// Joined in front of every key, without slashes at either end.
    prefix: Option<String>,
    store: AmazonS3,
    /// The trait is synchronous: each call drives the store's futures to the end
    /// on this runtime, shared with the readers that `get` hands out.
    rt: Arc<Runtime>,
}

/// What an `s3://` URL says.
#[derive(Debug, PartialEq)]
struct S3Url {
    bucket: String,
    prefix: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
}

impl S3Backend {
    pub fn open(url: &str) -> Result<S3Backend, CacheError> {
        S3Backend::open_with(url, AmazonS3Builder::from_env())
    }

    /// `open`, starting from `builder` rather than from the environment (the
    /// tests give credentials this way without touching the process's env).
    fn open_with(url: &str, builder: AmazonS3Builder) -> Result<S3Backend, CacheError> {
        let parsed = parse_url(url)?;
        let mut builder = builder.with_bucket_name(&parsed.bucket);
        if let Some(endpoint) = &parsed.endpoint {
            // Both keys: object_store prefers the S3-specific one, which the
            // environment may have set.
            builder = builder
                .with_config(AmazonS3ConfigKey::Endpoint, endpoint)
                .with_config(AmazonS3ConfigKey::S3Endpoint, endpoint);
        }
        if let Some(region) = &parsed.region {
            builder = builder.with_region(region);
        }
        let endpoint = builder
            .get_config_value(&AmazonS3ConfigKey::S3Endpoint)
            .or_else(|| builder.get_config_value(&AmazonS3ConfigKey::Endpoint));
        if endpoint.is_some() {
            // Custom stores rarely have a DNS name per bucket, and an IP never does.
            builder = builder.with_virtual_hosted_style_request(false);
        }
        let allow_http = endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"))
            || builder
                .get_config_value(&AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp))
                .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let builder = builder
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(allow_http)
                    .with_connect_timeout(Duration::from_secs(5))
                    // No limit on a whole request: a streamed NAR of hundreds of
                    // MB is read as slowly as its consumer unpacks it. A stalled
                    // connection is caught by the read timeout instead.
                    .with_timeout_disabled()
                    .with_read_timeout(Duration::from_secs(60)),
            )
            // object_store's default (10 retries over 3 minutes) leaves a wrong
            // endpoint or a dead store unreported for about a minute.
            .with_retry(RetryConfig {
                max_retries: 4,
                retry_timeout: Duration::from_secs(60),
                ..RetryConfig::default()
            });
        let err = |e: &dyn std::fmt::Display| CacheError::Transport {
            url: url.to_string(),
            message: e.to_string(),
        };
        let store = builder.build().map_err(|e| err(&e))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| err(&format!("starting the async runtime: {e}")))?;
        Ok(S3Backend {
            url: url.to_string(),
            bucket: parsed.bucket,
            prefix: parsed.prefix,
            store,
            rt: Arc::new(rt),
        })
    }

    fn err(&self, key: &str, e: impl std::fmt::Display) -> CacheError {
        CacheError::Transport {
            url: self.url.clone(),
            message: format!("{key}: {e}"),
        }
    }

    fn store_err(&self, key: &str, e: object_store::Error) -> CacheError {
        self.err(key, crate::cache::error_chain(&e))
    }

    fn path(&self, key: &str) -> Result<ObjectPath, CacheError> {
        if !valid_path(key) {
            return Err(CacheError::Invalid(format!("bad cache key '{key}'")));
        }
        let full = match &self.prefix {
            Some(prefix) => format!("{prefix}/{key}"),
            None => key.to_string(),
        };
        ObjectPath::parse(&full)
            .map_err(|e| CacheError::Invalid(format!("bad cache key '{key}': {e}")))
    }

    fn put_multipart(
        &self,
        key: &str,
        path: &ObjectPath,
        from: &Path,
        file: &mut fs::File,
        attributes: Attributes,
    ) -> Result<(), CacheError> {
        let opts = PutMultipartOptions {
            attributes,
            ..Default::default()
        };
        let upload = self
            .rt
            .block_on(self.store.put_multipart_opts(path, opts))
            .map_err(|e| self.store_err(key, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut buf = vec![0u8; READ_SIZE];
        let sent = loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(self.err(key, format!("reading {}: {e}", from.display()))),
            };
            // `write` starts a part's upload as a task once a part is full, so it
            // must run inside the runtime; waiting first bounds the parts held.
            let step = self.rt.block_on(async {
                writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                writer.write(&buf[..n]);
                Ok::<_, object_store::Error>(())
            });
            if let Err(e) = step {
                break Err(self.store_err(key, e));
            }
        };
        match sent {
            // The object appears only when the upload completes, whole.
            Ok(()) => match self.rt.block_on(writer.finish()) {
                Ok(_) => Ok(()),
                Err(e) => Err(self.store_err(key, e)),
            },
            Err(e) => {
                // Uploaded parts are billed until the upload is aborted.
                let _ = self.rt.block_on(writer.abort());
                Err(e)
            }
        }
    }
}

impl Backend for S3Backend {
    fn url(&self) -> &str {
        &self.url
    }

    fn get(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>, CacheError> {
        let path = self.path(key)?;
        let result = match self.rt.block_on(self.store.get(&path)) {
            Ok(r) => r,
            // S3 answers 404 for a missing bucket too: only the body tells, and
            // a misspelt bucket must not pass for an empty cache.
            Err(e @ object_store::Error::NotFound { .. }) => {
                if crate::cache::error_chain(&e).contains("<Code>NoSuchBucket</Code>") {
                    let why = format!("no bucket '{}' at this endpoint", self.bucket);
                    return Err(self.err(key, why));
                }
                return Ok(None);
            }
            Err(e) => return Err(self.store_err(key, e)),
        };
        let mut stream = result.into_stream();
        let context = format!("{}: {key}", self.url);
        let next = move |rt: &Runtime| {
            let chunk = rt.block_on(std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)))?;
            Some(chunk.map_err(|e| {
                io::Error::other(format!("{context}: {}", crate::cache::error_chain(&e)))
            }))
        };
        Ok(Some(Box::new(ChunkReader::new(self.rt.clone(), next))))
    }

    fn exists(&self, key: &str) -> Result<bool, CacheError> {
        let path = self.path(key)?;
        match self.rt.block_on(self.store.head(&path)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.store_err(key, e)),
        }
    }

    fn put(&self, key: &str, from: &Path) -> Result<(), CacheError> {
        let path = self.path(key)?;
        let mut file =
            fs::File::open(from).map_err(|e| self.err(key, format!("{}: {e}", from.display())))?;
        let len = file
            .metadata()
            .map_err(|e| self.err(key, format!("{}: {e}", from.display())))?
            .len();
        let mut attributes = Attributes::new();
        if let Some(mime) = content_type(key) {
            attributes.insert(Attribute::ContentType, mime.into());
        }
        if len > MULTIPART_THRESHOLD {
            return self.put_multipart(key, &path, from, &mut file, attributes);
        }
        let mut body = Vec::with_capacity(len as usize);
        file.read_to_end(&mut body)
            .map_err(|e| self.err(key, format!("{}: {e}", from.display())))?;
        let opts = PutOptions {
            attributes,
            ..Default::default()
        };
        // A single PUT replaces the object atomically: readers see the old or the
        // new one, never a mix.
        self.rt
            .block_on(self.store.put_opts(&path, PutPayload::from(body), opts))
            .map_err(|e| self.store_err(key, e))?;
        Ok(())
    }
}

/// The types Nix's S3 store gives its objects, for buckets also served over HTTP.
fn content_type(key: &str) -> Option<&'static str> {
    let name = key.rsplit('/').next().unwrap_or(key);
    if name == "nix-cache-info" {
        Some("text/x-nix-cache-info")
    } else if name.ends_with(".narinfo") {
        Some("text/x-nix-narinfo")
    } else if name.contains(".nar") {
        Some("application/x-nix-nar")
    } else {
        None
    }
}

/// A key or prefix: `/`-separated, no empty, `.` or `..` component.
fn valid_path(p: &str) -> bool {
    !p.is_empty() && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

fn parse_url(url: &str) -> Result<S3Url, CacheError> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| CacheError::UnsupportedUrl(url.to_string()))?;
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    let location = location.trim_end_matches('/');
    let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
    if bucket.is_empty() {
        return Err(CacheError::Invalid(format!(
            "{url}: no bucket (use s3://bucket/prefix)"
        )));
    }
    if !prefix.is_empty() && !valid_path(prefix) {
        return Err(CacheError::Invalid(format!("{url}: bad prefix '{prefix}'")));
    }
    let (mut endpoint, mut region, mut scheme) = (None, None, None);
    for (name, value) in location::query_pairs(query, url)? {
        match name.as_str() {
            "endpoint" => endpoint = Some(value),
            "region" => region = Some(value),
            "scheme" => scheme = Some(value),
            _ => {
                // Silently ignoring a misspelt `endpoint` would send the cache's
                // requests (and credentials) to AWS instead.
                return Err(CacheError::Invalid(format!(
                    "{url}: unsupported parameter '{name}' (s3:// takes endpoint, region \
                     and scheme; credentials come from AWS_ACCESS_KEY_ID and \
                     AWS_SECRET_ACCESS_KEY)"
                )));
            }
        }
    }
    let endpoint = endpoint.filter(|e| !e.is_empty()).map(|e| {
        if e.contains("://") {
            e
        } else {
            format!("{}://{e}", scheme.as_deref().unwrap_or("https"))
        }
    });
    Ok(S3Url {
        bucket: bucket.to_string(),
        prefix: (!prefix.is_empty()).then(|| prefix.to_string()),
        endpoint,
        region: region.filter(|r| !r.is_empty()),
    })
}

/// A `Read` over a stream of chunks, each fetched (on `rt`) only when the
/// previous one is used up, so an object of any size holds one chunk in memory.
struct ChunkReader<F, C> {
    rt: Arc<Runtime>,
    next: Option<F>,
    chunk: Option<C>,
    pos: usize,
}

impl<F, C> ChunkReader<F, C> {
    fn new(rt: Arc<Runtime>, next: F) -> Self {
        ChunkReader {
            rt,
            next: Some(next),
            chunk: None,
            pos: 0,
        }
    }
}

impl<F, C> Read for ChunkReader<F, C>
where
    F: FnMut(&Runtime) -> Option<io::Result<C>>,
    C: AsRef<[u8]>,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(chunk) = &self.chunk {
                let rest = &chunk.as_ref()[self.pos..];
                if !rest.is_empty() {
                    let n = rest.len().min(buf.len());
                    buf[..n].copy_from_slice(&rest[..n]);
                    self.pos += n;
                    return Ok(n);
                }
            }
            self.chunk = None;
            let Some(next) = self.next.as_mut() else {
                return Ok(0);
            };
            match next(&self.rt) {
                Some(Ok(chunk)) => {
                    self.chunk = Some(chunk);
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(e),
                None => {
                    // Release the connection as soon as the body has ended.
                    let _in_rt = self.rt.enter();
                    self.next = None;
                    return Ok(0);
                }
            }
        }
    }
}

impl<F, C> Drop for ChunkReader<F, C> {
    fn drop(&mut self) {
        // A body dropped half-read gives its connection back through the
        // runtime, which must be current for that.
        let _in_rt = self.rt.enter();
        self.next = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::testing::{noise, read_all};
    use crate::test_skip as skip;
    use std::net::{TcpListener, TcpStream};
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    #[test]
    fn parses_urls() {
        let u = parse_url("s3://cache").unwrap();
        assert_eq!(
            u,
            S3Url {
                bucket: "cache".into(),
                prefix: None,
                endpoint: None,
                region: None
            }
        );
        let u =
            parse_url("s3://cache/a/b/?endpoint=http%3A%2F%2F127.0.0.1%3A9000&region=eu-west-1")
                .unwrap();
        assert_eq!(u.prefix.as_deref(), Some("a/b"));
        assert_eq!(u.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(u.region.as_deref(), Some("eu-west-1"));
        let u = parse_url("s3://cache?endpoint=http://127.0.0.1:9000&region=us-east-1").unwrap();
        assert_eq!(u.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        // Nix's form: a bare host, with the scheme apart.
        let u = parse_url("s3://cache?endpoint=minio.local:9000&scheme=http").unwrap();
        assert_eq!(u.endpoint.as_deref(), Some("http://minio.local:9000"));
        let u = parse_url("s3://cache?endpoint=s3.example.org").unwrap();
        assert_eq!(u.endpoint.as_deref(), Some("https://s3.example.org"));

        assert!(matches!(parse_url("s3://"), Err(CacheError::Invalid(_))));
        assert!(matches!(
            parse_url("s3://b/a//c"),
            Err(CacheError::Invalid(_))
        ));
        assert!(matches!(
            parse_url("s3://b/../c"),
            Err(CacheError::Invalid(_))
        ));
        assert!(matches!(
            parse_url("s3://b?endpiont=x"),
            Err(CacheError::Invalid(_))
        ));
        for bad in ["s3://b?region=%zz", "s3://b?region=%+a"] {
            assert!(
                matches!(parse_url(bad), Err(CacheError::Invalid(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_url("http://b"),
            Err(CacheError::UnsupportedUrl(_))
        ));
    }

    #[test]
    fn cache_urls_open_s3_backends() {
        // Opening sends no request (and so needs no credentials).
        let url = "s3://cache/p?endpoint=http://127.0.0.1:9&region=eu-west-1";
        assert_eq!(crate::cache::open(url).unwrap().url(), url);
        assert!(matches!(
            crate::cache::open("s3:///x"),
            Err(CacheError::Invalid(_))
        ));
    }

    #[test]
    fn content_types_follow_nix() {
        assert_eq!(
            content_type("nix-cache-info"),
            Some("text/x-nix-cache-info")
        );
        assert_eq!(content_type("abc.narinfo"), Some("text/x-nix-narinfo"));
        assert_eq!(
            content_type("nar/abc.nar.zst"),
            Some("application/x-nix-nar")
        );
        assert_eq!(content_type("log/abc"), None);
    }

    #[test]
    fn chunk_reader_reads_across_chunks_and_reports_errors() {
        let rt = Arc::new(
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap(),
        );
        let mut chunks = vec![
            Ok(b"hello ".to_vec()),
            Ok(Vec::new()),
            Ok(b"world".to_vec()),
        ]
        .into_iter();
        let mut r = ChunkReader::new(rt.clone(), move |_: &Runtime| chunks.next());
        let mut small = [0u8; 4];
        assert_eq!(r.read(&mut small).unwrap(), 4);
        assert_eq!(&small, b"hell");
        let mut rest = String::new();
        r.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "o world");
        assert_eq!(r.read(&mut small).unwrap(), 0);

        let mut chunks = vec![Ok(b"ab".to_vec()), Err(io::Error::other("cut"))].into_iter();
        let mut r = ChunkReader::new(rt, move |_: &Runtime| chunks.next());
        let mut all = Vec::new();
        assert_eq!(r.read_to_end(&mut all).unwrap_err().to_string(), "cut");
        assert_eq!(all, b"ab");
    }

    /// A moto S3 server on a free loopback port, killed when dropped.
    struct Moto {
        child: Child,
        endpoint: String,
    }

    impl Drop for Moto {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn moto_server() -> Option<PathBuf> {
        let venv = skip::tools_dir().join("venv/bin/moto_server");
        venv.is_file()
            .then_some(venv)
            .or_else(|| skip::tool("moto_server"))
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// Start moto with bucket `bucket`, or `None` after `skip` says why (a failure
    /// under CI).
    fn start_moto(bucket: &str) -> Option<Moto> {
        let exe = skip::or_skip(
            moto_server(),
            "moto_server is not installed (scripts/cache-tools.sh installs it)",
        )?;
        // Another process may take the port between our probe and moto's bind:
        // try a few.
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new(&exe)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting moto_server");
            let mut moto = Moto {
                child,
                endpoint: format!("http://127.0.0.1:{port}"),
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            let up = loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break true;
                }
                if moto.child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            if !up {
                continue;
            }
            // object_store cannot create buckets; moto takes an unsigned PUT.
            ureq::put(&format!("{}/{bucket}", moto.endpoint))
                .send_empty()
                .expect("creating the bucket");
            return Some(moto);
        }
        panic!("moto_server did not start");
    }

    fn backend(url: &str) -> S3Backend {
        // Explicit credentials: without any, object_store would ask the EC2
        // instance metadata service for some.
        let builder = AmazonS3Builder::new()
            .with_access_key_id("testing")
            .with_secret_access_key("testing");
        S3Backend::open_with(url, builder).unwrap()
    }

    #[test]
    fn round_trips_small_and_multipart_objects() {
        let Some(moto) = start_moto("cache") else {
            return;
        };
        let url = format!("s3://cache?endpoint={}&region=us-east-1", moto.endpoint);
        let b = backend(&url);
        assert_eq!(b.url(), url);
        let dir = tempfile::tempdir().unwrap();

        assert!(!b.exists("nix-cache-info").unwrap());
        assert!(b.get("nix-cache-info").unwrap().is_none());
        let small = dir.path().join("small");
        fs::write(&small, b"StoreDir: /store\n").unwrap();
        b.put("nix-cache-info", &small).unwrap();
        assert!(b.exists("nix-cache-info").unwrap());
        assert_eq!(
            read_all(&b, "nix-cache-info").unwrap(),
            b"StoreDir: /store\n"
        );

        // Replacing an object.
        fs::write(&small, b"StoreDir: /store\nPriority: 40\n").unwrap();
        b.put("nix-cache-info", &small).unwrap();
        assert_eq!(
            read_all(&b, "nix-cache-info").unwrap(),
            b"StoreDir: /store\nPriority: 40\n"
        );

        // An empty object.
        let empty = dir.path().join("empty");
        fs::write(&empty, b"").unwrap();
        b.put("log/empty", &empty).unwrap();
        assert_eq!(read_all(&b, "log/empty").unwrap(), b"");

        // Exactly at the threshold: one PUT; above it: parts (8 + 8 + 4 MiB and
        // a ragged end).
        for (len, seed) in [
            (MULTIPART_THRESHOLD as usize, 7),
            (20 * (1 << 20) + 12345, 11),
        ] {
            let data = noise(len, seed);
            let big = dir.path().join(format!("big-{len}"));
            fs::write(&big, &data).unwrap();
            let key = format!("nar/{len}.nar.zst");
            let started = Instant::now();
            b.put(&key, &big).unwrap();
            let put_time = started.elapsed();
            assert!(b.exists(&key).unwrap());
            let started = Instant::now();
            let mut reader = b.get(&key).unwrap().unwrap();
            // Read through a small buffer, as a decompressor does.
            let mut got = Vec::with_capacity(len);
            let mut buf = [0u8; 7919];
            loop {
                let n = reader.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            println!("{len} bytes: put {put_time:?}, get {:?}", started.elapsed());
            assert!(got == data, "object {key} came back different");
            // S3 (and moto) give a multipart object the ETag `"<md5 of md5s>-<parts>"`.
            let meta = b.rt.block_on(b.store.head(&b.path(&key).unwrap())).unwrap();
            let parts = meta.e_tag.unwrap_or_default();
            let parts = parts
                .trim_matches('"')
                .rsplit_once('-')
                .map(|(_, n)| n.to_string());
            let expected = (len as u64 > MULTIPART_THRESHOLD).then(|| "3".to_string());
            assert_eq!(parts, expected, "parts of {key}");
        }
    }

    #[test]
    fn missing_keys_are_none_and_bad_keys_are_refused() {
        let Some(moto) = start_moto("cache") else {
            return;
        };
        let b = backend(&format!("s3://cache?endpoint={}", moto.endpoint));
        assert!(b.get("nope.narinfo").unwrap().is_none());
        assert!(!b.exists("nar/nope.nar").unwrap());
        for bad in ["", "a//b", "../x", "a/./b", "/abs"] {
            assert!(matches!(b.get(bad), Err(CacheError::Invalid(_))), "{bad}");
        }
    }

    #[test]
    fn honours_the_prefix() {
        let Some(moto) = start_moto("cache") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"narinfo").unwrap();
        let prefixed = backend(&format!(
            "s3://cache/some/prefix/?endpoint={}",
            moto.endpoint
        ));
        prefixed.put("abc.narinfo", &file).unwrap();
        assert_eq!(read_all(&prefixed, "abc.narinfo").unwrap(), b"narinfo");

        let root = backend(&format!("s3://cache?endpoint={}", moto.endpoint));
        assert!(!root.exists("abc.narinfo").unwrap());
        assert_eq!(
            read_all(&root, "some/prefix/abc.narinfo").unwrap(),
            b"narinfo"
        );
    }

    #[test]
    fn missing_bucket_is_an_error() {
        let Some(moto) = start_moto("cache") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        let url = format!("s3://no-such-bucket?endpoint={}", moto.endpoint);
        let b = backend(&url);
        match b.get("abc.narinfo") {
            Err(CacheError::Transport { url: u, message }) => {
                assert_eq!(u, url);
                assert!(message.contains("no bucket 'no-such-bucket'"), "{message}");
            }
            other => panic!("expected a transport error, got {:?}", other.map(|_| ())),
        }
        match b.put("abc.narinfo", &file) {
            Err(CacheError::Transport { url: u, message }) => {
                assert_eq!(u, url);
                assert!(message.starts_with("abc.narinfo: "), "{message}");
            }
            other => panic!("expected a transport error, got {other:?}"),
        }
    }

    #[test]
    fn wrong_endpoint_is_a_quick_transport_error() {
        // Nothing listens there once the probe's listener is closed.
        let url = format!("s3://cache/p?endpoint=http://127.0.0.1:{}", free_port());
        let b = backend(&url);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        let started = Instant::now();
        let errors = [
            b.get("abc.narinfo").map(|_| ()),
            b.exists("abc.narinfo").map(|_| ()),
            b.put("abc.narinfo", &file),
        ];
        for e in errors {
            println!("{e:?}");
            match e {
                Err(
                    ref e @ CacheError::Transport {
                        url: ref u,
                        ref message,
                    },
                ) => {
                    assert_eq!(u, &url);
                    assert!(message.starts_with("abc.narinfo: "), "{message}");
                    assert!(e.to_string().starts_with(&url), "{e}");
                }
                other => panic!("expected a transport error, got {other:?}"),
            }
        }
        let took = started.elapsed();
        println!("three failed requests in {took:?}");
        assert!(took < Duration::from_secs(20), "took {took:?}");
    }
}
