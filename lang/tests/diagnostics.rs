//! What a user sees for each mistake they can make in a spec: the rendered diagnostic
//! (message, file:line:column, source excerpt, help) is snapshotted, so a change in
//! wording or position shows up in review.
//!
//! Fixtures are small spec directories under `tests/fixtures/specs/` and a small
//! recipe repository under `tests/fixtures/recipes/`. Paths are relative to the crate
//! (cargo runs integration tests there), so the snapshots hold no machine's paths.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use buildit_lang::inroot::AllowedRoots;
use buildit_lang::model::container::{Compression, ImageFormat, Layout};
use buildit_lang::model::{self, Dependency, PackageOrigin, PatchSource, Spec};
use buildit_lang::resolve::{load_spec_with, ConfigChoice, LoadOptions, Repository};
use buildit_lang::yaml::{SourceFile, SpecError};
use miette::{GraphicalReportHandler, GraphicalTheme};
use proptest::prelude::*;

const RECIPES: &str = "tests/fixtures/recipes";

fn options(config: ConfigChoice) -> LoadOptions {
    LoadOptions {
        sample_recipes: PathBuf::from(RECIPES),
        config,
    }
}

fn load(case: &str) -> Result<Spec, SpecError> {
    load_spec_with(
        &Path::new("tests/fixtures/specs").join(case),
        &options(ConfigChoice::Nothing),
    )
}

