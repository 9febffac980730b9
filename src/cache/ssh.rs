//! `ssh://[user@]host[:port]/absolute/path`: a cache in a directory on another
//! machine, read and written over SFTP.
//!
//! The connection goes through the system's `ssh` (one master process per backend,
//! [`openssh::Session`] in process mode), so `~/.ssh/config`, the agent and
//! `known_hosts` apply as they do for a shell. Query parameters add what a test or
//! a CI job needs without touching the user's ssh files:
//!
//! - `identity=/path/key`: use only this private key (`ssh -i`, `IdentitiesOnly`);
//! - `known-hosts=/path/file`: check the host key against this file
//!   (`UserKnownHostsFile`).
//!
//! Host keys are always checked strictly (`StrictHostKeyChecking=yes`, and ssh
//! runs in batch mode): a cache that hands out store paths must not trust the
//! first server that answers.
//!
//! The [`Backend`] trait is synchronous, so the backend owns a small tokio runtime
//! and blocks on it. Reads and writes keep several SFTP requests in flight, since
//! one request at a time would make every object cost a round trip per 256 KiB.

use std::collections::VecDeque;
use std::io::{self, Read, SeekFrom};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use openssh::{ControlPersist, KnownHosts, SessionBuilder};
use openssh_sftp_client::error::SftpErrorKind;
use openssh_sftp_client::file::File;
use openssh_sftp_client::{Error as SftpError, Sftp, SftpOptions};
use tokio::io::AsyncSeek;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use super::location;
use super::{Backend, CacheError};
use crate::io_util::read_full;

/// Bytes asked for by one read or write request: OpenSSH's limit for both. The
/// client splits writes, and shortens reads, to what the server announces.
const CHUNK: u32 = 255 * 1024;
/// Read requests kept in flight by a reader.
const READ_AHEAD: usize = 8;
/// Write requests kept in flight by `put`.
const WRITE_AHEAD: usize = 16;
/// How long dropping the backend waits for the server to finish the session.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a cache lives, from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    user: Option<String>,
    host: String,
    port: Option<u16>,
    root: PathBuf,
    identity: Option<PathBuf>,
    known_hosts: Option<PathBuf>,
}

fn parse(url: &str) -> Result<Target, CacheError> {
    let bad = |why: &str| CacheError::Invalid(format!("{url}: {why}"));
    let Some(after_scheme) = url.strip_prefix("ssh://") else {
        return Err(CacheError::UnsupportedUrl(url.to_string()));
    };
    let u = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if u.path().is_empty() {
        return Err(bad("expected ssh://[user@]host[:port]/absolute/path"));
    }
    if u.password().is_some() {
        return Err(bad(
            "a password in the URL is not supported (use identity=KEY)",
        ));
    }
    if u.fragment().is_some() {
        return Err(bad("a cache URL has no #fragment"));
    }
    // `ssh://@host` parses as no user name at all; it is a typo.
    let authority = after_scheme.split(['/', '?']).next().unwrap_or("");
    let user = match u.username() {
        "" if authority.contains('@') => return Err(bad("empty user name")),
        "" => None,
        name => Some(location::decode(name, url)?),
    };
    let host = match u.host() {
        Some(url::Host::Ipv6(a)) => a.to_string(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Domain(d)) if !d.is_empty() => location::decode(d, url)?,
        _ => return Err(bad("no host")),
    };
    let path = location::decode(u.path(), url)?;
    let trimmed = path.trim_end_matches('/');
    let root = PathBuf::from(if trimmed.is_empty() { "/" } else { trimmed });
    let mut target = Target {
        user,
        host,
        port: u.port(),
        root,
        identity: None,
        known_hosts: None,
    };
    for (k, v) in location::query_pairs(u.query().unwrap_or(""), url)? {
        let v = PathBuf::from(v);
        if !v.is_absolute() {
            return Err(bad(&format!("{k} needs an absolute path")));
        }
        match k.as_str() {
            "identity" => target.identity = Some(v),
            "known-hosts" => target.known_hosts = Some(v),
            // A misspelt option silently ignored would connect with the wrong key.
            _ => return Err(bad(&format!("unknown parameter '{k}'"))),
        }
    }
    Ok(target)
}

fn not_found(e: &SftpError) -> bool {
    matches!(e, SftpError::SftpError(SftpErrorKind::NoSuchFile, _))
}

