//! Store paths (`/store/<32 nix32 chars>-<name>`) and the ways Nix computes them.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::hash::{Hash, HashAlgo};
use crate::{nix32, ContentAddress, FileIngestion};

/// The logical store directory. It is part of every store path hash, so it never
/// changes with where the store physically lives.
pub const STORE_DIR: &str = "/store";

/// Length of the hash part of a store path.
pub const HASH_PART_LEN: usize = 32;

/// Longest name Nix 2.8 accepts.
pub const MAX_NAME_LEN: usize = 211;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum StorePathError {
    #[error("'{0}' is not in the store directory {STORE_DIR}")]
    NotInStore(String),
    #[error("'{0}' is not a store path: expected HASH-NAME with a 32-character hash")]
    BadShape(String),
    #[error("store path hash part '{0}' is not valid nix32")]
    BadHash(String),
    #[error("store path name is empty")]
    EmptyName,
    #[error("store path name '{name}' is {len} bytes long; at most {MAX_NAME_LEN} are allowed")]
    NameTooLong { name: String, len: usize },
    #[error(
        "store path name '{name}' contains {bad:?}; allowed are letters, digits and + - . _ ? ="
    )]
    BadNameChar { name: String, bad: char },
    #[error("store path name '{0}' starts with '.'")]
    LeadingDot(String),
}

/// A validated store path. Holds the base name `hash-name`; ordering is that of the
/// full path string, which is what Nix sorts references and inputs by.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath {
    base: Box<str>,
}

/// Check a store path name against Nix's rules (and ours: no leading dot).
pub fn validate_name(name: &str) -> Result<(), StorePathError> {
    if name.is_empty() {
        return Err(StorePathError::EmptyName);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(StorePathError::NameTooLong {
            name: name.to_string(),
            len: name.len(),
        });
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "+-._?=".contains(*c)))
    {
        return Err(StorePathError::BadNameChar {
            name: name.to_string(),
            bad,
        });
    }
    if name.starts_with('.') {
        return Err(StorePathError::LeadingDot(name.to_string()));
    }
    Ok(())
}

impl StorePath {
    /// From a 20-byte digest and a name.
    pub fn from_digest(digest: &[u8; 20], name: &str) -> Result<Self, StorePathError> {
        validate_name(name)?;
        Ok(StorePath {
            base: format!("{}-{}", nix32::encode(digest), name).into(),
        })
    }

    /// Parse a base name `hash-name` (no directory).
    pub fn from_base_name(base: &str) -> Result<Self, StorePathError> {
        let bytes = base.as_bytes();
        if bytes.len() < HASH_PART_LEN + 2 || bytes[HASH_PART_LEN] != b'-' {
            return Err(StorePathError::BadShape(base.to_string()));
        }
        let hash = &base[..HASH_PART_LEN];
        if !hash.bytes().all(nix32::is_nix32_char) || nix32::decode_exact(hash, 20).is_err() {
            return Err(StorePathError::BadHash(hash.to_string()));
        }
        validate_name(&base[HASH_PART_LEN + 1..])?;
        Ok(StorePath { base: base.into() })
    }

    /// Parse a full path `/store/hash-name`. A trailing slash is tolerated; anything
    /// below the store path (`/store/x-y/bin`) is not.
    pub fn from_absolute(path: &str) -> Result<Self, StorePathError> {
        let rest = path
            .strip_prefix(STORE_DIR)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| StorePathError::NotInStore(path.to_string()))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        Self::from_base_name(rest)
    }

    /// Parse a path inside the store (`/store/hash-name/sub/dir`) into the store path
    /// and the remainder (without a leading slash).
    pub fn split_absolute(path: &str) -> Result<(Self, &str), StorePathError> {
        let rest = path
            .strip_prefix(STORE_DIR)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| StorePathError::NotInStore(path.to_string()))?;
        let (base, sub) = rest.split_once('/').unwrap_or((rest, ""));
        Ok((Self::from_base_name(base)?, sub))
    }

    pub fn base_name(&self) -> &str {
        &self.base
    }

    pub fn hash_part(&self) -> &str {
        &self.base[..HASH_PART_LEN]
    }

    pub fn name(&self) -> &str {
        &self.base[HASH_PART_LEN + 1..]
    }

    pub fn digest(&self) -> [u8; 20] {
        let v = nix32::decode_exact(self.hash_part(), 20).expect("validated at construction");
        v.try_into().expect("20 bytes")
    }

    /// The logical path, `/store/hash-name`.
    pub fn to_absolute(&self) -> String {
        format!("{STORE_DIR}/{}", self.base)
    }

    pub fn is_derivation(&self) -> bool {
        self.name().ends_with(".drv")
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{STORE_DIR}/{}", self.base)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorePath({})", self.base)
    }
}

/// Accepts both `/store/hash-name` and a bare `hash-name`.
impl FromStr for StorePath {
    type Err = StorePathError;
    fn from_str(s: &str) -> Result<Self, StorePathError> {
        if s.starts_with('/') {
            Self::from_absolute(s)
        } else {
            Self::from_base_name(s)
        }
    }
}

impl serde::Serialize for StorePath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_absolute())
    }
}

impl<'de> serde::Deserialize<'de> for StorePath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Nix's `makeStorePath`: `type:sha256:<hex inner>:/store:name`, sha256'd, folded to
/// 20 bytes.
pub fn make_store_path(type_: &str, inner: &Hash, name: &str) -> Result<StorePath, StorePathError> {
    let fingerprint = format!(
        "{type_}:{}:{}:{STORE_DIR}:{name}",
        inner.algo(),
        inner.to_hex()
    );
    let digest = nix32::compress_hash(Hash::sha256(fingerprint.as_bytes()).digest(), 20);
    StorePath::from_digest(&digest.try_into().expect("20 bytes"), name)
}

