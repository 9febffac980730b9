//! The local store's guarantees: atomic adds, leftovers cleaned, concurrency, GC
//! roots, verification.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use buildit_store::local::{VerifyProblem, STORE_MTIME};
use buildit_store::{nar, FileIngestion, HashAlgo, LocalStore, StorePath};

fn tree(dir: &Path) {
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::write(dir.join("bin/tool"), "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(dir.join("bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(dir.join("README"), "read me\n").unwrap();
    symlink("bin/tool", dir.join("link")).unwrap();
}

fn add_tree(store: &LocalStore, src: &Path) -> StorePath {
    store
        .add_path(src, "pkg", FileIngestion::Recursive, HashAlgo::Sha256)
        .unwrap()
}

#[test]
fn add_normalises_and_registers() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    tree(&src);
    let store = LocalStore::open(&t.path().join("root")).unwrap();
    let p = add_tree(&store, &src);
    let phys = store.physical_path(&p);
    let md = |x: &str| fs::symlink_metadata(phys.join(x)).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        md("bin/tool").mode() & 0o7777,
        0o555,
        "setuid dropped, exec kept"
    );
    assert_eq!(md("README").mode() & 0o7777, 0o444);
    assert_eq!(md("bin").mode() & 0o7777, 0o555);
    for x in ["bin/tool", "README", "bin", "link", ""] {
        assert_eq!(md(x).mtime(), STORE_MTIME, "{x}");
    }
    let info = store.path_info(&p).unwrap().unwrap();
    let (h, size) = nar::hash_path(&src, HashAlgo::Sha256).unwrap();
    assert_eq!((info.nar_hash, info.nar_size), (h, size));
    // Adding the same content again is a no-op that gives the same path.
    assert_eq!(add_tree(&store, &src), p);
    assert_eq!(store.valid_paths().unwrap(), vec![p]);
    // Nothing left in the temp area.
    let tmp: Vec<_> = fs::read_dir(t.path().join("root/var/tmp"))
        .unwrap()
        .collect();
    assert!(tmp.is_empty(), "{tmp:?}");
}

#[test]
fn bad_inputs_leave_nothing() {
    let t = tempfile::tempdir().unwrap();
    let store = LocalStore::open(&t.path().join("root")).unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    nix::unistd::mkfifo(&src.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let err = store
        .add_path(&src, "x", FileIngestion::Recursive, HashAlgo::Sha256)
        .unwrap_err();
    assert!(err.to_string().contains("fifo"), "{err}");
    let err = store
        .add_path(&src, "x", FileIngestion::Flat, HashAlgo::Sha256)
        .unwrap_err();
    assert!(err.to_string().contains("regular file"), "{err}");
    let err = store
        .add_path(
            &t.path().join("missing"),
            "x",
            FileIngestion::Recursive,
            HashAlgo::Sha256,
        )
        .unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    assert!(store.valid_paths().unwrap().is_empty());
    assert_eq!(fs::read_dir(store.store_dir()).unwrap().count(), 0);
    assert_eq!(
        fs::read_dir(t.path().join("root/var/tmp")).unwrap().count(),
        0
    );
}

#[test]
fn leftovers_of_a_killed_writer_are_removed_on_open() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let src = t.path().join("src");
    tree(&src);
    let p = {
        let store = LocalStore::open(&root).unwrap();
        add_tree(&store, &src)
    };
    // A temp tree whose writer died (no lock held), and a path renamed into the
    // store whose registration never committed.
    fs::create_dir_all(root.join("var/tmp/add-1-2-3/x")).unwrap();
    let ghost: StorePath = "00000000000000000000000000000000-ghost".parse().unwrap();
    fs::create_dir(root.join("store").join(ghost.base_name())).unwrap();
    {
        let store = LocalStore::open(&root).unwrap();
        let r = store.verify(false).unwrap();
        assert_eq!(
            r.problems,
            vec![VerifyProblem::Unregistered {
                name: ghost.base_name().into()
            }]
        );
    }
    assert!(!root.join("var/tmp/add-1-2-3").exists());
    // GC removes the unregistered directory.
    let store = LocalStore::open(&root).unwrap();
    store.add_named_root("keep", &p).unwrap();
    let report = store.gc(false).unwrap();
    assert!(report.deleted.is_empty());
    assert_eq!(report.invalid_removed, vec![ghost.base_name().to_string()]);
    assert!(store.verify(true).unwrap().problems.is_empty());
}

