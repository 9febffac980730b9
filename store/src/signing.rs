//! Ed25519 keys and signatures in Nix's text form, `NAME:BASE64`, as written by
//! `nix-store --generate-binary-cache-key` and found in narinfo `Sig:` lines and in
//! `trusted-public-keys`.
//!
//! * secret key: 64 bytes, the 32-byte seed followed by the 32-byte public key
//!   (libsodium's layout, which Nix stores verbatim);
//! * public key: 32 bytes;
//! * signature: 64 bytes, made with the key of the same NAME.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::{STANDARD, STANDARD_PAD_INDIFFERENT};
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use thiserror::Error;

/// Length of the seed (the first half of a Nix secret key file).
pub const SEED_LEN: usize = 32;
/// Length of a Nix secret key: seed then public key.
pub const SECRET_KEY_LEN: usize = 64;
/// Length of an ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// Which of the three `NAME:BASE64` things was being parsed, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    SecretKey,
    PublicKey,
    Signature,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SecretKey => "secret key",
            Self::PublicKey => "public key",
            Self::Signature => "signature",
        })
    }
}

/// Why a key, a signature or a key name was rejected. Never contains secret key
/// material, so it is safe to print.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    #[error("{kind} has no ':' separating the key name from the base64 data")]
    MissingColon { kind: KeyKind },
    #[error("{kind} has an empty key name")]
    EmptyName { kind: KeyKind },
    #[error("{kind} name '{name}' contains {bad:?}; key names may not contain ':' or whitespace")]
    BadNameChar {
        kind: KeyKind,
        name: String,
        bad: char,
    },
    #[error("{kind} '{name}' is not valid base64")]
    BadBase64 { kind: KeyKind, name: String },
    #[error("{kind} '{name}' has {got} bytes, expected {expected}")]
    BadLength {
        kind: KeyKind,
        name: String,
        got: usize,
        expected: usize,
    },
    #[error("secret key '{name}': public half does not match the seed")]
    PublicHalfMismatch { name: String },
    #[error("public key '{name}' is not a valid ed25519 point")]
    BadPoint { name: String },
    #[error("cannot get random bytes to generate key '{name}': {source}")]
    Random {
        name: String,
        #[source]
        source: getrandom::Error,
    },
}

/// Why a set of signatures did not establish trust in a message.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SignatureError {
    #[error("no signature")]
    Unsigned,
    #[error("no signature by a trusted key (signed by: {})", .signers.join(", "))]
    Untrusted { signers: Vec<String> },
    #[error("bad signature by trusted key '{key}'")]
    Invalid { key: String },
}

/// Check a key name the way Nix's `trusted-public-keys` and `Sig:` syntax need it:
/// the name ends at the first ':', and lists of keys are whitespace-separated.
pub fn validate_key_name(name: &str, kind: KeyKind) -> Result<(), KeyError> {
    if name.is_empty() {
        return Err(KeyError::EmptyName { kind });
    }
    if let Some(bad) = name.chars().find(|c| *c == ':' || c.is_whitespace()) {
        return Err(KeyError::BadNameChar {
            kind,
            name: name.to_string(),
            bad,
        });
    }
    Ok(())
}

/// Split `NAME:BASE64` and decode the data into exactly `N` bytes.
fn parse_named<const N: usize>(s: &str, kind: KeyKind) -> Result<(String, [u8; N]), KeyError> {
    let (name, data) = s.split_once(':').ok_or(KeyError::MissingColon { kind })?;
    validate_key_name(name, kind)?;
    // Nix's own decoder does not insist on '=' padding, so neither do we.
    let bytes = STANDARD_PAD_INDIFFERENT
        .decode(data)
        .map_err(|_| KeyError::BadBase64 {
            kind,
            name: name.to_string(),
        })?;
    let got = bytes.len();
    let arr: [u8; N] = bytes.try_into().map_err(|_| KeyError::BadLength {
        kind,
        name: name.to_string(),
        got,
        expected: N,
    })?;
    Ok((name.to_string(), arr))
}

/// A signing key. `Display` writes the secret (the key file format); `Debug` does not.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey {
    name: String,
    key: SigningKey,
}

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate(name: &str) -> Result<Self, KeyError> {
        validate_key_name(name, KeyKind::SecretKey)?;
        let mut seed = [0u8; SEED_LEN];
        getrandom::fill(&mut seed).map_err(|source| KeyError::Random {
            name: name.to_string(),
            source,
        })?;
        Self::from_seed(name, &seed)
    }

    /// The key whose 32-byte seed is `seed` (deterministic; for tests and imports).
    pub fn from_seed(name: &str, seed: &[u8; SEED_LEN]) -> Result<Self, KeyError> {
        validate_key_name(name, KeyKind::SecretKey)?;
        Ok(SecretKey {
            name: name.to_string(),
            key: SigningKey::from_bytes(seed),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn to_public(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature {
            key_name: self.name.clone(),
            bytes: self.key.sign(msg).to_bytes(),
        }
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The public half identifies the key without revealing anything secret.
        write!(
            f,
            "SecretKey({}, public {}, secret redacted)",
            self.name,
            STANDARD.encode(self.key.verifying_key().as_bytes())
        )
    }
}

/// `NAME:BASE64(seed || public key)`, the content of Nix's secret key file.
impl fmt::Display for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}",
            self.name,
            STANDARD.encode(self.key.to_keypair_bytes())
        )
    }
}

