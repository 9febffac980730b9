//! Unpacking real Debian packages, checked against `dpkg-deb -x`.
//!
//! The `.deb`s come from the host's apt sources with `apt-get download` and are
//! cached in `$CARGO_TARGET_TMPDIR/debs/`, so only the first run downloads.
//! `dpkg-deb -x` knows nothing of merged-usr, so its tree is folded here by an
//! independent implementation of the same rules (move `bin`, `sbin`, `lib*` under
//! `usr/`, fold absolute symlink targets) before the two trees are compared.
//!
//! `bench_unpack_closure` is the benchmark run by `bench/deb-unpack.sh`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use buildit::debian::deb::{read_control, unpack_deb, DebError, DebInfo};
use buildit_store::hash::{HashAlgo, Hasher};

const FOLDED: [&str; 6] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// bzip2 and gzip have hard links, base-files setgid and sticky directories,
/// bash/coreutils/bzip2 symlinks under /bin, libc6 an absolute link in /lib64.
const PACKAGES: [&str; 8] = [
    "hello",
    "coreutils",
    "libc6",
    "bash",
    "libssl3",
    "bzip2",
    "gzip",
    "base-files",
];

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn cached_deb(dir: &Path, name: &str) -> Option<PathBuf> {
    let prefix = format!("{name}_");
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let f = p.file_name().and_then(|f| f.to_str()).unwrap_or("");
            f.starts_with(&prefix) && f.ends_with(".deb")
        })
}

/// The cached `.deb` of each test package, downloading the missing ones once per
/// test process (tests run in parallel and share the cache).
fn debs() -> &'static HashMap<String, PathBuf> {
    static DEBS: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    DEBS.get_or_init(|| {
        let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("debs");
        fs::create_dir_all(&dir).unwrap();
        let missing: Vec<&str> = PACKAGES
            .iter()
            .copied()
            .filter(|p| cached_deb(&dir, p).is_none())
            .collect();
        if !missing.is_empty() {
            let policy = run(Command::new("apt-cache").args(["policy", "hello"]));
            let policy = String::from_utf8_lossy(&policy);
            if !policy.contains("Candidate:") || policy.contains("Candidate: (none)") {
                run(Command::new("apt-get").args(["update", "-qq"]));
            }
            // Into a fresh directory first, so that an interrupted download never
            // looks like a cached package.
            let part = tempfile::tempdir_in(&dir).unwrap();
            run(Command::new("apt-get")
                .arg("download")
                .args(&missing)
                .current_dir(part.path()));
            for e in fs::read_dir(part.path()).unwrap().flatten() {
                fs::rename(e.path(), dir.join(e.file_name())).unwrap();
            }
        }
        PACKAGES
            .iter()
            .map(|p| {
                let deb = cached_deb(&dir, p).unwrap_or_else(|| panic!("{p} was not downloaded"));
                (p.to_string(), deb)
            })
            .collect()
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir { mode: u32 },
    File { mode: u32, sha256: String },
    Symlink { target: String },
}

struct Tree {
    nodes: BTreeMap<String, Node>,
    /// Groups of paths sharing an inode (only groups of two or more).
    hard_links: BTreeSet<BTreeSet<String>>,
}

fn sha256(path: &Path) -> String {
    let mut h = Hasher::new(HashAlgo::Sha256);
    let mut f = fs::File::open(path).unwrap();
    std::io::copy(&mut f, &mut h).unwrap();
    h.finish().to_hex()
}

fn md5(path: &Path) -> String {
    let mut h = Hasher::new(HashAlgo::Md5);
    let mut f = fs::File::open(path).unwrap();
    std::io::copy(&mut f, &mut h).unwrap();
    h.finish().to_hex()
}

/// Every path below `root` (relative, no leading slash), modes without the
/// setuid/setgid/sticky bits.
fn snapshot(root: &Path) -> Tree {
    let mut nodes = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), BTreeSet<String>> = HashMap::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let p = root.join(&r);
            let md = fs::symlink_metadata(&p).unwrap();
            let mode = md.mode() & 0o777;
            let node = if md.file_type().is_symlink() {
                let target = fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_string()
                    .unwrap();
                Node::Symlink { target }
            } else if md.is_dir() {
                stack.push(r.clone());
                Node::Dir { mode }
            } else if md.is_file() {
                inodes
                    .entry((md.dev(), md.ino()))
                    .or_default()
                    .insert(r.clone());
                Node::File {
                    mode,
                    sha256: sha256(&p),
                }
            } else {
                panic!("{}: unexpected file type", p.display());
            };
            nodes.insert(r, node);
        }
    }
    let hard_links = inodes.into_values().filter(|g| g.len() > 1).collect();
    Tree { nodes, hard_links }
}

