//! Binary caches as the commands use them: which caches a build asks (the config's
//! `caches:` and `repository:` download side, `--cache`, `--discover`), with which
//! trusted keys; where `--push` uploads (the `repository:` upload side); and
//! appc-style discovery of a cache from a name.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use buildit_lang::model::config::Transport;
use buildit_lang::model::Config;
use buildit_store::signing::{PublicKey, SecretKey, TrustedKeys};
use buildit_store::{LocalStore, StorePath};

use crate::cache::{BinaryCache, CacheError};

/// Priority of caches given on the command line or discovered: before the config's
/// default (50), as the user asked for them explicitly.
pub const CLI_PRIORITY: i64 = 30;

/// A cache to use, before it is opened.
#[derive(Debug, Clone)]
pub struct CacheSpec {
    pub url: String,
    pub priority: i64,
    pub keys: Vec<PublicKey>,
}

/// Which caches a build may take paths from, besides the configuration's.
#[derive(Debug, Clone, Default)]
pub struct CacheRequest {
    /// `false`: take nothing from any cache.
    pub substitute: bool,
    /// Cache URLs asked for explicitly.
    pub urls: Vec<String>,
    /// Public keys (`name:base64`, unparsed) trusted for `urls` and the discovered
    /// caches.
    pub trusted_keys: Vec<String>,
    /// Locations (names or URLs) to discover caches from.
    pub discover: Vec<String>,
    /// No network: only caches on this machine.
    pub offline: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheRequestError {
    #[error("{key}: {reason}")]
    TrustedKey { key: String, reason: String },
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// The caches a build substitutes from, opened: the configuration's, the ones
/// asked for, the discovered ones.
pub fn for_build(
    config: Option<&Config>,
    request: &CacheRequest,
) -> Result<Vec<BinaryCache>, CacheRequestError> {
    if !request.substitute {
        return Ok(Vec::new());
    }
    let mut specs = configured(config);
    let keys = request
        .trusted_keys
        .iter()
        .map(|k| {
            k.parse().map_err(
                |e: buildit_store::signing::KeyError| CacheRequestError::TrustedKey {
                    key: k.clone(),
                    reason: e.to_string(),
                },
            )
        })
        .collect::<Result<Vec<PublicKey>, _>>()?;
    for url in &request.urls {
        specs.push(CacheSpec {
            url: url.clone(),
            priority: CLI_PRIORITY,
            keys: keys.clone(),
        });
    }
    for loc in &request.discover {
        let mut spec = discover(loc)?;
        spec.keys.extend(keys.iter().cloned());
        specs.push(spec);
    }
    if request.offline {
        specs.retain(|s| s.url.starts_with("file://"));
    }
    Ok(open_all(&specs)?)
}

/// The URL of a `repository:` side: `TYPE://PATH`, where the seed writes
/// `upload-path: containers@mysuperbinhost.org/containers`.
fn repository_url(t: Transport, path: &str) -> String {
    match t {
        Transport::File if !path.starts_with('/') => format!("file:///{path}"),
        _ => format!("{}://{path}", t.as_str()),
    }
}

/// The caches of the configuration: `caches:` and the repository's download side.
pub fn configured(config: Option<&Config>) -> Vec<CacheSpec> {
    let Some(c) = config else { return Vec::new() };
    let global: Vec<PublicKey> = c
        .trusted_public_keys
        .iter()
        .map(|k| k.value.clone())
        .collect();
    let mut out: Vec<CacheSpec> = c
        .caches
        .iter()
        .map(|x| CacheSpec {
            url: x.url.value.clone(),
            priority: x.priority,
            keys: x
                .public_keys
                .iter()
                .map(|k| k.value.clone())
                .chain(global.iter().cloned())
                .collect(),
        })
        .collect();
    if let Some(r) = &c.repository {
        if let (Some(t), Some(p)) = (&r.download_type, &r.download_path) {
            out.push(CacheSpec {
                url: repository_url(t.value, &p.value),
                priority: buildit_lang::model::config::DEFAULT_PRIORITY,
                keys: global.clone(),
            });
        }
    }
    out
}

/// Where `--push` goes: the repository's upload side, with its name for messages.
pub fn upload_target(config: Option<&Config>) -> Option<(String, String)> {
    let r = config?.repository.as_ref()?;
    let (t, p) = (r.upload_type.as_ref()?, r.upload_path.as_ref()?);
    Some((r.name.value.clone(), repository_url(t.value, &p.value)))
}

/// The signing key: `--secret-key-file`, else the config's `secret-key-file`.
pub fn secret_key(flag: Option<&Path>, config: Option<&Config>) -> Result<SecretKey, CacheError> {
    let path: PathBuf = match (flag, config.and_then(|c| c.secret_key_file.as_ref())) {
        (Some(f), _) => f.to_path_buf(),
        (None, Some(f)) => {
            let base = config
                .and_then(|c| c.path.parent())
                .unwrap_or(Path::new("."));
            let path = base.join(&f.value);
            // Signing with a key someone else can replace signs what they choose.
            buildit_lang::model::trust::Trust::from_env()
                .check_named(&path)
                .map_err(|u| {
                    CacheError::Invalid(format!(
                        "the secret-key-file of {} is not trusted: {u} ({})",
                        f.loc,
                        u.help()
                    ))
                })?;
            path
        }
        (None, None) => {
            return Err(CacheError::Invalid(
                "pushing needs a secret key: --secret-key-file FILE, or `secret-key-file:` in .buildit-config.yaml (`buildit store key generate NAME` makes one)".into(),
            ))
        }
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| CacheError::Invalid(format!("{}: {e}", path.display())))?;
    text.trim()
        .parse()
        .map_err(|e| CacheError::Invalid(format!("{}: {e}", path.display())))
}

/// Open caches, lowest priority number first (ties: the order given).
pub fn open_all(specs: &[CacheSpec]) -> Result<Vec<BinaryCache>, CacheError> {
    let mut specs = specs.to_vec();
    specs.sort_by_key(|s| s.priority);
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for s in specs {
        if !seen.insert(s.url.clone()) {
            continue;
        }
        let mut keys = TrustedKeys::new();
        for k in &s.keys {
            keys.insert(k.clone());
        }
        out.push(BinaryCache::new(
            crate::cache::open(&s.url)?,
            s.priority,
            keys,
        ));
    }
    Ok(out)
}

/// `--discover LOCATION`: a URL is a cache as it is; a name such as
/// `example.org/containers` is looked up the appc way: `https://LOCATION?ac-discovery=1`
/// must hold `<meta name="ac-discovery" content="PREFIX URL">` (the cache's URL; an
/// appc URL template is cut before its first `{`) and may hold
/// `<meta name="ac-discovery-pubkeys" content="PREFIX URL">`, a file of trusted keys
/// (`name:base64`, one per line).
pub fn discover(location: &str) -> Result<CacheSpec, CacheError> {
    if location.contains("://") {
        return Ok(CacheSpec {
            url: location.to_string(),
            priority: CLI_PRIORITY,
            keys: Vec::new(),
        });
    }
    let page_url = format!("https://{location}?ac-discovery=1");
    let page = get_text(&page_url)?;
    let metas = meta_tags(&page);
    let pick = |name: &str| -> Option<String> {
        metas
            .iter()
            .filter(|(n, _)| n == name)
            .filter_map(|(_, content)| {
                let (prefix, url) = content.split_once(char::is_whitespace)?;
                location
                    .starts_with(prefix.trim())
                    .then(|| url.trim().to_string())
            })
            // The longest matching prefix is the most specific.
            .max_by_key(|u| u.len())
    };
    let template = pick("ac-discovery").ok_or_else(|| {
        CacheError::Invalid(format!(
            "{page_url}: no <meta name=\"ac-discovery\"> for {location}"
        ))
    })?;
    let url = match template.find('{') {
        Some(i) => template[..i]
            .rsplit_once('/')
            .map(|(a, _)| a)
            .unwrap_or(&template[..i])
            .to_string(),
        None => template.trim_end_matches('/').to_string(),
    };
    let mut keys = Vec::new();
    if let Some(k) = pick("ac-discovery-pubkeys") {
        for line in get_text(&k)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            keys.push(
                line.parse()
                    .map_err(|e| CacheError::Invalid(format!("{k}: {e}")))?,
            );
        }
    }
    Ok(CacheSpec {
        url,
        priority: CLI_PRIORITY,
        keys,
    })
}

fn get_text(url: &str) -> Result<String, CacheError> {
    let mut body = crate::fetch::http_get_optional(url)
        .map_err(|e| CacheError::Invalid(format!("{url}: {e}")))?
        .ok_or_else(|| CacheError::Invalid(format!("{url}: not found")))?;
    let mut s = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(&mut body, 1 << 20), &mut s)
        .map_err(|e| CacheError::Invalid(format!("{url}: {e}")))?;
    Ok(s)
}

