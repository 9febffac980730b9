//! `.buildit-config.yaml`: where packages and images are shared (the seed's
//! `repository:` block), which binary caches to ask and which keys to trust, where
//! more recipes and sources are, and mirrors. Parsed and checked only: nothing here
//! contacts a cache or reads a key file.
//!
//! Which file is used ([`find_config`]), first found wins, files are not merged:
//! 1. `.buildit-config.yaml` in the spec directory,
//! 2. `.buildit-config.yaml` in its parent, grandparent, ... up to `/`,
//! 3. `$XDG_CONFIG_HOME/buildit/config.yaml` (when `XDG_CONFIG_HOME` is set to an
//!    absolute path), else `~/.config/buildit/config.yaml`.
//!
//! A file found there that is not trusted ([`super::trust`]: owned by someone other
//! than the user or root, or writable by others) is passed over as if absent, and
//! said so ([`Discovered::ignored`]). The directories a configuration names
//! (`recipe-paths`, `source-dirs`, `allowed-dirs`) must be trusted too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use buildit_store::signing::PublicKey;
use marked_yaml::Node;

use super::trust::{Trust, Untrusted};
use crate::yaml::{
    describe, did_you_mean, load_yaml, node_loc, scalar, short, top_map, Located, Map, SourceFile,
    SpecError, TopLevel, MAX_FILE_BYTES,
};

pub const FILE_NAME: &str = ".buildit-config.yaml";

/// How packages and images travel to or from the repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Ssh,
    S3,
    File,
    Oci,
    Https,
    Http,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Ssh => "ssh",
            Transport::S3 => "s3",
            Transport::File => "file",
            Transport::Oci => "oci",
            Transport::Https => "https",
            Transport::Http => "http",
        }
    }
}

/// Uploads never go over plain http.
const UPLOAD: &[Transport] = &[
    Transport::Ssh,
    Transport::S3,
    Transport::File,
    Transport::Oci,
    Transport::Https,
];
const DOWNLOAD: &[Transport] = &[
    Transport::Https,
    Transport::Http,
    Transport::File,
    Transport::S3,
    Transport::Ssh,
    Transport::Oci,
];

/// The seed's `repository:` block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepositoryConfig {
    pub name: Located<String>,
    pub upload_type: Option<Located<Transport>>,
    /// E.g. `containers@mysuperbinhost.org/containers` (given with `upload_type`).
    pub upload_path: Option<Located<String>>,
    pub download_type: Option<Located<Transport>>,
    pub download_path: Option<Located<String>>,
}

/// A binary cache to substitute from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// `https://`, `http://`, `file://`, `s3://`, `ssh://` or `oci://`.
    pub url: Located<String>,
    /// Keys whose signatures this cache's narinfos may carry (in addition to the
    /// trusted ones).
    pub public_keys: Vec<Located<PublicKey>>,
    /// Lower is asked first (as in Nix); 50 unless written.
    pub priority: i64,
}

pub const DEFAULT_PRIORITY: i64 = 50;

/// A checked configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub file: Arc<SourceFile>,
    pub repository: Option<RepositoryConfig>,
    /// In file order.
    pub caches: Vec<CacheConfig>,
    pub trusted_public_keys: Vec<Located<PublicKey>>,
    /// Relative paths are relative to the config file's directory. Not read here.
    pub secret_key_file: Option<Located<PathBuf>>,
    /// Extra recipe repositories (existing directories), searched after the spec's
    /// own `recipes/` and before the shipped one.
    pub recipe_paths: Vec<Located<PathBuf>>,
    /// Directories holding source archives (existing directories).
    pub source_dirs: Vec<Located<PathBuf>>,
    /// Directories outside the spec directory that specs may read (sync sources,
    /// patches, package directories, recipe and build-root files).
    pub allowed_dirs: Vec<Located<PathBuf>>,
    /// Mirror name (as in `mirror://NAME/...`) → base URLs, in order.
    pub mirrors: BTreeMap<String, Vec<Located<String>>>,
}

