//! A second, independent check against real Nix 2.8 (Debian's `nix-bin`): random file
//! trees and random derivations, compared byte for byte with what Nix produces for
//! store dir `/store`.
//!
//! Without `nix-store` on the PATH these tests skip, saying so, and under CI they fail
//! (`tests/common/skip.rs`): they never pass silently. `scripts/test.sh` installs
//! `nix-bin`, so CI always runs them.

#[path = "../../tests/common/skip.rs"]
mod skip;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use buildit_store::derivation::{Derivation, DerivationHasher, DerivationOutput};
use buildit_store::{nar, FileIngestion, Hash, HashAlgo, LocalStore, StorePath};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{TestCaseError, TestError, TestRunner};

/// A private Nix store with logical dir `/store` (see tests/vectors/README.md).
pub struct Oracle {
    dir: tempfile::TempDir,
}

impl Oracle {
    /// `None` after `skip` says why (a failure under CI) when Nix is absent.
    pub fn new() -> Option<Oracle> {
        skip::require_tool("nix-store", "scripts/test.sh installs nix-bin")?;
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path();
        std::fs::create_dir_all(b.join("etc")).unwrap();
        std::fs::create_dir_all(b.join("home")).unwrap();
        std::fs::write(
            b.join("etc/nix.conf"),
            format!(
                "store = {}\nexperimental-features = nix-command\nsandbox = false\nsubstituters =\nbuild-users-group =\n",
                Self::store_uri(b)
            ),
        )
        .unwrap();
        Some(Oracle { dir })
    }

    fn store_uri(b: &Path) -> String {
        format!("local?root={}&store=/store", b.join("root").display())
    }

    pub fn cmd(&self, program: &str) -> Command {
        let b = self.dir.path();
        let mut c = Command::new(program);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("NIX_CONF_DIR", b.join("etc"))
            .env("HOME", b.join("home"))
            .env("NIX_REMOTE", Self::store_uri(b));
        c
    }

    /// Run and return stdout bytes; panics with Nix's stderr on failure.
    pub fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Vec<u8> {
        self.try_run(program, args)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Run and return stdout bytes, or the command line and Nix's stderr on failure.
    pub fn try_run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Result<Vec<u8>, String> {
        let out = self.cmd(program).args(args).output().unwrap();
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(format!(
                "{program} {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    pub fn run_str(&self, program: &str, args: &[&std::ffi::OsStr]) -> String {
        String::from_utf8(self.run(program, args))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Where Nix keeps the file of a `/store/...` path.
    pub fn physical(&self, store_path: &str) -> PathBuf {
        self.dir
            .path()
            .join("root/nix/store")
            .join(store_path.strip_prefix("/store/").unwrap())
    }

    pub fn scratch(&self) -> PathBuf {
        self.dir.path().join("scratch")
    }
}

// ---------------------------------------------------------------------------
// Random file trees

#[derive(Debug, Clone)]
enum Node {
    File { exec: bool, contents: Vec<u8> },
    Link(String),
    Dir(Vec<(String, Node)>),
}

fn name() -> impl Strategy<Value = String> {
    // Names that stress sorting: case, punctuation, UTF-8, prefixes of each other.
    prop_oneof![
        "[a-zA-Z0-9._+-]{1,12}",
        Just("a".to_string()),
        Just("a-b".to_string()),
        Just("a.b".to_string()),
        Just("aa".to_string()),
        Just("B".to_string()),
        Just("_".to_string()),
        Just("é".to_string()),
        Just("日本".to_string()),
    ]
    .prop_filter("not . or ..", |n| n != "." && n != "..")
}

fn contents() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..64),
        2 => proptest::collection::vec(any::<u8>(), 0..5000),
        1 => (0u8..=255, 60_000usize..300_000).prop_map(|(b, n)| vec![b; n]),
    ]
}

fn node() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        (any::<bool>(), contents()).prop_map(|(exec, contents)| Node::File { exec, contents }),
        prop_oneof![
            "[a-z./]{1,20}",
            Just("/etc/passwd".to_string()),
            Just("../../x".to_string())
        ]
        .prop_map(Node::Link),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        proptest::collection::btree_map(name(), inner, 0..8)
            .prop_map(|m| Node::Dir(m.into_iter().collect()))
    })
}

