//! Images end to end: the seed's `samples/nginx-prod` built into an ACI and an OCI
//! image that the independent tools accept (actool, oci-image-tool, umoci, skopeo
//! through a loopback registry) and that run (podman for the OCI image, runc for the
//! ACI's rootfs): nginx starts with the synced nginx.conf, serves HTTPS with a
//! certificate the test makes, and refuses plain HTTP. Same bytes in two store
//! roots; a config change moves only the synced-files layer; the layer budget; the
//! per-package ACI layout; manifests buildit refuses.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::build::*;
use common::images::*;

const REF: &str = "localhost/nginx-production:1.22.1-p1";

/// What one `buildit build` of a nginx-prod copy gave.
struct Built {
    dir: PathBuf,
    aci_out: PathBuf,
    oci_out: PathBuf,
    stderr: String,
}

impl Built {
    fn aci(&self) -> PathBuf {
        fs::read_dir(&self.aci_out)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.extension().is_some_and(|e| e == "aci")
                    && !p.to_string_lossy().contains("/nginx-production-1.22.1-p1-")
            })
            .expect("an .aci in the image output")
    }
    fn layout(&self) -> PathBuf {
        self.oci_out.join("oci")
    }
    fn archive(&self) -> PathBuf {
        self.oci_out.join("image.oci.tar")
    }
}

/// Copy samples/nginx-prod into `dir`, let `edit` change it, lock and build it in
/// `root`.
fn build_nginx_prod(root: &Path, dir: &Path, edit: impl FnOnce(&Path)) -> Result<Built, String> {
    copy_spec("samples/nginx-prod", dir);
    edit(dir);
    ok(buildit(root, &["lock", dir.to_str().unwrap()]));
    let link = dir.join("result");
    let out = build_cmd(root, dir, &["-j2", "-o", link.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(stderr);
    }
    Ok(Built {
        dir: dir.to_path_buf(),
        aci_out: fs::canonicalize(dir.join("result-aci")).unwrap(),
        oci_out: fs::canonicalize(dir.join("result-oci")).unwrap(),
        stderr,
    })
}

/// nginx-prod as the sample has it, built once in the shared root.
fn sample() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = shared().join(format!("images-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        build_nginx_prod(&shared_root(), &dir, |_| {}).unwrap_or_else(|e| panic!("{e}"))
    })
}

#[test]
fn the_seed_prints_its_packaging_lines() {
    let b = sample();
    assert!(
        b.stderr
            .contains("Building Sysadmin42/nginx-production-1.22.1-p1"),
        "{}",
        b.stderr
    );
    assert!(
        b.stderr
            .contains("Processing package from './pkgs/nginx' for linux/amd64."),
        "{}",
        b.stderr
    );
    assert!(b.stderr.contains("    HASH: "), "{}", b.stderr);
}

#[test]
fn the_aci_is_valid_by_actool_and_by_buildits_own_rules() {
    let b = sample();
    let aci = b.aci();
    let id = fs::read_to_string(b.aci_out.join("image-id")).unwrap();
    assert!(
        id.starts_with("sha512-") && id.trim().len() == 7 + 128,
        "{id}"
    );
    // The archive holds exactly `manifest` and `rootfs/…`.
    let info = ok(buildit(
        &shared_root(),
        &[
            "image",
            "inspect",
            "--files",
            "--json",
            aci.to_str().unwrap(),
        ],
    ));
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(v[0]["id"].as_str().unwrap(), id.trim());
    let files: Vec<&str> = v[0]["layers"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        files
            .iter()
            .all(|f| *f == "rootfs" || f.starts_with("rootfs/")),
        "{files:?}"
    );
    for f in [
        "rootfs/usr/sbin/nginx",
        "rootfs/etc/nginx/nginx.conf",
        "rootfs/etc/passwd",
        "rootfs/lib64",
    ] {
        assert!(files.contains(&f), "{f} in {files:?}");
    }
    require_tool!("actool");
    actool_validate(&aci).unwrap();
}

