//! Binary cache metadata: `<hashpart>.narinfo` files and `nix-cache-info`, parsed
//! and printed byte for byte as Nix 2.8 does, and narinfo signatures.
//!
//! A narinfo signature covers only the fingerprint (path, NarHash, NarSize and
//! references); URL, compression, FileHash, Deriver and CA can change without
//! invalidating it.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::content_address::ContentAddressError;
use crate::hash::HashError;
use crate::signing::{KeyError, PublicKey, SecretKey, Signature, SignatureError, TrustedKeys};
use crate::store_path::{StorePathError, STORE_DIR};
use crate::{ContentAddress, Hash, StorePath};

/// Error values quote at most this many characters of the offending input, so a
/// corrupt (or hostile) file cannot produce a megabyte-long message.
const MAX_QUOTED: usize = 120;

fn quote(value: &str) -> String {
    match value.char_indices().nth(MAX_QUOTED) {
        Some((end, _)) => format!("{}…", &value[..end]),
        None => value.to_string(),
    }
}

/// How the file at `URL` is compressed. Names are Nix's; anything unknown is kept
/// verbatim so it prints back unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Xz,
    Bzip2,
    Zstd,
    /// Nix calls it `br`.
    Brotli,
    /// Any other name; holds only names not covered by the variants above.
    Other(String),
}

impl Compression {
    pub fn as_str(&self) -> &str {
        match self {
            Self::None => "none",
            Self::Xz => "xz",
            Self::Bzip2 => "bzip2",
            Self::Zstd => "zstd",
            Self::Brotli => "br",
            Self::Other(s) => s,
        }
    }
}