/// The runtime and the connection, shared with the readers that [`SshBackend::get`]
/// hands out, so that a reader may outlive its backend.
struct Shared {
    rt: Runtime,
    sftp: Mutex<Option<Arc<Sftp>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let sftp = self
            .sftp
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(sftp) = sftp.and_then(|s| Arc::try_unwrap(s).ok()) {
            // Closing ends the sftp subsystem and asks ssh's master to exit; left to
            // the runtime's drop the master would linger until its idle timeout.
            // (The timer must be made inside the runtime.)
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(CLOSE_TIMEOUT, sftp.close()).await });
        }
    }
}

/// Aborts its tasks when dropped: requests still in flight for a reader that is
/// dropped early, or for an upload that failed, are not wanted any more.
struct Tasks<T>(VecDeque<JoinHandle<T>>);

impl<T> Tasks<T> {
    fn clear(&mut self) {
        for t in self.0.drain(..) {
            t.abort();
        }
    }
}

impl<T> Drop for Tasks<T> {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Why an upload failed; only `Remote` errors other than an SFTP status can mean
/// the connection is gone.
enum Failure {
    Remote(SftpError),
    Other(String),
}

impl From<SftpError> for Failure {
    fn from(e: SftpError) -> Self {
        Failure::Remote(e)
    }
}

pub struct SshBackend {
    url: String,
    target: Target,
    shared: Arc<Shared>,
}

impl SshBackend {
    pub fn open(url: &str) -> Result<SshBackend, CacheError> {
        let target = parse(url)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CacheError::Transport {
                url: url.to_string(),
                message: format!("cannot start an async runtime: {e}"),
            })?;
        Ok(SshBackend {
            url: url.to_string(),
            target,
            shared: Arc::new(Shared {
                rt,
                sftp: Mutex::new(None),
            }),
        })
    }

    fn err(&self, key: &str, message: impl std::fmt::Display) -> CacheError {
        CacheError::Transport {
            url: self.url.clone(),
            message: if key.is_empty() {
                message.to_string()
            } else {
                format!("{key}: {message}")
            },
        }
    }

    /// An error from the server; anything but a status reply (a dead master, a
    /// broken pipe) drops the connection so that the next call makes a new one.
    fn fail(&self, key: &str, sftp: &Arc<Sftp>, e: SftpError) -> CacheError {
        if !matches!(e, SftpError::SftpError(..)) {
            let mut slot = self.shared.sftp.lock().unwrap_or_else(|e| e.into_inner());
            if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, sftp)) {
                *slot = None;
            }
        }
        self.err(key, crate::cache::error_chain(&e))
    }

    fn path(&self, key: &str) -> Result<PathBuf, CacheError> {
        if key.is_empty()
            || key
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(CacheError::Invalid(format!("bad cache key '{key}'")));
        }
        Ok(self.target.root.join(key))
    }

    /// The connection, made on first use; the lock is held while connecting so
    /// that threads starting together share one ssh session.
    fn sftp(&self) -> Result<Arc<Sftp>, CacheError> {
        let mut slot = self.shared.sftp.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let sftp = Arc::new(
            self.shared
                .rt
                .block_on(connect(&self.target))
                .map_err(|e| self.err("", e))?,
        );
        *slot = Some(sftp.clone());
        Ok(sftp)
    }
}

/// The directory for ssh's control socket: its path must fit in a socket
/// address (108 bytes), which a deep `$TMPDIR` may not leave room for.
fn control_dir() -> PathBuf {
    let tmp = std::env::temp_dir();
    if tmp.as_os_str().len() <= 40 {
        tmp
    } else {
        PathBuf::from("/tmp")
    }
}

async fn connect(t: &Target) -> Result<Sftp, String> {
    let mut b = SessionBuilder::default();
    b.known_hosts_check(KnownHosts::Strict)
        .control_directory(control_dir())
        // Should this process die without closing, the master exits by itself.
        .control_persist(ControlPersist::IdleFor(NonZeroUsize::new(60).unwrap()))
        .connect_timeout(Duration::from_secs(30))
        // Keeps NAT and firewalls from dropping a session idle through a long build.
        .server_alive_interval(Duration::from_secs(30));
    if let Some(u) = &t.user {
        b.user(u.clone());
    }
    if let Some(p) = t.port {
        b.port(p);
    }
    if let Some(k) = &t.identity {
        b.keyfile(k);
    }
    if let Some(k) = &t.known_hosts {
        b.user_known_hosts_file(k);
    }
    let session = b
        .connect(&t.host)
        .await
        .map_err(|e| format!("ssh: {}", crate::cache::error_chain(&e)))?;
    Sftp::from_session(session, SftpOptions::default())
        .await
        .map_err(|e| format!("sftp: {}", crate::cache::error_chain(&e)))
}