#[test]
fn the_oci_image_passes_oci_image_tool_umoci_and_a_registry_round_trip() {
    let b = sample();
    let layout = b.layout();
    let (_, manifest) = oci_manifest(&layout, REF).unwrap();
    let packages: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["annotations"]["io.buildit.package"].as_str().unwrap())
        .collect();
    assert_eq!(packages.first(), Some(&"image base"), "{packages:?}");
    assert_eq!(packages.last(), Some(&"sync"), "{packages:?}");
    for p in [
        "nginx-1.22.1",
        "libc6-",
        "libssl3-",
        "libpcre2-8-0-",
        "zlib1g-",
    ] {
        assert!(
            packages.iter().any(|x| x.starts_with(p)),
            "{p} has a layer: {packages:?}"
        );
    }
    require_tool!("oci-image-tool", "umoci", "skopeo", "docker-registry");
    oci_validate(&layout, REF).unwrap();
    let t = tempfile::tempdir().unwrap();
    let bundle = t.path().join("bundle");
    umoci_unpack(&layout, REF, &bundle).unwrap();
    let rootfs = bundle.join("rootfs");
    assert!(rootfs.join("usr/sbin/nginx").is_file());
    assert_eq!(
        fs::read(rootfs.join("etc/nginx/nginx.conf")).unwrap(),
        fs::read(b.dir.join("files/nginx.conf")).unwrap(),
        "the synced nginx.conf wins over the package's"
    );
    let Some(registry) = Registry::require() else {
        return;
    };
    skopeo_roundtrip(&layout, REF, &registry).unwrap();
}

/// A tools dir for running checks inside the image, which has no shell: the
/// host's bash (Debian 12, like the image's libc), its libtinfo, sleep and the
/// openssl client; the image's own libssl serves openssl.
fn client_tools(dir: &Path) {
    fs::create_dir_all(dir.join("lib")).unwrap();
    for (from, to) in [
        ("/bin/bash", "bash"),
        ("/usr/bin/sleep", "sleep"),
        ("/usr/bin/openssl", "openssl"),
        ("/lib/x86_64-linux-gnu/libtinfo.so.6", "lib/libtinfo.so.6"),
    ] {
        fs::copy(fs::canonicalize(from).unwrap(), dir.join(to)).unwrap();
    }
}

/// A self-signed certificate where the sample's nginx.conf expects it.
fn certificate(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{out:?}");
    for f in ["key.pem", "cert.pem"] {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir.join(f), fs::Permissions::from_mode(0o644)).unwrap();
    }
}

/// Start nginx as the image does, then ask over plain HTTP and over TLS.
const CHECK: &str = r#"
/usr/sbin/nginx -e stderr -g 'daemon off;' $NGINX_ARGS &
for i in {1..100}; do
    (exec 3<>/dev/tcp/127.0.0.1/80) 2>/dev/null && break
    /buildit-tools/sleep 0.1
done
exec 3<>/dev/tcp/127.0.0.1/80
printf 'GET / HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
echo "--- plain:"; while IFS= read -r l <&3; do echo "$l"; done
echo "--- tls:"
printf 'GET / HTTP/1.0\r\nHost: localhost\r\n\r\n' |
    /buildit-tools/openssl s_client -quiet -connect 127.0.0.1:443 2>/dev/null
echo "--- end"
"#;

fn assert_https_only(out: &str) {
    let plain = out
        .split("--- plain:")
        .nth(1)
        .and_then(|s| s.split("--- tls:").next());
    let tls = out
        .split("--- tls:")
        .nth(1)
        .and_then(|s| s.split("--- end").next());
    let (Some(plain), Some(tls)) = (plain, tls) else {
        panic!("the check did not run:\n{out}");
    };
    assert!(
        // nginx's access log (stdout) may come first.
        plain.contains("\nHTTP/1.1 403 Forbidden"),
        "{out}"
    );
    assert!(!plain.contains("hello from nginx-prod"), "{out}");
    assert!(
        tls.contains("HTTP/1.1 200 OK") && tls.contains("hello from nginx-prod"),
        "{out}"
    );
}