/// Surrounding whitespace is ignored: key files are often read with a trailing newline.
impl FromStr for SecretKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let (name, bytes) = parse_named::<SECRET_KEY_LEN>(s.trim(), KeyKind::SecretKey)?;
        let (seed, public) = bytes.split_at(SEED_LEN);
        let mut seed_arr = [0u8; SEED_LEN];
        seed_arr.copy_from_slice(seed);
        let key = SigningKey::from_bytes(&seed_arr);
        // A mismatched public half means a corrupt or hand-edited file; signing with
        // it would produce signatures nobody holding "the" public key can check.
        if key.verifying_key().as_bytes().as_slice() != public {
            return Err(KeyError::PublicHalfMismatch { name });
        }
        Ok(SecretKey { name, key })
    }
}

/// A verifying key, as listed in `trusted-public-keys`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PublicKey {
    name: String,
    key: VerifyingKey,
}

impl PublicKey {
    pub fn from_bytes(name: &str, bytes: &[u8; PUBLIC_KEY_LEN]) -> Result<Self, KeyError> {
        validate_key_name(name, KeyKind::PublicKey)?;
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::BadPoint {
            name: name.to_string(),
        })?;
        Ok(PublicKey {
            name: name.to_string(),
            key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        self.key.as_bytes()
    }

    /// True if `sig` was made over `msg` by this key. A signature carrying another key
    /// name never verifies, as in Nix, even if the key bytes would match.
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> bool {
        if sig.key_name != self.name {
            return false;
        }
        // Strict verification rejects small-order keys and R values and non-canonical
        // S, which is what libsodium (Nix's verifier) rejects as well.
        self.key
            .verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig.bytes))
            .is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// `NAME:BASE64(32 bytes)`.
impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, STANDARD.encode(self.key.as_bytes()))
    }
}

/// Surrounding whitespace is ignored: key files are often read with a trailing newline.
impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let (name, bytes) = parse_named::<PUBLIC_KEY_LEN>(s.trim(), KeyKind::PublicKey)?;
        Self::from_bytes(&name, &bytes)
    }
}

/// A detached signature with the name of the key that made it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signature {
    key_name: String,
    bytes: [u8; SIGNATURE_LEN],
}

impl Signature {
    pub fn new(key_name: &str, bytes: [u8; SIGNATURE_LEN]) -> Result<Self, KeyError> {
        validate_key_name(key_name, KeyKind::Signature)?;
        Ok(Signature {
            key_name: key_name.to_string(),
            bytes,
        })
    }

    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    pub fn bytes(&self) -> &[u8; SIGNATURE_LEN] {
        &self.bytes
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({self})")
    }
}

/// `NAME:BASE64(64 bytes)`, as in a narinfo `Sig:` line.
impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.key_name, STANDARD.encode(self.bytes))
    }
}

/// Not trimmed: a signature comes from a narinfo line, where stray whitespace means
/// the line is corrupt.
impl FromStr for Signature {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let (key_name, bytes) = parse_named::<SIGNATURE_LEN>(s, KeyKind::Signature)?;
        Ok(Signature { key_name, bytes })
    }
}

/// The keys whose signatures are accepted (Nix's `trusted-public-keys`). Several keys
/// may share a name, so a key can be rotated without renaming it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedKeys {
    keys: Vec<PublicKey>,
}