// ---- the reference folding, applied to dpkg-deb's tree ----

fn fold(rel: &str) -> String {
    match rel.split('/').next() {
        Some(first) if FOLDED.contains(&first) => format!("usr/{rel}"),
        _ => rel.to_string(),
    }
}

fn lexical(dir: &str, target: &str) -> Vec<String> {
    let mut out: Vec<String> = dir
        .split('/')
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c.to_string()),
        }
    }
    out
}

fn parent(rel: &str) -> &str {
    rel.rsplit_once('/').map_or("", |(p, _)| p)
}

/// What a symlink at `rel` (unfolded) pointing at `target` must become.
fn expected_target(rel: &str, target: &str) -> String {
    if let Some(abs) = target.strip_prefix('/') {
        return format!("/{}", fold(abs));
    }
    let meant = fold(&lexical(parent(rel), target).join("/"));
    let new_parent = fold(rel);
    let new_parent = parent(&new_parent);
    if lexical(new_parent, target).join("/") == meant {
        return target.to_string();
    }
    // The link moved relative to its target: re-relativise.
    let from: Vec<&str> = new_parent.split('/').filter(|c| !c.is_empty()).collect();
    let to: Vec<&str> = meant.split('/').filter(|c| !c.is_empty()).collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts = vec![".."; from.len() - common];
    parts.extend(&to[common..]);
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

/// Move `src` into `dst`, merging directories; identical files may appear twice.
fn merge_move(src: &Path, dst: &Path) {
    if fs::symlink_metadata(dst).is_err() {
        fs::rename(src, dst).unwrap();
        return;
    }
    let (s, d) = (
        fs::symlink_metadata(src).unwrap(),
        fs::symlink_metadata(dst).unwrap(),
    );
    if s.is_dir() && d.is_dir() {
        for e in fs::read_dir(src).unwrap().flatten() {
            merge_move(&e.path(), &dst.join(e.file_name()));
        }
        fs::remove_dir(src).unwrap();
    } else if s.is_file() && d.is_file() && fs::read(src).unwrap() == fs::read(dst).unwrap() {
        fs::remove_file(src).unwrap();
    } else {
        panic!("{} and {} conflict", src.display(), dst.display());
    }
}

/// `dpkg-deb -x`, folded. Returns the tree and the folded paths that had
/// setuid/setgid/sticky bits.
fn dpkg_reference(deb: &Path, dir: &Path) -> (Tree, Vec<String>) {
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir));
    let raw = snapshot(dir);
    let mut special = Vec::new();
    let mut targets = HashMap::new();
    for (rel, node) in &raw.nodes {
        let md = fs::symlink_metadata(dir.join(rel)).unwrap();
        if !md.file_type().is_symlink() && md.mode() & 0o7000 != 0 {
            special.push(format!("/{}", fold(rel)));
        }
        if let Node::Symlink { target } = node {
            targets.insert(fold(rel), expected_target(rel, target));
        }
    }
    for top in FOLDED {
        let src = dir.join(top);
        if fs::symlink_metadata(&src).is_ok() {
            fs::create_dir_all(dir.join("usr")).unwrap();
            merge_move(&src, &dir.join("usr").join(top));
        }
    }
    let mut tree = snapshot(dir);
    for (rel, node) in tree.nodes.iter_mut() {
        if let Node::Symlink { target } = node {
            *target = targets[rel].clone();
        }
    }
    special.sort();
    (tree, special)
}

fn dpkg_field(deb: &Path, field: &str) -> String {
    let out = run(Command::new("dpkg-deb").arg("-f").arg(deb).arg(field));
    String::from_utf8(out).unwrap().trim_end().to_string()
}