#[test]
fn the_oci_image_runs_in_podman_and_serves_https_only() {
    let Some(podman) = Podman::require() else {
        return;
    };
    let b = sample();
    let t = tempfile::tempdir().unwrap();
    let (tools, tls) = (t.path().join("tools"), t.path().join("tls"));
    client_tools(&tools);
    certificate(&tls);
    let out = podman
        .run_oci_archive_with(
            &b.archive(),
            REF,
            &[
                "--entrypoint",
                "/buildit-tools/bash",
                "--env",
                "LD_LIBRARY_PATH=/buildit-tools/lib",
                "-v",
                &format!("{}:/buildit-tools:ro", tools.display()),
                "-v",
                &format!("{}:/etc/nginx/tls:ro", tls.display()),
            ],
            &["-c", CHECK],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_https_only(&out);
}

#[test]
fn the_aci_rootfs_runs_in_runc_and_serves_https_only() {
    require_tool!("runc");
    let b = sample();
    let t = tempfile::tempdir().unwrap();
    let unpacked = t.path().join("aci");
    fs::create_dir(&unpacked).unwrap();
    let status = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(b.aci())
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(status.success());
    let rootfs = unpacked.join("rootfs");
    // The unpacked tree is ours: make it writable for the tools and nginx's pid.
    let chmod = std::process::Command::new("chmod")
        .arg("-R")
        .arg("u+w")
        .arg(&rootfs)
        .status()
        .unwrap();
    assert!(chmod.success());
    client_tools(&rootfs.join("buildit-tools"));
    // runc starts the process in secure-execution mode, where the loader ignores
    // LD_LIBRARY_PATH: the test's copy of the tree gets bash's library instead.
    fs::copy(
        rootfs.join("buildit-tools/lib/libtinfo.so.6"),
        rootfs.join("usr/lib/x86_64-linux-gnu/libtinfo.so.6"),
    )
    .unwrap();
    certificate(&rootfs.join("etc/nginx/tls"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(unpacked.join("manifest")).unwrap()).unwrap();
    assert_eq!(manifest["app"]["exec"][0], "/usr/sbin/nginx");
    // Rootless runc maps one uid: nginx's `user nobody` (a setuid to 65534) cannot
    // work there, so as an ordinary user the workers stay root (said, not hidden).
    let nginx_args = if nix::unistd::geteuid().is_root() {
        String::new()
    } else {
        eprintln!("note: rootless runc maps one uid; nginx's workers run as root, not nobody");
        let conf = fs::read_to_string(rootfs.join("etc/nginx/nginx.conf")).unwrap();
        fs::write(
            rootfs.join("tmp/nginx.conf"),
            conf.replace("user nobody nogroup;", "user root root;"),
        )
        .unwrap();
        fs::copy(
            rootfs.join("etc/nginx/mime.types"),
            rootfs.join("tmp/mime.types"),
        )
        .unwrap();
        "-c /tmp/nginx.conf".to_string()
    };
    let env = format!("NGINX_ARGS={nginx_args}");
    let out = runc_run_rootfs_config(
        &rootfs,
        &["/buildit-tools/bash", "-c", CHECK],
        &[&env],
        |c| {
            c["root"]["readonly"] = false.into();
            // What a container runtime grants by default (podman does): nginx's
            // master chowns its temp dirs and switches its workers to nobody.
            for set in ["bounding", "effective", "permitted"] {
                if let Some(caps) = c["process"]["capabilities"][set].as_array_mut() {
                    for cap in ["CAP_CHOWN", "CAP_SETUID", "CAP_SETGID", "CAP_DAC_OVERRIDE"] {
                        if !caps.iter().any(|x| x == cap) {
                            caps.push(cap.into());
                        }
                    }
                }
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_https_only(&out);
}

#[test]
fn two_store_roots_give_the_same_image_ids() {
    let b = sample();
    let t = tempfile::tempdir().unwrap();
    let fresh = build_nginx_prod(&t.path().join("root"), &t.path().join("spec"), |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        fs::read_to_string(b.aci_out.join("image-id")).unwrap(),
        fs::read_to_string(fresh.aci_out.join("image-id")).unwrap()
    );
    assert_eq!(
        fs::read(b.layout().join("index.json")).unwrap(),
        fs::read(fresh.layout().join("index.json")).unwrap(),
        "same manifest digest"
    );
    assert_eq!(
        fs::read(b.archive()).unwrap(),
        fs::read(fresh.archive()).unwrap()
    );
    assert_eq!(fs::read(b.aci()).unwrap(), fs::read(fresh.aci()).unwrap());
}

fn layer_digests(layout: &Path) -> Vec<(String, String)> {
    let (_, m) = oci_manifest(layout, REF).unwrap();
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["annotations"]["io.buildit.package"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                l["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_config_change_moves_only_the_synced_files_layer() {
    let b = sample();
    let t = tempfile::tempdir().unwrap();
    let changed = build_nginx_prod(&shared_root(), &t.path().join("spec"), |d| {
        let conf = d.join("files/nginx.conf");
        let text = fs::read_to_string(&conf).unwrap();
        fs::write(
            &conf,
            text.replace("keepalive_timeout 65;", "keepalive_timeout 30;"),
        )
        .unwrap();
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let (before, after) = (layer_digests(&b.layout()), layer_digests(&changed.layout()));
    assert_eq!(before.len(), after.len());
    for ((pa, da), (pb, db)) in before.iter().zip(&after) {
        assert_eq!(pa, pb);
        if pa == "sync" {
            assert_ne!(da, db, "the synced-files layer changes");
        } else {
            assert_eq!(da, db, "{pa}'s layer must not change");
        }
    }
}

#[test]
fn the_layer_budget_merges_neighbours_and_keeps_every_file() {
    let t = tempfile::tempdir().unwrap();
    let b = build_nginx_prod(&shared_root(), &t.path().join("spec"), |d| {
        let c = d.join("container.yaml");
        let text = fs::read_to_string(&c).unwrap();
        // A label unique to this run: the image is written (and says so) every
        // time, not found valid from an earlier run.
        let text = text.replace(
            "      labels:\n",
            &format!(
                "      labels:\n        test.run: \"{}\"\n",
                std::process::id()
            ),
        );
        fs::write(
            &c,
            text.replace("    type: oci\n", "    type: oci\n    max-layers: 3\n"),
        )
        .unwrap();
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        b.stderr.contains("note: ") && b.stderr.contains("max-layers"),
        "{}",
        b.stderr
    );
    let layers = layer_digests(&b.layout());
    assert_eq!(layers.len(), 3, "{layers:?}");
    let all: Vec<&str> = layers.iter().flat_map(|(p, _)| p.split(" + ")).collect();
    for p in ["image base", "nginx-1.22.1", "sync"] {
        assert!(all.iter().any(|x| x.starts_with(p)), "{p} in {all:?}");
    }
    require_tool!("umoci", "oci-image-tool");
    oci_validate(&b.layout(), REF).unwrap();
    let bundle = t.path().join("bundle");
    umoci_unpack(&b.layout(), REF, &bundle).unwrap();
    for f in [
        "usr/sbin/nginx",
        "usr/lib/x86_64-linux-gnu/libc.so.6",
        "etc/passwd",
        "etc/nginx/nginx.conf",
    ] {
        assert!(bundle.join("rootfs").join(f).exists(), "{f}");
    }
}

#[test]
fn one_aci_per_package_with_dependencies() {
    let t = tempfile::tempdir().unwrap();
    let b = build_nginx_prod(&shared_root(), &t.path().join("spec"), |d| {
        let c = d.join("container.yaml");
        let text = fs::read_to_string(&c).unwrap();
        fs::write(
            &c,
            text.replace(
                "    type: aci\n",
                "    type: aci\n    layout: per-package\n",
            ),
        )
        .unwrap();
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let acis: Vec<PathBuf> = fs::read_dir(&b.aci_out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "aci"))
        .collect();
    assert_eq!(acis.len(), 2, "the container's and nginx's: {acis:?}");
    let inspect = |p: &Path| -> serde_json::Value {
        serde_json::from_str(&ok(buildit(
            &shared_root(),
            &["image", "inspect", "--json", p.to_str().unwrap()],
        )))
        .unwrap()
    };
    let main = acis
        .iter()
        .find(|p| p.file_name().unwrap() == "nginx-production-1.22.1-p1.aci")
        .unwrap();
    let dep = acis.iter().find(|p| *p != main).unwrap();
    let dep_id = inspect(dep)[0]["id"].as_str().unwrap().to_string();
    // The container's manifest names the package's ACI by its image ID.
    let out = std::process::Command::new("tar")
        .arg("-xzOf")
        .arg(main)
        .arg("manifest")
        .output()
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        manifest["dependencies"][0]["imageID"],
        dep_id.as_str(),
        "{manifest}"
    );
    require_tool!("actool");
    for a in &acis {
        actool_validate(a).unwrap();
    }
}

#[test]
fn buildit_refuses_a_manifest_actool_would_let_through() {
    let t = tempfile::tempdir().unwrap();
    let err = match build_nginx_prod(&shared_root(), &t.path().join("spec"), |d| {
        let c = d.join("container.yaml");
        let text = fs::read_to_string(&c).unwrap();
        fs::write(
            &c,
            text.replace("\"/usr/sbin/nginx\", \"-e\"", "\"/usr/sbin/nope\", \"-e\""),
        )
        .unwrap();
    }) {
        Ok(_) => panic!("an exec that is not in the image must fail"),
        Err(e) => e,
    };
    assert!(
        err.contains("app.exec[0]") && err.contains("/usr/sbin/nope"),
        "{err}"
    );
    assert!(
        err.contains("as ACI...") && err.contains("[FAILED]"),
        "{err}"
    );
    ok(buildit(
        &shared_root(),
        &["store", "verify", "--check-contents"],
    ));
}