impl From<&str> for Compression {
    fn from(s: &str) -> Self {
        match s {
            "none" => Self::None,
            "xz" => Self::Xz,
            "bzip2" => Self::Bzip2,
            "zstd" => Self::Zstd,
            "br" => Self::Brotli,
            other => Self::Other(other.to_string()),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why one value in a narinfo was rejected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ValueError {
    #[error(transparent)]
    StorePath(#[from] StorePathError),
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error(transparent)]
    ContentAddress(#[from] ContentAddressError),
    #[error(transparent)]
    Signature(#[from] KeyError),
    #[error("expected a decimal number that fits in 64 bits")]
    Number,
    #[error("must not be 0")]
    Zero,
    #[error("must not be empty")]
    Empty,
    #[error("references must be separated by single spaces")]
    EmptyReference,
    #[error("reference '{0}' is listed twice")]
    DuplicateReference(String),
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum NarInfoError {
    #[error("narinfo line {line}: expected 'Key: value', got {text:?}")]
    Syntax { line: usize, text: String },
    #[error("narinfo line {line}: key '{key}' appears more than once")]
    DuplicateKey { line: usize, key: &'static str },
    #[error("narinfo line {line}: bad {key} value {value:?}: {reason}")]
    BadValue {
        line: usize,
        key: &'static str,
        value: String,
        reason: ValueError,
    },
    #[error("narinfo has no {key} line")]
    MissingKey { key: &'static str },
}

/// One binary cache entry: where the (compressed) NAR of a store path is and what the
/// store needs to register it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarInfo {
    pub store_path: StorePath,
    /// Relative to the cache root, e.g. `nar/<nix32 FileHash>.nar.xz`.
    pub url: String,
    pub compression: Compression,
    /// Hash and size of the file at `url`; equal to the NAR's when uncompressed.
    pub file_hash: Option<Hash>,
    pub file_size: Option<u64>,
    pub nar_hash: Hash,
    pub nar_size: u64,
    pub references: BTreeSet<StorePath>,
    /// Unsigned (the fingerprint covers the path, NAR hash, NAR size and
    /// references only): advisory, never a reason to trust anything.
    pub deriver: Option<StorePath>,
    pub sigs: Vec<Signature>,
    /// Unsigned like `deriver`: a claim to check against the path and the NAR
    /// before it is believed (`PathInfo::check_ca_path`, `LocalStore::add_nar`).
    pub ca: Option<ContentAddress>,
    /// Legacy `System:` key; modern Nix neither writes nor needs it.
    pub system: Option<String>,
}

/// The keys the parser understands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    StorePath,
    Url,
    Compression,
    FileHash,
    FileSize,
    NarHash,
    NarSize,
    References,
    Deriver,
    System,
    Sig,
    Ca,
}

impl Key {
    const ALL: [Key; 12] = [
        Key::StorePath,
        Key::Url,
        Key::Compression,
        Key::FileHash,
        Key::FileSize,
        Key::NarHash,
        Key::NarSize,
        Key::References,
        Key::Deriver,
        Key::System,
        Key::Sig,
        Key::Ca,
    ];

    fn name(self) -> &'static str {
        match self {
            Key::StorePath => "StorePath",
            Key::Url => "URL",
            Key::Compression => "Compression",
            Key::FileHash => "FileHash",
            Key::FileSize => "FileSize",
            Key::NarHash => "NarHash",
            Key::NarSize => "NarSize",
            Key::References => "References",
            Key::Deriver => "Deriver",
            Key::System => "System",
            Key::Sig => "Sig",
            Key::Ca => "CA",
        }
    }

    fn from_name(name: &str) -> Option<Key> {
        Key::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// Nix writes sizes with `std::to_string`; a sign or blank is not something it produces.
fn parse_u64(value: &str) -> Result<u64, ValueError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueError::Number);
    }
    value.parse().map_err(|_| ValueError::Number)
}

fn parse_references(value: &str) -> Result<BTreeSet<StorePath>, ValueError> {
    let mut refs = BTreeSet::new();
    // Nix writes `References: ` (empty value) when there are none.
    if value.is_empty() {
        return Ok(refs);
    }
    for base in value.split(' ') {
        if base.is_empty() {
            return Err(ValueError::EmptyReference);
        }
        let path = StorePath::from_base_name(base)?;
        if !refs.insert(path) {
            return Err(ValueError::DuplicateReference(quote(base)));
        }
    }
    Ok(refs)
}

/// Fields as they are collected, before the required ones are known to be present.
#[derive(Default)]
struct Partial {
    store_path: Option<StorePath>,
    url: Option<String>,
    compression: Option<Compression>,
    file_hash: Option<Hash>,
    file_size: Option<u64>,
    nar_hash: Option<Hash>,
    nar_size: Option<u64>,
    references: BTreeSet<StorePath>,
    deriver: Option<StorePath>,
    system: Option<String>,
    sigs: Vec<Signature>,
    ca: Option<ContentAddress>,
}

impl Partial {
    fn set(&mut self, key: Key, value: &str) -> Result<(), ValueError> {
        match key {
            Key::StorePath => self.store_path = Some(StorePath::from_absolute(value)?),
            Key::Url => {
                if value.is_empty() {
                    return Err(ValueError::Empty);
                }
                self.url = Some(value.to_string());
            }
            Key::Compression => self.compression = Some(Compression::from(value)),
            // Like Nix, accept any algorithm and any encoding with a prefix
            // (`sha256:<nix32|hex|base64>` or SRI); printing normalises to nix32.
            Key::FileHash => self.file_hash = Some(Hash::parse(value, None)?),
            Key::FileSize => self.file_size = Some(parse_u64(value)?),
            Key::NarHash => self.nar_hash = Some(Hash::parse(value, None)?),
            Key::NarSize => {
                // Every NAR has a header, so 0 can only mean "unknown"; Nix rejects it
                // too and could not compute a fingerprint from it.
                let n = parse_u64(value)?;
                if n == 0 {
                    return Err(ValueError::Zero);
                }
                self.nar_size = Some(n);
            }
            Key::References => self.references = parse_references(value)?,
            Key::Deriver => {
                // Older Nix versions wrote this placeholder instead of leaving the line out.
                self.deriver = match value {
                    "unknown-deriver" => None,
                    _ => Some(StorePath::from_base_name(value)?),
                }
            }
            // Nix treats an empty System like an absent one and so do we, which keeps
            // parse(print(x)) == x.
            Key::System => self.system = (!value.is_empty()).then(|| value.to_string()),
            Key::Sig => self.sigs.push(value.parse()?),
            // Nix reads an empty CA as "not content-addressed".
            Key::Ca => {
                self.ca = match value {
                    "" => None,
                    _ => Some(value.parse()?),
                }
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<NarInfo, NarInfoError> {
        let missing = |key: Key| NarInfoError::MissingKey { key: key.name() };
        Ok(NarInfo {
            store_path: self.store_path.ok_or_else(|| missing(Key::StorePath))?,
            url: self.url.ok_or_else(|| missing(Key::Url))?,
            // Nix's default when the line is missing or empty.
            compression: match self.compression {
                None => Compression::Bzip2,
                Some(Compression::Other(s)) if s.is_empty() => Compression::Bzip2,
                Some(c) => c,
            },
            file_hash: self.file_hash,
            file_size: self.file_size,
            nar_hash: self.nar_hash.ok_or_else(|| missing(Key::NarHash))?,
            nar_size: self.nar_size.ok_or_else(|| missing(Key::NarSize))?,
            references: self.references,
            deriver: self.deriver,
            sigs: self.sigs,
            ca: self.ca,
            system: self.system,
        })
    }
}

impl NarInfo {
    /// Parse a narinfo file. Unknown keys are ignored (other cache servers add their own); every
    /// known key except `Sig` may appear only once. The last line may lack its `\n`.
    pub fn parse(text: &str) -> Result<NarInfo, NarInfoError> {
        let mut partial = Partial::default();
        let mut seen: Vec<Key> = Vec::new();
        let body = text.strip_suffix('\n').unwrap_or(text);
        if !body.is_empty() {
            for (idx, line) in body.split('\n').enumerate() {
                let line_no = idx + 1;
                let syntax = || NarInfoError::Syntax {
                    line: line_no,
                    text: quote(line),
                };
                let (name, rest) = line.split_once(':').ok_or_else(syntax)?;
                if name.is_empty() {
                    return Err(syntax());
                }
                let Some(key) = Key::from_name(name) else {
                    continue;
                };
                // Nix writes "Key: value"; "Key:" alone is the same as an empty value.
                let value = match rest.strip_prefix(' ') {
                    Some(v) => v,
                    None if rest.is_empty() => rest,
                    None => return Err(syntax()),
                };
                if key != Key::Sig {
                    if seen.contains(&key) {
                        return Err(NarInfoError::DuplicateKey {
                            line: line_no,
                            key: key.name(),
                        });
                    }
                    seen.push(key);
                }
                partial
                    .set(key, value)
                    .map_err(|reason| NarInfoError::BadValue {
                        line: line_no,
                        key: key.name(),
                        value: quote(value),
                        reason,
                    })?;
            }
        }
        // Nix keeps signatures in a string set: sorted, without duplicates. Doing the
        // same makes parse(print(x)) == x, since printing sorts them too.
        partial.sigs.sort_by_cached_key(|s| s.to_string());
        partial.sigs.dedup();
        partial.finish()
    }

    /// The message a narinfo signature covers:
    /// `1;<path>;<NarHash algo:nix32>;<NarSize>;<reference paths joined by ','>`.
    pub fn fingerprint(&self) -> String {
        let refs: Vec<String> = self.references.iter().map(|r| r.to_absolute()).collect();
        format!(
            "1;{};{};{};{}",
            self.store_path.to_absolute(),
            self.nar_hash.to_prefixed_nix32(),
            self.nar_size,
            refs.join(",")
        )
    }

    /// Sign with `key`, replacing any signature made under the same key name (so
    /// re-signing after a key rotation does not leave a stale signature behind).
    pub fn sign(&mut self, key: &SecretKey) {
        let sig = key.sign(self.fingerprint().as_bytes());
        self.sigs.retain(|s| s.key_name() != key.name());
        self.sigs.push(sig);
    }

    /// The trusted key that signed this entry, or why there is none.
    pub fn verify<'a>(&self, trusted: &'a TrustedKeys) -> Result<&'a PublicKey, SignatureError> {
        trusted.verify(self.fingerprint().as_bytes(), &self.sigs)
    }

    /// The file name this entry has in a cache: `<hash part>.narinfo`.
    pub fn file_name(&self) -> String {
        format!("{}.narinfo", self.store_path.hash_part())
    }
}

impl FromStr for NarInfo {
    type Err = NarInfoError;
    fn from_str(s: &str) -> Result<Self, NarInfoError> {
        NarInfo::parse(s)
    }
}

/// Nix 2.8's exact layout: fixed key order, one `Sig` line per signature sorted and
/// without duplicates (Nix keeps them in a string set), optional lines left out.
impl fmt::Display for NarInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "StorePath: {}", self.store_path.to_absolute())?;
        writeln!(f, "URL: {}", self.url)?;
        writeln!(f, "Compression: {}", self.compression)?;
        if let Some(h) = &self.file_hash {
            writeln!(f, "FileHash: {}", h.to_prefixed_nix32())?;
        }
        if let Some(n) = self.file_size {
            writeln!(f, "FileSize: {n}")?;
        }
        writeln!(f, "NarHash: {}", self.nar_hash.to_prefixed_nix32())?;
        writeln!(f, "NarSize: {}", self.nar_size)?;
        // The space after the colon is written even with no references, as Nix does.
        f.write_str("References: ")?;
        let mut first = true;
        for r in &self.references {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            f.write_str(r.base_name())?;
        }
        f.write_str("\n")?;
        if let Some(d) = &self.deriver {
            writeln!(f, "Deriver: {}", d.base_name())?;
        }
        if let Some(s) = self.system.as_deref().filter(|s| !s.is_empty()) {
            writeln!(f, "System: {s}")?;
        }
        let sigs: BTreeSet<String> = self.sigs.iter().map(|s| s.to_string()).collect();
        for s in &sigs {
            writeln!(f, "Sig: {s}")?;
        }
        if let Some(ca) = &self.ca {
            writeln!(f, "CA: {ca}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CacheInfoError {
    #[error(
        "binary cache is for store directory '{found}', not '{STORE_DIR}'; \
         its store paths (and so its signatures) cannot be used here"
    )]
    WrongStoreDir { found: String },
    #[error("nix-cache-info has no StoreDir line")]
    MissingStoreDir,
    #[error("nix-cache-info line {line}: key '{key}' appears more than once")]
    DuplicateKey { line: usize, key: &'static str },
    #[error("nix-cache-info line {line}: bad {key} value {value:?}: expected {expected}")]
    BadValue {
        line: usize,
        key: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// The `nix-cache-info` file at a binary cache's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixCacheInfo {
    /// Always [`STORE_DIR`] once parsed: a cache for another store dir is an error.
    pub store_dir: String,
    pub want_mass_query: Option<bool>,
    /// Lower is preferred, as in Nix.
    pub priority: Option<i32>,
}

impl Default for NixCacheInfo {
    fn default() -> Self {
        NixCacheInfo {
            store_dir: STORE_DIR.to_string(),
            want_mass_query: None,
            priority: None,
        }
    }
}

impl NixCacheInfo {
    /// Parse with Nix's leniency (lines without ':' and unknown keys are skipped,
    /// values are trimmed), but reject a foreign or missing StoreDir: every store
    /// path hash depends on the store dir, so such a cache has nothing usable.
    pub fn parse(text: &str) -> Result<NixCacheInfo, CacheInfoError> {
        let mut store_dir = None;
        let mut want_mass_query = None;
        let mut priority = None;
        for (idx, line) in text.split('\n').enumerate() {
            let line_no = idx + 1;
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            let dup = |key| CacheInfoError::DuplicateKey { line: line_no, key };
            let bad = |key, expected| CacheInfoError::BadValue {
                line: line_no,
                key,
                value: quote(value),
                expected,
            };
            match name {
                "StoreDir" => {
                    if store_dir.is_some() {
                        return Err(dup("StoreDir"));
                    }
                    if value != STORE_DIR {
                        return Err(CacheInfoError::WrongStoreDir {
                            found: quote(value),
                        });
                    }
                    store_dir = Some(value.to_string());
                }
                "WantMassQuery" => {
                    if want_mass_query.is_some() {
                        return Err(dup("WantMassQuery"));
                    }
                    want_mass_query = Some(match value {
                        "1" => true,
                        "0" => false,
                        _ => return Err(bad("WantMassQuery", "0 or 1")),
                    });
                }
                "Priority" => {
                    if priority.is_some() {
                        return Err(dup("Priority"));
                    }
                    priority = Some(value.parse().map_err(|_| bad("Priority", "an integer"))?);
                }
                _ => {}
            }
        }
        Ok(NixCacheInfo {
            store_dir: store_dir.ok_or(CacheInfoError::MissingStoreDir)?,
            want_mass_query,
            priority,
        })
    }
}

impl FromStr for NixCacheInfo {
    type Err = CacheInfoError;
    fn from_str(s: &str) -> Result<Self, CacheInfoError> {
        NixCacheInfo::parse(s)
    }
}

/// `StoreDir` first, then the optional keys, in the order HTTP caches write them.
impl fmt::Display for NixCacheInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "StoreDir: {}", self.store_dir)?;
        if let Some(w) = self.want_mass_query {
            writeln!(f, "WantMassQuery: {}", u8::from(w))?;
        }
        if let Some(p) = self.priority {
            writeln!(f, "Priority: {p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HashAlgo;

    const DEP: &str = "x36kkrk8ch136i7nwx43vscmljlsbvh5-dep.txt";
    const SELF: &str = "zapz4yc254xhwnx37f7n028hwzsldapz-refbuild";
    const NAR_HASH: &str = "sha256:1273cwpfdx3lrfi3c868vnn1nfk69ac2hv1pyajg4fccw6dh56wy";

    fn sample() -> String {
        format!(
            "StorePath: /store/{SELF}\n\
             URL: nar/1273cwpfdx3lrfi3c868vnn1nfk69ac2hv1pyajg4fccw6dh56wy.nar\n\
             Compression: none\n\
             FileHash: {NAR_HASH}\n\
             FileSize: 568\n\
             NarHash: {NAR_HASH}\n\
             NarSize: 568\n\
             References: {DEP} {SELF}\n\
             Deriver: 26p3prrlix6lxixbnynbx2vfg7fmqzfm-refbuild.drv\n"
        )
    }

    /// The sample with the line starting with `key` replaced by `line` (or removed).
    fn with_line(key: &str, line: Option<&str>) -> String {
        sample()
            .lines()
            .filter_map(|l| {
                if l.starts_with(&format!("{key}:")) {
                    line.map(str::to_string)
                } else {
                    Some(l.to_string())
                }
            })
            .map(|l| l + "\n")
            .collect()
    }

    fn err(text: &str) -> NarInfoError {
        NarInfo::parse(text).expect_err(text)
    }

    fn bad_value_of(text: &str) -> (usize, &'static str, ValueError) {
        match err(text) {
            NarInfoError::BadValue {
                line, key, reason, ..
            } => (line, key, reason),
            other => panic!("expected BadValue, got {other:?}"),
        }
    }

    #[test]
    fn parse_and_print_sample() {
        let info = NarInfo::parse(&sample()).unwrap();
        assert_eq!(info.store_path.base_name(), SELF);
        assert_eq!(info.compression, Compression::None);
        assert_eq!(info.nar_size, 568);
        assert_eq!(info.references.len(), 2);
        assert_eq!(info.to_string(), sample());
        assert_eq!(info.file_name(), "zapz4yc254xhwnx37f7n028hwzsldapz.narinfo");
        assert_eq!(
            info.fingerprint(),
            format!("1;/store/{SELF};{NAR_HASH};568;/store/{DEP},/store/{SELF}")
        );
    }

    #[test]
    fn missing_required_keys() {
        for key in ["StorePath", "URL", "NarHash", "NarSize"] {
            assert_eq!(
                err(&with_line(key, None)),
                NarInfoError::MissingKey { key },
                "{key}"
            );
        }
        assert_eq!(err(""), NarInfoError::MissingKey { key: "StorePath" });
    }

    #[test]
    fn optional_keys_and_defaults() {
        let text = with_line("Compression", None);
        let text = text
            .replace("FileHash", "Unknown-Key")
            .replace("FileSize", "X");
        let info = NarInfo::parse(&text).unwrap();
        assert_eq!(info.compression, Compression::Bzip2, "Nix's default");
        assert_eq!((info.file_hash, info.file_size), (None, None));
        let info = NarInfo::parse(&with_line("Compression", Some("Compression: "))).unwrap();
        assert_eq!(info.compression, Compression::Bzip2);
        let info = NarInfo::parse(&with_line("Compression", Some("Compression: lz4"))).unwrap();
        assert_eq!(info.compression, Compression::Other("lz4".into()));
        assert!(info.to_string().contains("\nCompression: lz4\n"));
        let info = NarInfo::parse(&with_line("Deriver", None)).unwrap();
        assert_eq!(info.deriver, None);
        let info = NarInfo::parse(&with_line("Deriver", Some("Deriver: unknown-deriver"))).unwrap();
        assert_eq!(info.deriver, None);
        // No trailing newline on the last line.
        let info = NarInfo::parse(sample().trim_end()).unwrap();
        assert_eq!(info.to_string(), sample());
    }

    #[test]
    fn system_and_ca_placement() {
        let mut info = NarInfo::parse(&sample()).unwrap();
        info.system = Some("x86_64-linux".into());
        info.ca = Some(format!("fixed:r:{NAR_HASH}").parse().unwrap());
        let key = SecretKey::from_seed("k", &[1; 32]).unwrap();
        info.sign(&key);
        let text = info.to_string();
        let keys: Vec<&str> = text.lines().map(|l| l.split(':').next().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "StorePath",
                "URL",
                "Compression",
                "FileHash",
                "FileSize",
                "NarHash",
                "NarSize",
                "References",
                "Deriver",
                "System",
                "Sig",
                "CA"
            ]
        );
        assert_eq!(NarInfo::parse(&text).unwrap(), info);
        // Empty System and CA read as absent, as in Nix.
        let text = format!("{}System: \nCA: \n", sample());
        let info = NarInfo::parse(&text).unwrap();
        assert_eq!((info.system, info.ca), (None, None));
    }

    #[test]
    fn other_hash_encodings_are_accepted_and_normalised() {
        let h: Hash = NAR_HASH.parse().unwrap();
        for form in [
            h.to_prefixed_hex(),
            h.to_sri(),
            format!("sha256:{}", h.to_base64()),
        ] {
            let text = with_line("NarHash", Some(&format!("NarHash: {form}")));
            let info = NarInfo::parse(&text).unwrap();
            assert_eq!(info.nar_hash, h);
            assert_eq!(info.to_string(), sample());
        }
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let text = format!("{}garbage\n", sample());
        assert_eq!(
            err(&text),
            NarInfoError::Syntax {
                line: 10,
                text: "garbage".into()
            }
        );
        let text = with_line("URL", Some("URL:nar/x.nar"));
        assert!(matches!(err(&text), NarInfoError::Syntax { line: 2, .. }));
        let text = with_line("URL", Some(": nar/x.nar"));
        assert!(matches!(err(&text), NarInfoError::Syntax { line: 2, .. }));
        let text = format!("\n{}", sample());
        assert!(matches!(err(&text), NarInfoError::Syntax { line: 1, .. }));
        let text = format!("{}\n", sample());
        assert!(matches!(err(&text), NarInfoError::Syntax { line: 10, .. }));
        let e = err(&with_line("URL", Some("URL:x")));
        assert!(e.to_string().starts_with("narinfo line 2:"), "{e}");
    }

    #[test]
    fn duplicate_keys() {
        let text = format!("{}NarSize: 568\n", sample());
        assert_eq!(
            err(&text),
            NarInfoError::DuplicateKey {
                line: 10,
                key: "NarSize"
            }
        );
        let text = format!("{}Deriver: unknown-deriver\n", sample());
        assert!(matches!(
            err(&text),
            NarInfoError::DuplicateKey { key: "Deriver", .. }
        ));
        // Unknown keys may repeat; they are ignored.
        let text = format!("{}X-Foo: 1\nX-Foo: 2\n", sample());
        assert!(NarInfo::parse(&text).is_ok());
    }

    type Check = fn(&ValueError) -> bool;

    #[test]
    fn bad_values() {
        use ValueError::*;
        let cases: Vec<(&str, &str, usize, Check)> = vec![
            ("StorePath", "StorePath: /nix/store/x", 1, |e| {
                matches!(e, StorePath(_))
            }),
            (
                "StorePath",
                "StorePath: zapz4yc254xhwnx37f7n028hwzsldapz-refbuild",
                1,
                |e| matches!(e, StorePath(StorePathError::NotInStore(_))),
            ),
            ("URL", "URL: ", 2, |e| *e == Empty),
            (
                "FileHash",
                "FileHash: 1273cwpfdx3lrfi3c868vnn1nfk69ac2hv1pyajg4fccw6dh56wy",
                4,
                |e| matches!(e, Hash(HashError::MissingAlgo(_))),
            ),
            ("FileSize", "FileSize: -1", 5, |e| *e == Number),
            ("FileSize", "FileSize: +1", 5, |e| *e == Number),
            ("FileSize", "FileSize: 18446744073709551616", 5, |e| {
                *e == Number
            }),
            ("NarHash", "NarHash: sha256:abc", 6, |e| {
                matches!(e, Hash(_))
            }),
            ("NarHash", "NarHash: ", 6, |e| matches!(e, Hash(_))),
            ("NarSize", "NarSize: 0", 7, |e| *e == Zero),
            ("NarSize", "NarSize: ", 7, |e| *e == Number),
            ("NarSize", "NarSize: 1 ", 7, |e| *e == Number),
        ];
        for (key, line, line_no, check) in cases {
            let (l, k, reason) = bad_value_of(&with_line(key, Some(line)));
            assert_eq!((l, k), (line_no, key), "{line}");
            assert!(check(&reason), "{line}: {reason:?}");
        }
    }

    #[test]
    fn bad_references() {
        use ValueError::*;
        let refs =
            |v: &str| bad_value_of(&with_line("References", Some(&format!("References: {v}"))));
        assert_eq!(
            refs(&format!("{DEP}  {SELF}")),
            (8, "References", EmptyReference)
        );
        assert_eq!(refs(&format!("{DEP} ")), (8, "References", EmptyReference));
        assert_eq!(refs(&format!(" {DEP}")), (8, "References", EmptyReference));
        assert_eq!(
            refs(&format!("{DEP} {DEP}")),
            (8, "References", DuplicateReference(DEP.into()))
        );
        assert!(matches!(refs(&format!("/store/{DEP}")).2, StorePath(_)));
        // Empty, with or without the trailing space.
        for line in ["References: ", "References:"] {
            let info = NarInfo::parse(&with_line("References", Some(line))).unwrap();
            assert!(info.references.is_empty());
            assert!(info.to_string().contains("\nReferences: \n"));
        }
        let (_, _, e) = bad_value_of(&with_line("Deriver", Some("Deriver: /store/x.drv")));
        assert!(matches!(e, StorePath(_)));
    }

    #[test]
    fn bad_sig_and_ca() {
        let text = format!("{}Sig: nocolon\n", sample());
        let (line, key, e) = bad_value_of(&text);
        assert_eq!((line, key), (10, "Sig"));
        assert!(matches!(
            e,
            ValueError::Signature(KeyError::MissingColon { .. })
        ));
        let text = format!("{}Sig: k:AAAA\n", sample());
        assert!(matches!(
            bad_value_of(&text).2,
            ValueError::Signature(KeyError::BadLength { got: 3, .. })
        ));
        let text = format!("{}CA: blob:sha256:x\n", sample());
        let (line, key, e) = bad_value_of(&text);
        assert_eq!((line, key), (10, "CA"));
        assert!(matches!(e, ValueError::ContentAddress(_)));
    }

    #[test]
    fn long_values_are_clipped_in_errors() {
        let long = "9".repeat(100_000);
        let text = with_line("NarSize", Some(&format!("NarSize: {long}")));
        match err(&text) {
            NarInfoError::BadValue { value, .. } => {
                assert!(value.chars().count() <= MAX_QUOTED + 1)
            }
            other => panic!("{other:?}"),
        }
        // Clipping respects character boundaries.
        let text = format!("{}\n", "é".repeat(1000));
        assert!(matches!(err(&text), NarInfoError::Syntax { .. }));
    }

    #[test]
    fn sign_replaces_same_key_name_and_sorts_on_print() {
        let mut info = NarInfo::parse(&sample()).unwrap();
        let k1 = SecretKey::from_seed("b-key", &[1; 32]).unwrap();
        let k1_rotated = SecretKey::from_seed("b-key", &[2; 32]).unwrap();
        let k2 = SecretKey::from_seed("a-key", &[3; 32]).unwrap();
        info.sign(&k1);
        info.sign(&k2);
        info.sign(&k1_rotated);
        assert_eq!(info.sigs.len(), 2);
        let trusted: TrustedKeys = [k1_rotated.to_public()].into_iter().collect();
        assert_eq!(info.verify(&trusted).unwrap().name(), "b-key");
        let old: TrustedKeys = [k1.to_public()].into_iter().collect();
        assert_eq!(
            info.verify(&old),
            Err(SignatureError::Invalid {
                key: "b-key".into()
            })
        );
        let text = info.to_string();
        let sig_lines: Vec<&str> = text.lines().filter(|l| l.starts_with("Sig: ")).collect();
        assert_eq!(sig_lines.len(), 2);
        assert!(sig_lines[0].starts_with("Sig: a-key:"));
        assert_eq!(NarInfo::parse(&text).unwrap().to_string(), text);
    }

    #[test]
    fn generate_sign_verify_round_trip() {
        let key = SecretKey::generate("test-cache-1").unwrap();
        let mut info = NarInfo::parse(&sample()).unwrap();
        let trusted: TrustedKeys = [key.to_public()].into_iter().collect();
        assert_eq!(info.verify(&trusted), Err(SignatureError::Unsigned));
        info.sign(&key);
        let reparsed = NarInfo::parse(&info.to_string()).unwrap();
        assert_eq!(reparsed.verify(&trusted).unwrap(), &key.to_public());
        // Unsigned fields may change; signed ones may not.
        let mut moved = reparsed.clone();
        moved.url = "nar/elsewhere.nar.xz".into();
        moved.compression = Compression::Xz;
        moved.deriver = None;
        assert!(moved.verify(&trusted).is_ok());
        let mut tampered = reparsed.clone();
        tampered.nar_size += 1;
        assert!(matches!(
            tampered.verify(&trusted),
            Err(SignatureError::Invalid { .. })
        ));
        let mut tampered = reparsed;
        tampered.references.clear();
        assert!(tampered.verify(&trusted).is_err());
        assert!(matches!(
            info.verify(&TrustedKeys::new()),
            Err(SignatureError::Untrusted { .. })
        ));
    }

    #[test]
    fn non_sha256_nar_hash_prints_with_its_algorithm() {
        let h = Hash::of(HashAlgo::Sha512, b"x");
        let text = with_line("NarHash", Some(&format!("NarHash: {}", h.to_sri())));
        let info = NarInfo::parse(&text).unwrap();
        assert!(info.fingerprint().contains(&h.to_prefixed_nix32()));
        assert_eq!(NarInfo::parse(&info.to_string()).unwrap(), info);
    }

    #[test]
    fn cache_info() {
        let info = NixCacheInfo::parse("StoreDir: /store\n").unwrap();
        assert_eq!(info, NixCacheInfo::default());
        assert_eq!(info.to_string(), "StoreDir: /store\n");
        let text = "StoreDir: /store\nWantMassQuery: 1\nPriority: 40\n";
        let info = NixCacheInfo::parse(text).unwrap();
        assert_eq!(info.want_mass_query, Some(true));
        assert_eq!(info.priority, Some(40));
        assert_eq!(info.to_string(), text);
        // Nix's leniency: junk lines skipped, values trimmed, unknown keys ignored.
        let info = NixCacheInfo::parse("junk\nStoreDir:/store  \nFoo: bar\n\n").unwrap();
        assert_eq!(info.store_dir, "/store");

        let e = NixCacheInfo::parse("StoreDir: /nix/store\n").unwrap_err();
        assert_eq!(
            e,
            CacheInfoError::WrongStoreDir {
                found: "/nix/store".into()
            }
        );
        assert!(e.to_string().contains("'/nix/store'"), "{e}");
        assert_eq!(
            NixCacheInfo::parse("Priority: 1\n"),
            Err(CacheInfoError::MissingStoreDir)
        );
        assert!(matches!(
            NixCacheInfo::parse("StoreDir: /store\nWantMassQuery: yes\n"),
            Err(CacheInfoError::BadValue {
                line: 2,
                key: "WantMassQuery",
                ..
            })
        ));
        assert!(matches!(
            NixCacheInfo::parse("StoreDir: /store\nPriority: high\n"),
            Err(CacheInfoError::BadValue {
                key: "Priority",
                ..
            })
        ));
        assert!(matches!(
            NixCacheInfo::parse("StoreDir: /store\nStoreDir: /store\n"),
            Err(CacheInfoError::DuplicateKey { line: 2, .. })
        ));
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn arbitrary_text_never_panics(s in "\\PC*") {
                let _ = NarInfo::parse(&s);
                let _ = NixCacheInfo::parse(&s);
            }

            /// Arbitrary values under every known key (and duplicates of them) either
            /// fail cleanly or round-trip.
            #[test]
            fn arbitrary_values_for_known_keys(k in 0usize..Key::ALL.len(), value in "\\PC{0,80}", append in any::<bool>()) {
                let key = Key::ALL[k].name();
                let line = format!("{key}: {value}");
                let text = if append {
                    format!("{}{line}\n", sample())
                } else {
                    with_line(key, Some(&line))
                };
                if let Ok(info) = NarInfo::parse(&text) {
                    let printed = info.to_string();
                    prop_assert_eq!(NarInfo::parse(&printed), Ok(info));
                }
            }

            /// Mutations of a valid file either fail cleanly or parse to something that
            /// prints and re-parses to the same value.
            #[test]
            fn mutated_sample_round_trips(pos in 0usize..1000, insert in "[ -~\n]{0,4}", cut in 0usize..4) {
                let mut text = sample();
                let mut pos = pos % (text.len() + 1);
                while !text.is_char_boundary(pos) { pos -= 1; }
                let end = (pos + cut).min(text.len());
                text.replace_range(pos..end, &insert);
                if let Ok(info) = NarInfo::parse(&text) {
                    let printed = info.to_string();
                    let again = NarInfo::parse(&printed).expect("printed narinfo parses");
                    prop_assert_eq!(&again, &info);
                    prop_assert_eq!(again.to_string(), printed);
                }
            }
        }
    }
}
