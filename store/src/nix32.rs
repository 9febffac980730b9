//! Nix's own base-32 ("nix32"): alphabet without e/o/t/u, the input read as a
//! little-endian number and printed most significant digit first.

use thiserror::Error;

const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Reverse lookup table: byte -> digit value, 0xff for bytes outside the alphabet.
const DECODE: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 32 {
        t[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    t
};

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum Nix32Error {
    #[error("invalid nix32 character {0:?}")]
    InvalidChar(char),
    #[error("nix32 string has length {got}, expected {expected}")]
    BadLength { got: usize, expected: usize },
    #[error("nix32 string has non-zero spare bits (not produced by any hash)")]
    SpareBits,
}

/// Length of the nix32 encoding of `n` bytes.
pub const fn encoded_len(n: usize) -> usize {
    (n * 8).div_ceil(5)
}

/// Number of bytes a nix32 string of `len` characters decodes to, if it is a valid length.
pub fn decoded_len(len: usize) -> Option<usize> {
    let n = len * 5 / 8;
    (encoded_len(n) == len).then_some(n)
}

pub fn encode(input: &[u8]) -> String {
    let len = encoded_len(input.len());
    let mut out = Vec::with_capacity(len);
    for i in (0..len).rev() {
        let b = i * 5;
        let (q, r) = (b / 8, b % 8);
        let lo = (input[q] as u16) >> r;
        let hi = if q + 1 < input.len() {
            (input[q + 1] as u16) << (8 - r)
        } else {
            0
        };
        out.push(ALPHABET[((lo | hi) & 0x1f) as usize]);
    }
    // The alphabet is ASCII, so this cannot fail.
    String::from_utf8(out).expect("nix32 alphabet is ASCII")
}

/// Strict decode into exactly `n` bytes: rejects foreign characters and set spare bits.
pub fn decode_exact(s: &str, n: usize) -> Result<Vec<u8>, Nix32Error> {
    let expected = encoded_len(n);
    if s.len() != expected {
        return Err(Nix32Error::BadLength {
            got: s.len(),
            expected,
        });
    }
    let mut out = vec![0u8; n];
    for (k, c) in s.bytes().enumerate() {
        let digit = DECODE[c as usize];
        if digit == 0xff {
            return Err(Nix32Error::InvalidChar(
                s[k..].chars().next().unwrap_or('\u{fffd}'),
            ));
        }
        let i = expected - 1 - k;
        let b = i * 5;
        let (q, r) = (b / 8, b % 8);
        out[q] |= digit << r;
        let carry = (digit as u16) >> (8 - r);
        if carry != 0 {
            if q + 1 < n {
                out[q + 1] |= carry as u8;
            } else {
                return Err(Nix32Error::SpareBits);
            }
        }
    }
    Ok(out)
}

/// Decode a nix32 string whose byte length follows from its own length.
pub fn decode(s: &str) -> Result<Vec<u8>, Nix32Error> {
    let n = decoded_len(s.len()).ok_or(Nix32Error::BadLength {
        got: s.len(),
        expected: encoded_len(s.len() * 5 / 8),
    })?;
    decode_exact(s, n)
}

/// XOR-fold a digest to `size` bytes (Nix's `compressHash`).
pub fn compress_hash(hash: &[u8], size: usize) -> Vec<u8> {
    let mut out = vec![0u8; size];
    for (i, b) in hash.iter().enumerate() {
        out[i % size] ^= b;
    }
    out
}

/// True when `c` is in the nix32 alphabet.
pub fn is_nix32_char(c: u8) -> bool {
    DECODE[c as usize] != 0xff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_sha256() {
        let bytes =
            crate::hex::decode("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
                .unwrap();
        let s = encode(&bytes);
        assert_eq!(s, "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73");
        assert_eq!(decode(&s).unwrap(), bytes);
    }

    #[test]
    fn rejects_spare_bits_and_bad_chars() {
        let z = "g".to_string() + &"z".repeat(51);
        assert_eq!(decode(&z), Err(Nix32Error::SpareBits));
        let e = "0".repeat(51) + "e";
        assert_eq!(decode(&e), Err(Nix32Error::InvalidChar('e')));
        assert!(matches!(decode("000"), Err(Nix32Error::BadLength { .. })));
    }

    #[test]
    fn roundtrip_all_lengths() {
        for n in 0..70 {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(decode_exact(&encode(&bytes), n).unwrap(), bytes);
        }
    }
}
