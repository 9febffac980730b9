//! `buildit image inspect` on a file: an oci-archive (a tar of an OCI layout,
//! read in place by digest) or an ACI. Never a panic; what is accepted was read
//! with every blob checked, and re-reading it gives the same answer.

#![no_main]

use buildit::image::inspect::inspect;
use buildit::image::layout::Layout;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let t = tempfile::tempdir().expect("temp dir");
    let file = t.path().join("image.tar");
    std::fs::write(&file, data).expect("write input");
    if let Ok(infos) = inspect(&file, true) {
        assert_eq!(infos.len(), 1);
        let again = inspect(&file, true).expect("inspected once, so twice");
        assert_eq!(
            serde_json::to_string(&infos).expect("serialises"),
            serde_json::to_string(&again).expect("serialises")
        );
    }
    // The layout reader itself, config and blobs included.
    if let Ok(layout) = Layout::open_archive(&file) {
        if let Ok(image) = layout.first_image() {
            let _ = layout.config(&image.manifest);
            for l in image.manifest.layers() {
                if let Ok(mut blob) = layout.open_blob(l) {
                    let _ = std::io::copy(&mut blob, &mut std::io::sink());
                    let _ = blob.finish();
                }
            }
        }
    }
});