/// A lock file whose tree is gone (a writer killed after moving its tree into
/// the store) is removed at the next open, unless someone holds it.
#[test]
fn stale_lock_files_are_removed_on_open_held_ones_kept() {
    use buildit_store::local::FileLock;
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    drop(LocalStore::open(&root).unwrap());
    let tmp = root.join("var/tmp");
    let stale = tmp.join("add-1-2-3.lock");
    let held = tmp.join("add-4-5-6.lock");
    fs::write(&stale, "").unwrap();
    let holder = FileLock::exclusive(&held).unwrap();
    drop(LocalStore::open(&root).unwrap());
    assert!(!stale.exists(), "an unheld lock without its tree goes");
    assert!(held.exists(), "a held lock stays");
    drop(holder);
    drop(LocalStore::open(&root).unwrap());
    assert!(!held.exists());
}

#[test]
fn verify_finds_tampering() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    tree(&src);
    let store = LocalStore::open(&t.path().join("root")).unwrap();
    let p = add_tree(&store, &src);
    let f = store.physical_path(&p).join("README");
    let dir = store.physical_path(&p);
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&f, "read mE\n").unwrap();
    let r = store.verify(false).unwrap();
    assert!(r.problems.is_empty(), "existence only");
    let r = store.verify(true).unwrap();
    assert!(
        matches!(&r.problems[..], [VerifyProblem::HashMismatch { path, .. }] if *path == p),
        "{:?}",
        r.problems
    );
    buildit_store::local::remove_tree(&dir).unwrap();
    let r = store.verify(false).unwrap();
    assert_eq!(r.problems, vec![VerifyProblem::Missing { path: p }]);
}

#[test]
fn gc_keeps_roots_and_their_closure() {
    let t = tempfile::tempdir().unwrap();
    let store = LocalStore::open(&t.path().join("root")).unwrap();
    let none = BTreeSet::new();
    let a = store.add_text("a", b"a", &none).unwrap();
    let b = store
        .add_text(
            "b",
            format!("uses {a}").as_bytes(),
            &BTreeSet::from([a.clone()]),
        )
        .unwrap();
    let c = store
        .add_text(
            "c",
            format!("uses {b}").as_bytes(),
            &BTreeSet::from([b.clone()]),
        )
        .unwrap();
    let lone = store.add_text("lone", b"x", &none).unwrap();
    let link = t.path().join("result");
    store.add_indirect_root(&link, &b).unwrap();
    assert_eq!(fs::read_link(&link).unwrap(), store.physical_path(&b));
    assert_eq!(store.resolve(link.to_str().unwrap()).unwrap().0, b);

    let dry = store.gc(true).unwrap();
    assert_eq!(
        dry.deleted.iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([&c, &lone])
    );
    assert!(store.is_valid(&c).unwrap(), "dry run deletes nothing");
    drop(store);

    let store = LocalStore::open(&t.path().join("root")).unwrap();
    let report = store.gc(false).unwrap();
    assert_eq!(
        report.deleted.iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([&c, &lone])
    );
    assert!(!store.physical_path(&c).exists());
    assert!(store.is_valid(&a).unwrap() && store.is_valid(&b).unwrap());

    // Removing the result link drops the root.
    fs::remove_file(&link).unwrap();
    let report = store.gc(false).unwrap();
    // Referrers go first.
    assert_eq!(report.deleted, vec![b, a]);
    assert!(store.valid_paths().unwrap().is_empty());
    assert!(store.verify(true).unwrap().problems.is_empty());
}

#[test]
fn references_must_be_valid() {
    let t = tempfile::tempdir().unwrap();
    let store = LocalStore::open(&t.path().join("root")).unwrap();
    let ghost: StorePath = "00000000000000000000000000000000-ghost".parse().unwrap();
    let err = store
        .add_text("x", b"x", &BTreeSet::from([ghost]))
        .unwrap_err();
    assert!(err.to_string().contains("is not valid"), "{err}");
    assert!(store.valid_paths().unwrap().is_empty());
    // The directory was moved in but not registered: the next open removes it.
    drop(store);
    let store = LocalStore::open(&t.path().join("root")).unwrap();
    assert!(store.verify(false).unwrap().problems.is_empty());
}