fn write_node(path: &Path, node: &Node) {
    match node {
        Node::File { exec, contents } => {
            std::fs::write(path, contents).unwrap();
            let mode = if *exec { 0o755 } else { 0o644 };
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        Node::Link(t) => symlink(t, path).unwrap(),
        Node::Dir(entries) => {
            std::fs::create_dir(path).unwrap();
            for (n, child) in entries {
                write_node(&path.join(n), child);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, failure_persistence: None, ..ProptestConfig::default() })]

    /// NAR bytes, NAR hash and `nix-store --add` path agree with Nix for random trees.
    #[test]
    fn random_trees_match_nix(root in node()) {
        let Some(oracle) = Oracle::new() else { return Ok(()) };
        let t = tempfile::tempdir().unwrap();
        let tree = t.path().join("tree");
        write_node(&tree, &root);

        let mut ours = Vec::new();
        nar::dump_path(&tree, &mut ours).unwrap();
        let theirs = oracle.run("nix-store", &["--dump".as_ref(), tree.as_os_str()]);
        prop_assert!(ours == theirs, "NAR bytes differ ({} vs {} bytes)", ours.len(), theirs.len());

        let (h, size) = nar::hash_path(&tree, HashAlgo::Sha256).unwrap();
        prop_assert_eq!(size as usize, theirs.len());
        let nix_hash = oracle.run_str("nix", &["hash".as_ref(), "path".as_ref(), tree.as_os_str()]);
        prop_assert_eq!(h.to_sri(), nix_hash);

        let store = LocalStore::open(&t.path().join("root")).unwrap();
        let ours = store.add_path(&tree, "tree", FileIngestion::Recursive, HashAlgo::Sha256).unwrap();
        let theirs = oracle.run_str("nix-store", &["--add".as_ref(), tree.as_os_str()]);
        prop_assert_eq!(ours.to_string(), theirs.clone());
        // And what the store holds restores to a tree with the same NAR as Nix's copy.
        let (h2, _) = nar::hash_path(&store.physical_path(&ours), HashAlgo::Sha256).unwrap();
        let (h3, _) = nar::hash_path(&oracle.physical(&theirs), HashAlgo::Sha256).unwrap();
        prop_assert_eq!(h2, h3);
    }

    /// Fixed-output adds (flat and recursive, every algorithm) agree with Nix.
    #[test]
    fn random_fixed_adds_match_nix(data in contents(), algo in prop_oneof![
        Just(HashAlgo::Md5), Just(HashAlgo::Sha1), Just(HashAlgo::Sha256), Just(HashAlgo::Sha512)
    ], recursive in any::<bool>()) {
        let Some(oracle) = Oracle::new() else { return Ok(()) };
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("data.bin");
        std::fs::write(&f, &data).unwrap();
        let store = LocalStore::open(&t.path().join("root")).unwrap();
        let method = if recursive { FileIngestion::Recursive } else { FileIngestion::Flat };
        let ours = store.add_path(&f, "data.bin", method, algo).unwrap();
        let mut args: Vec<&std::ffi::OsStr> = vec!["--add-fixed".as_ref()];
        if recursive { args.push("--recursive".as_ref()); }
        args.push(algo.name().as_ref());
        args.push(f.as_os_str());
        prop_assert_eq!(ours.to_string(), oracle.run_str("nix-store", &args));
    }
}

// ---------------------------------------------------------------------------
// Random derivations: `derivation { … }` instantiated by Nix versus buildit's own
// lowering of the same attributes (nix-formats.md §3.5).
//
// One case is a small graph, written as one Nix expression:
//
//   let txt = builtins.toFile "…" "…${./src/LIT}…";     (optional)
//       fod = derivation { … outputHash = …; };          fixed-output
//       twin = derivation { … };                          (optional) same name and
//                                                         output as fod, other builder
//       multi = derivation { … outputs = [ … ]; };       2 or 3 outputs, random order
//       top = derivation { … };                           uses two outputs of multi,
//                                                         fod (and twin)
//   in [ fod twin multi top ]
//
// Every builder, arg and attribute value may interpolate the path literal, the
// toFile file or an output of an earlier derivation; attribute values may also be
// integers, booleans, null, lists, bare paths and bare derivations.

/// What a string or value refers to: the path literal `./src/LIT`, the
/// `builtins.toFile` result, or output `o` of earlier derivation `i` (`None`: the
/// derivation itself, which is its first listed output).
#[derive(Debug, Clone, PartialEq)]
enum Ref {
    Lit,
    Txt,
    Out(usize, Option<&'static str>),
}

#[derive(Debug, Clone)]
enum Seg<R> {
    Text(String),
    Ref(R),
}

/// An attribute value (`derivation` turns each into one env string).
#[derive(Debug, Clone)]
enum Val<R> {
    Str(Vec<Seg<R>>),
    Int(i64),
    Bool(bool),
    Null,
    List(Vec<Val<R>>),
    /// A bare path literal, toFile string or derivation, not inside a string.
    Ref(R),
}

fn map_segs<R, S>(segs: Vec<Seg<R>>, f: &mut impl FnMut(R) -> S) -> Vec<Seg<S>> {
    segs.into_iter()
        .map(|s| match s {
            Seg::Text(t) => Seg::Text(t),
            Seg::Ref(r) => Seg::Ref(f(r)),
        })
        .collect()
}

impl<R> Val<R> {
    fn map<S>(self, f: &mut impl FnMut(R) -> S) -> Val<S> {
        match self {
            Val::Str(s) => Val::Str(map_segs(s, f)),
            Val::Int(i) => Val::Int(i),
            Val::Bool(b) => Val::Bool(b),
            Val::Null => Val::Null,
            Val::List(items) => Val::List(items.into_iter().map(|v| v.map(f)).collect()),
            Val::Ref(r) => Val::Ref(f(r)),
        }
    }
}

/// How `outputHash` is written in the expression.
#[derive(Debug, Clone, Copy)]
enum Enc {
    Hex,
    HexUpper,
    Nix32,
    Base64,
    Sri,
    PrefixedHex,
    PrefixedNix32,
    PrefixedBase64,
}

impl Enc {
    /// A bare digest needs `outputHashAlgo`; SRI and `algo:` forms carry it.
    fn is_bare(self) -> bool {
        matches!(self, Enc::Hex | Enc::HexUpper | Enc::Nix32 | Enc::Base64)
    }
}

/// Whether and how `outputHashAlgo` is given.
#[derive(Debug, Clone, Copy)]
enum AlgoAttr {
    Omit,
    Name,
    Empty,
}

#[derive(Debug, Clone)]
struct Fixed {
    method: FileIngestion,
    /// Write `outputHashMode` (always, when recursive).
    mode_attr: bool,
    hash: Hash,
    enc: Enc,
    algo_attr: AlgoAttr,
}

impl Fixed {
    fn hash_string(&self) -> String {
        let h = &self.hash;
        let algo = h.algo();
        match self.enc {
            Enc::Hex => h.to_hex(),
            Enc::HexUpper => h.to_hex().to_uppercase(),
            Enc::Nix32 => h.to_nix32(),
            Enc::Base64 => h.to_base64(),
            Enc::Sri => h.to_sri(),
            Enc::PrefixedHex => format!("{algo}:{}", h.to_hex()),
            Enc::PrefixedNix32 => format!("{algo}:{}", h.to_nix32()),
            Enc::PrefixedBase64 => format!("{algo}:{}", h.to_base64()),
        }
    }

    fn mode_string(&self) -> Option<&'static str> {
        self.mode_attr.then_some(match self.method {
            FileIngestion::Flat => "flat",
            FileIngestion::Recursive => "recursive",
        })
    }

    fn algo_string(&self) -> Option<String> {
        match self.algo_attr {
            AlgoAttr::Omit => None,
            AlgoAttr::Name => Some(self.hash.algo().to_string()),
            AlgoAttr::Empty => Some(String::new()),
        }
    }
}

#[derive(Debug, Clone)]
struct DrvSpec<R> {
    /// The `let` variable that holds it.
    var: &'static str,
    name: String,
    system: String,
    builder: Vec<Seg<R>>,
    args: Vec<Vec<Seg<R>>>,
    attrs: BTreeMap<String, Val<R>>,
    /// `outputs = [ … ]` as written; `None`: not given (one output, `out`).
    outputs: Option<Vec<&'static str>>,
    fixed: Option<Fixed>,
}

impl<R> DrvSpec<R> {
    fn output_names(&self) -> Vec<&'static str> {
        self.outputs.clone().unwrap_or_else(|| vec!["out"])
    }
}

