//! Independent tools that check the images buildit writes, for end-to-end tests:
//! appc's `actool`, `oci-image-tool`, `umoci`, `skopeo` with a loopback
//! `docker-registry`, `podman`, `runc` and `diffoscope`. `scripts/image-tools.sh`
//! installs them all (actool is built into `target/tools/`).
//!
//! A test whose tool is missing must say so and stop, never pass silently (and
//! under CI it fails: see `skip.rs`):
//!
//! ```ignore
//! require_tool!("umoci", "oci-image-tool");          // skips and returns
//! let Some(podman) = Podman::require() else { return };
//! let Some(registry) = Registry::require() else { return };
//! ```
//!
//! Every helper returns `Err` with the command line and everything it printed.
//! They work as root and as an unprivileged user (rootless podman, runc, umoci).
//!
//! Quirks met here (Debian 12 tools), that the helpers handle:
//! - `oci-image-tool validate --type image` checks digests, sizes, media types and
//!   the layout, but not the config's schema: [`oci_validate`] also checks the
//!   index, manifest and config with `--type imageIndex|manifest|config`. It does
//!   not check diff_ids: [`umoci_unpack`] does.
//! - Debian's umoci (0.4.7) and oci-image-tool (1.0.0-rc1) refuse `+zstd` layers.
//! - skopeo gzips uncompressed layers on a push to a registry, so only an image
//!   whose layers are all compressed keeps its manifest digest through a registry;
//!   see [`skopeo_roundtrip`].
//! - podman names an image run from `oci:DIR:REF` after DIR (`localhost/DIR`), so
//!   DIR must be a valid lowercase repository path (temp dirs like `/tmp/.tmpAbC`
//!   are not): [`Podman::run_oci_layout`] runs it through a symlink with a good name.
//!   From `oci-archive:FILE:REF` it names the image after the index's
//!   `org.opencontainers.image.ref.name` annotation instead.
//! - podman waits 20 s (conmon's timeout) after each container exits when its run
//!   root is longer than 50 bytes (rootless, the run root is
//!   `$XDG_RUNTIME_DIR/containers`, whatever storage.conf says): [`Podman`] keeps its
//!   files in a short dir under /tmp.
//! - Rootless podman ignores `graphroot` in its storage.conf; `rootless_storage_path`
//!   is what moves its storage. It leaves a pause process behind: [`Podman`]'s
//!   `Drop` ends it, and removes the storage from inside the user namespace.
//! - Networking: with `netns = "none"` a podman container gets a network namespace
//!   of its own with only `lo`, and `lo` is up: a server and a client started by the
//!   same container talk over 127.0.0.1. runc brings `lo` up in a new network
//!   namespace too; `runc spec --rootless` has none (it would share the host's
//!   network), so [`runc_run_rootfs`] adds one.
//! - runc creates the mount points it needs (`proc`, `dev`, `sys`, …) inside the
//!   rootfs it runs, even a read-only one: run a copy when the tree must stay as is.
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Seek, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long one tool may run before it is killed and the helper fails.
pub const TIMEOUT: Duration = Duration::from_secs(180);

/// The OCI annotation that names a manifest in an image layout's index.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub use super::skip::tool;

const WHERE_FROM: &str = "scripts/image-tools.sh installs it";

/// Tool NAME, or `None` after [`super::skip::skip`] says why (a failure under CI).
pub fn require(name: &str) -> Option<PathBuf> {
    super::skip::require_tool(name, WHERE_FROM)
}

/// Whether all of NAMES are there; skips for the first one missing.
pub fn require_all(names: &[&str]) -> bool {
    names.iter().all(|n| require(n).is_some())
}

/// `require_tool!("umoci", "skopeo");` returns from the test, after
/// [`super::skip::skip`] (a failure under CI), when one of the tools is missing.
#[macro_export]
macro_rules! require_tool {
    ($($name:expr),+ $(,)?) => {
        if !$crate::common::images::require_all(&[$($name),+]) {
            return;
        }
    };
}

fn need(name: &str) -> Result<PathBuf, String> {
    tool(name).ok_or_else(|| format!("{name} is not installed ({WHERE_FROM})"))
}

fn rootless() -> bool {
    !nix::unistd::geteuid().is_root()
}

