//! `.deb` files (ar, control and data tars, every compression) through the
//! reader and the unpacker: never a panic, nothing written outside the
//! destination, and a refused package leaves no destination.

#![no_main]

use buildit::debian::deb::{read_control, unpack_deb};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let t = tempfile::tempdir().expect("temp dir");
    // The destination sits one level down, so that a write beside it shows.
    let deb = t.path().join("in.deb");
    std::fs::write(&deb, data).expect("write input");
    let work = t.path().join("work");
    std::fs::create_dir(&work).expect("work dir");
    let dest = work.join("out");

    if let Ok(control) = read_control(&deb) {
        let _ = control.field("Package");
        let _ = control.info_name();
    }
    match unpack_deb(&deb, &dest) {
        Ok(info) => {
            assert!(dest.is_dir(), "unpacked, but no destination");
            let _ = info.info_name();
        }
        Err(_) => assert!(
            std::fs::symlink_metadata(&dest).is_err(),
            "a refused package left its destination"
        ),
    }
    let beside: Vec<_> = std::fs::read_dir(&work)
        .expect("read work dir")
        .map(|e| e.expect("entry").file_name())
        .filter(|n| n != "out")
        .collect();
    assert!(
        beside.is_empty(),
        "written beside the destination: {beside:?}"
    );
    let top: Vec<_> = std::fs::read_dir(t.path())
        .expect("read temp dir")
        .map(|e| e.expect("entry").file_name())
        .filter(|n| n != "in.deb" && n != "work")
        .collect();
    assert!(top.is_empty(), "written outside the destination: {top:?}");
    // The unpacked tree may hold read-only directories.
    make_writable(&work);
});

fn make_writable(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if std::fs::symlink_metadata(&d).is_ok_and(|m| m.is_dir()) {
            let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700));
            if let Ok(rd) = std::fs::read_dir(&d) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
}