/// `(name, content)` of every `<meta name=… content=…>` in an HTML page.
fn meta_tags(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let lower = html.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find("<meta") {
        let start = from + i;
        let end = lower[start..]
            .find('>')
            .map(|e| start + e)
            .unwrap_or(html.len());
        let tag = &html[start..end];
        let attr = |name: &str| -> Option<String> {
            let l = tag.to_ascii_lowercase();
            let k = l.find(&format!("{name}="))? + name.len() + 1;
            let rest = &tag[k..];
            let q = rest.chars().next()?;
            if q == '"' || q == '\'' {
                rest[1..].split(q).next().map(String::from)
            } else {
                rest.split_whitespace().next().map(String::from)
            }
        };
        if let (Some(n), Some(c)) = (attr("name"), attr("content")) {
            out.push((n, c));
        }
        from = end;
    }
    out
}

/// `--discover=LOC[,LOC…][,push=True]`, as the design card writes it.
pub fn parse_discover(arg: &str) -> (Vec<String>, bool) {
    let mut locations = Vec::new();
    let mut push = false;
    for part in arg.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some((k, v)) if k.eq_ignore_ascii_case("push") => {
                push = matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes")
            }
            _ => locations.push(part.to_string()),
        }
    }
    (locations, push)
}

/// What a push of a spec sends: every derivation of the plan and every valid
/// output (packages, sources, `.deb`s, images), with their closures.
pub fn spec_paths(store: &LocalStore, drvs: &[StorePath]) -> Result<Vec<StorePath>, CacheError> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut stack: Vec<StorePath> = drvs.to_vec();
    while let Some(d) = stack.pop() {
        if !seen.insert(d.clone()) {
            continue;
        }
        out.push(d.clone());
        let drv = store.read_derivation(&d)?;
        for o in drv.outputs.values().filter_map(|o| o.path()) {
            if store.is_valid(o)? {
                out.push(o.clone());
            }
        }
        stack.extend(drv.input_drvs.keys().cloned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_discover_argument() {
        assert_eq!(
            parse_discover("github.com/sysadmin42/containers,push=True"),
            (vec!["github.com/sysadmin42/containers".to_string()], true)
        );
        assert_eq!(
            parse_discover("a.org/x,b.org/y"),
            (vec!["a.org/x".to_string(), "b.org/y".to_string()], false)
        );
    }

    #[test]
    fn meta_tags_are_read_from_html() {
        let page = r#"<html><head>
            <meta name="ac-discovery" content="example.org/containers https://cache.example.org/c/{name}-{version}.{ext}">
            <META NAME='ac-discovery-pubkeys' CONTENT='example.org https://example.org/keys.txt'>
            </head></html>"#;
        let m = meta_tags(page);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].0, "ac-discovery");
        assert!(m[0].1.ends_with("{ext}"));
        assert_eq!(m[1].1, "example.org https://example.org/keys.txt");
    }
}