const KEYS: &[&str] = &[
    "repository",
    "caches",
    "trusted-public-keys",
    "secret-key-file",
    "recipe-paths",
    "source-dirs",
    "allowed-dirs",
    "mirrors",
];
const EXAMPLE: &str = "  repository:\n    name: mysuperbinhost\n    upload-type: ssh\n    upload-path: containers@mysuperbinhost.org/containers\n    download-type: https\n    download-path: mysuperbinhost.org/containers";
const REPO_KEYS: &[&str] = &[
    "name",
    "upload-type",
    "upload-path",
    "download-type",
    "download-path",
];
const CACHE_KEYS: &[&str] = &["url", "public-keys", "priority"];
const CACHE_EXAMPLE: &str = "  caches:\n    - url: https://cache.example.org\n      public-keys: [\"cache.example.org-1:<base64 of 32 bytes>\"]\n      priority: 40";
const CACHE_SCHEMES: &[&str] = &["https", "http", "file", "s3", "ssh", "oci"];

/// The result of looking for the configuration of a spec.
#[derive(Debug, Default)]
pub struct Discovered {
    /// The configuration that applies, read from the very file whose owner and mode
    /// were checked.
    pub file: Option<SourceFile>,
    /// Files passed over because they are not trusted, nearest first.
    pub ignored: Vec<Untrusted>,
}

/// The configuration file that applies to the spec in `spec_dir` (see the module
/// documentation for the order), using `$XDG_CONFIG_HOME`, `$HOME`, the effective
/// uid and `$BUILDIT_TRUSTED_CONFIG`.
pub fn find_config(spec_dir: &Path) -> Result<Discovered, SpecError> {
    let xdg = std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from);
    let home = std::env::var_os("HOME").map(PathBuf::from);
    find_config_in(
        spec_dir,
        xdg.as_deref(),
        home.as_deref(),
        &Trust::from_env(),
    )
}

/// [`find_config`] with the environment given.
pub fn find_config_in(
    spec_dir: &Path,
    xdg_config_home: Option<&Path>,
    home: Option<&Path>,
    trust: &Trust,
) -> Result<Discovered, SpecError> {
    // The spec directory as given (so messages show the path the user typed), then
    // its parents, which need the absolute path.
    let mut candidates = vec![spec_dir.join(FILE_NAME)];
    let start = std::path::absolute(spec_dir).unwrap_or_else(|_| spec_dir.to_path_buf());
    candidates.extend(start.ancestors().skip(1).map(|d| d.join(FILE_NAME)));
    // The XDG spec says to ignore a relative XDG_CONFIG_HOME.
    match xdg_config_home.filter(|p| p.is_absolute()) {
        Some(x) => candidates.push(x.join("buildit/config.yaml")),
        None => candidates.extend(home.map(|h| h.join(".config/buildit/config.yaml"))),
    }
    let mut found = Discovered::default();
    for path in candidates {
        if !path.is_file() {
            continue;
        }
        match trust.open_config(&path) {
            Ok(file) => {
                use std::io::Read;
                let mut text = String::new();
                let read = file.take(MAX_FILE_BYTES + 1).read_to_string(&mut text);
                let reason = match read {
                    Err(e) => Some(e.to_string()),
                    Ok(_) if text.len() as u64 > MAX_FILE_BYTES => {
                        Some(format!("it is larger than {} MiB", MAX_FILE_BYTES >> 20))
                    }
                    Ok(_) => None,
                };
                if let Some(reason) = reason {
                    return Err(SpecError::Read {
                        path: path.display().to_string(),
                        reason,
                    });
                }
                found.file = Some(SourceFile { path, text });
                return Ok(found);
            }
            Err(untrusted) => found.ignored.push(untrusted),
        }
    }
    Ok(found)
}

impl Config {
    /// Load the configuration at `path`, chosen by the user (it is not checked for
    /// trust: see [`find_config`] for the ones buildit finds itself).
    pub fn load(path: &Path) -> Result<Config, SpecError> {
        Config::parse(Arc::new(SourceFile::read(path)?))
    }