#[derive(Debug, Clone)]
struct DrvCase {
    lit_name: String,
    lit: Node,
    txt: Option<(String, Vec<Seg<Ref>>)>,
    nodes: Vec<DrvSpec<Ref>>,
}

/// Pieces of strings: everything ATerm escapes, other control bytes, `${`, `$`,
/// quotes Nix cares about, UTF-8 of every length, and store-path-like text (which
/// must not become an input: only string context does).
const PIECES: &[&str] = &[
    "a", "b", "Z", "0", "9", " ", "\"", "\\", "\n", "\r", "\t", "\r\n", "\u{1}", "\u{7}", "\u{8}",
    "\u{b}", "\u{c}", "\u{1b}", "\u{1f}", "\u{7f}", "\u{85}", "\u{a0}", "é", "日本", "🎉",
    "\u{feff}", "$", "${", "$${", "${x}", "{", "}", "'", "''", "\\$", "\\n", "-", "_", ".", "/",
    "/store/", "=", ";", "#", "(", ")", ",", "[", "]",
];

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            8 => proptest::sample::select(PIECES).prop_map(str::to_string),
            1 => any::<char>().prop_filter("no NUL", |c| *c != '\0').prop_map(String::from),
        ],
        0..=max,
    )
    .prop_map(|v| v.concat())
}

const OUTPUT_NAMES: [&str; 3] = ["out", "dev", "lib"];

/// Attribute names `derivation` treats specially, or that an output would overwrite.
fn reserved_key(k: &str) -> bool {
    k.starts_with("__")
        || OUTPUT_NAMES.contains(&k)
        || [
            "name",
            "system",
            "builder",
            "args",
            "outputs",
            "outputHash",
            "outputHashAlgo",
            "outputHashMode",
        ]
        .contains(&k)
}

fn key() -> impl Strategy<Value = String> {
    text(4).prop_filter("reserved attribute", |k| !reserved_key(k))
}

/// Store path names, all allowed characters (buildit forbids a leading dot), up to
/// the longest that still fits `-dev` and `.drv` in 211 bytes. Nix refuses
/// derivation names that end in `.drv`.
fn store_name() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-zA-Z0-9+_?=-][a-zA-Z0-9+._?=-]{0,15}",
        1 => "[a-zA-Z0-9+_?=-][a-zA-Z0-9+._?=-]{190,206}",
    ]
    .prop_filter("ends in .drv", |n| !n.ends_with(".drv"))
}

fn system() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("x86_64-linux".to_string()),
        Just("aarch64-darwin é".to_string()),
        // Nix 2.8 writes `system` unescaped, so buildit refuses `"`, `\` and controls;
        // Nix requires it to be non-empty.
        text(5).prop_map(|s| {
            let s: String = s
                .chars()
                .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
                .collect();
            if s.is_empty() {
                "x".to_string()
            } else {
                s
            }
        }),
    ]
}

fn segs(max: usize) -> impl Strategy<Value = Vec<Seg<Index>>> {
    proptest::collection::vec(
        prop_oneof![
            3 => text(5).prop_map(Seg::Text),
            1 => any::<Index>().prop_map(Seg::Ref),
        ],
        0..=max,
    )
}