/// The diagnostic as a terminal without colours would show it, at a fixed width.
fn render(e: &SpecError) -> String {
    let mut out = String::new();
    GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
        .with_width(100)
        .render_report(&mut out, e)
        .expect("rendering into a String cannot fail");
    // Trailing spaces vary with miette's padding and are invisible in review.
    out.lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

fn location(e: &SpecError) -> &str {
    match e {
        SpecError::At { location, .. } => location,
        other => panic!("expected a positioned error, got {other:?}"),
    }
}

/// Load a case that must fail; returns the rendered error, after checking where it
/// points.
fn fails(case: &str, at: &str) -> String {
    match load(case) {
        Ok(_) => panic!("{case}: loaded, but should have failed"),
        Err(e) => {
            assert_eq!(location(&e), at, "{case}: {}", render(&e));
            render(&e)
        }
    }
}

#[test]
fn seed_pkg_yaml_is_not_valid_yaml() {
    let out = fails(
        "seed-pkg",
        "tests/fixtures/specs/seed-pkg/pkgs/nginx/pkg.yaml:6:9",
    );
    assert!(out.contains("not valid YAML"), "{out}");
    insta::assert_snapshot!("seed_pkg", out);
}

/// The seed's pkg.yaml fixed one mistake at a time: each step's message leads to
/// the next fix.
#[test]
fn seed_pkg_yaml_fixed_step_by_step() {
    let parse = |name: &str| {
        let path = Path::new("tests/fixtures/pkg").join(name);
        let file = Arc::new(SourceFile::read(&path).expect("fixture"));
        let spec_dir = Path::new("tests/fixtures/specs/seed-pkg");
        model::PkgFile::parse(
            file,
            &spec_dir.join("pkgs/nginx"),
            &AllowedRoots::new().with(spec_dir),
        )
        .expect_err("still invalid")
    };
    // The URL moved left to column 5: `use:` still follows the description.
    let e = parse("seed-step2.yaml");
    assert_eq!(location(&e), "tests/fixtures/pkg/seed-step2.yaml:8:9");
    insta::assert_snapshot!("seed_pkg_step2", render(&e));
    // `use:` moved to column 5: YAML is fine, but it is read as a patch.
    let e = parse("seed-step3.yaml");
    assert_eq!(location(&e), "tests/fixtures/pkg/seed-step3.yaml:8:5");
    insta::assert_snapshot!("seed_pkg_step3", render(&e));
    // `use:` at column 1 (spec `unknown-version`, then `unknown-option`): the recipe
    // version and the option are what is left.
}

#[test]
fn unknown_key_suggests_the_right_one() {
    let out = fails(
        "typo-key",
        "tests/fixtures/specs/typo-key/pkgs/nginx/pkg.yaml:4:1",
    );
    assert!(out.contains("did you mean 'patches'?"), "{out}");
    insta::assert_snapshot!("typo_key", out);
}

#[test]
fn wrong_type_shows_an_example() {
    let out = fails(
        "use-yes",
        "tests/fixtures/specs/use-yes/pkgs/nginx/pkg.yaml:2:6",
    );
    insta::assert_snapshot!("use_yes", out);
}

#[test]
fn unknown_option_lists_the_options() {
    let out = fails(
        "unknown-option",
        "tests/fixtures/specs/unknown-option/pkgs/nginx/pkg.yaml:5:11",
    );
    assert!(
        out.contains("unknown build option 'selinux' for www-servers/nginx-1.22.1"),
        "{out}"
    );
    assert!(out.contains("HTTPS support"), "{out}");
    insta::assert_snapshot!("unknown_option", out);
}

#[test]
fn option_in_with_and_without() {
    let out = fails(
        "with-and-without",
        "tests/fixtures/specs/with-and-without/pkgs/nginx/pkg.yaml:4:15",
    );
    insta::assert_snapshot!("with_and_without", out);
}

#[test]
fn option_requirements() {
    let out = fails(
        "requires",
        "tests/fixtures/specs/requires/pkgs/nginx/pkg.yaml:4:15",
    );
    insta::assert_snapshot!("requires", out);
}

#[test]
fn unknown_recipe_category() {
    let out = fails(
        "unknown-recipe",
        "tests/fixtures/specs/unknown-recipe/container.yaml:2:13",
    );
    assert!(
        out.contains("did you mean 'www-servers/nginx-1.22.1'?"),
        "{out}"
    );
    insta::assert_snapshot!("unknown_recipe", out);
}

#[test]
fn unknown_recipe_name() {
    let out = fails(
        "unknown-recipe-name",
        "tests/fixtures/specs/unknown-recipe-name/container.yaml:2:13",
    );
    assert!(
        out.contains("did you mean 'www-servers/nginx-1.22.1'?"),
        "{out}"
    );
    insta::assert_snapshot!("unknown_recipe_name", out);
}

#[test]
fn unknown_version_lists_versions() {
    let out = fails(
        "unknown-version",
        "tests/fixtures/specs/unknown-version/pkgs/nginx/pkg.yaml:1:7",
    );
    assert!(out.contains("1.20.2, 1.22.1"), "{out}");
    insta::assert_snapshot!("unknown_version", out);
}

#[test]
fn missing_local_patch() {
    let out = fails(
        "missing-patch",
        "tests/fixtures/specs/missing-patch/pkgs/nginx/pkg.yaml:4:5",
    );
    insta::assert_snapshot!("missing_patch", out);
}

#[test]
fn http_patch_is_insecure() {
    let out = fails(
        "http-patch",
        "tests/fixtures/specs/http-patch/pkgs/nginx/pkg.yaml:3:5",
    );
    assert!(out.contains("insecure"), "{out}");
    insta::assert_snapshot!("http_patch", out);
}

#[test]
fn chmod_not_octal() {
    let out = fails(
        "chmod-999",
        "tests/fixtures/specs/chmod-999/container.yaml:4:12",
    );
    insta::assert_snapshot!("chmod_999", out);
}

#[test]
fn chmod_symbolic_suggests_octal() {
    let out = fails(
        "chmod-symbolic",
        "tests/fixtures/specs/chmod-symbolic/container.yaml:4:12",
    );
    assert!(out.contains("\"0644\""), "{out}");
    insta::assert_snapshot!("chmod_symbolic", out);
}

#[test]
fn missing_sync_source() {
    let out = fails(
        "missing-src",
        "tests/fixtures/specs/missing-src/container.yaml:2:10",
    );
    insta::assert_snapshot!("missing_src", out);
}

#[test]
fn undefined_variable_points_inside_the_string() {
    // Line 10 of container.yaml: `            "name": "{{ nme }}-{{ version }}"`.
    let out = fails(
        "undefined-var",
        "tests/fixtures/specs/undefined-var/container.yaml:10:25",
    );
    assert!(out.contains("did you mean 'name'?"), "{out}");
    insta::assert_snapshot!("undefined_var", out);
    let out = fails(
        "undefined-var-inline",
        "tests/fixtures/specs/undefined-var-inline/container.yaml:5:27",
    );
    insta::assert_snapshot!("undefined_var_inline", out);
}

#[test]
fn variable_defined_below_is_explained() {
    let out = fails(
        "var-defined-later",
        "tests/fixtures/specs/var-defined-later/container.yaml:3:27",
    );
    assert!(out.contains("only defined later, on line 5"), "{out}");
    insta::assert_snapshot!("var_defined_later", out);
}

#[test]
fn duplicate_packages_name_both_lines() {
    let out = fails(
        "duplicate-package",
        "tests/fixtures/specs/duplicate-package/container.yaml:7:3",
    );
    assert!(out.contains("line 1"), "{out}");
    insta::assert_snapshot!("duplicate_package", out);
}

#[test]
fn aci_content_must_be_json() {
    // The missing comma is noticed at the start of line 10 (`"labels"`).
    let out = fails(
        "aci-not-json",
        "tests/fixtures/specs/aci-not-json/container.yaml:10:13",
    );
    insta::assert_snapshot!("aci_not_json", out);
}

#[test]
fn bad_public_key_in_config() {
    let e = load_spec_with(
        Path::new("tests/fixtures/specs/bad-public-key"),
        &options(ConfigChoice::Discover),
    )
    .unwrap_err();
    assert_eq!(
        location(&e),
        "tests/fixtures/specs/bad-public-key/.buildit-config.yaml:11:13"
    );
    insta::assert_snapshot!("bad_public_key", render(&e));
}

#[test]
fn recipe_name_must_match_its_path() {
    let out = fails(
        "misnamed-recipe",
        "tests/fixtures/specs/misnamed-recipe/recipes/app-misc/hello/hello-2.10.yaml:1:7",
    );
    insta::assert_snapshot!("misnamed_recipe", out);
}

#[test]
fn step_settings_not_indented() {
    let out = fails(
        "step-not-indented",
        "tests/fixtures/specs/step-not-indented/container.yaml:2:3",
    );
    insta::assert_snapshot!("step_not_indented", out);
}

#[test]
fn unknown_step() {
    let out = fails(
        "unknown-step",
        "tests/fixtures/specs/unknown-step/container.yaml:1:3",
    );
    assert!(out.contains("did you mean 'package'?"), "{out}");
    insta::assert_snapshot!("unknown_step", out);
}

#[test]
fn version_override_needs_a_source() {
    let out = fails(
        "version-without-source",
        "tests/fixtures/specs/version-without-source/pkgs/nginx/pkg.yaml:2:10",
    );
    insta::assert_snapshot!("version_without_source", out);
}

#[test]
fn sha256_must_be_64_hex_digits() {
    let out = fails(
        "bad-sha256",
        "tests/fixtures/specs/bad-sha256/pkgs/nginx/pkg.yaml:5:13",
    );
    insta::assert_snapshot!("bad_sha256", out);
}

#[test]
fn unknown_dependency_points_at_it() {
    let out = fails(
        "unknown-dependency",
        "tests/fixtures/specs/unknown-dependency/pkgs/nginx/pkg.yaml:2:17",
    );
    insta::assert_snapshot!("unknown_dependency", out);
}

#[test]
fn seed_container_with_fixed_pkg_loads() {
    let spec = load("seed-fixed").unwrap_or_else(|e| panic!("{}", render(&e)));
    let sync = spec.syncs().next().expect("one sync step");
    // `chmod: 0644` unquoted is octal 644, `recursive: True` a boolean.
    assert_eq!(sync.chmod.as_ref().map(|m| m.value), Some(0o644));
    assert!(sync.recursive);
    assert!(sync.src.is_absolute() && sync.src.ends_with("files/nginx.conf"));
    let image = spec.images().next().expect("one image");
    assert_eq!(image.format, ImageFormat::Aci);
    let manifest = image.manifest.as_ref().expect("parsed manifest");
    assert_eq!(manifest["name"], "nginx-production-1.22.1-p1");
    assert_eq!(manifest["labels"][0]["value"], "linux");
}

#[test]
fn good_spec_resolves_everything() {
    let spec = load("good").unwrap_or_else(|e| panic!("{}", render(&e)));
    assert_eq!(spec.vars["title"], "nginx-production-1.22.1-p1");
    let pkgs: Vec<_> = spec.packages().collect();
    assert_eq!(pkgs.len(), 2);

    let nginx = pkgs[0];
    assert_eq!(nginx.id.to_string(), "www-servers/nginx-1.22.1");
    assert!(nginx
        .recipe_path
        .ends_with("www-servers/nginx/nginx-1.22.1.yaml"));
    let opts: Vec<&str> = nginx.options.iter().map(String::as_str).collect();
    assert_eq!(opts, ["gzip", "http2", "ssl"]);
    // Patches keep the order of pkg.yaml.
    assert_eq!(nginx.patches.len(), 2);
    match &nginx.patches[0].source {
        PatchSource::Local(p) => {
            assert!(p.is_absolute() && p.ends_with("pkgs/nginx/patches/https-only.patch"))
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(&nginx.patches[1].source, PatchSource::Url(u) if u.starts_with("https://github.com/"))
    );
    assert_eq!(nginx.patches[1].description, "Fix buffer overruns");
    // Recipe, then enabled options (recipe order), then pkg.yaml; each once.
    let build: Vec<String> = nginx.build_depends.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        build,
        [
            "debian:libpcre2-dev",
            "debian:libssl-dev",
            "sys-libs/zlib-1.2.13",
            "debian:libxml2-dev"
        ]
    );
    // Each dependency knows where it was written.
    let xml = &nginx.build_depends[3];
    assert_eq!(xml.loc.line, 13);
    assert!(xml.loc.path().ends_with("pkgs/nginx/pkg.yaml"));
    let flags: Vec<&str> = nginx.configure_flags.iter().map(|f| f.as_str()).collect();
    assert_eq!(
        flags,
        [
            "--with-http_ssl_module",
            "--with-http_v2_module",
            "--with-debug"
        ]
    );
    assert_eq!(nginx.env["CFLAGS"].value, "-O2");
    // The recipe's env, overridden by the enabled gzip option's.
    assert_eq!(nginx.env["withGzip"].value, "1");
    assert_eq!(nginx.env["NGINX_BUILD"].value, "1");
    assert!(matches!(&nginx.origin, PackageOrigin::Embedded { pkg, .. } if pkg.author.is_some()));

    let hello = pkgs[1];
    assert_eq!(hello.id.to_string(), "app-misc/hello-2.10");
    assert!(hello.options.is_empty());

    // zlib is reached through nginx's gzip option, with default options.
    let zlib = spec
        .dependencies
        .values()
        .find(|p| p.id.name == "zlib")
        .expect("zlib resolved");
    assert_eq!(
        zlib.runtime_depends[0].value,
        Dependency::Debian("libc6".into())
    );
    assert_eq!(spec.build_roots["base"].def.packages[0], "bash");

    let sync = spec.syncs().next().expect("sync");
    assert!(sync.src_is_dir && sync.recursive);
    assert_eq!(sync.chmod.as_ref().map(|m| m.value), Some(0o755));

    let images: Vec<_> = spec.images().collect();
    assert_eq!(images[0].layout, Layout::PerPackage);
    assert_eq!(images[0].compression, Compression::Zstd);
    assert_eq!(images[1].format, ImageFormat::Oci);
    assert_eq!(
        images[1].name.as_ref().map(|n| n.as_str()),
        Some("sysadmin42/nginx-production")
    );
    let config = images[1].config.as_ref().expect("oci config");
    assert_eq!(config.exposed_ports, ["443/tcp", "8080/tcp"]);
    assert_eq!(
        config.labels["org.opencontainers.image.version"],
        "1.22.1-p1"
    );
}

#[test]
fn repository_picks_the_newest_version() {
    let repo = Repository::new(vec![PathBuf::from(RECIPES)]);
    let found = repo.find("www-servers/nginx").unwrap();
    assert_eq!(found.id.version, "1.22.1");
    let found = repo.find("www-servers/nginx-1.20.2").unwrap();
    assert!(found.path.ends_with("nginx-1.20.2.yaml"));
    assert_eq!(repo.categories(), ["app-misc", "sys-libs", "www-servers"]);
}

/// The shipped sample (part of the repository: its absence is a failure).
#[test]
fn shipped_nginx_prod_sample_loads() {
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples");
    let (dir, recipes) = (samples.join("nginx-prod"), samples.join("recipes"));
    assert!(dir.join("container.yaml").is_file(), "{}", dir.display());
    assert!(recipes.is_dir(), "{}", recipes.display());
    let spec = load_spec_with(
        &dir,
        &LoadOptions {
            sample_recipes: recipes,
            config: ConfigChoice::Nothing,
        },
    )
    .unwrap_or_else(|e| panic!("{}", render(&e)));
    let nginx = spec.packages().next().expect("a package");
    assert_eq!(nginx.id.category, "www-servers");
    assert!(nginx.options.contains("ssl"));
    assert!(matches!(
        nginx.patches.first().map(|p| &p.source),
        Some(PatchSource::Local(p)) if p.is_file()
    ));
    assert!(spec.build_roots.contains_key(nginx.build_root.as_str()));
    assert!(spec.images().count() >= 1);
    assert!(spec.syncs().all(|s| s.src.is_file() || s.src.is_dir()));
}

// ---------------------------------------------------------------------------------
// Robustness: no input makes a parser panic, and every error renders.

fn fixture(path: &str) -> String {
    std::fs::read_to_string(Path::new("tests/fixtures").join(path)).unwrap_or_default()
}

fn file(path: &str, text: String) -> Arc<SourceFile> {
    Arc::new(SourceFile {
        path: path.into(),
        text,
    })
}

/// Run every parser on `text` (each as the kind of file it reads); render any error.
fn parse_everything(text: &str) {
    let dir = Path::new("tests/fixtures/specs/good");
    let results = [
        model::container::parse(
            file("c/container.yaml", text.to_string()),
            dir,
            &AllowedRoots::new().with(dir),
        )
        .err(),
        model::PkgFile::parse(
            file("p/pkg.yaml", text.to_string()),
            &dir.join("pkgs/nginx"),
            &AllowedRoots::new().with(dir),
        )
        .err(),
        model::Recipe::parse(file("r/app-misc/hello/hello-2.10.yaml", text.to_string())).err(),
        model::Config::parse(file("c/.buildit-config.yaml", text.to_string())).err(),
    ];
    for e in results.into_iter().flatten() {
        let _ = render(&e);
    }
}

/// Texts to mutate: every fixture kind, valid and not.
fn seeds() -> &'static [String] {
    static SEEDS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(|| {
        let seeds: Vec<String> = [
            "specs/good/container.yaml",
            "specs/seed-fixed/container.yaml",
            "specs/good/pkgs/nginx/pkg.yaml",
            "specs/seed-pkg/pkgs/nginx/pkg.yaml",
            "recipes/www-servers/nginx/nginx-1.22.1.yaml",
            "specs/bad-public-key/.buildit-config.yaml",
            "specs/undefined-var/container.yaml",
        ]
        .iter()
        .map(|p| fixture(p))
        .collect();
        assert!(
            seeds.iter().all(|s| !s.is_empty()),
            "a seed fixture is missing"
        );
        seeds
    })
}

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, String),
    Delete(usize, usize),
    Replace(usize, String),
}