    /// The configuration that applies in `dir` ([`find_config`]), and the files
    /// passed over as untrusted.
    pub fn discover(dir: &Path) -> Result<(Option<Config>, Vec<Untrusted>), SpecError> {
        let found = find_config(dir)?;
        let config = match found.file {
            Some(f) => Some(Config::parse(Arc::new(f))?),
            None => None,
        };
        Ok((config, found.ignored))
    }

    pub fn parse(file: Arc<SourceFile>) -> Result<Config, SpecError> {
        let node = load_yaml(&file, TopLevel::Mapping)?;
        let m = top_map(&file, &node, FILE_NAME, KEYS, EXAMPLE)?;
        let base = file
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let repository = match m.map("repository", REPO_KEYS, EXAMPLE)? {
            Some(r) => Some(parse_repository(&r)?),
            None => None,
        };
        let mut caches = Vec::new();
        if let Some(node) = m.get("caches") {
            let Node::Sequence(seq) = node else {
                return Err(node_loc(&file, node).error(
                    format!("'caches' must be a list, not {}", describe(node)),
                    Some(format!("for example:\n{CACHE_EXAMPLE}")),
                ));
            };
            for item in seq.iter() {
                let c = Map::new(
                    &file,
                    item,
                    "a cache",
                    node_loc(&file, item),
                    CACHE_KEYS,
                    CACHE_EXAMPLE,
                )?;
                let url = c.required_str("url", CACHE_EXAMPLE)?;
                super::recipe::check_url(&url, CACHE_SCHEMES)?;
                let priority = match c.str("priority")? {
                    None => DEFAULT_PRIORITY,
                    Some(p) => p.trim().parse::<i64>().map_err(|_| {
                        p.error(
                            format!("the priority '{}' is not a whole number", short(&p)),
                            Some(format!(
                                "lower numbers are asked first; the default is {DEFAULT_PRIORITY}"
                            )),
                        )
                    })?,
                };
                caches.push(CacheConfig {
                    public_keys: public_keys(&c, "public-keys")?,
                    url,
                    priority,
                });
            }
        }
        let trusted_public_keys = public_keys(&m, "trusted-public-keys")?;
        let secret_key_file = m
            .str("secret-key-file")?
            .map(|s| s.map(|p| base.join(p.trim())));
        let trust = Trust::from_env();
        let recipe_paths = dirs(&m, "recipe-paths", &base, &trust)?;
        let source_dirs = dirs(&m, "source-dirs", &base, &trust)?;
        let allowed_dirs = dirs(&m, "allowed-dirs", &base, &trust)?;
        let mut mirrors = BTreeMap::new();
        for (name, node) in m.entries(
            "mirrors",
            "  mirrors:\n    debian: [https://mirror.example.org/debian]",
        )? {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(name.error(
                    format!("'{}' is not a mirror name", short(&name)),
                    Some(
                        "a mirror name is what follows mirror:// in URLs, e.g. debian, gnu".into(),
                    ),
                ));
            }
            let Node::Sequence(seq) = node else {
                return Err(node_loc(&file, node).error(
                    format!(
                        "the mirrors of '{}' must be a list of URLs, not {}",
                        name.value,
                        describe(node)
                    ),
                    Some(
                        "for example:\n  mirrors:\n    debian: [https://mirror.example.org/debian]"
                            .into(),
                    ),
                ));
            };
            let mut urls = Vec::new();
            for u in seq.iter() {
                let Node::Scalar(s) = u else {
                    return Err(node_loc(&file, u)
                        .error(format!("a mirror must be a URL, not {}", describe(u)), None));
                };
                let url = scalar(&file, s);
                super::recipe::check_url(&url, &["https", "http", "ftp", "file"])?;
                urls.push(url);
            }
            mirrors.insert(name.value, urls);
        }
        Ok(Config {
            path: file.path.clone(),
            repository,
            caches,
            trusted_public_keys,
            secret_key_file,
            recipe_paths,
            source_dirs,
            allowed_dirs,
            mirrors,
            file,
        })
    }
}