fn unique() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Run `cmd` (stdin empty) and wait at most `timeout`; stdout and stderr come back
/// together, interleaved as written. `Err` holds the command, its status and output.
/// On a timeout `on_timeout` runs first (to stop what the child started), then the
/// child is killed.
pub fn run_cmd(
    cmd: &mut Command,
    timeout: Duration,
    on_timeout: Option<&dyn Fn()>,
) -> Result<String, String> {
    let mut out = tempfile::tempfile().map_err(|e| format!("temp file: {e}"))?;
    let clone = || out.try_clone().map_err(|e| format!("temp file: {e}"));
    cmd.stdin(Stdio::null()).stdout(clone()?).stderr(clone()?);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{cmd:?}: cannot start: {e}"))?;
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if start.elapsed() > timeout => {
                if let Some(f) = on_timeout {
                    f();
                }
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("{cmd:?}: wait: {e}")),
        }
    };
    let mut text = String::new();
    out.rewind().map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    out.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    text.push_str(&String::from_utf8_lossy(&bytes));
    match status {
        Some(s) if s.success() => Ok(text),
        Some(s) => Err(format!("{cmd:?} failed ({s}):\n{text}")),
        None => Err(format!("{cmd:?} timed out after {timeout:?}:\n{text}")),
    }
}

fn run(cmd: &mut Command) -> Result<String, String> {
    run_cmd(cmd, TIMEOUT, None)
}

fn read_json(p: &Path) -> Result<Value, String> {
    let b = fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
    serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", p.display()))
}

/// The path of blob `sha256:…` in an image layout.
pub fn oci_blob(layout: &Path, digest: &str) -> Result<PathBuf, String> {
    let (alg, hex) = digest
        .split_once(':')
        .ok_or_else(|| format!("bad digest {digest:?}"))?;
    Ok(layout.join("blobs").join(alg).join(hex))
}

/// The descriptor in `index.json` whose ref name is `reference`.
pub fn oci_descriptor(layout: &Path, reference: &str) -> Result<Value, String> {
    let index = read_json(&layout.join("index.json"))?;
    let found: Vec<&Value> = index["manifests"]
        .as_array()
        .ok_or_else(|| format!("{}/index.json has no manifests", layout.display()))?
        .iter()
        .filter(|d| d["annotations"][REF_NAME].as_str() == Some(reference))
        .collect();
    match found[..] {
        [d] => Ok(d.clone()),
        [] => Err(format!(
            "{}: no manifest named {reference:?}",
            layout.display()
        )),
        _ => Err(format!(
            "{}: {} manifests named {reference:?}",
            layout.display(),
            found.len()
        )),
    }
}

/// The digest and the parsed manifest that `reference` names in an image layout.
pub fn oci_manifest(layout: &Path, reference: &str) -> Result<(String, Value), String> {
    let d = oci_descriptor(layout, reference)?;
    let digest = d["digest"]
        .as_str()
        .ok_or("descriptor without digest")?
        .to_string();
    let m = read_json(&oci_blob(layout, &digest)?)?;
    Ok((digest, m))
}

/// `actool --debug validate ACI`: appc's own checks of an ACI (tar, gzip, bzip2 or
/// xz; not zstd). It does not check everything the spec says: see tools.md.
pub fn actool_validate(aci: &Path) -> Result<(), String> {
    run(Command::new(need("actool")?)
        .args(["--debug", "validate"])
        .arg(aci))
    .map(drop)
}

/// `oci-image-tool validate --type image --ref name=REF DIR` (the layout, digests,
/// sizes, media types), then the schemas of `index.json` and, for an image manifest,
/// of the manifest and its config, which `--type image` does not check. Diff_ids
/// are not checked: see [`umoci_unpack`].
pub fn oci_validate(layout: &Path, reference: &str) -> Result<(), String> {
    let oit = need("oci-image-tool")?;
    let check = |args: &[&str], path: &Path| -> Result<(), String> {
        run(Command::new(&oit).arg("validate").args(args).arg(path)).map(drop)
    };
    check(
        &["--type", "image", "--ref", &format!("name={reference}")],
        layout,
    )?;
    check(&["--type", "imageIndex"], &layout.join("index.json"))?;
    let d = oci_descriptor(layout, reference)?;
    if d["mediaType"] == "application/vnd.oci.image.manifest.v1+json" {
        let (digest, m) = oci_manifest(layout, reference)?;
        check(&["--type", "manifest"], &oci_blob(layout, &digest)?)?;
        let config = m["config"]["digest"]
            .as_str()
            .ok_or("manifest without config")?;
        check(&["--type", "config"], &oci_blob(layout, config)?)?;
    }
    Ok(())
}