fn edit() -> impl Strategy<Value = Edit> {
    // Characters that matter to YAML and to templates.
    let piece = prop::sample::select(vec![
        " ", "  ", "\n", "\t", ":", "- ", "-", "#", "\"", "'", "{", "}", "[", "]", ",", "|", ">",
        "{{", "}}", "{%", "%}", "&a", "*a", "!t", "?", "~", "0644", "é", "→", "😀", "\u{0}", "---",
        "x", "use", "with", "https://", "http://", "..", "/",
    ])
    .prop_map(str::to_string);
    prop_oneof![
        (any::<usize>(), piece.clone()).prop_map(|(i, s)| Edit::Insert(i, s)),
        (any::<usize>(), 1usize..20).prop_map(|(i, n)| Edit::Delete(i, n)),
        (any::<usize>(), piece).prop_map(|(i, s)| Edit::Replace(i, s)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match e {
            Edit::Insert(i, s) => {
                let i = at(*i, chars.len());
                chars.splice(i..i, s.chars());
            }
            Edit::Delete(i, n) => {
                let i = at(*i, chars.len());
                let end = (i + n).min(chars.len());
                chars.drain(i..end);
            }
            Edit::Replace(i, s) => {
                let i = at(*i, chars.len());
                let end = (i + s.chars().count()).min(chars.len());
                chars.splice(i..end, s.chars());
            }
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_specs_never_panic(seed in 0usize..7, edits in prop::collection::vec(edit(), 1..6)) {
        let seeds = seeds();
        let text = apply(&seeds[seed % seeds.len()], &edits);
        parse_everything(&text);
    }

    #[test]
    fn random_text_never_panics(text in "[ -~\n\t\u{e9}\u{2192}]{0,200}") {
        parse_everything(&text);
    }
}