/// The control member's file as shipped, or None.
fn dpkg_control_file(deb: &Path, name: &str) -> Option<Vec<u8>> {
    let out = Command::new("dpkg-deb")
        .arg("-I")
        .arg(deb)
        .arg(name)
        .output()
        .unwrap();
    out.status.success().then_some(out.stdout)
}

fn diff_trees(ours: &Tree, want: &Tree) -> Vec<String> {
    let mut diffs = Vec::new();
    for (p, n) in &want.nodes {
        match ours.nodes.get(p) {
            None => diffs.push(format!("missing /{p} ({n:?})")),
            Some(o) if o != n => diffs.push(format!("/{p}: ours {o:?}, dpkg {n:?}")),
            _ => {}
        }
    }
    for (p, n) in &ours.nodes {
        if !want.nodes.contains_key(p) {
            diffs.push(format!("extra /{p} ({n:?})"));
        }
    }
    if ours.hard_links != want.hard_links {
        diffs.push(format!(
            "hard links differ: ours {:?}, dpkg {:?}",
            ours.hard_links, want.hard_links
        ));
    }
    diffs
}

/// Unpack `deb` both ways and compare everything.
fn check_against_dpkg(deb: &Path) -> DebInfo {
    let t = tempfile::tempdir().unwrap();
    let ours = t.path().join("ours");
    let info = unpack_deb(deb, &ours).unwrap_or_else(|e| panic!("{e}"));
    let (want, special) = dpkg_reference(deb, &t.path().join("dpkg"));

    assert_eq!(info.package, dpkg_field(deb, "Package"));
    assert_eq!(info.version, dpkg_field(deb, "Version"));
    assert_eq!(info.architecture, dpkg_field(deb, "Architecture"));

    // The metadata we add: present, right, then left out of the comparison.
    let name = info.info_name();
    let meta_files = [
        format!("var/lib/dpkg/info/{name}.list"),
        format!("var/lib/dpkg/info/{name}.md5sums"),
        format!("var/lib/dpkg/info/{name}.conffiles"),
        format!("var/lib/buildit/debian/{name}.control"),
    ];
    let control = dpkg_control_file(deb, "control").unwrap();
    assert_eq!(fs::read(ours.join(&meta_files[3])).unwrap(), control);
    let mut list = String::from("/.\n");
    for f in &info.files {
        list.push_str(f);
        list.push('\n');
    }
    assert_eq!(fs::read_to_string(ours.join(&meta_files[0])).unwrap(), list);
    match dpkg_control_file(deb, "md5sums") {
        Some(raw) => {
            let written = fs::read_to_string(ours.join(&meta_files[1])).unwrap();
            let raw = String::from_utf8(raw).unwrap();
            assert_eq!(written.lines().count(), raw.lines().count());
            assert_eq!(info.md5sums.len(), raw.lines().count());
            // Folding kept every checksum with its file: the md5sums verify.
            for (path, sum) in &info.md5sums {
                assert_eq!(&md5(&ours.join(&path[1..])), sum, "{path}");
                assert!(written.contains(&format!("{sum}  {}\n", &path[1..])));
            }
        }
        None => assert!(!ours.join(&meta_files[1]).exists()),
    }
    match dpkg_control_file(deb, "conffiles") {
        Some(raw) => {
            let raw = String::from_utf8(raw).unwrap();
            let plain: Vec<String> = raw
                .lines()
                .filter(|l| l.starts_with('/'))
                .map(|l| format!("/{}", fold(l.trim().trim_start_matches('/'))))
                .collect();
            assert_eq!(info.conffiles, plain);
            assert!(ours.join(&meta_files[2]).exists());
        }
        None => assert!(info.conffiles.is_empty() && !ours.join(&meta_files[2]).exists()),
    }
    let control_only = read_control(deb).unwrap();
    assert_eq!(control_only.control, info.control);
    assert_eq!(control_only.md5sums, info.md5sums);
    assert_eq!(control_only.control_text.as_bytes(), &control[..]);

    let mut got = snapshot(&ours);
    for m in &meta_files {
        got.nodes.remove(m);
    }
    for dir in [
        "var/lib/dpkg/info",
        "var/lib/dpkg",
        "var/lib/buildit/debian",
        "var/lib/buildit",
        "var/lib",
        "var",
    ] {
        if !want.nodes.contains_key(dir) {
            got.nodes.remove(dir);
        }
    }
    let diffs = diff_trees(&got, &want);
    assert!(
        diffs.is_empty(),
        "{}: {} differences, first ones:\n{}",
        deb.display(),
        diffs.len(),
        diffs[..diffs.len().min(20)].join("\n")
    );
    let want_files: Vec<String> = want.nodes.keys().map(|k| format!("/{k}")).collect();
    assert_eq!(info.files, want_files);
    assert_eq!(info.setuid_stripped, special);
    assert!(!ours.join("bin").exists() && !ours.join("lib").exists());

    // Deterministic: a second unpack has the same NAR hash.
    let again = t.path().join("again");
    let info2 = unpack_deb(deb, &again).unwrap();
    assert_eq!(info, info2);
    let h1 = buildit_store::nar::hash_path(&ours, HashAlgo::Sha256).unwrap();
    let h2 = buildit_store::nar::hash_path(&again, HashAlgo::Sha256).unwrap();
    assert_eq!(h1, h2);
    info
}

