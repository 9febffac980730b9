//! NAR writing, hashing and restoring checked against the Nix 2.8 vectors in
//! `vectors/nar.json`, plus round trips over random trees.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use buildit_store::nar::{self, NarEntryKind, NarWriter};
use buildit_store::{Hash, HashAlgo, Hasher};
use proptest::prelude::*;
use serde_json::Value;

fn cases() -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/nar.json");
    let json: Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    json["cases"].as_array().unwrap().clone()
}

/// Creates the tree a vector describes at `path`.
fn build_vector_tree(node: &Value, path: &Path) {
    match node["type"].as_str().unwrap() {
        "regular" => {
            let contents = match node.get("contents_base64") {
                Some(b64) => BASE64.decode(b64.as_str().unwrap()).unwrap(),
                None => node["contents"].as_str().unwrap().as_bytes().to_vec(),
            };
            fs::write(path, contents).unwrap();
            let mode = u32::from_str_radix(node["mode"].as_str().unwrap(), 8).unwrap();
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
        }
        "symlink" => symlink(node["target"].as_str().unwrap(), path).unwrap(),
        "directory" => {
            fs::create_dir(path).unwrap();
            for (name, child) in node["entries"].as_object().unwrap() {
                build_vector_tree(child, &path.join(name));
            }
        }
        other => panic!("unknown node type {other}"),
    }
}

/// What `list` should say about the executable bits: (entry path, executable).
fn expected_exec_bits(node: &Value, path: String, out: &mut Vec<(String, bool)>) {
    match node["type"].as_str().unwrap() {
        "regular" => out.push((path, node["executable_in_nar"].as_bool().unwrap())),
        "directory" => {
            for (name, child) in node["entries"].as_object().unwrap() {
                let child_path = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}/{name}")
                };
                expected_exec_bits(child, child_path, out);
            }
        }
        _ => {}
    }
}

#[test]
fn vectors_dump_and_hash_like_nix() {
    let cases = cases();
    assert_eq!(cases.len(), 12);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        build_vector_tree(&case["root"], &root);

        let mut nar_bytes = Vec::new();
        let size = nar::dump_path(&root, &mut nar_bytes).unwrap();
        assert_eq!(size, nar_bytes.len() as u64, "{name}");
        assert_eq!(size, case["nar_size"].as_u64().unwrap(), "{name}: size");
        if let Some(b64) = case.get("nar_base64") {
            let want = BASE64.decode(b64.as_str().unwrap()).unwrap();
            assert_eq!(nar_bytes, want, "{name}: NAR bytes");
        }

        let (hash, hashed_size) = nar::hash_path(&root, HashAlgo::Sha256).unwrap();
        assert_eq!(hashed_size, size, "{name}");
        assert_eq!(hash, Hash::sha256(&nar_bytes), "{name}");
        assert_eq!(
            hash.to_hex(),
            case["nar_sha256_hex"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            hash.to_nix32(),
            case["nar_sha256_nix32"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            hash.to_sri(),
            case["nix_hash_path"].as_str().unwrap(),
            "{name}"
        );

        let mut copy = Vec::new();
        let (hash2, size2) = nar::dump_path_hashed(&root, &mut copy, HashAlgo::Sha256).unwrap();
        assert_eq!((hash2, size2), (hash, size), "{name}");
        assert_eq!(copy, nar_bytes, "{name}");

        let summary = nar::validate(&mut &nar_bytes[..]).unwrap();
        assert_eq!(summary.nar_size, size, "{name}");

        let mut want_exec = Vec::new();
        expected_exec_bits(&case["root"], String::new(), &mut want_exec);
        want_exec.sort();
        let mut got_exec: Vec<(String, bool)> = nar::list(&mut &nar_bytes[..])
            .unwrap()
            .into_iter()
            .filter_map(|e| match e.kind {
                NarEntryKind::Regular { executable, .. } => {
                    Some((String::from_utf8(e.path).unwrap(), executable))
                }
                _ => None,
            })
            .collect();
        got_exec.sort();
        assert_eq!(got_exec, want_exec, "{name}: executable bits");
    }
}

#[test]
fn vectors_restore_and_redump_identically() {
    for case in cases() {
        let name = case["name"].as_str().unwrap();
        let dir = tempfile::tempdir().unwrap();
        // Nix's own bytes where the vector has them, else our dump (whose hash the
        // other test checks against Nix's).
        let nar_bytes = match case.get("nar_base64") {
            Some(b64) => BASE64.decode(b64.as_str().unwrap()).unwrap(),
            None => {
                let root = dir.path().join("src");
                build_vector_tree(&case["root"], &root);
                let mut v = Vec::new();
                nar::dump_path(&root, &mut v).unwrap();
                v
            }
        };
        let target = dir.path().join("restored");
        let size = nar::restore(&mut &nar_bytes[..], &target).unwrap();
        assert_eq!(size, nar_bytes.len() as u64, "{name}");
        let mut again = Vec::new();
        nar::dump_path(&target, &mut again).unwrap();
        assert_eq!(again, nar_bytes, "{name}: re-dump differs");
    }
}

/// Builds the NAR of a regular file by hand, for checking large contents.
fn file_nar(contents: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for s in [
        &b"nix-archive-1"[..],
        b"(",
        b"type",
        b"regular",
        b"contents",
        contents,
        b")",
    ] {
        v.extend_from_slice(&(s.len() as u64).to_le_bytes());
        v.extend_from_slice(s);
        v.resize(v.len().next_multiple_of(8), 0);
    }
    v
}

#[test]
fn large_files_stream_through_the_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big");
    // Not a multiple of the buffer size nor of 8, so both edges are crossed.
    let data: Vec<u8> = (0..(3 << 20) + 5u32).map(|i| (i % 251) as u8).collect();
    fs::write(&path, &data).unwrap();
    let want = file_nar(&data);
    let (hash, size) = nar::hash_path(&path, HashAlgo::Sha256).unwrap();
    assert_eq!(size, want.len() as u64);
    assert_eq!(hash, Hash::sha256(&want));
    let (hash512, _) = nar::hash_path(&path, HashAlgo::Sha512).unwrap();
    assert_eq!(hash512, Hash::of(HashAlgo::Sha512, &want));
}