/// `mkdir -p` over SFTP.
async fn create_dirs(sftp: &Sftp, dir: &Path) -> Result<(), SftpError> {
    let mut fs = sftp.fs();
    let mut missing = Vec::new();
    let mut d = dir;
    loop {
        match fs.metadata(d).await {
            Ok(_) => break,
            Err(e) if not_found(&e) => {
                missing.push(d);
                match d.parent() {
                    Some(p) => d = p,
                    None => break,
                }
            }
            Err(e) => return Err(e),
        }
    }
    for d in missing.into_iter().rev() {
        if let Err(e) = fs.create_dir(d).await {
            // Another writer may have made it in the meantime.
            let is_dir = fs
                .metadata(d)
                .await
                .is_ok_and(|m| m.file_type().is_some_and(|t| t.is_dir()));
            if !is_dir {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Copy `local` to the new remote file `tmp` (creating `dir` if need be), then
/// rename it over `dest`.
async fn upload(
    sftp: &Sftp,
    local: &mut std::fs::File,
    dir: &Path,
    tmp: &Path,
    dest: &Path,
) -> Result<(), Failure> {
    let mut opts = sftp.options();
    opts.write(true).create(true).truncate(true);
    let file = match opts.open(tmp).await {
        Ok(f) => f,
        Err(e) if not_found(&e) => {
            create_dirs(sftp, dir).await?;
            opts.open(tmp).await?
        }
        Err(e) => return Err(e.into()),
    };
    let chunk = CHUNK as usize;
    let mut inflight = Tasks(VecDeque::new());
    let mut offset = 0u64;
    loop {
        let mut buf = vec![0; chunk];
        let n = read_full(local, &mut buf).map_err(|e| Failure::Other(e.to_string()))?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        if inflight.0.len() >= WRITE_AHEAD {
            let t = inflight.0.pop_front().expect("non-empty");
            t.await.map_err(|e| Failure::Other(e.to_string()))??;
        }
        let mut f = file.clone();
        inflight.0.push_back(tokio::spawn(async move {
            Pin::new(&mut f).start_seek(SeekFrom::Start(offset))?;
            f.write_all(&buf).await
        }));
        offset += n as u64;
    }
    while let Some(t) = inflight.0.pop_front() {
        t.await.map_err(|e| Failure::Other(e.to_string()))??;
    }
    let mut file = file;
    if sftp.support_fsync() {
        // Without it a server crash after the rename could leave a short object
        // under the final name.
        file.sync_all().await?;
    }
    file.close().await?;
    let mut fs = sftp.fs();
    if !sftp.support_posix_rename() {
        // Plain SFTP rename refuses to replace an existing name; readers may see
        // the key missing for a moment, never a partial object.
        let _ = fs.remove_file(dest).await;
    }
    fs.rename(tmp, dest).await?;
    Ok(())
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Backend for SshBackend {
    fn url(&self) -> &str {
        &self.url
    }

    fn get(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>, CacheError> {
        let path = self.path(key)?;
        let sftp = self.sftp()?;
        let file = match self.shared.rt.block_on(sftp.open(&path)) {
            Ok(f) => f,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(self.fail(key, &sftp, e)),
        };
        Ok(Some(Box::new(SshReader {
            inflight: Tasks(VecDeque::new()),
            file,
            chunk: CHUNK,
            next: 0,
            buf: BytesMut::new(),
            pos: 0,
            done: false,
            what: format!("{}: {key}", self.url),
            shared: self.shared.clone(),
        })))
    }

    fn exists(&self, key: &str) -> Result<bool, CacheError> {
        let path = self.path(key)?;
        let sftp = self.sftp()?;
        let meta = self.shared.rt.block_on(async {
            let mut fs = sftp.fs();
            fs.metadata(&path).await
        });
        match meta {
            Ok(m) => Ok(m.file_type().is_none_or(|t| t.is_file())),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(self.fail(key, &sftp, e)),
        }
    }

    fn put(&self, key: &str, from: &Path) -> Result<(), CacheError> {
        let dest = self.path(key)?;
        let dir = dest.parent().unwrap_or(&self.target.root).to_path_buf();
        let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("obj");
        let tmp = dir.join(format!(
            "{name}.tmp-{}-{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let mut local = std::fs::File::open(from)
            .map_err(|e| self.err(key, format!("{}: {e}", from.display())))?;
        let sftp = self.sftp()?;
        let result = self
            .shared
            .rt
            .block_on(upload(&sftp, &mut local, &dir, &tmp, &dest));
        match result {
            Ok(()) => Ok(()),
            Err(failure) => {
                let _ = self.shared.rt.block_on(async {
                    let mut fs = sftp.fs();
                    fs.remove_file(&tmp).await
                });
                Err(match failure {
                    Failure::Remote(e) => self.fail(key, &sftp, e),
                    Failure::Other(m) => self.err(key, m),
                })
            }
        }
    }
}

/// One read: its offset, the length asked for, and the bytes (`None` at EOF).
type ReadResult = Result<(u64, u32, Option<BytesMut>), SftpError>;

/// Streams a remote file: keeps [`READ_AHEAD`] reads at increasing offsets in
/// flight, each on its own clone of the handle.
struct SshReader {
    // Declared before `shared`: the tasks and the handle must go before the last
    // reference to the runtime does, since closing the session waits for them.
    inflight: Tasks<ReadResult>,
    file: File,
    chunk: u32,
    /// Offset of the next read to send.
    next: u64,
    buf: BytesMut,
    pos: usize,
    done: bool,
    /// `URL: key`, for errors.
    what: String,
    shared: Arc<Shared>,
}

impl SshReader {
    fn refill(&mut self) -> io::Result<()> {
        while self.inflight.0.len() < READ_AHEAD {
            let mut f = self.file.clone();
            let (offset, len) = (self.next, self.chunk);
            self.next += u64::from(len);
            self.inflight.0.push_back(self.shared.rt.spawn(async move {
                Pin::new(&mut f).start_seek(SeekFrom::Start(offset))?;
                let data = f.read(len, BytesMut::with_capacity(len as usize)).await?;
                Ok((offset, len, data))
            }));
        }
        let task = self.inflight.0.pop_front().expect("non-empty");
        let result = self
            .shared
            .rt
            .block_on(task)
            .map_err(|e| io::Error::other(format!("{}: {e}", self.what)))?;
        match result {
            Ok((offset, len, Some(data))) if !data.is_empty() => {
                if data.len() < len as usize {
                    // The reads sent after this one assumed a full chunk: send
                    // them again from where this one stopped (at the end of the
                    // file the next read finds EOF). A server whose reads are
                    // shorter than ours gets requests of its size from now on.
                    self.inflight.clear();
                    self.next = offset + data.len() as u64;
                    self.chunk = data.len() as u32;
                }
                self.buf = data;
                self.pos = 0;
            }
            Ok(_) => {
                self.done = true;
                self.inflight.clear();
            }
            Err(e) => {
                self.inflight.clear();
                return Err(io::Error::other(format!(
                    "{}: {}",
                    self.what,
                    crate::cache::error_chain(&e)
                )));
            }
        }
        Ok(())
    }
}

impl Read for SshReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if self.pos < self.buf.len() {
                let n = out.len().min(self.buf.len() - self.pos);
                out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            if self.done {
                return Ok(0);
            }
            self.refill()?;
        }
    }
}

/// The same private sshd the end-to-end tests use (it skips through `skip`).
#[cfg(test)]
#[path = "../../tests/common/sshd.rs"]
mod test_sshd;
#[cfg(test)]
use crate::test_skip as skip;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::testing::{noise, read_all};
    use std::fs;
    use std::net::TcpListener;
    use std::time::Instant;

    #[test]
    fn parses_urls() {
        let t = parse("ssh://alice@cache.example:2222/srv/cache/").unwrap();
        assert_eq!(t.user.as_deref(), Some("alice"));
        assert_eq!(t.host, "cache.example");
        assert_eq!(t.port, Some(2222));
        assert_eq!(t.root, PathBuf::from("/srv/cache"));
        assert_eq!(t.identity, None);

        let t = parse("ssh://[::1]:22/c?identity=/k/id%20x&known-hosts=/k/kh").unwrap();
        assert_eq!(t.user, None);
        assert_eq!(t.host, "::1");
        assert_eq!(t.port, Some(22));
        assert_eq!(t.identity, Some(PathBuf::from("/k/id x")));
        assert_eq!(t.known_hosts, Some(PathBuf::from("/k/kh")));

        // `+` is a space in a query only, as in every URL.
        let t = parse("ssh://host/a+b?identity=/k/id+x").unwrap();
        assert_eq!(t.root, PathBuf::from("/a+b"));
        assert_eq!(t.identity, Some(PathBuf::from("/k/id x")));

        let t = parse("ssh://host/").unwrap();
        assert_eq!(
            (t.host.as_str(), t.root.as_path()),
            ("host", Path::new("/"))
        );

        for bad in [
            "ssh://host",
            "ssh:///path",
            "ssh://host:x/path",
            "ssh://@host/path",
            "ssh://host/p?identity=rel",
            "ssh://host/p?identiy=/k",
            "ssh://host/p%zz",
            "ssh://host/p%+a",
            "ssh://alice:secret@host/p",
            "ssh://host/p?identity=/k/%+a",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            parse("file:///x"),
            Err(CacheError::UnsupportedUrl(_))
        ));
    }

    #[test]
    fn bad_keys_are_refused_before_connecting() {
        let b = SshBackend::open("ssh://127.0.0.1:1/x").unwrap();
        for key in ["", "../x", "a//b", "nar/./x"] {
            assert!(
                matches!(b.exists(key), Err(CacheError::Invalid(_))),
                "{key}"
            );
        }
    }

    use super::test_sshd::Sshd;

    #[test]
    fn round_trip_over_sshd() {
        let Some(sshd) = Sshd::start() else { return };
        let url = sshd.url();
        let b = super::super::open(&url).unwrap();
        assert_eq!(b.url(), url);
        let work = tempfile::tempdir().unwrap();
        let file = |name: &str, data: &[u8]| {
            let p = work.path().join(name);
            fs::write(&p, data).unwrap();
            p
        };

        let t = Instant::now();
        let missing = b.exists("nix-cache-info");
        let connect = t.elapsed();
        assert!(!missing.unwrap_or_else(|e| panic!("{e}\nsshd log:\n{}", sshd.log())));
        assert!(b.get("nix-cache-info").unwrap().is_none());
        assert!(b.get("nar/none.nar.zst").unwrap().is_none());

        let info = b"StoreDir: /store\nWantMassQuery: 1\nPriority: 40\n";
        b.put("nix-cache-info", &file("info", info)).unwrap();
        assert!(b.exists("nix-cache-info").unwrap());
        assert_eq!(read_all(&*b, "nix-cache-info").unwrap(), info);

        // Several read and write windows, and a tail shorter than a request.
        let big = noise(6 * 1024 * 1024 + 12345, 7);
        let big_path = file("big", &big);
        let t = Instant::now();
        b.put("nar/big.nar.zst", &big_path).unwrap();
        let put_time = t.elapsed();
        let t = Instant::now();
        let got = read_all(&*b, "nar/big.nar.zst").unwrap();
        let get_time = t.elapsed();
        assert!(got == big, "big object differs");
        assert!(b.exists("nar/big.nar.zst").unwrap());
        assert!(!b.exists("nar").unwrap(), "a directory is no object");

        // Replacing an object: the new bytes, and no temp files left beside it.
        let small = noise(1000, 9);
        b.put("nar/big.nar.zst", &file("small", &small)).unwrap();
        assert_eq!(read_all(&*b, "nar/big.nar.zst").unwrap(), small);
        b.put("empty.narinfo", &file("empty", b"")).unwrap();
        assert_eq!(read_all(&*b, "empty.narinfo").unwrap(), b"");
        let mut names: Vec<String> = fs::read_dir(sshd.cache_dir().join("nar"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["big.nar.zst"]);

        // A reader may outlive its backend and read a partly-consumed stream on.
        b.put("nar/big.nar.zst", &big_path).unwrap();
        let mut r = b.get("nar/big.nar.zst").unwrap().unwrap();
        let mut head = vec![0; 100_000];
        r.read_exact(&mut head).unwrap();
        drop(b);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        head.extend(rest);
        assert!(head == big, "stream read after drop differs");
        drop(r);

        // Several threads share one connection.
        let b: Arc<dyn Backend> = Arc::from(super::super::open(&url).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let b = b.clone();
                let data = noise(300_000 + i, i as u64 + 100);
                let p = file(&format!("t{i}"), &data);
                std::thread::spawn(move || {
                    let key = format!("nar/t{i}.nar.zst");
                    b.put(&key, &p).unwrap();
                    assert!(read_all(&*b, &key).unwrap() == data);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }

        let mib = big.len() as f64 / (1024.0 * 1024.0);
        eprintln!(
            "ssh: connect+first exists {connect:?}; put {mib:.1} MiB in {put_time:?} ({:.0} MiB/s); get in {get_time:?} ({:.0} MiB/s)",
            mib / put_time.as_secs_f64(),
            mib / get_time.as_secs_f64()
        );
    }

    #[test]
    fn connection_errors_name_the_url() {
        // Needs only the ssh client; nothing listens on a port just released.
        if skip::require_tool("ssh", "scripts/test.sh installs openssh-client").is_none() {
            return;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("ssh://127.0.0.1:{port}/cache");
        let b = SshBackend::open(&url).unwrap();
        let e = b.get("nix-cache-info").err().expect("no server there");
        let msg = e.to_string();
        assert!(msg.starts_with(&url), "{msg}");
    }
}
