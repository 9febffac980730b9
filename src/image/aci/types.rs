//! appc's value types, as the manifest check needs them: AC identifiers and
//! names, OS and architecture labels, AC versions, dates and URLs.

/// appc 0.8.11's `types.ValidOSArch`: the spec text lists fewer pairs but defers
/// to this table, and it is what actool enforces.
pub(super) const OS_ARCH: [(&str, &[&str]); 3] = [
    (
        "linux",
        &[
            "amd64",
            "i386",
            "aarch64",
            "aarch64_be",
            "armv6l",
            "armv7l",
            "armv7b",
            "ppc64",
            "ppc64le",
            "s390x",
        ],
    ),
    ("freebsd", &["amd64", "i386", "arm"]),
    ("darwin", &["x86_64", "i386"]),
];

/// The release the checks follow; later 0.8 versions were never tagged, and the
/// spec wants acVersion to name a tagged release.
pub(super) const AC_VERSION_MAX_PATCH: u64 = 11;

/// Why `s` is not an AC identifier (`^[a-z0-9]+([-._~/][a-z0-9]+)*$`), or an AC
/// name (the same with only `-` between), if it is not.
pub(super) fn ac_problem(s: &str, seps: &str) -> Option<String> {
    let what = if seps.len() == 1 {
        "an AC name"
    } else {
        "an AC identifier"
    };
    let allowed = format!("lowercase letters, digits and {}", seps);
    if s.is_empty() {
        return Some(format!("must not be empty: it is {what}"));
    }
    if s.chars().any(|c| c.is_ascii_uppercase()) {
        return Some(format!("must be lowercase: {what} allows only {allowed}"));
    }
    if let Some(bad) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || seps.contains(*c)))
    {
        return Some(format!(
            "contains {bad:?}, which {what} does not allow (only {allowed})"
        ));
    }
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !s.starts_with(alnum) || !s.ends_with(alnum) {
        return Some(format!(
            "must start and end with a letter or digit ({what})"
        ));
    }
    let b = s.as_bytes();
    if let Some(w) = b
        .windows(2)
        .find(|w| !alnum(w[0] as char) && !alnum(w[1] as char))
    {
        return Some(format!(
            "has {:?}: in {what} each separator ({seps}) must stand between letters or digits",
            String::from_utf8_lossy(w)
        ));
    }
    None
}

pub(super) fn c_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// SemVer 2.0.0 (`MAJOR.MINOR.PATCH[-PRE][+BUILD]`, no leading zeros), as appc's
/// AC Version type wants; the core numbers, for the release check.
pub(super) fn semver(s: &str) -> Option<(u64, u64, u64)> {
    let v = semver::Version::parse(s).ok()?;
    Some((v.major, v.minor, v.patch))
}

/// RFC 3339 `date-time`, what appc's `created` annotation must be. appc reads it
/// with Go's `time.RFC3339` layout, which is stricter than the RFC (and chrono) in
/// three ways kept here: an upper-case `T` and `Z` only, and no leap second.
pub(super) fn rfc3339(s: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(s).is_ok()
        && s.as_bytes().get(10) == Some(&b'T')
        && !s.ends_with('z')
        // Parsed, so bytes 0..19 are ASCII.
        && s.get(17..19) != Some("60")
}

pub(super) fn http_url(s: &str) -> bool {
    ["http://", "https://"].iter().any(|p| {
        s.strip_prefix(p).is_some_and(|rest| {
            !rest.is_empty() && !rest.starts_with('/') && !rest.contains(char::is_whitespace)
        })
    })
}

/// Docker's and Go's spellings of architectures, for a hint when one is used.
pub(super) fn arch_hint(os: &str, arch: &str) -> Option<&'static str> {
    match (os, arch) {
        ("linux" | "freebsd", "x86_64" | "x86-64") => Some("amd64"),
        ("darwin", "amd64") => Some("x86_64"),
        ("linux", "arm64") => Some("aarch64"),
        ("linux", "arm" | "armhf" | "armv7") => Some("armv7l"),
        ("linux", "armel" | "armv6") => Some("armv6l"),
        ("linux" | "freebsd" | "darwin", "386" | "x86" | "i686") => Some("i386"),
        ("linux", "ppc64el") => Some("ppc64le"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_follow_the_spec_regex() {
        for ok in [
            "database",
            "example.com/database",
            "example.com/user~1/app_v1",
            "sub-domain.example.com/org/product/release",
            "a",
            "0",
        ] {
            assert_eq!(ac_problem(ok, "-._~/"), None, "{ok}");
        }
        // The spec lists "example.com/~user/app_v1" as an example, yet its own regex
        // (which this follows, and which rules out "//") refuses "/~".
        for bad in [
            "example.com/~user/app_v1",
            "",
            "a//b",
            "a.-b",
            "a/",
            "/a",
            "a b",
            "A",
            "a__b",
            "é",
        ] {
            assert!(ac_problem(bad, "-._~/").is_some(), "{bad}");
        }
        assert_eq!(ac_problem("product-database", "-"), None);
        assert!(ac_problem("a.b", "-").is_some());
        assert!(ac_problem("a--b", "-").is_some());
    }

    #[test]
    fn semver_and_dates() {
        assert_eq!(semver("0.8.11"), Some((0, 8, 11)));
        assert_eq!(semver("0.8.11+git"), Some((0, 8, 11)));
        assert_eq!(semver("1.0.0-rc.1"), Some((1, 0, 0)));
        assert_eq!(semver("0.8.0-alpha.1+001"), Some((0, 8, 0)));
        for bad in [
            "0.8",
            "08.1.1",
            "0.8.01",
            "0.8.1-",
            "0.8.1+",
            "0.8.1-01",
            "0.8.1-a..b",
            "0.8.1-a_b",
            "v0.8.1",
            "0.8.1.2",
            " 0.8.1",
        ] {
            assert_eq!(semver(bad), None, "{bad}");
        }
        assert!(rfc3339("2014-10-27T19:32:27.67021798Z"));
        assert!(rfc3339("2015-05-18T13:49:28-04:00"));
        assert!(rfc3339("2024-02-29T00:00:00Z"));
        for bad in [
            "2014-10-27",
            "2014-13-27T19:32:27Z",
            // The calendar is checked, not just the ranges of the fields.
            "2023-02-31T12:00:00Z",
            "2023-02-29T12:00:00Z",
            // Go's layout: upper-case separators, no leap second.
            "2014-10-27t19:32:27Z",
            "2014-10-27T19:32:27z",
            "2016-12-31T23:59:60Z",
            "2014-10-27T19:32:27.Z",
            "2014-10-27T19:32:27+24:00",
            "2014-10-27 19:32:27Z",
            "2014-10-27T19:32:27",
        ] {
            assert!(!rfc3339(bad), "{bad}");
        }
    }
}