fn type_with_refs<'a>(
    prefix: &str,
    refs: impl IntoIterator<Item = &'a StorePath>,
    has_self_ref: bool,
) -> String {
    let mut refs: Vec<String> = refs.into_iter().map(|r| r.to_absolute()).collect();
    refs.sort();
    refs.dedup();
    let mut t = prefix.to_string();
    for r in refs {
        t.push(':');
        t.push_str(&r);
    }
    if has_self_ref {
        t.push_str(":self");
    }
    t
}

/// A text path (`builtins.toFile`, every `.drv`): `content_hash` is the sha256 of the bytes.
pub fn make_text_path<'a>(
    name: &str,
    content_hash: &Hash,
    refs: impl IntoIterator<Item = &'a StorePath>,
) -> Result<StorePath, StorePathError> {
    make_store_path(&type_with_refs("text", refs, false), content_hash, name)
}

/// A fixed-output path (added content, fetched sources, `.deb`s). Recursive sha256
/// uses the `source` type and may carry references; everything else is `output:out`.
pub fn make_fixed_output_path<'a>(
    name: &str,
    method: FileIngestion,
    hash: &Hash,
    refs: impl IntoIterator<Item = &'a StorePath>,
    has_self_ref: bool,
) -> Result<StorePath, StorePathError> {
    if method == FileIngestion::Recursive && hash.algo() == HashAlgo::Sha256 {
        make_store_path(&type_with_refs("source", refs, has_self_ref), hash, name)
    } else {
        let inner = format!(
            "fixed:out:{}{}:{}:",
            method.prefix(),
            hash.algo(),
            hash.to_hex()
        );
        make_store_path("output:out", &Hash::sha256(inner.as_bytes()), name)
    }
}

/// The path of a content-addressed store object.
pub fn make_content_addressed_path<'a>(
    name: &str,
    ca: &ContentAddress,
    refs: impl IntoIterator<Item = &'a StorePath>,
    has_self_ref: bool,
) -> Result<StorePath, StorePathError> {
    match ca {
        ContentAddress::Text(h) => make_text_path(name, h, refs),
        ContentAddress::Fixed(method, h) => {
            make_fixed_output_path(name, *method, h, refs, has_self_ref)
        }
    }
}

/// The output `id` of an input-addressed derivation whose modulo hash is `drv_hash`.
pub fn make_output_path(
    output: &str,
    drv_hash: &Hash,
    drv_name: &str,
) -> Result<StorePath, StorePathError> {
    let name = output_path_name(drv_name, output);
    make_store_path(&format!("output:{output}"), drv_hash, &name)
}

/// `drvname` for `out`, `drvname-id` for other outputs.
pub fn output_path_name(drv_name: &str, output: &str) -> String {
    if output == "out" {
        drv_name.to_string()
    } else {
        format!("{drv_name}-{output}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        let p: StorePath = "/store/xkj7j434h63jq7k4zvkm9jjdgnls4fsx-hello.txt"
            .parse()
            .unwrap();
        assert_eq!(p.name(), "hello.txt");
        assert_eq!(p.hash_part(), "xkj7j434h63jq7k4zvkm9jjdgnls4fsx");
        assert_eq!(
            p.to_string(),
            "/store/xkj7j434h63jq7k4zvkm9jjdgnls4fsx-hello.txt"
        );
        let (sp, rest) =
            StorePath::split_absolute("/store/xkj7j434h63jq7k4zvkm9jjdgnls4fsx-hello.txt/a/b")
                .unwrap();
        assert_eq!((sp, rest), (p, "a/b"));
    }

    #[test]
    fn rejects_bad_paths() {
        use StorePathError::*;
        let h = "xkj7j434h63jq7k4zvkm9jjdgnls4fsx";
        assert!(matches!(
            StorePath::from_absolute("/nix/store/x"),
            Err(NotInStore(_))
        ));
        assert!(matches!(
            StorePath::from_base_name("abc-d"),
            Err(BadShape(_))
        ));
        assert!(matches!(
            StorePath::from_base_name(&format!("{h}-")),
            Err(BadShape(_))
        ));
        assert!(matches!(
            StorePath::from_base_name("eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x"),
            Err(BadHash(_))
        ));
        assert!(matches!(
            StorePath::from_base_name(&format!("{h}-a b")),
            Err(BadNameChar { bad: ' ', .. })
        ));
        assert!(matches!(
            StorePath::from_base_name(&format!("{h}-.hidden")),
            Err(LeadingDot(_))
        ));
        assert!(StorePath::from_base_name(&format!("{h}-{}", "a".repeat(211))).is_ok());
        assert!(matches!(
            StorePath::from_base_name(&format!("{h}-{}", "a".repeat(212))),
            Err(NameTooLong { len: 212, .. })
        ));
        assert!(StorePath::from_absolute(&format!("/store/{h}-x/sub")).is_err());
    }

    #[test]
    fn text_path() {
        let p = make_text_path("hello.txt", &Hash::sha256(b"hello\n"), []).unwrap();
        assert_eq!(
            p.to_string(),
            "/store/xkj7j434h63jq7k4zvkm9jjdgnls4fsx-hello.txt"
        );
    }

    #[test]
    fn flat_fixed_path() {
        let p = make_fixed_output_path(
            "hello.txt",
            FileIngestion::Flat,
            &Hash::sha256(b"hello\n"),
            [],
            false,
        )
        .unwrap();
        assert_eq!(
            p.to_string(),
            "/store/4ing4x8kprbhgy6knya50wq463alq5vb-hello.txt"
        );
    }
}
