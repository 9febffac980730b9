//! Reading the parts of a cache URL the same way for every transport: the
//! authority through the `url` crate, components percent-decoded with
//! `percent-encoding`, query pairs as WHATWG URLs decode them (`+` is a space in a
//! query, a plus sign elsewhere).
//!
//! Stricter than the crates in one respect: a `%` that does not start an escape of
//! two hex digits is an error, not a literal. A cache URL names where keys and
//! credentials go; `%zz` or `%+a` is a typo to point at, not something to guess about.

use percent_encoding::percent_decode_str;

use super::CacheError;

/// Whether every `%` in `s` starts a `%XX` escape.
fn escapes_are_valid(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if !(i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

fn invalid(url: &str, why: &str) -> CacheError {
    CacheError::Invalid(format!("{url}: {why}"))
}

/// One path or user-name component of `url`, percent-decoded (a `+` stays a plus).
pub(crate) fn decode(component: &str, url: &str) -> Result<String, CacheError> {
    if !escapes_are_valid(component) {
        return Err(invalid(url, &format!("bad %-escape in '{component}'")));
    }
    percent_decode_str(component)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| invalid(url, "not UTF-8 once %-escapes are decoded"))
}

/// The `name=value` pairs of a query (the text after `?`), decoded; a pair
/// without `=` has an empty value.
pub(crate) fn query_pairs(query: &str, url: &str) -> Result<Vec<(String, String)>, CacheError> {
    if !escapes_are_valid(query) {
        return Err(invalid(url, &format!("bad %-escape in '{query}'")));
    }
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    // form_urlencoded replaces bytes that are not UTF-8 with U+FFFD; a cache URL
    // never needs them.
    if pairs
        .iter()
        .any(|(k, v)| k.contains('\u{FFFD}') || v.contains('\u{FFFD}'))
    {
        return Err(invalid(
            url,
            "query is not UTF-8 once %-escapes are decoded",
        ));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_components_strictly() {
        assert_eq!(decode("/srv/my%20cache", "u").unwrap(), "/srv/my cache");
        assert_eq!(decode("a+b", "u").unwrap(), "a+b");
        assert_eq!(decode("%C3%A9", "u").unwrap(), "é");
        for bad in ["%zz", "%+a", "%2", "a%", "%-1", "%FF"] {
            assert!(decode(bad, "u").is_err(), "{bad}");
        }
    }

    #[test]
    fn decodes_queries_as_urls_do() {
        let p = query_pairs("a=b+c&d=%2Fx%20y&flag", "u").unwrap();
        assert_eq!(
            p,
            [
                ("a".into(), "b c".into()),
                ("d".into(), "/x y".into()),
                ("flag".into(), String::new())
            ]
        );
        assert!(query_pairs("a=%+a", "u").is_err());
        assert!(query_pairs("a=%zz", "u").is_err());
        assert!(query_pairs("a=%FF", "u").is_err());
        assert!(query_pairs("", "u").unwrap().is_empty());
    }
}