impl TrustedKeys {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a key; adding one that is already present changes nothing.
    pub fn insert(&mut self, key: PublicKey) {
        if !self.keys.contains(&key) {
            self.keys.push(key);
        }
    }

    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The trusted keys called `name`.
    pub fn by_name<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a PublicKey> + 'a {
        self.keys.iter().filter(move |k| k.name == name)
    }

    /// The first trusted key that made a valid signature over `msg`, if any.
    pub fn verify_any<'a, 's>(
        &'a self,
        msg: &[u8],
        sigs: impl IntoIterator<Item = &'s Signature>,
    ) -> Option<&'a PublicKey> {
        // PublicKey::verify checks the key name, so every key can simply be tried.
        sigs.into_iter()
            .find_map(|sig| self.keys.iter().find(|k| k.verify(msg, sig)))
    }

    /// Like [`verify_any`](Self::verify_any), but says why nothing verified: no
    /// signatures at all, none by a trusted key name, or a trusted key's signature
    /// that is wrong (the message or the signature was tampered with).
    pub fn verify<'a, 's>(
        &'a self,
        msg: &[u8],
        sigs: impl IntoIterator<Item = &'s Signature>,
    ) -> Result<&'a PublicKey, SignatureError> {
        let sigs: Vec<&Signature> = sigs.into_iter().collect();
        if let Some(key) = self.verify_any(msg, sigs.iter().copied()) {
            return Ok(key);
        }
        if let Some(sig) = sigs
            .iter()
            .find(|s| self.keys.iter().any(|k| k.name == s.key_name))
        {
            return Err(SignatureError::Invalid {
                key: sig.key_name.clone(),
            });
        }
        if sigs.is_empty() {
            return Err(SignatureError::Unsigned);
        }
        let mut signers: Vec<String> = sigs.iter().map(|s| s.key_name.clone()).collect();
        signers.sort();
        signers.dedup();
        Err(SignatureError::Untrusted { signers })
    }
}

impl FromIterator<PublicKey> for TrustedKeys {
    fn from_iter<I: IntoIterator<Item = PublicKey>>(iter: I) -> Self {
        let mut keys = TrustedKeys::new();
        keys.extend(iter);
        keys
    }
}

impl Extend<PublicKey> for TrustedKeys {
    fn extend<I: IntoIterator<Item = PublicKey>>(&mut self, iter: I) {
        for key in iter {
            self.insert(key);
        }
    }
}

/// A whitespace-separated list of public keys, as in nix.conf's `trusted-public-keys`.
impl FromStr for TrustedKeys {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        s.split_whitespace().map(PublicKey::from_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "cache.example.org-1";

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_seed(NAME, &[seed; SEED_LEN]).unwrap()
    }

    #[test]
    fn generate_sign_verify_round_trip() {
        let sk = SecretKey::generate(NAME).unwrap();
        let pk = sk.to_public();
        let sig = sk.sign(b"hello");
        assert!(pk.verify(b"hello", &sig));
        assert!(!pk.verify(b"hellp", &sig));

        // Every form survives a print/parse round trip.
        let sk2: SecretKey = sk.to_string().parse().unwrap();
        assert_eq!(sk2, sk);
        let pk2: PublicKey = pk.to_string().parse().unwrap();
        assert_eq!(pk2, pk);
        let sig2: Signature = sig.to_string().parse().unwrap();
        assert_eq!(sig2, sig);
        assert!(pk2.verify(b"hello", &sig2));

        // Two generated keys differ.
        let other = SecretKey::generate(NAME).unwrap();
        assert_ne!(other.to_public(), pk);
        assert!(!other.to_public().verify(b"hello", &sig));
    }

    #[test]
    fn signing_is_deterministic() {
        assert_eq!(key(1).sign(b"m"), key(1).sign(b"m"));
        assert_ne!(key(1).sign(b"m"), key(2).sign(b"m"));
    }

    #[test]
    fn verify_requires_the_same_key_name() {
        let sk = key(3);
        let renamed = SecretKey::from_seed("other", &[3; SEED_LEN]).unwrap();
        let sig = renamed.sign(b"m");
        assert_eq!(sig.bytes(), sk.sign(b"m").bytes());
        assert!(!sk.to_public().verify(b"m", &sig));
    }

    #[test]
    fn key_file_forms() {
        let sk = key(7);
        let text = sk.to_string();
        let (name, b64) = text.split_once(':').unwrap();
        assert_eq!(name, NAME);
        let raw = STANDARD.decode(b64).unwrap();
        assert_eq!(raw.len(), 64);
        assert_eq!(&raw[..32], &[7; 32]);
        assert_eq!(&raw[32..], sk.to_public().as_bytes());
        // Trailing newline from a file is fine; missing padding too (Nix accepts it).
        assert_eq!(format!("{text}\n").parse::<SecretKey>().unwrap(), sk);
        let pk = sk.to_public().to_string();
        assert_eq!(
            pk.trim_end_matches('=').parse::<PublicKey>().unwrap(),
            sk.to_public()
        );
    }

    #[test]
    fn debug_does_not_leak_the_secret() {
        let sk = key(9);
        let secret_b64 = sk.to_string().split_once(':').unwrap().1.to_string();
        let dbg = format!("{sk:?}");
        assert!(dbg.contains(NAME));
        assert!(!dbg.contains(&secret_b64));
        assert!(!dbg.contains(&STANDARD.encode([9u8; 32])));
    }

