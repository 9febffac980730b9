//! A derivation that is none of buildit's kinds (as a Nix front end writes them) is
//! realised as written: its builder, arguments and env, in a sandbox that holds only
//! its input closure under /store plus /build, /dev, /proc and /tmp — no build root,
//! no host /bin. The builder is a statically linked program compiled here and added
//! to the store as a source; the `.drv` is written by hand through the store API.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::process::Command;

use buildit_store::derivation::DerivationError;
use buildit_store::{Derivation, DerivationOutput, FileIngestion, HashAlgo, LocalStore, StorePath};
use common::build::*;
use common::skip;

/// Writes `$out/message` (argv[1], then env MESSAGE) and `$out/root` (the names in
/// `/`, sorted by the test), using nothing but libc.
const BUILDER_C: &str = r#"
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int main(int argc, char **argv) {
    const char *out = getenv("out");
    const char *msg = getenv("MESSAGE");
    if (!out || !msg || argc < 2) return 2;
    /* buildit binds the output directory in before the builder starts. */
    if (mkdir(out, 0755) != 0 && errno != EEXIST) return 3;
    char path[4096];
    snprintf(path, sizeof path, "%s/message", out);
    FILE *f = fopen(path, "w");
    if (!f) return 4;
    fprintf(f, "%s %s\n", argv[1], msg);
    fclose(f);
    snprintf(path, sizeof path, "%s/root", out);
    f = fopen(path, "w");
    if (!f) return 5;
    DIR *d = opendir("/");
    if (!d) return 6;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) fprintf(f, "%s\n", e->d_name);
    }
    closedir(d);
    fclose(f);
    return 0;
}
"#;

#[test]
fn a_plain_derivation_runs_as_written_with_only_its_inputs() {
    let Some(cc) = skip::require_tool("cc", "scripts/test.sh installs gcc") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("builder.c");
    fs::write(&src, BUILDER_C).unwrap();
    let bin_dir = t.path().join("builder");
    fs::create_dir(&bin_dir).unwrap();
    let bin = bin_dir.join("builder");
    let cc_out = Command::new(cc)
        .args(["-static", "-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .unwrap();
    if !cc_out.status.success() {
        return skip::skip(format!(
            "cc -static failed (static libc missing?): {}",
            String::from_utf8_lossy(&cc_out.stderr)
        ));
    }

    let root = t.path().join("root");
    let store = LocalStore::open(&root).unwrap();
    let tool = store
        .add_path(
            &bin_dir,
            "static-builder",
            FileIngestion::Recursive,
            HashAlgo::Sha256,
        )
        .unwrap();

    let builder = format!("{}/builder", tool.to_absolute());
    let mut drv = Derivation {
        system: "x86_64-linux".into(),
        builder: builder.clone(),
        args: vec!["hello".into()],
        env: BTreeMap::from([
            ("name".to_string(), "plain-hello".to_string()),
            ("builder".to_string(), builder),
            ("system".to_string(), "x86_64-linux".to_string()),
            ("MESSAGE".to_string(), "from a plain derivation".to_string()),
        ]),
        input_srcs: BTreeSet::from([tool.clone()]),
        ..Default::default()
    };
    drv.outputs.insert("out".into(), DerivationOutput::Deferred);
    drv.fill_output_paths(|p: &StorePath| Err(DerivationError::UnknownInput(p.clone())))
        .unwrap();
    let out = drv.outputs["out"].path().unwrap().clone();
    let drv_path = store.add_derivation(&drv).unwrap();
    drop(store);

    let printed = ok(buildit(
        &root,
        &["realise", &drv_path.to_absolute(), "--no-link"],
    ));
    assert!(printed.contains(&out.to_absolute()), "{printed}");

    let phys = root.join("store").join(out.base_name());
    assert_eq!(
        fs::read_to_string(phys.join("message")).unwrap(),
        "hello from a plain derivation\n"
    );
    let mut names: Vec<String> = fs::read_to_string(phys.join("root"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    names.sort();
    // What the sandbox makes, and nothing of the host or of a build root.
    for n in ["build", "dev", "proc", "store", "tmp"] {
        assert!(names.contains(&n.to_string()), "/ lacks {n}: {names:?}");
    }
    for n in ["bin", "usr", "lib", "etc", "home"] {
        assert!(!names.contains(&n.to_string()), "/ has {n}: {names:?}");
    }
}