fn parse_repository(r: &Map<'_>) -> Result<RepositoryConfig, SpecError> {
    let name = r.required_str("name", EXAMPLE)?;
    let transport =
        |key: &str, allowed: &[Transport]| -> Result<Option<Located<Transport>>, SpecError> {
            let Some(s) = r.str(key)? else {
                return Ok(None);
            };
            let names: Vec<&str> = allowed.iter().map(|t| t.as_str()).collect();
            match allowed.iter().find(|t| t.as_str() == s.trim()) {
                Some(t) => Ok(Some(s.map(|_| *t))),
                None => {
                    let why = if key == "upload-type" && s.trim() == "http" {
                        "uploads over plain http are insecure; ".to_string()
                    } else {
                        String::new()
                    };
                    Err(s.error(
                        format!("'{}' is not a {key}", short(&s)),
                        Some(format!(
                            "{why}{} (one of: {})",
                            did_you_mean(&s, &names),
                            names.join(", ")
                        )),
                    ))
                }
            }
        };
    let upload_type = transport("upload-type", UPLOAD)?;
    let download_type = transport("download-type", DOWNLOAD)?;
    let upload_path = r.str("upload-path")?;
    let download_path = r.str("download-path")?;
    for (ty, path, t, p) in [
        (&upload_type, &upload_path, "upload-type", "upload-path"),
        (
            &download_type,
            &download_path,
            "download-type",
            "download-path",
        ),
    ] {
        match (ty, path) {
            (Some(_), None) => return Err(r.missing(p, EXAMPLE)),
            (None, Some(_)) => return Err(r.missing(t, EXAMPLE)),
            (_, Some(path)) if path.trim().is_empty() => {
                return Err(path.error(
                    format!("'{p}' is empty"),
                    Some(format!("for example:\n{EXAMPLE}")),
                ))
            }
            _ => {}
        }
    }
    Ok(RepositoryConfig {
        name,
        upload_type,
        upload_path,
        download_type,
        download_path,
    })
}

fn public_keys(m: &Map<'_>, key: &str) -> Result<Vec<Located<PublicKey>>, SpecError> {
    m.str_list(key, &format!("  {key}: [\"cache.example.org-1:<base64 of 32 bytes>\"]"))?
        .into_iter()
        .map(|s| match PublicKey::from_str(&s) {
            Ok(k) => Ok(s.map(|_| k)),
            Err(e) => Err(s.error(
                format!("invalid public key: {e}"),
                Some("a public key is NAME:BASE64 (32 bytes), as printed by `buildit key public` or `nix key convert-secret-to-public`".into()),
            )),
        })
        .collect()
}