fn deb(name: &str) -> &'static Path {
    &debs()[name]
}

#[test]
fn hello() {
    let info = check_against_dpkg(deb("hello"));
    assert!(info.files.contains(&"/usr/bin/hello".to_string()));
}

#[test]
fn coreutils() {
    let info = check_against_dpkg(deb("coreutils"));
    // /bin/ls and /usr/bin/sort end up side by side.
    assert!(info.files.contains(&"/usr/bin/ls".to_string()));
    assert!(info.files.contains(&"/usr/bin/sort".to_string()));
}

#[test]
fn libc6() {
    let info = check_against_dpkg(deb("libc6"));
    assert!(info
        .files
        .contains(&"/usr/lib/x86_64-linux-gnu/libc.so.6".to_string()));
    // Multi-Arch: same packages have arch-qualified dpkg database files.
    assert_eq!(info.info_name(), format!("libc6:{}", info.architecture));
    assert!(!info.scripts.is_empty());
}

#[test]
fn bash() {
    check_against_dpkg(deb("bash"));
}

#[test]
fn libssl3() {
    check_against_dpkg(deb("libssl3"));
}

#[test]
fn bzip2_hard_links() {
    check_against_dpkg(deb("bzip2"));
}

#[test]
fn gzip() {
    check_against_dpkg(deb("gzip"));
}

#[test]
fn base_files_special_dirs() {
    let info = check_against_dpkg(deb("base-files"));
    assert!(info.setuid_stripped.contains(&"/tmp".to_string()));
}

/// Member names of an ar archive (without needing binutils' `ar`).
fn ar_members(bytes: &[u8]) -> Vec<String> {
    assert_eq!(&bytes[..8], b"!<arch>\n");
    let (mut pos, mut names) = (8, Vec::new());
    while pos + 60 <= bytes.len() {
        let h = &bytes[pos..pos + 60];
        let name = String::from_utf8_lossy(&h[..16]);
        names.push(name.trim_end().trim_end_matches('/').to_string());
        let size: usize = String::from_utf8_lossy(&h[48..58]).trim().parse().unwrap();
        pos += 60 + size + size % 2;
    }
    names
}

/// No bookworm package seen uses anything but `data.tar.xz`, so the other
/// compressions are checked on a real package rebuilt by dpkg-deb itself.
#[test]
fn gzip_zstd_and_plain_repacks() {
    let t = tempfile::tempdir().unwrap();
    let raw = t.path().join("raw");
    // bzip2: small, with /bin, symlinks and hard links.
    run(Command::new("dpkg-deb")
        .arg("-R")
        .arg(deb("bzip2"))
        .arg(&raw));
    for (z, member) in [
        ("gzip", "data.tar.gz"),
        ("zstd", "data.tar.zst"),
        ("none", "data.tar"),
    ] {
        let out = t.path().join(format!("bzip2-{z}.deb"));
        run(Command::new("dpkg-deb")
            .arg(format!("-Z{z}"))
            .arg("--root-owner-group")
            .arg("-b")
            .arg(&raw)
            .arg(&out));
        let members = ar_members(&fs::read(&out).unwrap());
        assert!(members.iter().any(|m| m == member), "{members:?}");
        check_against_dpkg(&out);
    }
}