fn val() -> impl Strategy<Value = Val<Index>> {
    let item = prop_oneof![
        5 => segs(4).prop_map(Val::Str),
        1 => prop_oneof![-9i64..10, -(1i64 << 62)..(1i64 << 62)].prop_map(Val::Int),
        1 => any::<bool>().prop_map(Val::Bool),
        1 => Just(Val::Null),
        2 => any::<Index>().prop_map(Val::Ref),
    ];
    prop_oneof![
        4 => item.clone(),
        1 => proptest::collection::vec(item, 0..4).prop_map(Val::List),
    ]
}

fn fixed() -> impl Strategy<Value = Fixed> {
    (
        proptest::sample::select(vec![
            HashAlgo::Md5,
            HashAlgo::Sha1,
            HashAlgo::Sha256,
            HashAlgo::Sha512,
        ]),
        proptest::collection::vec(any::<u8>(), 64),
        any::<bool>(),
        any::<bool>(),
        proptest::sample::select(vec![
            Enc::Hex,
            Enc::HexUpper,
            Enc::Nix32,
            Enc::Base64,
            Enc::Sri,
            Enc::PrefixedHex,
            Enc::PrefixedNix32,
            Enc::PrefixedBase64,
        ]),
        proptest::sample::select(vec![AlgoAttr::Omit, AlgoAttr::Name, AlgoAttr::Empty]),
    )
        .prop_map(|(algo, digest, recursive, mode_attr, enc, algo_attr)| {
            let method = if recursive {
                FileIngestion::Recursive
            } else {
                FileIngestion::Flat
            };
            Fixed {
                method,
                mode_attr: mode_attr || recursive,
                hash: Hash::from_digest(algo, &digest[..algo.size()]).unwrap(),
                enc,
                algo_attr: if enc.is_bare() {
                    AlgoAttr::Name
                } else {
                    algo_attr
                },
            }
        })
}

/// A derivation before its references are tied to what exists before it.
#[derive(Debug, Clone)]
struct RawDrv {
    name: String,
    system: String,
    builder: Vec<Seg<Index>>,
    args: Vec<Vec<Seg<Index>>>,
    attrs: BTreeMap<String, Val<Index>>,
    explicit_outputs: bool,
    outputs: Vec<&'static str>,
    n_outputs: usize,
    fixed: Fixed,
}

fn raw_drv() -> impl Strategy<Value = RawDrv> {
    (
        store_name(),
        system(),
        segs(3),
        proptest::collection::vec(segs(3), 0..4),
        proptest::collection::btree_map(key(), val(), 0..5),
        any::<bool>(),
        Just(OUTPUT_NAMES.to_vec()).prop_shuffle(),
        1usize..=3,
        fixed(),
    )
        .prop_map(
            |(name, system, builder, args, attrs, explicit_outputs, outputs, n_outputs, fixed)| {
                RawDrv {
                    name,
                    system,
                    builder,
                    args,
                    attrs,
                    explicit_outputs,
                    outputs,
                    n_outputs,
                    fixed,
                }
            },
        )
}

impl RawDrv {
    /// Tie the references to what `avail` offers. Nix requires a non-empty builder.
    fn resolve(
        self,
        var: &'static str,
        outputs: Option<Vec<&'static str>>,
        fixed: Option<Fixed>,
        avail: &[Ref],
    ) -> DrvSpec<Ref> {
        let mut f = |i: Index| i.get(avail).clone();
        let mut builder = map_segs(self.builder, &mut f);
        if builder
            .iter()
            .all(|s| matches!(s, Seg::Text(t) if t.is_empty()))
        {
            builder.push(Seg::Text("b".into()));
        }
        DrvSpec {
            var,
            name: self.name,
            system: self.system,
            builder,
            args: self.args.into_iter().map(|a| map_segs(a, &mut f)).collect(),
            attrs: self
                .attrs
                .into_iter()
                .map(|(k, v)| (k, v.map(&mut f)))
                .collect(),
            outputs,
            fixed,
        }
    }
}

/// Everything a derivation placed after `nodes` may refer to.
fn available(has_txt: bool, nodes: &[DrvSpec<Ref>]) -> Vec<Ref> {
    let mut v = vec![Ref::Lit];
    if has_txt {
        v.push(Ref::Txt);
    }
    for (i, n) in nodes.iter().enumerate() {
        v.push(Ref::Out(i, None));
        v.extend(n.output_names().into_iter().map(|o| Ref::Out(i, Some(o))));
    }
    v
}

fn lit_tree() -> impl Strategy<Value = Node> {
    let file = (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..64))
        .prop_map(|(exec, contents)| Node::File { exec, contents });
    prop_oneof![
        3 => file.clone(),
        1 => proptest::collection::btree_map(name(), file, 0..3)
            .prop_map(|m| Node::Dir(m.into_iter().collect())),
    ]
}