/// Existing, trusted directories (relative to the configuration's directory).
fn dirs(
    m: &Map<'_>,
    key: &str,
    base: &Path,
    trust: &Trust,
) -> Result<Vec<Located<PathBuf>>, SpecError> {
    m.str_list(key, &format!("  {key}: [/srv/buildit/{key}]"))?
        .into_iter()
        .map(|s| {
            let p = base.join(s.trim());
            if p.is_dir() {
                if let Err(u) = trust.check_named(&p) {
                    return Err(s.error(
                        format!("'{}' in {key} is not trusted: {}", short(&s), u.why),
                        Some(u.help()),
                    ));
                }
                Ok(s.map(|_| p))
            } else {
                Err(s.error(
                    format!("'{}' is not a directory", short(&s)),
                    Some(format!(
                        "relative paths are relative to the directory of {FILE_NAME} ({})",
                        if base.as_os_str().is_empty() {
                            ".".into()
                        } else {
                            base.display().to_string()
                        }
                    )),
                ))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, SpecError> {
        Config::parse(Arc::new(SourceFile {
            path: "/nonexistent/.buildit-config.yaml".into(),
            text: text.into(),
        }))
    }

    #[test]
    fn seed_block() {
        let c = parse(EXAMPLE.replace("\n  ", "\n").trim_start()).unwrap();
        let r = c.repository.unwrap();
        assert_eq!(r.name.value, "mysuperbinhost");
        assert_eq!(r.upload_type.unwrap().value, Transport::Ssh);
        assert_eq!(r.download_type.unwrap().value, Transport::Https);
    }

    #[test]
    fn bad_values() {
        let e =
            parse("repository:\n  name: x\n  upload-type: htp\n  upload-path: y\n").unwrap_err();
        assert!(e.to_string().contains("not a upload-type"), "{e}");
        let e = parse("caches:\n  - url: https://c\n    priority: high\n").unwrap_err();
        assert!(e.to_string().contains("not a whole number"), "{e}");
        let e = parse("repository:\n  name: x\n  download-type: https\n").unwrap_err();
        assert!(e.to_string().contains("download-path"), "{e}");
    }

    #[test]
    fn discovery_order() {
        let tmp = tempfile::tempdir().unwrap();
        let tmp = tmp.path();
        let spec = tmp.join("a/spec");
        std::fs::create_dir_all(&spec).unwrap();
        let xdg = tmp.join("xdg");
        std::fs::create_dir_all(xdg.join("buildit")).unwrap();
        std::fs::write(xdg.join("buildit/config.yaml"), "").unwrap();
        let trust = Trust::from_env();
        let find = || {
            let d = find_config_in(&spec, Some(&xdg), None, &trust).unwrap();
            assert!(d.ignored.is_empty(), "{:?}", d.ignored);
            d.file.unwrap().path
        };
        // Only the user's file: it is used (unless a parent of the temp dir has one).
        let found = find();
        std::fs::write(tmp.join("a").join(FILE_NAME), "").unwrap();
        assert_eq!(find(), tmp.join("a").join(FILE_NAME));
        std::fs::write(spec.join(FILE_NAME), "").unwrap();
        assert_eq!(find(), spec.join(FILE_NAME));
        assert!(found.ends_with(FILE_NAME) || found == xdg.join("buildit/config.yaml"));
    }

    #[test]
    fn an_untrusted_file_is_passed_over() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let tmp = tmp.path();
        let spec = tmp.join("a/spec");
        std::fs::create_dir_all(&spec).unwrap();
        let parent = tmp.join("a").join(FILE_NAME);
        std::fs::write(&parent, "").unwrap();
        let own = spec.join(FILE_NAME);
        std::fs::write(&own, "caches: [{url: https://evil.example}]\n").unwrap();
        std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o666)).unwrap();
        let trust = Trust::new(nix::unistd::geteuid().as_raw(), []);
        let d = find_config_in(&spec, None, None, &trust).unwrap();
        assert_eq!(d.file.unwrap().path, parent);
        assert_eq!(d.ignored.len(), 1);
        assert_eq!(d.ignored[0].path, own);
        assert!(
            d.ignored[0].to_string().contains("mode 0666"),
            "{}",
            d.ignored[0]
        );
        // Named in BUILDIT_TRUSTED_CONFIG, it is used as it is.
        let trust = Trust::new(nix::unistd::geteuid().as_raw(), [own.clone()]);
        let d = find_config_in(&spec, None, None, &trust).unwrap();
        assert_eq!(d.file.unwrap().path, own);
        assert!(d.ignored.is_empty());
    }

    #[test]
    fn untrusted_named_directories_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let recipes = tmp.path().join("recipes");
        std::fs::create_dir(&recipes).unwrap();
        std::fs::set_permissions(&recipes, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = Config::parse(Arc::new(SourceFile {
            path: tmp.path().join(FILE_NAME),
            text: "recipe-paths: [recipes]\n".into(),
        }))
        .unwrap_err();
        let SpecError::At {
            message, location, ..
        } = &e
        else {
            panic!("{e:?}")
        };
        assert!(message.contains("is not trusted"), "{message}");
        assert!(location.ends_with(":1:16"), "{location}");
    }
}
