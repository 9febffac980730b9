//! The sandbox's root tree, made by the caller before anything forks: every
//! mount point, the `/dev` nodes to bind devices onto, and the top-level
//! symlinks of the root layers. Inside, init only mounts. With a root caller
//! init's host id has no mapping in the namespace, and the kernel refuses to
//! create a file whose owner it cannot name (`EOVERFLOW`); made here, the tree
//! is an ordinary directory under the scratch dir, handed to the sandbox's host
//! ids and removed with the scratch dir.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::{Bind, SandboxError};

/// The `/dev` symlinks: (name, target).
pub(crate) const DEV_LINKS: [(&str, &str); 5] = [
    ("ptmx", "pts/ptmx"),
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

/// What the caller made, for init to mount onto.
#[derive(Debug)]
pub(crate) struct Skeleton {
    /// The new root (`scratch/root`).
    pub root: PathBuf,
    /// Where several layers are merged (`scratch/lower`); `None` for one layer.
    pub overlay: Option<PathBuf>,
    /// Top-level directories and files of the merged layers, bound read-only
    /// from the layers (symlinks are copied into the tree instead).
    pub layer_entries: Vec<OsString>,
}

/// A top-level entry of the merged layers.
enum Entry {
    Dir,
    File,
    Link(PathBuf),
}

struct Maker {
    owner: Option<(u32, u32)>,
}

impl Maker {
    fn err(p: &Path, what: &str) -> impl FnOnce(std::io::Error) -> SandboxError {
        let context = format!("{what} {}", p.display());
        move |source| SandboxError::Io { context, source }
    }

    fn own(&self, p: &Path) -> Result<(), SandboxError> {
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::lchown(p, Some(uid), Some(gid)).map_err(Self::err(p, "chown"))?;
        }
        Ok(())
    }

    fn dir(&self, p: &Path, mode: u32) -> Result<(), SandboxError> {
        fs::DirBuilder::new()
            .mode(mode)
            .create(p)
            .map_err(Self::err(p, "create mount point"))?;
        self.own(p)
    }

    fn file(&self, p: &Path) -> Result<(), SandboxError> {
        fs::File::create_new(p).map_err(Self::err(p, "create mount point"))?;
        self.own(p)
    }

    fn link(&self, target: &Path, p: &Path) -> Result<(), SandboxError> {
        std::os::unix::fs::symlink(target, p).map_err(Self::err(p, "symlink"))?;
        self.own(p)
    }
}

/// The top-level entries of `layers` merged as overlayfs merges them: an
/// entry of an upper layer hides the lower ones' (two directories merge, and
/// stay a directory).
fn merged_top_level(layers: &[PathBuf]) -> Result<BTreeMap<OsString, Entry>, SandboxError> {
    let mut out = BTreeMap::new();
    for layer in layers.iter().rev() {
        let entries = fs::read_dir(layer).map_err(Maker::err(layer, "read root layer"))?;
        for e in entries {
            let e = e.map_err(Maker::err(layer, "read root layer"))?;
            let name = e.file_name();
            if out.contains_key(&name) {
                continue;
            }
            let ft = e.file_type().map_err(Maker::err(&e.path(), "stat"))?;
            let entry = if ft.is_symlink() {
                Entry::Link(fs::read_link(e.path()).map_err(Maker::err(&e.path(), "readlink"))?)
            } else if ft.is_dir() {
                Entry::Dir
            } else if ft.is_file() {
                Entry::File
            } else {
                continue;
            };
            out.insert(name, entry);
        }
    }
    Ok(out)
}

/// Makes the tree under `scratch` (see the module docs). `binds` are sorted
/// parents first; `owner` gets every entry made (a root caller's build ids).
pub(crate) fn make(
    scratch: &Path,
    layers: &[PathBuf],
    binds: &[Bind],
    devices: &[&str],
    owner: Option<(u32, u32)>,
) -> Result<Skeleton, SandboxError> {
    let m = Maker { owner };
    m.own(scratch)?;
    let root = scratch.join("root");
    m.dir(&root, 0o755)?;
    let overlay = (layers.len() > 1).then(|| scratch.join("lower"));
    if let Some(o) = &overlay {
        m.dir(o, 0o755)?;
    }
    let top_bound = |name: &str| binds.iter().any(|b| b.dst.strip_prefix('/') == Some(name));
    let reserved = |name: &str| {
        matches!(name, "dev" | "proc" | "tmp")
            || (name == "store" && binds.iter().any(|b| b.dst.starts_with("/store/")))
            || top_bound(name)
    };
    let mut layer_entries = Vec::new();
    for (name, entry) in merged_top_level(layers)? {
        if reserved(&name.to_string_lossy()) {
            continue;
        }
        let p = root.join(&name);
        match entry {
            Entry::Link(target) => m.link(&target, &p)?,
            Entry::Dir => {
                m.dir(&p, 0o755)?;
                layer_entries.push(name);
            }
            Entry::File => {
                m.file(&p)?;
                layer_entries.push(name);
            }
        }
    }
    if !top_bound("tmp") {
        m.dir(&root.join("tmp"), 0o755)?;
    }

    // Mount points of the binds, except inside what another mount covers (a
    // layer's directory, an earlier bind): nothing can be made there, and
    // init reports a missing one.
    let mut covered: Vec<String> = layer_entries
        .iter()
        .map(|n| format!("/{}", n.to_string_lossy()))
        .collect();
    for b in binds {
        let inside = |c: &String| b.dst.starts_with(&format!("{c}/"));
        if !covered.iter().any(inside) {
            mount_point(&m, &root, &b.dst, b.tmpfs || b.src.is_dir())?;
        }
        covered.push(b.dst.clone());
    }

    let dev = root.join("dev");
    m.dir(&dev, 0o755)?;
    for d in devices {
        m.file(&dev.join(Path::new(d).file_name().unwrap_or_default()))?;
    }
    m.dir(&dev.join("pts"), 0o755)?;
    m.dir(&dev.join("shm"), 0o755)?;
    for (name, target) in DEV_LINKS {
        m.link(Path::new(target), &dev.join(name))?;
    }
    m.dir(&root.join("proc"), 0o555)?;
    Ok(Skeleton {
        root,
        overlay,
        layer_entries,
    })
}

/// Makes `root + logical` (and its parents), refusing to go through a
/// symlink: a link could point the mount anywhere.
fn mount_point(m: &Maker, root: &Path, logical: &str, dir: bool) -> Result<(), SandboxError> {
    let comps: Vec<&str> = logical.split('/').filter(|c| !c.is_empty()).collect();
    let mut p = root.to_path_buf();
    for (i, c) in comps.iter().enumerate() {
        p.push(c);
        let last = i + 1 == comps.len();
        match fs::symlink_metadata(&p) {
            Ok(md) if md.file_type().is_symlink() => {
                return Err(SandboxError::Spec(format!(
                    "mount target {logical}: /{} is a symlink in the root",
                    comps[..=i].join("/")
                )))
            }
            Ok(_) => {}
            Err(_) if last && !dir => m.file(&p)?,
            Err(_) => m.dir(&p, 0o755)?,
        }
    }
    Ok(())
}