fn drv_case() -> impl Strategy<Value = DrvCase> {
    (
        "[a-zA-Z0-9_+-][a-zA-Z0-9._+-]{0,11}".prop_filter("ends in .drv", |n| !n.ends_with(".drv")),
        lit_tree(),
        proptest::option::of((store_name(), segs(4))),
        raw_drv(),
        proptest::option::weighted(0.4, raw_drv()),
        raw_drv(),
        raw_drv(),
        (key(), any::<bool>(), proptest::collection::vec(text(3), 5)),
    )
        .prop_map(|(lit_name, lit, txt, fod, twin, multi, top, forced)| {
            let txt = txt.map(|(n, s)| (n, map_segs(s, &mut |_| Ref::Lit)));
            let has_txt = txt.is_some();
            let mut nodes = Vec::new();

            let fod_fixed = fod.fixed.clone();
            let outputs = fod.explicit_outputs.then(|| vec!["out"]);
            let fod_spec = fod.resolve(
                "fod",
                outputs,
                Some(fod_fixed.clone()),
                &available(has_txt, &nodes),
            );
            let fod_name = fod_spec.name.clone();
            nodes.push(fod_spec);

            let twin_index = twin.map(|twin| {
                // Same name, method and hash (so the same output path and modulo hash),
                // but its own way of writing them and another builder.
                let fixed = Fixed {
                    method: fod_fixed.method,
                    mode_attr: twin.fixed.mode_attr || fod_fixed.method == FileIngestion::Recursive,
                    hash: fod_fixed.hash.clone(),
                    ..twin.fixed.clone()
                };
                let outputs = twin.explicit_outputs.then(|| vec!["out"]);
                let mut spec =
                    twin.resolve("twin", outputs, Some(fixed), &available(has_txt, &nodes));
                spec.name = fod_name.clone();
                spec.builder.push(Seg::Text(" (twin)".into()));
                nodes.push(spec);
                nodes.len() - 1
            });

            let outputs = multi.outputs[..multi.n_outputs.max(2)].to_vec();
            let spec = multi.resolve("multi", Some(outputs), None, &available(has_txt, &nodes));
            nodes.push(spec);
            let multi_index = nodes.len() - 1;

            let outputs = top
                .explicit_outputs
                .then(|| top.outputs[..top.n_outputs].to_vec());
            let mut spec = top.resolve("top", outputs, None, &available(has_txt, &nodes));
            // Always: two outputs of one derivation and a fixed-output input.
            let multi_outs = nodes[multi_index].output_names();
            let mut refs = vec![
                Ref::Out(multi_index, Some(multi_outs[0])),
                Ref::Out(multi_index, Some(multi_outs[1])),
                Ref::Out(0, None),
            ];
            refs.extend(twin_index.map(|i| Ref::Out(i, None)));
            let (key, as_list, texts) = forced;
            let value = if as_list {
                Val::List(refs.into_iter().map(Val::Ref).collect())
            } else {
                let mut segs = Vec::new();
                for (r, t) in refs.into_iter().zip(texts) {
                    segs.push(Seg::Text(t));
                    segs.push(Seg::Ref(r));
                }
                Val::Str(segs)
            };
            spec.attrs.insert(key, value);
            nodes.push(spec);

            DrvCase {
                lit_name,
                lit,
                txt,
                nodes,
            }
        })
}

// --- writing the Nix expression

/// A Nix string literal. `"`, `\`, LF, CR and TAB are escaped (a raw CR would be
/// read as LF), and so is every `$` (so `${` and `$${` stay text); everything else,
/// including other control bytes and UTF-8, is written raw.
fn nix_string(segs: &[Seg<Ref>], case: &DrvCase) -> String {
    let mut o = String::from("\"");
    for seg in segs {
        match seg {
            Seg::Text(t) => {
                for c in t.chars() {
                    match c {
                        '\\' => o.push_str("\\\\"),
                        '"' => o.push_str("\\\""),
                        '\n' => o.push_str("\\n"),
                        '\r' => o.push_str("\\r"),
                        '\t' => o.push_str("\\t"),
                        '$' => o.push_str("\\$"),
                        c => o.push(c),
                    }
                }
            }
            Seg::Ref(r) => {
                o.push_str("${");
                o.push_str(&nix_ref(r, case));
                o.push('}');
            }
        }
    }
    o.push('"');
    o
}

fn nix_text(s: &str, case: &DrvCase) -> String {
    nix_string(&[Seg::Text(s.to_string())], case)
}

fn nix_ref(r: &Ref, case: &DrvCase) -> String {
    match r {
        Ref::Lit => format!("./src/{}", case.lit_name),
        Ref::Txt => "txt".to_string(),
        Ref::Out(i, None) => case.nodes[*i].var.to_string(),
        Ref::Out(i, Some(o)) => format!("{}.{o}", case.nodes[*i].var),
    }
}

fn nix_val(v: &Val<Ref>, case: &DrvCase) -> String {
    match v {
        Val::Str(s) => nix_string(s, case),
        Val::Int(i) if *i < 0 => format!("({i})"),
        Val::Int(i) => i.to_string(),
        Val::Bool(b) => b.to_string(),
        Val::Null => "null".to_string(),
        Val::List(items) => {
            let items: Vec<String> = items.iter().map(|v| nix_val(v, case)).collect();
            format!("[ {} ]", items.join(" "))
        }
        Val::Ref(r) => nix_ref(r, case),
    }
}

