//! The JSON documents of an OCI layout directory: the input is index.json, and
//! also a manifest blob named by a sound index. Never a panic; a digest that is
//! not sha256/sha512 lowercase hex is refused before anything is opened by it.

#![no_main]

use buildit::image::layout::{BlobDigest, Layout};
use buildit_store::Hash;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let t = tempfile::tempdir().expect("temp dir");
    let dir = t.path().join("layout");
    std::fs::create_dir(&dir).expect("layout dir");

    // 1. The input as index.json.
    std::fs::write(dir.join("index.json"), data).expect("write index");
    if let Ok(layout) = Layout::open_dir(&dir) {
        if let Ok(index) = layout.index() {
            for m in index.manifests() {
                if let Ok(d) = layout.digest_of(m) {
                    let name = d.blob_name();
                    assert!(!name.contains(".."), "{name}");
                    assert!(BlobDigest::parse(&d.to_string()).is_ok());
                }
            }
        }
        let _ = layout.first_image();
    }

    // 2. The input as the manifest a sound index names.
    let hex = Hash::sha256(data).to_hex();
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("blobs dir");
    std::fs::write(blobs.join(&hex), data).expect("write blob");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{hex}"),
            "size": data.len(),
        }],
    });
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("serialises"),
    )
    .expect("write index");
    if let Ok(layout) = Layout::open_dir(&dir) {
        if let Ok(image) = layout.first_image() {
            assert_eq!(image.manifest_bytes, data);
            let _ = layout.config(&image.manifest);
            for l in image.manifest.layers() {
                if let Ok(blob) = layout.open_blob(l) {
                    let _ = blob.finish();
                }
            }
        }
    }
});