#[test]
fn concurrent_adds_of_the_same_and_different_paths() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let srcs: Vec<_> = (0..4)
        .map(|i| {
            let d = t.path().join(format!("src{i}"));
            fs::create_dir(&d).unwrap();
            for j in 0..50 {
                fs::write(d.join(format!("f{j}")), format!("{i}-{j}\n").repeat(100)).unwrap();
            }
            d
        })
        .collect();
    let paths: Vec<Vec<StorePath>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|k| {
                let root = &root;
                let srcs = &srcs;
                s.spawn(move || {
                    // Each thread has its own connection, as separate processes would.
                    let store = LocalStore::open(root).unwrap();
                    (0..4)
                        .map(|i| add_tree(&store, &srcs[(i + k) % 4]))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let distinct: BTreeSet<_> = paths.into_iter().flatten().collect();
    assert_eq!(distinct.len(), 4);
    let store = LocalStore::open(&root).unwrap();
    assert_eq!(store.valid_paths().unwrap().len(), 4);
    assert!(store.verify(true).unwrap().problems.is_empty());
}

#[test]
fn add_nar_checks_hash_and_size() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    tree(&src);
    let a = LocalStore::open(&t.path().join("a")).unwrap();
    let p = add_tree(&a, &src);
    let info = a.path_info(&p).unwrap().unwrap();
    let mut bytes = Vec::new();
    nar::dump_path(&a.physical_path(&p), &mut bytes).unwrap();

    let b = LocalStore::open(&t.path().join("b")).unwrap();
    let mut bad = bytes.clone();
    let i = bad.windows(7).position(|w| w == b"read me").unwrap();
    bad[i] = b'R';
    let err = b.add_nar(&info, &mut &bad[..]).unwrap_err();
    assert!(err.to_string().contains("hash mismatch"), "{err}");
    assert!(!b.is_valid(&p).unwrap());
    assert!(!b.physical_path(&p).exists());

    b.add_nar(&info, &mut &bytes[..]).unwrap();
    assert_eq!(b.path_info(&p).unwrap().unwrap().nar_hash, info.nar_hash);
    assert!(b.verify(true).unwrap().problems.is_empty());
}

/// A content address is unsigned in a narinfo: `add_nar` believes it only when
/// it makes the path and holds for the content.
#[test]
fn add_nar_checks_content_address_claims() {
    use buildit_store::{ContentAddress, Hash};
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    tree(&src);
    let a = LocalStore::open(&t.path().join("a")).unwrap();
    let p = add_tree(&a, &src);
    let info = a.path_info(&p).unwrap().unwrap();
    let mut bytes = Vec::new();
    nar::dump_path(&a.physical_path(&p), &mut bytes).unwrap();
    let flat_src = t.path().join("flat");
    fs::write(&flat_src, "flat bytes\n").unwrap();
    let flat = a
        .add_path(&flat_src, "flat", FileIngestion::Flat, HashAlgo::Sha1)
        .unwrap();
    let flat_info = a.path_info(&flat).unwrap().unwrap();
    let mut flat_nar = Vec::new();
    nar::dump_path(&a.physical_path(&flat), &mut flat_nar).unwrap();

    let b = LocalStore::open(&t.path().join("b")).unwrap();
    let refused = |info: &buildit_store::PathInfo, nar: &[u8], why: &str| {
        let err = b.add_nar(info, &mut &nar[..]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("content address") && msg.contains(why),
            "{msg}"
        );
        assert!(!b.is_valid(&info.path).unwrap());
        assert!(!b.physical_path(&info.path).exists());
    };
    // Another hash than the content's: its path is another path.
    let mut lie = info.clone();
    lie.ca = Some(ContentAddress::Fixed(
        FileIngestion::Recursive,
        Hash::sha256(b"something else"),
    ));
    refused(&lie, &bytes, "it makes the path");
    // Input-addressed in truth (no claim): accepted as such, claim-free.
    let mut plain = info.clone();
    plain.ca = None;
    // A claim of flat content for a tree.
    let mut flat_lie = flat_info.clone();
    flat_lie.ca = Some(ContentAddress::Fixed(
        FileIngestion::Flat,
        Hash::of(HashAlgo::Sha1, b"other bytes\n"),
    ));
    refused(&flat_lie, &flat_nar, "it makes the path");
    // A claim with references where none may be.
    let mut with_refs = flat_info.clone();
    with_refs.references.insert(p.clone());
    refused(&with_refs, &flat_nar, "references");
    // The path is right for the claim, the NAR is another file's (its NAR hash
    // and size are what the narinfo says): the content check refuses it.
    let other = t.path().join("other");
    fs::write(&other, "other bytes\n").unwrap();
    let mut other_nar = Vec::new();
    nar::dump_path(&other, &mut other_nar).unwrap();
    let mut swapped = flat_info.clone();
    (swapped.nar_hash, swapped.nar_size) = nar::hash_path(&other, HashAlgo::Sha256).unwrap();
    refused(&swapped, &other_nar, "the content hashes to");
    // True claims pass, and the content is checked: recursive sha256 and flat sha1.
    b.add_nar(&info, &mut &bytes[..]).unwrap();
    assert_eq!(b.path_info(&p).unwrap().unwrap().ca, info.ca);
    b.add_nar(&flat_info, &mut &flat_nar[..]).unwrap();
    assert_eq!(b.path_info(&flat).unwrap().unwrap().ca, flat_info.ca);
    assert!(plain.check_ca_path().is_ok());
}

/// The root of an added path may be a symlink, even a dangling one (found by the Nix
/// oracle test: flushing must not follow it).
#[test]
fn add_dangling_symlink_root() {
    let t = tempfile::tempdir().unwrap();
    let link = t.path().join("link");
    symlink("../../nowhere", &link).unwrap();
    let store = LocalStore::open(&t.path().join("root")).unwrap();
    let p = store
        .add_path(&link, "link", FileIngestion::Recursive, HashAlgo::Sha256)
        .unwrap();
    assert_eq!(
        fs::read_link(store.physical_path(&p)).unwrap(),
        Path::new("../../nowhere")
    );
    assert!(store.verify(true).unwrap().problems.is_empty());
}

/// A derivation written to the store lands at its `.drv` path, references its
/// inputs, records its outputs, and reads back equal.
#[test]
fn derivations_in_the_store() {
    use buildit_store::{Derivation, DerivationOutput};
    let t = tempfile::tempdir().unwrap();
    let store = LocalStore::open(&t.path().join("root")).unwrap();
    let src = store
        .add_text("builder.sh", b"echo hi > $out", &BTreeSet::new())
        .unwrap();
    let mut drv = Derivation {
        system: "x86_64-linux".into(),
        builder: "/bin/sh".into(),
        args: vec![src.to_string()],
        input_srcs: BTreeSet::from([src.clone()]),
        ..Default::default()
    };
    drv.outputs.insert("out".into(), DerivationOutput::Deferred);
    drv.env.insert("name".into(), "demo".into());
    drv.env.insert("builder".into(), "/bin/sh".into());
    drv.env.insert("system".into(), "x86_64-linux".into());
    drv.fill_output_paths(
        |_: &StorePath| -> Result<_, buildit_store::derivation::DerivationError> {
            unreachable!("no input derivations")
        },
    )
    .unwrap();
    let p = store.add_derivation(&drv).unwrap();
    assert_eq!(p, drv.drv_path().unwrap());
    assert_eq!(store.read_derivation(&p).unwrap(), drv);
    let info = store.path_info(&p).unwrap().unwrap();
    assert_eq!(info.references, BTreeSet::from([src]));
    let out = drv.outputs["out"].path().unwrap().clone();
    assert_eq!(
        store.derivation_outputs(&p).unwrap(),
        vec![("out".to_string(), out)]
    );
}

/// A collection waits while another store handle (standing for another process) is
/// writing, so a path being added or built is never collected under its feet.
#[test]
fn gc_waits_for_writers() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let writer = LocalStore::open(&root).unwrap();
    let p = writer
        .add_text("fresh", b"not rooted yet", &BTreeSet::new())
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let collector = std::thread::spawn({
        let root = root.clone();
        move || {
            let store = LocalStore::open(&root).unwrap();
            let report = store.gc(false).unwrap();
            tx.send(()).unwrap();
            report
        }
    });
    assert!(
        rx.recv_timeout(std::time::Duration::from_millis(500))
            .is_err(),
        "gc must wait for the writer"
    );
    // While waiting, the writer roots its path; then it finishes.
    writer.add_named_root("fresh", &p).unwrap();
    drop(writer);
    let report = collector.join().unwrap();
    assert!(report.deleted.is_empty(), "{:?}", report.deleted);
    let store = LocalStore::open(&root).unwrap();
    assert!(store.is_valid(&p).unwrap());
}
