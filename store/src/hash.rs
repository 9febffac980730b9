//! Hashes as Nix names, prints and parses them: `md5`, `sha1`, `sha256`, `sha512` in
//! hex, nix32, base64 and SRI forms.

use std::fmt;
use std::io;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use sha2::Digest;
use thiserror::Error;

use crate::{hex, nix32};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashAlgo {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl HashAlgo {
    pub const ALL: [HashAlgo; 4] = [Self::Md5, Self::Sha1, Self::Sha256, Self::Sha512];

    pub fn name(self) -> &'static str {
        match self {
            Self::Md5 => "md5",
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }

    /// Digest size in bytes.
    pub fn size(self) -> usize {
        match self {
            Self::Md5 => 16,
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha512 => 64,
        }
    }
}

impl fmt::Display for HashAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HashAlgo {
    type Err = HashError;
    fn from_str(s: &str) -> Result<Self, HashError> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| HashError::UnknownAlgo(s.to_string()))
    }
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum HashError {
    #[error("unknown hash algorithm '{0}' (expected md5, sha1, sha256 or sha512)")]
    UnknownAlgo(String),
    #[error("hash '{0}' has no algorithm: write it as ALGO:HASH or ALGO-BASE64")]
    MissingAlgo(String),
    #[error("hash '{hash}' has the wrong length for {algo}")]
    BadLength { hash: String, algo: HashAlgo },
    #[error("hash '{hash}' is not valid {encoding}")]
    BadEncoding {
        hash: String,
        encoding: &'static str,
    },
}

/// A digest together with its algorithm.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash {
    algo: HashAlgo,
    digest: Vec<u8>,
}

impl Hash {
    /// Panics if `digest` has the wrong size for `algo`: callers build it from a hasher.
    pub fn new(algo: HashAlgo, digest: Vec<u8>) -> Self {
        assert_eq!(digest.len(), algo.size(), "digest size for {algo}");
        Hash { algo, digest }
    }

    pub fn from_digest(algo: HashAlgo, digest: &[u8]) -> Result<Self, HashError> {
        if digest.len() != algo.size() {
            return Err(HashError::BadLength {
                hash: hex::encode(digest),
                algo,
            });
        }
        Ok(Hash {
            algo,
            digest: digest.to_vec(),
        })
    }

    pub fn algo(&self) -> HashAlgo {
        self.algo
    }

    pub fn digest(&self) -> &[u8] {
        &self.digest
    }

    /// Hash `data` in one go.
    pub fn of(algo: HashAlgo, data: &[u8]) -> Self {
        let mut h = Hasher::new(algo);
        h.update(data);
        h.finish()
    }

    pub fn sha256(data: &[u8]) -> Self {
        Self::of(HashAlgo::Sha256, data)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(&self.digest)
    }

    pub fn to_nix32(&self) -> String {
        nix32::encode(&self.digest)
    }

    pub fn to_base64(&self) -> String {
        BASE64.encode(&self.digest)
    }

    /// `sha256-<base64>`.
    pub fn to_sri(&self) -> String {
        format!("{}-{}", self.algo, self.to_base64())
    }

    /// `sha256:<nix32>`, the form narinfo files and the store database use.
    pub fn to_prefixed_nix32(&self) -> String {
        format!("{}:{}", self.algo, self.to_nix32())
    }

    /// `sha256:<hex>`.
    pub fn to_prefixed_hex(&self) -> String {
        format!("{}:{}", self.algo, self.to_hex())
    }

    /// Decode a bare digest of a known algorithm, choosing the encoding from the
    /// length as Nix does: 2n chars hex, ceil(8n/5) nix32, 4*ceil(n/3) base64.
    pub fn parse_bare(s: &str, algo: HashAlgo) -> Result<Self, HashError> {
        let n = algo.size();
        let bad = |encoding| HashError::BadEncoding {
            hash: s.to_string(),
            encoding,
        };
        let digest = if s.len() == 2 * n {
            hex::decode(s).ok_or_else(|| bad("hex"))?
        } else if s.len() == nix32::encoded_len(n) {
            nix32::decode_exact(s, n).map_err(|_| bad("nix32"))?
        } else if s.len() == 4 * n.div_ceil(3) {
            BASE64.decode(s).map_err(|_| bad("base64"))?
        } else {
            return Err(HashError::BadLength {
                hash: s.to_string(),
                algo,
            });
        };
        Self::from_digest(algo, &digest)
    }

