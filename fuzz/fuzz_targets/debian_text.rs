//! The Debian text formats buildit reads: a package's control file, deb822
//! paragraphs (apt's `.sources`, `apt-cache show` stanzas), one-line sources,
//! `apt-get -s` output. None may panic; what parses is checked for sense.

#![no_main]

use std::path::Path;

use buildit::debian::{deb, resolve, sources};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(fields) = deb::parse_control(text) {
        assert!(fields
            .iter()
            .all(|(k, _)| !k.is_empty() && !k.contains(':')));
    }
    if let Ok(paragraphs) = sources::parse_deb822(text) {
        for p in &paragraphs {
            let _ = p.get("Types");
        }
    }
    if let Ok(stanzas) = resolve::parse_stanzas(text) {
        for s in &stanzas {
            let _ = s.summary();
            let _ = s.size();
            let _ = s.to_locked();
        }
    }
    let origin = Path::new("fuzz.sources");
    if let Ok(archives) = sources::parse_deb822_sources(text, origin) {
        let _ = sources::archive_roots(&archives);
    }
    if let Ok(archives) = sources::parse_one_line(text, origin) {
        let _ = sources::archive_roots(&archives);
    }
    let _ = resolve::parse_inst_lines(text);
    let _ = resolve::parse_reverse_provides(text);
    // apt's stdout, then its stderr after a NUL.
    let (stdout, stderr) = text.split_once('\0').unwrap_or((text, ""));
    let _ = resolve::classify_failure(stdout, stderr);
    let _ = deb::fold(text);
});