    #[test]
    fn parse_errors() {
        let b64_32 = STANDARD.encode([0u8; 31]);
        assert_eq!(
            "nocolon".parse::<PublicKey>(),
            Err(KeyError::MissingColon {
                kind: KeyKind::PublicKey
            })
        );
        assert_eq!(
            ":AAAA".parse::<Signature>(),
            Err(KeyError::EmptyName {
                kind: KeyKind::Signature
            })
        );
        assert!(matches!(
            "a b:AAAA".parse::<PublicKey>(),
            Err(KeyError::BadNameChar { bad: ' ', .. })
        ));
        assert!(matches!(
            "k:!!!!".parse::<PublicKey>(),
            Err(KeyError::BadBase64 {
                kind: KeyKind::PublicKey,
                ..
            })
        ));
        let short_secret = format!("x:{b64_32}");
        let err = short_secret.parse::<SecretKey>().unwrap_err();
        assert_eq!(
            err,
            KeyError::BadLength {
                kind: KeyKind::SecretKey,
                name: "x".into(),
                got: 31,
                expected: 64
            }
        );
        assert_eq!(err.to_string(), "secret key 'x' has 31 bytes, expected 64");
        assert!(matches!(
            format!("x:{b64_32}").parse::<PublicKey>(),
            Err(KeyError::BadLength {
                got: 31,
                expected: 32,
                ..
            })
        ));
        assert!(matches!(
            format!("x:{b64_32}").parse::<Signature>(),
            Err(KeyError::BadLength {
                got: 31,
                expected: 64,
                ..
            })
        ));
        // A signature line with trailing space is corrupt, not trimmed.
        let sig = key(1).sign(b"m").to_string();
        assert!(format!("{sig} ").parse::<Signature>().is_err());
    }

    #[test]
    fn secret_key_public_half_must_match() {
        let mut raw = key(5).to_string();
        let b64 = raw.split_off(NAME.len() + 1);
        let mut bytes = STANDARD.decode(b64).unwrap();
        bytes[40] ^= 1;
        let bad = format!("{raw}{}", STANDARD.encode(&bytes));
        let err = bad.parse::<SecretKey>().unwrap_err();
        assert_eq!(err, KeyError::PublicHalfMismatch { name: NAME.into() });
        assert!(err.to_string().contains("public half does not match"));
    }

    #[test]
    fn public_key_must_be_a_curve_point() {
        // y = 2 is not on the curve (no x satisfies the equation), so it can never verify.
        let mut bytes = [0u8; 32];
        bytes[0] = 2;
        let text = format!("k:{}", STANDARD.encode(bytes));
        assert!(matches!(
            text.parse::<PublicKey>(),
            Err(KeyError::BadPoint { .. })
        ));
    }

    #[test]
    fn bad_names_for_new_keys() {
        assert!(matches!(
            SecretKey::generate(""),
            Err(KeyError::EmptyName { .. })
        ));
        assert!(matches!(
            SecretKey::generate("a:b"),
            Err(KeyError::BadNameChar { bad: ':', .. })
        ));
        assert!(matches!(
            SecretKey::generate("a\tb"),
            Err(KeyError::BadNameChar { bad: '\t', .. })
        ));
        assert!(Signature::new("a b", [0; 64]).is_err());
    }

    #[test]
    fn trusted_keys_classify_failures() {
        let a = key(1);
        let b = SecretKey::from_seed("b", &[2; 32]).unwrap();
        let trusted: TrustedKeys = format!("  {}\n{} ", a.to_public(), a.to_public())
            .parse()
            .unwrap();
        assert_eq!(trusted.len(), 1, "duplicates collapse");

        let msg = b"fingerprint";
        let good = a.sign(msg);
        let by_b = b.sign(msg);
        let forged = a.sign(b"other");

        assert_eq!(trusted.verify(msg, []), Err(SignatureError::Unsigned));
        assert_eq!(
            trusted.verify(msg, [&by_b]),
            Err(SignatureError::Untrusted {
                signers: vec!["b".into()]
            })
        );
        assert_eq!(
            trusted.verify(msg, [&by_b, &forged]),
            Err(SignatureError::Invalid { key: NAME.into() })
        );
        assert_eq!(trusted.verify(msg, [&forged, &good]).unwrap().name(), NAME);
        assert_eq!(
            trusted.verify_any(msg, [&by_b, &good]).unwrap().name(),
            NAME
        );
        assert!(trusted.verify_any(msg, [&by_b, &forged]).is_none());

        // A rotated key under the same name is tried too.
        let rotated = key(4);
        let both: TrustedKeys = [a.to_public(), rotated.to_public()].into_iter().collect();
        assert!(both.verify(msg, [&rotated.sign(msg)]).is_ok());
        assert!(TrustedKeys::new().verify_any(msg, [&good]).is_none());
    }
}