    /// Parse `algo:digest` (hex, nix32 or base64) or SRI `algo-base64`. With
    /// `default_algo`, a bare digest is accepted too.
    pub fn parse(s: &str, default_algo: Option<HashAlgo>) -> Result<Self, HashError> {
        if let Some((algo, rest)) = s.split_once(':') {
            return Self::parse_bare(rest, algo.parse()?);
        }
        if let Some((algo, rest)) = s.split_once('-') {
            if let Ok(algo) = algo.parse::<HashAlgo>() {
                let digest = BASE64.decode(rest).map_err(|_| HashError::BadEncoding {
                    hash: s.to_string(),
                    encoding: "SRI base64",
                })?;
                return Self::from_digest(algo, &digest);
            }
        }
        match default_algo {
            Some(algo) => Self::parse_bare(s, algo),
            None => Err(HashError::MissingAlgo(s.to_string())),
        }
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_prefixed_hex())
    }
}

/// Displays as `algo:nix32`, the form Nix uses in its database and narinfo.
impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_prefixed_nix32())
    }
}

impl FromStr for Hash {
    type Err = HashError;
    fn from_str(s: &str) -> Result<Self, HashError> {
        Hash::parse(s, None)
    }
}

impl serde::Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_prefixed_nix32())
    }
}

impl<'de> serde::Deserialize<'de> for Hash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An incremental hasher for any of the four algorithms. Also an `io::Write`, so a
/// NAR can be streamed straight into it.
#[derive(Clone)]
pub enum Hasher {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(algo: HashAlgo) -> Self {
        match algo {
            HashAlgo::Md5 => Self::Md5(md5::Md5::new()),
            HashAlgo::Sha1 => Self::Sha1(sha1::Sha1::new()),
            HashAlgo::Sha256 => Self::Sha256(sha2::Sha256::new()),
            HashAlgo::Sha512 => Self::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn algo(&self) -> HashAlgo {
        match self {
            Self::Md5(_) => HashAlgo::Md5,
            Self::Sha1(_) => HashAlgo::Sha1,
            Self::Sha256(_) => HashAlgo::Sha256,
            Self::Sha512(_) => HashAlgo::Sha512,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Md5(h) => h.update(data),
            Self::Sha1(h) => h.update(data),
            Self::Sha256(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Hash {
        let algo = self.algo();
        let digest = match self {
            Self::Md5(h) => h.finalize().to_vec(),
            Self::Sha1(h) => h.finalize().to_vec(),
            Self::Sha256(h) => h.finalize().to_vec(),
            Self::Sha512(h) => h.finalize().to_vec(),
        };
        Hash { algo, digest }
    }
}

impl io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A writer that hashes and counts what passes through it on the way to `inner`.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
    count: u64,
}

impl<W: io::Write> HashingWriter<W> {
    pub fn new(inner: W, algo: HashAlgo) -> Self {
        HashingWriter {
            inner,
            hasher: Hasher::new(algo),
            count: 0,
        }
    }

    /// The hash and byte count of everything written, and the inner writer.
    pub fn finish(self) -> (Hash, u64, W) {
        (self.hasher.finish(), self.count, self.inner)
    }
}

impl<W: io::Write> io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts what is read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    count: u64,
}

impl<R: io::Read> HashingReader<R> {
    pub fn new(inner: R, algo: HashAlgo) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::new(algo),
            count: 0,
        }
    }

    pub fn finish(self) -> (Hash, u64, R) {
        (self.hasher.finish(), self.count, self.inner)
    }
}

impl<R: io::Read> io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO_SHA256: &str = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";

    #[test]
    fn all_encodings_parse_to_the_same_hash() {
        let h = Hash::sha256(b"hello\n");
        assert_eq!(h.to_hex(), HELLO_SHA256);
        for form in [
            h.to_prefixed_hex(),
            h.to_prefixed_nix32(),
            format!("sha256:{}", h.to_base64()),
            h.to_sri(),
            HELLO_SHA256.to_uppercase().replace("SHA256", "sha256"),
        ] {
            assert_eq!(
                Hash::parse(&form, Some(HashAlgo::Sha256)).unwrap(),
                h,
                "{form}"
            );
        }
        assert_eq!(
            Hash::parse(HELLO_SHA256, Some(HashAlgo::Sha256)).unwrap(),
            h
        );
        assert!(matches!(
            Hash::parse(HELLO_SHA256, None),
            Err(HashError::MissingAlgo(_))
        ));
    }

    #[test]
    fn rejects_wrong_lengths_and_algos() {
        assert!(Hash::parse("sha256:abcd", None).is_err());
        assert!(Hash::parse("sha3:abcd", None).is_err());
        assert!(Hash::parse("sha256-!!!!", None).is_err());
        // nix32 with spare bits set
        let bad = format!("sha256:g{}", "z".repeat(51));
        assert!(Hash::parse(&bad, None).is_err());
    }
}