#[test]
fn root_symlink_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("file"), b"contents").unwrap();
    let link = dir.path().join("link");
    symlink("file", &link).unwrap();
    let entries = {
        let mut v = Vec::new();
        nar::dump_path(&link, &mut v).unwrap();
        nar::list(&mut &v[..]).unwrap()
    };
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries[0].kind,
        NarEntryKind::Symlink {
            target: b"file".to_vec()
        }
    );
}

#[test]
fn proc_files_that_lie_about_their_size_are_rejected() {
    // procfs reports size 0 but yields data: the same as a file growing mid-read.
    let err = nar::dump_path(Path::new("/proc/self/status"), &mut io::sink()).unwrap_err();
    assert!(
        matches!(err, nar::NarError::FileChanged { .. }),
        "unexpected {err}"
    );
}

/// An in-memory tree for property tests.
#[derive(Debug, Clone)]
enum Tree {
    File { executable: bool, contents: Vec<u8> },
    Symlink(Vec<u8>),
    Dir(BTreeMap<Vec<u8>, Tree>),
}

fn name_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[a-zA-Z0-9._-]{1,6}".prop_map(String::into_bytes),
        // Any bytes a filesystem allows, including invalid UTF-8.
        prop::collection::vec(1u8..=255, 1..5),
    ]
    .prop_filter("not a single path component", |n| {
        !n.contains(&b'/') && n != b"." && n != b".."
    })
}

fn tree_strategy() -> impl Strategy<Value = Tree> {
    let leaf = prop_oneof![
        (any::<bool>(), prop::collection::vec(any::<u8>(), 0..100)).prop_map(
            |(executable, contents)| Tree::File {
                executable,
                contents
            }
        ),
        prop::collection::vec(1u8..=255, 1..20).prop_map(Tree::Symlink),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop::collection::btree_map(name_strategy(), inner, 0..6).prop_map(Tree::Dir)
    })
}

fn build_tree(tree: &Tree, path: &Path) {
    match tree {
        Tree::File {
            executable,
            contents,
        } => {
            fs::write(path, contents).unwrap();
            let mode = if *executable { 0o700 } else { 0o640 };
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
        }
        Tree::Symlink(target) => symlink(OsStr::from_bytes(target), path).unwrap(),
        Tree::Dir(entries) => {
            fs::create_dir(path).unwrap();
            for (name, child) in entries {
                build_tree(child, &path.join(OsStr::from_bytes(name)));
            }
        }
    }
}

