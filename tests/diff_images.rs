//! `buildit diff` on two builds of the seed's nginx-prod whose synced nginx.conf
//! differs in one line: the derivations name the sync, and the images (ACI and
//! OCI) differ in that one file of the sync layer, shown with its line.

mod common;

use std::fs;

use common::build::*;

#[test]
fn two_nginx_prod_builds_with_one_changed_sync_line_differ_in_that_line_only() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    copy_spec("samples/nginx-prod", &a);
    copy_spec("samples/nginx-prod", &b);
    let conf = b.join("files/nginx.conf");
    let text = fs::read_to_string(&conf).unwrap();
    assert_eq!(text.lines().nth(15), Some("worker_processes auto;"));
    fs::write(
        &conf,
        text.replace("worker_processes auto;", "worker_processes 4;"),
    )
    .unwrap();
    let root = shared_root();
    let outs_a = lock_and_build(&root, &a, &["--no-link"]);
    let outs_b = lock_and_build(&root, &b, &["--no-link"]);
    assert_eq!(outs_a.len(), 3, "{outs_a:?}");
    assert_eq!(outs_a[0], outs_b[0], "the nginx package is the same");

    // Why: the sync of /etc/nginx/nginx.conf, and nothing about nginx itself.
    let why = buildit(&root, &["diff", a.to_str().unwrap(), b.to_str().unwrap()])
        .output()
        .unwrap();
    let why_text = String::from_utf8_lossy(&why.stdout);
    assert_eq!(why.status.code(), Some(1), "{why_text}");
    assert!(
        why_text.contains("synced file /etc/nginx/nginx.conf changed"),
        "{why_text}"
    );
    assert!(why_text.contains("+worker_processes 4;"), "{why_text}");
    assert!(!why_text.contains("nginx-1.22.1 ("), "{why_text}");

    // What: in each image, one file of one layer, at line 16.
    for (ia, ib) in outs_a[1..].iter().zip(&outs_b[1..]) {
        let out = buildit(&root, &["diff", ia, ib]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains("etc/nginx/nginx.conf"), "{text}");
        assert!(text.contains("line 16"), "{text}");
        assert!(text.contains("-worker_processes auto;"), "{text}");
        assert!(text.contains("+worker_processes 4;"), "{text}");
        let changed_files = text.lines().filter(|l| l.contains("changed ")).count();
        assert!(changed_files >= 1, "{text}");
        assert!(
            !text.contains("usr/sbin/nginx:"),
            "the nginx binary is not among the differences:\n{text}"
        );
        // JSON names the same file.
        let json = buildit(&root, &["diff", "--json", ia, ib])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
        assert!(v.to_string().contains("etc/nginx/nginx.conf"), "{v}");
    }
    // The OCI image: only the sync layer differs, the others are named the same.
    let oci = buildit(&root, &["diff", &outs_a[2], &outs_b[2]])
        .output()
        .unwrap();
    let oci_text = String::from_utf8_lossy(&oci.stdout);
    assert!(oci_text.contains("sync"), "{oci_text}");
    assert!(oci_text.contains("identical"), "{oci_text}");

    // The ACI and the OCI image of one build make the same file system.
    let formats = buildit(&root, &["diff", &outs_a[1], &outs_a[2]])
        .output()
        .unwrap();
    let formats_text = String::from_utf8_lossy(&formats.stdout);
    assert!(
        formats_text.contains("file system (ACI rootfs vs OCI layers applied in order): same"),
        "{formats_text}"
    );

    // The same image twice: no differences, status 0.
    let same = buildit(&root, &["diff", &outs_a[2], &outs_a[2]])
        .output()
        .unwrap();
    assert_eq!(same.status.code(), Some(0));
}