fn nix_expr(case: &DrvCase) -> String {
    let mut e = String::from("let\n");
    if let Some((name, contents)) = &case.txt {
        e += &format!(
            "  txt = builtins.toFile {} {};\n",
            nix_text(name, case),
            nix_string(contents, case)
        );
    }
    for d in &case.nodes {
        e += &format!("  {} = derivation {{\n", d.var);
        e += &format!("    name = {};\n", nix_text(&d.name, case));
        e += &format!("    system = {};\n", nix_text(&d.system, case));
        e += &format!("    builder = {};\n", nix_string(&d.builder, case));
        if !d.args.is_empty() {
            let args: Vec<String> = d.args.iter().map(|a| nix_string(a, case)).collect();
            e += &format!("    args = [ {} ];\n", args.join(" "));
        }
        for (k, v) in &d.attrs {
            e += &format!("    {} = {};\n", nix_text(k, case), nix_val(v, case));
        }
        if let Some(outputs) = &d.outputs {
            let outputs: Vec<String> = outputs.iter().map(|o| format!("\"{o}\"")).collect();
            e += &format!("    outputs = [ {} ];\n", outputs.join(" "));
        }
        if let Some(f) = &d.fixed {
            e += &format!("    outputHash = \"{}\";\n", f.hash_string());
            if let Some(a) = f.algo_string() {
                e += &format!("    outputHashAlgo = \"{a}\";\n");
            }
            if let Some(m) = f.mode_string() {
                e += &format!("    outputHashMode = \"{m}\";\n");
            }
        }
        e += "  };\n";
    }
    let vars: Vec<&str> = case.nodes.iter().map(|d| d.var).collect();
    e += &format!("in [ {} ]\n", vars.join(" "));
    e
}

// --- buildit's lowering (§3.5)

/// Turns values into env strings and collects the string context as inputs.
struct Lowering<'a> {
    case: &'a DrvCase,
    lit: &'a StorePath,
    txt: Option<&'a StorePath>,
    /// The derivations before this one, with their `.drv` paths.
    done: &'a [(StorePath, Derivation)],
    input_drvs: BTreeMap<StorePath, BTreeSet<String>>,
    input_srcs: BTreeSet<StorePath>,
}

impl Lowering<'_> {
    fn reference(&mut self, r: &Ref) -> String {
        match r {
            Ref::Lit => {
                self.input_srcs.insert(self.lit.clone());
                self.lit.to_absolute()
            }
            Ref::Txt => {
                let txt = self.txt.expect("Txt is only offered when there is one");
                self.input_srcs.insert(txt.clone());
                txt.to_absolute()
            }
            Ref::Out(i, output) => {
                let output = output.unwrap_or(self.case.nodes[*i].output_names()[0]);
                let (drv_path, drv) = &self.done[*i];
                self.input_drvs
                    .entry(drv_path.clone())
                    .or_default()
                    .insert(output.to_string());
                drv.outputs[output].path().unwrap().to_absolute()
            }
        }
    }

    fn string(&mut self, segs: &[Seg<Ref>]) -> String {
        segs.iter()
            .map(|s| match s {
                Seg::Text(t) => t.clone(),
                Seg::Ref(r) => self.reference(r),
            })
            .collect()
    }

    fn value(&mut self, v: &Val<Ref>) -> String {
        match v {
            Val::Str(s) => self.string(s),
            Val::Int(i) => i.to_string(),
            Val::Bool(true) => "1".to_string(),
            Val::Bool(false) | Val::Null => String::new(),
            Val::List(items) => {
                let items: Vec<String> = items.iter().map(|v| self.value(v)).collect();
                items.join(" ")
            }
            Val::Ref(r) => self.reference(r),
        }
    }
}

/// The derivation `spec` lowers to, before its output paths are filled in.
fn lower(
    spec: &DrvSpec<Ref>,
    case: &DrvCase,
    lit: &StorePath,
    txt: Option<&StorePath>,
    done: &[(StorePath, Derivation)],
) -> Result<Derivation, String> {
    let mut lw = Lowering {
        case,
        lit,
        txt,
        done,
        input_drvs: BTreeMap::new(),
        input_srcs: BTreeSet::new(),
    };
    let builder = lw.string(&spec.builder);
    let args: Vec<String> = spec.args.iter().map(|a| lw.string(a)).collect();
    let mut env = BTreeMap::new();
    env.insert("name".to_string(), spec.name.clone());
    env.insert("system".to_string(), spec.system.clone());
    env.insert("builder".to_string(), builder.clone());
    for (k, v) in &spec.attrs {
        let v = lw.value(v);
        env.insert(k.clone(), v);
    }
    if let Some(outputs) = &spec.outputs {
        env.insert("outputs".to_string(), outputs.join(" "));
    }
    let mut outputs = BTreeMap::new();
    if let Some(f) = &spec.fixed {
        let written = f.hash_string();
        let algo = f.algo_string();
        env.insert("outputHash".to_string(), written.clone());
        if let Some(a) = &algo {
            env.insert("outputHashAlgo".to_string(), a.clone());
        }
        if let Some(m) = f.mode_string() {
            env.insert("outputHashMode".to_string(), m.to_string());
        }
        // Parse what the expression says, as a front end must.
        let default_algo = algo.as_deref().and_then(|a| a.parse::<HashAlgo>().ok());
        let hash = Hash::parse(&written, default_algo)
            .map_err(|e| format!("buildit cannot parse outputHash {written:?}: {e}"))?;
        if hash != f.hash {
            return Err(format!(
                "buildit parses outputHash {written:?} as {hash:?}, not {:?}",
                f.hash
            ));
        }
        outputs.insert(
            "out".to_string(),
            DerivationOutput::Fixed {
                path: None,
                method: f.method,
                hash,
            },
        );
    } else {
        for o in spec.output_names() {
            outputs.insert(o.to_string(), DerivationOutput::Deferred);
        }
    }
    // Each output id is also an env var (its path, filled in below).
    for o in outputs.keys() {
        env.insert(o.clone(), String::new());
    }
    Ok(Derivation {
        outputs,
        input_drvs: lw.input_drvs,
        input_srcs: lw.input_srcs,
        system: spec.system.clone(),
        builder,
        args,
        env,
    })
}

