//! `buildit::audit::outputs` on real images written by `buildit::image::oci`: two
//! images that differ in one synced file must be reported as exactly that layer and
//! that file, with its line number.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use buildit::audit::outputs::{
    self, classify, ContentDiff, DiffOptions, EntryChange, Operand, PartChange,
};
use buildit::image::oci::{write_archive, write_layout, Compression, ImageConfig, LayerSpec};
use buildit::image::tar::entries;
use buildit::image::tree::ImageTree;

/// Two packages and one synced config file whose 12th line is `line12`.
fn image(root: &Path, line12: &str, compression: Compression) -> PathBuf {
    let pkg = root.join("pkg");
    fs::create_dir_all(pkg.join("usr/bin")).unwrap();
    fs::write(pkg.join("usr/bin/hello"), b"#!/bin/sh\necho hello\n").unwrap();
    let lib = root.join("lib");
    fs::create_dir_all(lib.join("usr/lib")).unwrap();
    fs::write(lib.join("usr/lib/libx.so"), vec![3u8; 100_000]).unwrap();
    let conf: String = (1..=20)
        .map(|i| {
            if i == 12 {
                format!("{line12}\n")
            } else {
                format!("setting{i} on\n")
            }
        })
        .collect();
    let sync = root.join("nginx.conf");
    fs::write(&sync, conf).unwrap();

    let mut tree = ImageTree::new();
    tree.add_tree("0123456789abcdfghijklmnpqrsvwxyz-hello-1.0", &pkg)
        .unwrap();
    tree.add_tree("zyxwvsrqpnmlkjihgfdcba9876543210-libx-2.0", &lib)
        .unwrap();
    tree.add_sync(&sync, "/etc/nginx/nginx.conf", None, (0, 0), false)
        .unwrap();
    let layers: Vec<LayerSpec> = (0..tree.providers.len())
        .map(|p| LayerSpec {
            label: tree.providers[p].clone(),
            entries: entries(&tree, Some(p)),
        })
        .collect();
    let out = root.join("oci");
    write_layout(
        &out,
        &layers,
        &ImageConfig::default(),
        "localhost/t:1",
        compression,
    )
    .unwrap();
    out
}