/// Writes the same tree through the event API, independently of the filesystem.
fn write_events<W: io::Write>(tree: &Tree, w: &mut NarWriter<W>) {
    match tree {
        Tree::File {
            executable,
            contents,
        } => w
            .regular(*executable, contents.len() as u64, &mut &contents[..])
            .unwrap(),
        Tree::Symlink(target) => w.symlink(target).unwrap(),
        Tree::Dir(entries) => {
            w.start_directory().unwrap();
            // BTreeMap iterates in byte order, the order NAR wants.
            for (name, child) in entries {
                w.entry(name).unwrap();
                write_events(child, w);
                w.end_entry().unwrap();
            }
            w.end_directory().unwrap();
        }
    }
}

fn count_nodes(tree: &Tree) -> usize {
    match tree {
        Tree::Dir(entries) => 1 + entries.values().map(count_nodes).sum::<usize>(),
        _ => 1,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn dump_restore_dump_round_trips(tree in tree_strategy()) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        build_tree(&tree, &src);

        let mut first = Vec::new();
        nar::dump_path(&src, &mut first).unwrap();

        let mut w = NarWriter::new(Vec::new());
        write_events(&tree, &mut w);
        let (from_events, _) = w.finish().unwrap();
        prop_assert_eq!(&from_events, &first);

        let (hash, size) = nar::hash_path(&src, HashAlgo::Sha256).unwrap();
        prop_assert_eq!(size, first.len() as u64);
        let mut h = Hasher::new(HashAlgo::Sha256);
        h.update(&first);
        prop_assert_eq!(hash, h.finish());

        prop_assert_eq!(nar::list(&mut &first[..]).unwrap().len(), count_nodes(&tree));

        let dst = dir.path().join("dst");
        nar::restore(&mut &first[..], &dst).unwrap();
        let mut second = Vec::new();
        nar::dump_path(&dst, &mut second).unwrap();
        prop_assert_eq!(second, first);
    }

    /// Whatever the bytes, parsing returns an error or a size, never panics.
    #[test]
    fn parsing_garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = nar::validate(&mut &bytes[..]);
    }

    /// Corrupting one byte of a valid NAR either leaves it valid or is an error.
    #[test]
    fn single_byte_corruption_is_handled(tree in tree_strategy(), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut w = NarWriter::new(Vec::new());
        write_events(&tree, &mut w);
        let (mut bytes, _) = w.finish().unwrap();
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        let mut sink = Reencode(Some(NarWriter::new(Vec::new())));
        if nar::parse(&mut &bytes[..], &mut sink).is_ok() {
            // Still valid means still canonical: it must re-encode identically.
            let w = sink.0.take().unwrap();
            prop_assert_eq!(w.finish().unwrap().0, bytes);
        }
    }
}

/// Feeds what the parser reports back into a writer, to check that accepted NARs
/// are exactly the canonical ones.
struct Reencode(Option<NarWriter<Vec<u8>>>);

impl Reencode {
    fn w(&mut self) -> &mut NarWriter<Vec<u8>> {
        self.0.as_mut().unwrap()
    }

    fn enter(&mut self, path: &[u8]) -> Result<(), nar::NarError> {
        if path.is_empty() {
            return Ok(());
        }
        let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
        self.w().entry(name)
    }

    fn leave(&mut self, path: &[u8]) -> Result<(), nar::NarError> {
        if path.is_empty() {
            Ok(())
        } else {
            self.w().end_entry()
        }
    }
}

impl nar::NarSink for Reencode {
    fn create_directory(&mut self, path: &[u8]) -> Result<(), nar::NarError> {
        self.enter(path)?;
        self.w().start_directory()
    }

    fn create_file(
        &mut self,
        path: &[u8],
        executable: bool,
        size: u64,
        contents: &mut dyn Read,
    ) -> Result<(), nar::NarError> {
        self.enter(path)?;
        self.w().regular(executable, size, contents)?;
        self.leave(path)
    }

    fn create_symlink(&mut self, path: &[u8], target: &[u8]) -> Result<(), nar::NarError> {
        self.enter(path)?;
        self.w().symlink(target)?;
        self.leave(path)
    }

    fn close_directory(&mut self, path: &[u8]) -> Result<(), nar::NarError> {
        self.w().end_directory()?;
        self.leave(path)
    }
}