/// Control characters (other than LF) shown as `\u{…}`, so output stays readable.
fn visible(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\n' {
                format!("\\u{{{:x}}}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

/// What one case's failure report shows for each derivation.
#[derive(Default)]
struct NodeResult {
    ours_path: Option<String>,
    nix_path: Option<String>,
    ours: Option<Vec<u8>>,
    nix: Option<Vec<u8>>,
}

fn drv_report(
    expr: &str,
    nodes: &[DrvSpec<Ref>],
    results: &[NodeResult],
    problems: &[String],
) -> String {
    let mut r =
        String::from("\n==== mismatch with Nix 2.8 (control characters are shown as \\u{..})\n");
    for p in problems {
        r += &format!("* {}\n", visible(p));
    }
    r += "---- Nix expression:\n";
    r += &visible(expr);
    for (spec, res) in nodes.iter().zip(results) {
        let show = |p: &Option<String>| p.clone().unwrap_or_else(|| "(none)".into());
        let aterm = |a: &Option<Vec<u8>>| {
            a.as_ref().map_or("(none)".to_string(), |a| {
                visible(&String::from_utf8_lossy(a))
            })
        };
        r += &format!(
            "---- {}: buildit {} / Nix {}\n",
            spec.var,
            show(&res.ours_path),
            show(&res.nix_path)
        );
        if let (Some(a), Some(b)) = (&res.ours, &res.nix) {
            if a != b {
                r += &format!("  ATerms first differ at byte {}\n", first_difference(a, b));
            }
        }
        r += &format!("  buildit ATerm: {}\n", aterm(&res.ours));
        r += &format!("  Nix ATerm:     {}\n", aterm(&res.nix));
    }
    r
}

/// Lower and write one case with buildit, instantiate it with Nix, and compare.
fn check_drv_case(
    oracle: &Oracle,
    store: &LocalStore,
    dir: &Path,
    case: &DrvCase,
) -> Result<(), TestCaseError> {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let lit_file = dir.join("src").join(&case.lit_name);
    write_node(&lit_file, &case.lit);
    let expr = nix_expr(case);
    let expr_file = dir.join("e.nix");
    std::fs::write(&expr_file, &expr).unwrap();

    let mut results: Vec<NodeResult> = case.nodes.iter().map(|_| NodeResult::default()).collect();
    let mut problems = Vec::new();
    let fail = |results: &[NodeResult], problems: &[String]| {
        TestCaseError::fail(drv_report(&expr, &case.nodes, results, problems))
    };

    // buildit: add the sources, then lower, fill and write each derivation, loading
    // inputs from the .drv files it wrote itself.
    let lit = store
        .add_path(
            &lit_file,
            &case.lit_name,
            FileIngestion::Recursive,
            HashAlgo::Sha256,
        )
        .unwrap();
    let txt = case.txt.as_ref().map(|(name, segs)| {
        let mut lw = Lowering {
            case,
            lit: &lit,
            txt: None,
            done: &[],
            input_drvs: BTreeMap::new(),
            input_srcs: BTreeSet::new(),
        };
        let contents = lw.string(segs);
        store
            .add_text(name, contents.as_bytes(), &lw.input_srcs)
            .unwrap()
    });
    let mut done: Vec<(StorePath, Derivation)> = Vec::new();
    let mut hasher = DerivationHasher::new(|p: &StorePath| store.read_derivation(p));
    for (k, spec) in case.nodes.iter().enumerate() {
        let mut drv =
            lower(spec, case, &lit, txt.as_ref(), &done).map_err(|e| fail(&results, &[e]))?;
        if let Err(e) = hasher.fill_output_paths(&mut drv) {
            return Err(fail(
                &results,
                &[format!("{}: fill_output_paths: {e}", spec.var)],
            ));
        }
        let path = match store.add_derivation(&drv) {
            Ok(p) => p,
            Err(e) => {
                return Err(fail(
                    &results,
                    &[format!("{}: add_derivation: {e}", spec.var)],
                ))
            }
        };
        prop_assert_eq!(Some(path.clone()), drv.drv_path().ok());
        results[k].ours_path = Some(path.to_absolute());
        results[k].ours = Some(std::fs::read(store.physical_path(&path)).unwrap());
        if results[k].ours.as_deref() != Some(drv.to_aterm().unwrap().as_bytes()) {
            problems.push(format!(
                "{}: the store's .drv file is not to_aterm()",
                spec.var
            ));
        }
        done.push((path, drv));
    }

    // Nix: instantiate the whole list; one .drv path per line (`!out` suffixes for
    // derivations whose first output is not `out`).
    let stdout = oracle
        .try_run("nix-instantiate", &[expr_file.as_os_str()])
        .map_err(|e| fail(&results, &[e]))?;
    let nix_paths: Vec<String> = String::from_utf8(stdout)
        .unwrap()
        .lines()
        .map(|l| l.split('!').next().unwrap().to_string())
        .collect();
    if nix_paths.len() != case.nodes.len() {
        return Err(fail(
            &results,
            &[format!("nix-instantiate printed {nix_paths:?}")],
        ));
    }
    for (k, p) in nix_paths.iter().enumerate() {
        results[k].nix_path = Some(p.clone());
        results[k].nix = Some(std::fs::read(oracle.physical(p)).unwrap());
    }

    // Nix re-checks buildit's .drv files: `nix-store --add` of each as `<name>.drv`
    // (registering a .drv verifies its output paths), then `nix show-derivation` of
    // those copies and of Nix's own .drvs.
    let mut copies = Vec::new();
    for (k, (_, drv)) in done.iter().enumerate() {
        let f = dir
            .join(format!("ours{k}"))
            .join(format!("{}.drv", drv.name().unwrap()));
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, results[k].ours.as_ref().unwrap()).unwrap();
        copies.push(f);
    }
    let args: Vec<&std::ffi::OsStr> = copies.iter().map(|f| f.as_os_str()).collect();
    let added: Vec<String> =
        match oracle.try_run("nix-store", &[&["--add".as_ref()], &args[..]].concat()) {
            Ok(out) => String::from_utf8(out)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect(),
            Err(e) => {
                problems.push(format!("Nix refuses buildit's .drv files: {e}"));
                Vec::new()
            }
        };
    let mut show_args: Vec<&std::ffi::OsStr> = vec!["show-derivation".as_ref()];
    show_args.extend(nix_paths.iter().map(std::ffi::OsStr::new));
    show_args.extend(added.iter().map(std::ffi::OsStr::new));
    let json: serde_json::Value = match oracle.try_run("nix", &show_args) {
        Ok(out) => serde_json::from_slice(&out).unwrap(),
        Err(e) => {
            problems.push(format!("nix show-derivation fails: {e}"));
            serde_json::Value::Null
        }
    };

    for (k, ((path, drv), spec)) in done.iter().zip(&case.nodes).enumerate() {
        let var = spec.var;
        let nix_path = &nix_paths[k];
        let nix_bytes = results[k].nix.as_ref().unwrap();
        if &path.to_absolute() != nix_path {
            problems.push(format!("{var}: .drv path {path} but Nix has {nix_path}"));
        }
        if results[k].ours.as_ref() != Some(nix_bytes) {
            problems.push(format!("{var}: .drv bytes differ"));
        }
        if let Some(body) = json.get(nix_path) {
            let ours: BTreeMap<&String, Option<String>> = drv
                .outputs
                .iter()
                .map(|(id, o)| (id, o.path().map(StorePath::to_absolute)))
                .collect();
            let theirs: BTreeMap<&String, Option<String>> = body["outputs"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(id, o)| (id, o["path"].as_str().map(str::to_string)))
                .collect();
            if ours != theirs {
                problems.push(format!("{var}: output paths {ours:?}, Nix has {theirs:?}"));
            }
            let want = serde_json::json!({ nix_path.clone(): body.clone() });
            let ours = drv.to_nix_json(&StorePath::from_absolute(nix_path).unwrap());
            if ours != want {
                problems.push(format!(
                    "{var}: to_nix_json differs from nix show-derivation:\n  ours {ours}\n  Nix  {want}"
                ));
            }
        }
        if let Some(body) = added.get(k).and_then(|a| json.get(a)) {
            if body != &drv.to_nix_json_body() {
                problems.push(format!(
                    "{var}: Nix reads buildit's .drv as {body}, not {}",
                    drv.to_nix_json_body()
                ));
            }
        }
        match Derivation::from_aterm(nix_bytes) {
            Ok(parsed) => {
                if &parsed != drv {
                    problems.push(format!(
                        "{var}: from_aterm(Nix's .drv) differs from buildit's lowering"
                    ));
                }
                if let Err(e) = hasher.check_output_paths(&parsed) {
                    problems.push(format!("{var}: check_output_paths(Nix's .drv): {e}"));
                }
            }
            Err(e) => problems.push(format!("{var}: from_aterm(Nix's .drv): {e}")),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(fail(&results, &problems))
    }
}

/// Random derivation graphs: buildit's lowering of `derivation { … }` gives the same
/// `.drv` bytes, `.drv` paths, output paths and `nix show-derivation` JSON as Nix,
/// and Nix accepts the `.drv` files buildit wrote.
#[test]
fn random_derivations_match_nix() {
    let Some(oracle) = Oracle::new() else { return };
    let ours = tempfile::tempdir().unwrap();
    let store = LocalStore::open(ours.path()).unwrap();
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        // Every shrink step runs Nix (~0.1 s), so shrinking is capped.
        max_shrink_iters: 128,
        ..ProptestConfig::default()
    });
    let result = runner.run(&drv_case(), |case| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        check_drv_case(
            &oracle,
            &store,
            &oracle.scratch().join(format!("drv{n}")),
            &case,
        )
    });
    match result {
        Ok(()) => {}
        // The reason holds the expression and both ATerms of the smallest case found.
        Err(TestError::Fail(reason, _)) => panic!("{reason}"),
        Err(e) => panic!("{e}"),
    }
}

/// The oracle is really there, or the run says it is not (and CI fails).
#[test]
fn oracle_is_available_or_the_skip_is_visible() {
    if let Some(o) = Oracle::new() {
        let v = o.run_str("nix-store", &["--version".as_ref()]);
        assert!(v.contains("2."), "{v}");
    }
}