#[test]
fn one_synced_file_changed_names_only_its_layer_and_line() {
    let t = tempfile::tempdir().unwrap();
    let a = image(
        &t.path().join("a"),
        "worker_processes 1;",
        Compression::Gzip,
    );
    let b = image(
        &t.path().join("b"),
        "worker_processes 4;",
        Compression::Gzip,
    );
    assert_eq!(classify(&a).unwrap(), Operand::OciLayout(a.clone()));

    let d = outputs::diff(&a, &b, &DiffOptions::default()).unwrap();
    assert!(!d.is_empty());
    let changed_layers: Vec<&str> = d
        .parts
        .iter()
        .filter(|p| matches!(p.change, PartChange::Tree { .. }) && !p.is_same())
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(changed_layers, ["layer files (sync)"]);
    let same_layers = d
        .parts
        .iter()
        .filter(|p| matches!(p.change, PartChange::Tree { .. }) && p.is_same())
        .count();
    assert_eq!(same_layers, 2);

    let sync = d
        .parts
        .iter()
        .find(|p| p.name == "layer files (sync)")
        .unwrap();
    let PartChange::Tree { diff } = &sync.change else {
        unreachable!()
    };
    assert_eq!(diff.entries.len(), 1);
    assert_eq!(diff.entries[0].path, "etc/nginx/nginx.conf");
    match &diff.entries[0].change {
        EntryChange::Changed {
            meta,
            content: Some(ContentDiff::Text { lines, diff, .. }),
        } => {
            assert!(meta.is_empty());
            assert_eq!(lines, "12");
            assert!(
                diff.contains(&"+worker_processes 4;".to_string()),
                "{diff:?}"
            );
        }
        other => panic!("{other:?}"),
    }

    let text = d.to_string();
    assert!(
        text.starts_with(
            "layer files (sync): 1 changed\n  changed etc/nginx/nginx.conf: content (text, line 12)\n    @@ -9,7 +9,7 @@\n"
        ),
        "{text}"
    );
    assert!(text.contains("layer hello-1.0: same\n"), "{text}");
    assert!(text.contains("layer libx-2.0: same\n"), "{text}");
    // The layer digest changes, and so do the config's diff_ids and the manifest.
    assert!(text.contains("image config: changed"), "{text}");
    assert!(text.contains("manifest: changed"), "{text}");

    // JSON for --json.
    let json = serde_json::to_value(&d).unwrap();
    let part = json["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "layer files (sync)")
        .unwrap();
    assert_eq!(part["status"], "tree");
    assert_eq!(part["diff"]["entries"][0]["path"], "etc/nginx/nginx.conf");
    assert_eq!(part["diff"]["entries"][0]["content"]["lines"], "12");
}

#[test]
fn same_image_in_other_formats_has_no_differences() {
    let t = tempfile::tempdir().unwrap();
    let a = image(&t.path().join("a"), "x", Compression::Gzip);
    // Different compression: every digest differs, the files do not.
    let b = image(&t.path().join("b"), "x", Compression::Zstd);
    let archive = t.path().join("b.tar");
    write_archive(&b, &archive).unwrap();
    assert_eq!(
        classify(&archive).unwrap(),
        Operand::OciArchive(archive.clone())
    );

    let d = outputs::diff(&a, &archive, &DiffOptions::default()).unwrap();
    for p in &d.parts {
        match &p.change {
            PartChange::Tree { diff } => assert!(diff.is_empty(), "{}: {diff}", p.name),
            // Media types and digests differ.
            PartChange::Document { .. } => {}
            other => panic!("{}: {other:?}", p.name),
        }
    }
    let text = d.to_string();
    assert!(text.contains("layer files (sync): same\n"), "{text}");
    assert!(text.contains("image config: same\n"), "{text}");
    assert!(text.starts_with("manifest: changed"), "{text}");

    let d = outputs::diff(&a, &a, &DiffOptions::default()).unwrap();
    assert!(d.is_empty());
    assert_eq!(d.to_string(), "no differences\n");
}

/// Through the binary: two NARs of trees that differ in one text file, then the
/// same pair handed to diffoscope.
#[test]
fn the_cli_diffs_nars_and_hands_the_pair_to_diffoscope() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let mut nars = Vec::new();
    for (side, greeting) in [("a", "hello one\n"), ("b", "hello two\n")] {
        let dir = t.path().join(side);
        fs::create_dir_all(dir.join("share")).unwrap();
        fs::write(dir.join("share/greeting"), greeting).unwrap();
        fs::write(dir.join("share/same"), "unchanged\n").unwrap();
        let nar = t.path().join(format!("{side}.nar"));
        let out = common::build::ok(common::build::buildit(
            &root,
            &["store", "dump", dir.to_str().unwrap()],
        ));
        fs::write(&nar, out).unwrap();
        nars.push(nar);
    }
    let (a, b) = (nars[0].to_str().unwrap(), nars[1].to_str().unwrap());
    let out = common::build::buildit(&root, &["diff", a, b])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("changed share/greeting"), "{text}");
    assert!(
        text.contains("-hello one") && text.contains("+hello two"),
        "{text}"
    );
    assert!(!text.contains("share/same"), "{text}");
    let same = common::build::buildit(&root, &["diff", a, a])
        .output()
        .unwrap();
    assert_eq!(same.status.code(), Some(0));
    // Something that is not there: status 2 and the path named.
    let missing = common::build::buildit(&root, &["diff", a, "/nonexistent/x.nar"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/x.nar"));

    if common::images::require("diffoscope").is_none() {
        return;
    }
    let out = common::build::buildit(&root, &["diff", "--diffoscope", a, b])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    // Ours first, then diffoscope's own report of the same pair.
    let theirs = text.find(&format!("--- {a}")).expect("diffoscope's header");
    assert!(text[..theirs].contains("changed share/greeting"), "{text}");
    assert!(text[theirs..].contains("hello two"), "{text}");
}