/// `umoci unpack --rootless --image DIR:REF BUNDLE` (BUNDLE must not exist): an OCI
/// runtime bundle with `rootfs/`. The one tool that catches a wrong diff_id.
pub fn umoci_unpack(layout: &Path, reference: &str, bundle: &Path) -> Result<(), String> {
    let image = format!("{}:{reference}", layout.display());
    run(Command::new(need("umoci")?)
        .args(["unpack", "--rootless", "--image", &image])
        .arg(bundle))
    .map(drop)
}

/// `diffoscope A B`: `Ok` when the two tars, files or directories are the same
/// (directory metadata aside), else `Err` with the differences.
pub fn diffoscope(a: &Path, b: &Path) -> Result<(), String> {
    run(Command::new(need("diffoscope")?)
        .args(["--no-progress", "--exclude-directory-metadata=yes"])
        .arg(a)
        .arg(b))
    .map(drop)
}

/// A `docker-registry` (distribution 2.8) on 127.0.0.1 with a free port and its
/// storage in a temp dir; killed on drop.
pub struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Registry {
    /// A running registry, or `None` after printing why the test skips (needs
    /// docker-registry and skopeo, which everything that uses one needs).
    pub fn require() -> Option<Registry> {
        if !require_all(&["docker-registry", "skopeo"]) {
            return None;
        }
        Some(Registry::start().expect("start docker-registry"))
    }

    /// Start one and wait until `GET /v2/` answers. A port that another process
    /// takes between our probe and the registry's bind is retried with another.
    pub fn start() -> Result<Registry, String> {
        let bin = need("docker-registry")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut last = String::new();
        for attempt in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("find a free port: {e}"))?
                .port();
            let cfg = dir.path().join(format!("config-{attempt}.yml"));
            let storage = dir.path().join("storage");
            fs::create_dir_all(&storage).map_err(|e| e.to_string())?;
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
            .map_err(|e| e.to_string())?;
            let log =
                fs::File::create(dir.path().join("registry.log")).map_err(|e| e.to_string())?;
            let mut child = Command::new(&bin)
                .arg("serve")
                .arg(&cfg)
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(|e| e.to_string())?)
                .stderr(log)
                .spawn()
                .map_err(|e| format!("{}: {e}", bin.display()))?;
            let log_path = dir.path().join("registry.log");
            match wait_ready(&mut child, port, &log_path, Duration::from_secs(20)) {
                Ok(()) => return Ok(Registry { child, port, dir }),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let in_use = e.contains("address already in use");
                    last = e;
                    if !in_use {
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `docker://127.0.0.1:PORT/NAME` for skopeo (NAME like `x:tag`).
    pub fn docker_ref(&self, name: &str) -> String {
        format!("docker://{}/{name}", self.addr())
    }

    /// A scratch directory that lives as long as the registry.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the registry logged (errors only).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

fn wait_ready(child: &mut Child, port: u16, log: &Path, limit: Duration) -> Result<(), String> {
    let start = Instant::now();
    let log = || fs::read_to_string(log).unwrap_or_default();
    while start.elapsed() < limit {
        if let Ok(Some(s)) = child.try_wait() {
            return Err(format!("docker-registry exited ({s}):\n{}", log()));
        }
        if answers(port) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "docker-registry did not answer on 127.0.0.1:{port} within {limit:?}:\n{}",
        log()
    ))
}

/// Whether `GET /v2/` on 127.0.0.1:PORT answers 200.
fn answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.ends_with(b" 200")
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn compressed(media_type: &str) -> bool {
    media_type.ends_with("+gzip")
        || media_type.ends_with("+zstd")
        || media_type.ends_with(".tar.gzip")
        || media_type.ends_with(".tar.zstd")
}

/// Push `oci:LAYOUT:REF` to `registry` with skopeo, pull it back into a new image
/// layout (same REF, under `registry.dir()`, returned) and compare:
/// - the config digest (so the diff_ids) and the number of layers, always;
/// - when every layer is compressed (gzip, zstd): the manifest digest and every
///   layer digest, which distribution 2.8 keeps byte for byte;
/// - else skopeo has gzipped the uncompressed layers on the push, so the manifest
///   differs by design: run [`umoci_unpack`] on the result to check the new layers.
///
/// skopeo is lenient (a push can "succeed" with a corrupt local blob): validate the
/// layout with [`oci_validate`] and [`umoci_unpack`], not with this.
pub fn skopeo_roundtrip(
    layout: &Path,
    reference: &str,
    registry: &Registry,
) -> Result<PathBuf, String> {
    let skopeo = need("skopeo")?;
    if layout.to_string_lossy().contains(':') {
        return Err(format!(
            "skopeo cannot name a layout whose path has a ':': {}",
            layout.display()
        ));
    }
    let n = unique();
    let remote = registry.docker_ref(&format!("buildit/roundtrip{n}:ci"));
    let pulled = registry.dir().join(format!("pulled{n}"));
    let copy = |tls: &str, from: &str, to: &str| {
        run(Command::new(&skopeo).args(["--insecure-policy", "copy", "-q", tls, from, to]))
    };
    copy(
        "--dest-tls-verify=false",
        &format!("oci:{}:{reference}", layout.display()),
        &remote,
    )
    .map_err(|e| format!("push: {e}\nregistry log:\n{}", registry.log()))?;
    copy(
        "--src-tls-verify=false",
        &remote,
        &format!("oci:{}:{reference}", pulled.display()),
    )
    .map_err(|e| format!("pull: {e}\nregistry log:\n{}", registry.log()))?;

    let (d1, m1) = oci_manifest(layout, reference)?;
    let (d2, m2) = oci_manifest(&pulled, reference)?;
    let show = || format!("pushed {d1}: {m1}\npulled {d2}: {m2}");
    if m1["config"]["digest"] != m2["config"]["digest"] {
        return Err(format!(
            "the config changed on the way through the registry:\n{}",
            show()
        ));
    }
    let (l1, l2) = (m1["layers"].as_array(), m2["layers"].as_array());
    let (Some(l1), Some(l2)) = (l1, l2) else {
        return Err(format!("manifest without layers:\n{}", show()));
    };
    if l1.len() != l2.len() {
        return Err(format!("the number of layers changed:\n{}", show()));
    }
    let all_compressed = l1
        .iter()
        .all(|l| compressed(l["mediaType"].as_str().unwrap_or("")));
    if all_compressed {
        if d1 != d2 {
            return Err(format!("the manifest digest changed:\n{}", show()));
        }
        for (a, b) in l1.iter().zip(l2) {
            if a["digest"] != b["digest"] {
                return Err(format!("a layer changed:\n{}", show()));
            }
        }
    }
    Ok(pulled)
}

/// A repository path podman accepts as an image name (`localhost/` + this): lowercase
/// components of `[a-z0-9]` joined by `.`, `_`, `__` or dashes.
fn valid_repo_path(p: &Path) -> bool {
    let s = p.to_string_lossy();
    let comp_ok = |c: &str| {
        let b = c.as_bytes();
        let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
        !b.is_empty()
            && alnum(b[0])
            && alnum(b[b.len() - 1])
            && b.iter()
                .all(|&x| alnum(x) || matches!(x, b'.' | b'_' | b'-'))
            && !c.contains("..")
            && !c.contains("___")
            && !c.contains("._")
            && !c.contains("_.")
            && !c.contains(".-")
            && !c.contains("-.")
            && !c.contains("_-")
            && !c.contains("-_")
    };
    s.starts_with('/') && s.len() < 200 && s[1..].split('/').all(comp_ok)
}

/// Podman configured as tools.md says, with everything private to a temp dir:
/// containers.conf (`default_ulimits`, `netns = "none"`, runtime runc,
/// cgroup_manager cgroupfs, events_logger file, its own tmp_dir) and storage.conf
/// (vfs; graphroot, runroot and rootless_storage_path in the temp dir), and when
/// not root `XDG_RUNTIME_DIR` a 0700 dir there too.
///
/// Networking: each container has its own network namespace with only `lo`, which
/// is up: a server and a client in the same `podman run` meet on 127.0.0.1.
pub struct Podman {
    bin: PathBuf,
    dir: PathBuf,
    rootless: bool,
}

impl Podman {
    /// Tools a rootless or rootful podman run needs here.
    pub const TOOLS: [&'static str; 3] = ["podman", "runc", "newuidmap"];

    /// A configured podman, or `None` after printing why the test skips.
    pub fn require() -> Option<Podman> {
        if !require_all(&Podman::TOOLS) {
            return None;
        }
        Some(Podman::new().expect("set up podman"))
    }

    pub fn new() -> Result<Podman, String> {
        let bin = need("podman")?;
        let runc = need("runc")?;
        let rootless = rootless();
        // The dir must make a valid image name (see run_oci_layout), and be short:
        // podman waits 20 s for each container's exit when its run root (rootless:
        // $XDG_RUNTIME_DIR/containers) is longer than 50 bytes (measured here).
        let tmp = std::env::temp_dir();
        let base = if Path::new("/tmp").is_dir() {
            PathBuf::from("/tmp")
        } else {
            tmp
        };
        let dir = loop {
            // A dir left by a crashed run of a process with the same pid is skipped.
            let dir = base.join(format!("bp-{}-{}", std::process::id(), unique()));
            let runroot = dir.join(if rootless { "xdg/containers" } else { "run" });
            if !valid_repo_path(&dir) || runroot.as_os_str().len() > 50 {
                return Err(format!(
                    "no short lowercase temp dir for podman: {}",
                    dir.display()
                ));
            }
            match fs::create_dir(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("{}: {e}", dir.display())),
            }
        };
        let p = Podman { bin, dir, rootless };
        let d = &p.dir;
        fs::set_permissions(d, fs::Permissions::from_mode(0o700)).map_err(|e| e.to_string())?;
        for sub in ["xdg", "layouts", "tmp"] {
            fs::create_dir(d.join(sub)).map_err(|e| e.to_string())?;
        }
        fs::set_permissions(d.join("xdg"), fs::Permissions::from_mode(0o700))
            .map_err(|e| e.to_string())?;
        fs::write(
            d.join("containers.conf"),
            format!(
                "[containers]\n\
                 default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
                 netns = \"none\"\n\
                 [engine]\n\
                 cgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\n\
                 runtime = \"runc\"\n\
                 tmp_dir = \"{tmp}\"\n\
                 [engine.runtimes]\n\
                 runc = [\"{runc}\"]\n",
                tmp = d.join("tmp").display(),
                runc = runc.display(),
            ),
        )
        .map_err(|e| e.to_string())?;
        let storage = d.join("storage");
        fs::write(
            d.join("storage.conf"),
            format!(
                "[storage]\n\
                 driver = \"vfs\"\n\
                 graphroot = \"{s}\"\n\
                 runroot = \"{r}\"\n\
                 rootless_storage_path = \"{s}\"\n",
                s = storage.display(),
                r = d.join("run").display(),
            ),
        )
        .map_err(|e| e.to_string())?;
        Ok(p)
    }

    /// `podman --log-level=error` with this configuration, for anything the helpers
    /// below do not cover.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--log-level=error")
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            .env_remove("CONTAINER_HOST")
            .env_remove("CONTAINER_CONNECTION");
        if self.rootless {
            c.env("XDG_RUNTIME_DIR", self.dir.join("xdg"));
        }
        c
    }

    /// `podman run -q --rm OPTS IMAGE ARGS`: its output, stdout and stderr together.
    /// IMAGE is any podman image reference (`oci-archive:F:REF`, a loaded name).
    /// OPTS are `podman run` options, e.g. `["--entrypoint", "/bin/x", "--env", "A=b"]`;
    /// ARGS replace the image's command.
    pub fn run(&self, image: &str, opts: &[&str], args: &[&str]) -> Result<String, String> {
        let secs = TIMEOUT.as_secs().to_string();
        let mut c = self.command();
        c.args(["run", "-q", "--rm", "--timeout", &secs])
            .args(opts)
            .arg(image)
            .args(args);
        run_cmd(&mut c, TIMEOUT + Duration::from_secs(30), None)
    }

    /// Run the image REF of an OCI archive (a tar of an image layout).
    pub fn run_oci_archive(
        &self,
        archive: &Path,
        reference: &str,
        args: &[&str],
    ) -> Result<String, String> {
        self.run_oci_archive_with(archive, reference, &[], args)
    }

    pub fn run_oci_archive_with(
        &self,
        archive: &Path,
        reference: &str,
        opts: &[&str],
        args: &[&str],
    ) -> Result<String, String> {
        self.run(
            &format!("oci-archive:{}:{reference}", archive.display()),
            opts,
            args,
        )
    }

    /// Run the image REF of an image layout. podman names the image after the
    /// layout's path, which must be a valid lowercase image name: it gets a symlink
    /// with such a name.
    pub fn run_oci_layout(
        &self,
        dir: &Path,
        reference: &str,
        args: &[&str],
    ) -> Result<String, String> {
        self.run_oci_layout_with(dir, reference, &[], args)
    }

    pub fn run_oci_layout_with(
        &self,
        dir: &Path,
        reference: &str,
        opts: &[&str],
        args: &[&str],
    ) -> Result<String, String> {
        let target = fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let link = self.dir.join("layouts").join(format!("layout{}", unique()));
        std::os::unix::fs::symlink(&target, &link).map_err(|e| e.to_string())?;
        let r = self.run(&format!("oci:{}:{reference}", link.display()), opts, args);
        let _ = fs::remove_file(&link);
        r
    }

    /// The private directory (configuration, storage).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        if self.rootless {
            // Layers may hold files of subordinate ids that only the user namespace
            // can remove; then end the pause process that keeps that namespace.
            let storage = self.dir.join("storage");
            if storage.exists() {
                let mut c = self.command();
                c.args(["unshare", "rm", "-rf"]).arg(&storage);
                let _ = run_cmd(&mut c, Duration::from_secs(60), None);
            }
            for f in [
                self.dir.join("tmp/pause.pid"),
                self.dir.join("xdg/libpod/tmp/pause.pid"),
            ] {
                if let Some(pid) = fs::read_to_string(&f)
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Run ARGS in ROOTFS (e.g. an unpacked ACI's `rootfs/`) with runc, read-only, as
/// root in the container (mapped to the user when not root), with ENV (`K=V`)
/// after a default `PATH`, in new PID, mount, IPC, UTS and network namespaces (only
/// `lo`, up). Returns stdout and stderr together. runc adds the mount points it needs
/// (`proc`, `dev`, `sys`) to ROOTFS.
pub fn runc_run_rootfs(rootfs: &Path, args: &[&str], env: &[&str]) -> Result<String, String> {
    runc_run_rootfs_config(rootfs, args, env, |_| {})
}

/// [`runc_run_rootfs`] with a last edit of the runtime config (`config.json` as
/// JSON), e.g. `c["process"]["cwd"] = "/srv".into()`.
pub fn runc_run_rootfs_config(
    rootfs: &Path,
    args: &[&str],
    env: &[&str],
    edit: impl FnOnce(&mut Value),
) -> Result<String, String> {
    let runc = need("runc")?;
    let rootfs = fs::canonicalize(rootfs).map_err(|e| format!("{}: {e}", rootfs.display()))?;
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let bundle = tmp.path().join("bundle");
    let state = tmp.path().join("state");
    fs::create_dir(&bundle).map_err(|e| e.to_string())?;
    fs::create_dir(&state).map_err(|e| e.to_string())?;
    let rootless = rootless();
    let mut spec = Command::new(&runc);
    spec.arg("spec").arg("--bundle").arg(&bundle);
    if rootless {
        spec.arg("--rootless");
    }
    run(&mut spec)?;
    let cfg_path = bundle.join("config.json");
    let mut cfg = read_json(&cfg_path)?;
    let p = &mut cfg["process"];
    p["terminal"] = false.into();
    p["args"] = args.iter().map(|a| Value::from(*a)).collect();
    let mut vars =
        vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()];
    vars.extend(env.iter().map(|s| s.to_string()));
    p["env"] = vars.into_iter().map(Value::from).collect();
    cfg["root"] = serde_json::json!({"path": rootfs, "readonly": true});
    let ns = cfg["linux"]["namespaces"]
        .as_array_mut()
        .ok_or("runc spec without namespaces")?;
    if !ns.iter().any(|n| n["type"] == "network") {
        ns.push(serde_json::json!({"type": "network"}));
    }
    edit(&mut cfg);
    fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).map_err(|e| e.to_string())?;

    let id = format!("buildit-{}-{}", std::process::id(), unique());
    let stop = || {
        let _ = Command::new(&runc)
            .arg("--root")
            .arg(&state)
            .args(["kill", &id, "KILL"])
            .output();
    };
    let mut c = Command::new(&runc);
    c.arg("--root")
        .arg(&state)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id);
    let r = run_cmd(&mut c, TIMEOUT, Some(&stop));
    let _ = Command::new(&runc)
        .arg("--root")
        .arg(&state)
        .args(["delete", "--force", &id])
        .output();
    r
}