#[test]
fn corrupt_real_package() {
    let t = tempfile::tempdir().unwrap();
    let mut bytes = fs::read(deb("hello")).unwrap();
    let len = bytes.len();
    // Flip bytes well inside data.tar.xz (the last member).
    for b in &mut bytes[len - 2000..len - 1990] {
        *b ^= 0xa5;
    }
    let p = t.path().join("bad.deb");
    fs::write(&p, &bytes).unwrap();
    let dest = t.path().join("out");
    let e = unpack_deb(&p, &dest).unwrap_err();
    assert!(matches!(e, DebError::CorruptStream { .. }), "{e}");
    assert!(!dest.exists());
    // The control member is intact, so showing the package still works.
    assert_eq!(read_control(&p).unwrap().package, "hello");

    let truncated = t.path().join("short.deb");
    fs::write(&truncated, &bytes[..len / 2]).unwrap();
    let e = unpack_deb(&truncated, &dest).unwrap_err();
    assert!(matches!(e, DebError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("short.deb"), "{e}");
}

/// `bench/deb-unpack.sh`: unpack every `.deb` in `$BUILDIT_DEB_BENCH_DIR`, two at a
/// time, and report the throughput.
#[test]
#[ignore]
fn bench_unpack_closure() {
    let dir = std::env::var_os("BUILDIT_DEB_BENCH_DIR").expect("set BUILDIT_DEB_BENCH_DIR");
    let mut debs: Vec<(PathBuf, u64)> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .map(|p| {
            let size = fs::metadata(&p).unwrap().len();
            (p, size)
        })
        .collect();
    assert!(!debs.is_empty(), "no .deb in {dir:?}");
    // Largest first, so that the two workers finish close together.
    debs.sort_by_key(|(_, s)| std::cmp::Reverse(*s));
    let out = tempfile::tempdir_in(
        std::env::var_os("BUILDIT_DEB_BENCH_OUT").unwrap_or_else(|| std::env::temp_dir().into()),
    )
    .unwrap();
    let next = AtomicUsize::new(0);
    let files = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((deb, _)) = debs.get(i) else { break };
                let info = unpack_deb(deb, &out.path().join(i.to_string()))
                    .unwrap_or_else(|e| panic!("{e}"));
                files.fetch_add(info.files.len(), Ordering::Relaxed);
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let bytes: u64 = debs.iter().map(|(_, s)| s).sum();
    println!(
        "unpacked {} packages ({:.1} MB of .debs, {} paths) in {:.2} s with 2 threads: {:.1} MB/s",
        debs.len(),
        bytes as f64 / 1e6,
        files.load(Ordering::Relaxed),
        secs,
        bytes as f64 / 1e6 / secs
    );
}

/// Every package of the C build root's locked closure (~110 `.deb`s, fetched by
/// buildit itself into the per-user test store shared with `debian_buildroot`)
/// unpacks to exactly what `dpkg-deb -x` gives after folding.
#[test]
fn whole_c_build_root_closure_matches_dpkg() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("debian-shared-{}", nix::unistd::getuid()));
    fs::create_dir_all(&shared).unwrap();
    let root = shared.join("root");
    let lock = shared.join(format!("closure-{}.lock", std::process::id()));
    let buildit = |args: &[&str]| -> Vec<u8> {
        let mut c = Command::new(env!("CARGO_BIN_EXE_buildit"));
        c.current_dir(repo).arg("--root").arg(&root).args(args);
        run(&mut c)
    };
    buildit(&[
        "debian",
        "lock",
        "--build-root",
        "samples/recipes/build-roots/debian-12-c.yaml",
        "--lock",
        lock.to_str().unwrap(),
    ]);
    let fetched: serde_json::Value = serde_json::from_slice(&buildit(&[
        "debian",
        "fetch",
        "--lock",
        lock.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    let debs: Vec<PathBuf> = fetched
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let p = e["path"].as_str().unwrap();
            root.join("store").join(p.strip_prefix("/store/").unwrap())
        })
        .collect();
    assert!(debs.len() > 60, "{} packages", debs.len());
    // Two at a time: this machine has two cores.
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(deb) = debs.get(i) else { break };
                check_against_dpkg(deb);
            });
        }
    });
    let _ = fs::remove_file(&lock);
}
