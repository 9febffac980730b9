//! A spec whose recipes form a long chain (each build-depends on the one before):
//! every link is resolved and lowered, each derivation has exactly the link before
//! as its recipe input, and every output path is the one `hashDerivationModulo`
//! over the whole closure gives (as a fresh `DerivationHasher` computes it). This
//! runs on a test thread's small stack.

use std::collections::BTreeSet;
use std::path::Path;

use buildit_lang::lockfile::{DebianPackage, LockFile, LockedBuildRoot, LockedPackage};
use buildit_lang::lower::plan::lower_spec;
use buildit_lang::resolve::{load_spec_with, ConfigChoice, LoadOptions};
use buildit_store::derivation::{DerivationError, DerivationHasher};
use buildit_store::{LocalStore, StorePath};

const LINKS: usize = 2_000;

fn name(i: usize) -> String {
    format!("l{i:05}")
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// The chain's spec directory, its lock, and a build root of one (fake) package.
fn chain(dir: &Path, links: usize) -> LockFile {
    write(
        &dir.join(".buildit-config.yaml"),
        "recipe-paths: [recipes]\n",
    );
    write(
        &dir.join("recipes/build-roots/tiny.yaml"),
        "name: tiny\npackages: [bash]\n",
    );
    let mut lock = LockFile::default();
    lock.debian.insert(
        "bash".into(),
        DebianPackage {
            version: "5.2.15-2+b2".into(),
            architecture: "amd64".into(),
            sha256: "ab".repeat(32),
            size: 1,
            filename: "pool/main/b/bash/bash_5.2.15-2+b2_amd64.deb".into(),
        },
    );
    lock.build_roots.insert(
        "tiny".into(),
        LockedBuildRoot {
            requested: vec!["bash".into()],
            packages: vec!["bash".into()],
        },
    );
    for i in 1..=links {
        let n = name(i);
        let deps = if i == 1 {
            "[]".to_string()
        } else {
            format!("[test/{}]", name(i - 1))
        };
        write(
            &dir.join(format!("recipes/test/{n}/{n}-1.yaml")),
            &format!(
                "name: {n}\nversion: \"1\"\nsources:\n  - url: https://example.invalid/src.tar\n    sha256: {}\n\
                 build-root: tiny\nbuild-depends: {deps}\nruntime-depends: []\noptions: {{}}\n\
                 phases:\n  unpack: ':'\n  install: 'echo {i} > $out/link'\n",
                "cd".repeat(32)
            ),
        );
        lock.packages.insert(
            format!("test/{n}-1"),
            LockedPackage {
                recipe: format!("test/{n}-1"),
                ..Default::default()
            },
        );
    }
    write(
        &dir.join("container.yaml"),
        &format!(
            "---\n- vars:\n    name: chain\n    version: '1'\n- package:\n    recipe: test/{}\n",
            name(links)
        ),
    );
    lock
}

#[test]
fn a_chain_of_2000_recipes_is_resolved_and_lowered() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("chain");
    let lock = chain(&dir, LINKS);
    let spec = load_spec_with(
        &dir,
        &LoadOptions {
            sample_recipes: t.path().join("no-shipped-recipes"),
            config: ConfigChoice::Discover,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.packages().count(), 1);
    assert_eq!(spec.dependencies.len(), LINKS - 1);

    let store = LocalStore::open(&t.path().join("root")).unwrap();
    let plan = lower_spec(&spec, &lock, "buildit.lock", &store).unwrap();
    assert_eq!(plan.packages.len(), LINKS);
    // Inputs first: link 1 is lowered first, the container's package last.
    let ids: Vec<String> = plan.packages.iter().map(|p| p.id.name.clone()).collect();
    assert_eq!(ids, (1..=LINKS).map(name).collect::<Vec<_>>());
    assert!(plan.packages.iter().take(LINKS - 1).all(|p| !p.direct));
    assert!(plan.packages[LINKS - 1].direct);

    // Each link has the link before (and only it) among its inputs, and its output
    // in the merged build root, after the build root itself.
    let root = &plan.build_roots["tiny"];
    let package_drvs: BTreeSet<&StorePath> = plan.packages.iter().map(|p| &p.drv).collect();
    for (i, p) in plan.packages.iter().enumerate() {
        let drv = plan.set.get(&p.drv).expect("in the set");
        let recipe_inputs: Vec<&StorePath> = drv
            .input_drvs
            .keys()
            .filter(|d| package_drvs.contains(d))
            .collect();
        let build_root: Vec<&str> = drv.env["buildRoot"].split(' ').collect();
        assert_eq!(build_root[0], plan.set.out(root).unwrap().to_absolute());
        if i == 0 {
            assert!(recipe_inputs.is_empty());
            assert_eq!(build_root.len(), 1);
        } else {
            let prev = &plan.packages[i - 1];
            assert_eq!(recipe_inputs, [&prev.drv]);
            assert_eq!(build_root[1..], [prev.out.to_absolute()]);
        }
        assert_eq!(
            drv.env["installPhase"],
            format!("echo {} > $out/link", i + 1)
        );
    }

    // Every output path and `.drv` path is what Nix's algorithm gives over the whole
    // closure, computed afresh here.
    let mut hasher = DerivationHasher::new(|p: &StorePath| {
        plan.set
            .get(p)
            .cloned()
            .ok_or_else(|| DerivationError::UnknownInput(p.clone()))
    });
    let mut seen = 0;
    for (path, drv) in plan.set.in_order() {
        hasher.check_output_paths(drv).unwrap();
        assert_eq!(&drv.drv_path().unwrap(), path);
        seen += 1;
    }
    // The links, their shared source, the build root with its fetch and unpack.
    assert_eq!(seen, LINKS + 4);
}

/// The contract reads back every derivation lang writes, and writes it again with
/// the same builder, args and environment: a key spelled differently on one side,
/// or a value that does not survive its typed form, fails here rather than in a
/// build (package builds, the build root, its `.deb` fetch and unpack, an image).
#[test]
fn every_derivation_written_reads_back_through_the_contract() {
    use buildit_store::builtins::{Builder, Kind};

    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("chain");
    let lock = chain(&dir, 3);
    let spec_file = dir.join("container.yaml");
    let mut spec_text = std::fs::read_to_string(&spec_file).unwrap();
    spec_text.push_str(
        "- image:\n    type: oci\n    config:\n      entrypoint: [\"/usr/bin/true\"]\n      exposed-ports: [\"443/tcp\"]\n",
    );
    std::fs::write(&spec_file, spec_text).unwrap();
    let spec = load_spec_with(
        &dir,
        &LoadOptions {
            sample_recipes: t.path().join("no-shipped-recipes"),
            config: ConfigChoice::Discover,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let store = LocalStore::open(&t.path().join("root")).unwrap();
    let plan = lower_spec(&spec, &lock, "buildit.lock", &store).unwrap();
    assert_eq!(plan.images.len(), 1);

    let mut kinds = BTreeSet::new();
    for (path, drv) in plan.set.in_order() {
        let typed = Builder::from_derivation(drv).unwrap_or_else(|e| panic!("{path}: {e}"));
        kinds.insert(typed.kind());
        let again = typed.to_derivation();
        assert_eq!(again.builder, drv.builder, "{path}");
        assert_eq!(again.args, drv.args, "{path}");
        assert_eq!(again.system, drv.system, "{path}");
        // The written env also holds `out`, which output paths fill in afterwards.
        let mut env = drv.env.clone();
        env.remove("out");
        assert_eq!(again.env, env, "{path}");
    }
    assert_eq!(
        kinds,
        BTreeSet::from([
            Kind::FetchUrl,
            Kind::UnpackDeb,
            Kind::BuildRoot,
            Kind::Package,
            Kind::Image
        ])
    );
}
