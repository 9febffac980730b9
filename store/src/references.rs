//! Which store paths a tree refers to, found the way Nix finds them: by searching
//! its NAR serialisation for their hash parts (Nix's `RefScanSink`).
//!
//! The NAR is streamed through a [`RefScanner`] and never held in memory, so a
//! multi-gigabyte output costs a buffer, not its size.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Write};
use std::path::Path;

use crate::nar::{self, NarError};
use crate::nix32;
use crate::store_path::{StorePath, HASH_PART_LEN};

/// A `Write` sink that looks for store path hash parts in whatever is written to
/// it, like Nix's `RefScanSink`. It keeps only the last `HASH_PART_LEN - 1` bytes
/// between writes, so it can sit behind any streaming producer (alone, or teed
/// with a hasher).
pub struct RefScanner {
    /// Hash parts still being looked for. Found ones are removed, so each costs one
    /// lookup hit however often it occurs and a finished search stops early.
    pending: HashMap<[u8; HASH_PART_LEN], Vec<StorePath>>,
    found: BTreeSet<StorePath>,
    /// The end of the previous write: a hash part may start there.
    tail: Vec<u8>,
    is_nix32: [bool; 256],
    /// How many pending hash parts fall in each [`prefix_bucket`]: in long runs of
    /// nix32 characters (`00000…`, `aaaa…`) every byte starts a window, and this
    /// spares hashing nearly all of them.
    buckets: Box<[u16]>,
}

const BUCKETS: usize = 1 << 16;

/// A bucket (below `BUCKETS`) for the first bytes of a window.
fn prefix_bucket(window: &[u8; HASH_PART_LEN]) -> usize {
    let head = u32::from_le_bytes([window[0], window[1], window[2], window[3]]);
    (head.wrapping_mul(0x9e37_79b1) >> 16) as usize
}

impl RefScanner {
    pub fn new<'a>(candidates: impl IntoIterator<Item = &'a StorePath>) -> Self {
        let mut pending: HashMap<[u8; HASH_PART_LEN], Vec<StorePath>> = HashMap::new();
        for p in candidates {
            let key: [u8; HASH_PART_LEN] = p
                .hash_part()
                .as_bytes()
                .try_into()
                .expect("store path hash parts have a fixed length");
            pending.entry(key).or_default().push(p.clone());
        }
        let mut buckets = vec![0u16; BUCKETS].into_boxed_slice();
        for key in pending.keys() {
            let b = &mut buckets[prefix_bucket(key)];
            *b = b.saturating_add(1);
        }
        RefScanner {
            pending,
            found: BTreeSet::new(),
            tail: Vec::with_capacity(2 * HASH_PART_LEN),
            is_nix32: std::array::from_fn(|b| nix32::is_nix32_char(b as u8)),
            buckets,
        }
    }

    /// The candidates seen so far.
    pub fn found(&self) -> &BTreeSet<StorePath> {
        &self.found
    }

    pub fn into_found(self) -> BTreeSet<StorePath> {
        self.found
    }

    /// Finds every candidate hash part that lies entirely inside `s`.
    fn search(&mut self, s: &[u8]) {
        let mut i = 0;
        // `s[i..i + good]` is known to be nix32 already: after a full window only
        // the byte entering it needs checking, so runs of nix32 cost O(1) a byte.
        let mut good = 0;
        'windows: while i + HASH_PART_LEN <= s.len() && !self.pending.is_empty() {
            // Checking back to front lets a non-nix32 byte at `j` rule out every
            // window that contains it in one step, so ordinary data is skipped in
            // strides of up to 32 bytes.
            let mut j = HASH_PART_LEN;
            while j > good {
                j -= 1;
                if !self.is_nix32[s[i + j] as usize] {
                    i += j + 1;
                    good = 0;
                    continue 'windows;
                }
            }
            let window: &[u8; HASH_PART_LEN] = s[i..i + HASH_PART_LEN]
                .try_into()
                .expect("window has the length of a hash part");
            let bucket = prefix_bucket(window);
            if self.buckets[bucket] != 0 {
                if let Some(paths) = self.pending.remove(window) {
                    self.found.extend(paths);
                    // A saturated count is never decremented: it stays a hint.
                    if self.buckets[bucket] != u16::MAX {
                        self.buckets[bucket] -= 1;
                    }
                }
            }
            i += 1;
            good = HASH_PART_LEN - 1;
        }
    }
}

impl Write for RefScanner {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.pending.is_empty() {
            return Ok(data.len());
        }
        // Windows that straddle the previous write and this one: they start in the
        // tail and end within the first HASH_PART_LEN - 1 bytes of `data`.
        let keep = HASH_PART_LEN - 1;
        if !self.tail.is_empty() {
            let head = data.len().min(keep);
            let tail_len = self.tail.len();
            self.tail.extend_from_slice(&data[..head]);
            let joined = std::mem::take(&mut self.tail);
            self.search(&joined);
            self.tail = joined;
            self.tail.truncate(tail_len);
        }
        self.search(data);
        if data.len() >= keep {
            self.tail.clear();
            self.tail.extend_from_slice(&data[data.len() - keep..]);
        } else {
            self.tail.extend_from_slice(data);
            let excess = self.tail.len().saturating_sub(keep);
            self.tail.drain(..excess);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The subset of `candidates` whose hash part occurs anywhere in the NAR of `tree`
/// (file contents, symlink targets or names). The NAR is streamed through a
/// [`RefScanner`], never held in memory.
pub fn scan_references(
    tree: &Path,
    candidates: &BTreeSet<StorePath>,
) -> Result<BTreeSet<StorePath>, NarError> {
    if candidates.is_empty() {
        return Ok(BTreeSet::new());
    }
    let mut scanner = RefScanner::new(candidates);
    nar::dump_path(tree, &mut scanner)?;
    Ok(scanner.into_found())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    fn store_path(n: u8, name: &str) -> StorePath {
        StorePath::from_digest(&[n; 20], name).unwrap()
    }

    fn put(root: &Path, rel: &str, contents: &[u8]) -> PathBuf {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, contents).unwrap();
        p
    }

    fn link(root: &Path, rel: &str, target: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink(target, p).unwrap();
    }

    #[test]
    fn finds_references_in_file_contents() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            store_path(1, "bash-5.2"),
            store_path(2, "glibc-2.36"),
            store_path(3, "unused-1"),
        );
        put(
            dir.path(),
            "bin/script",
            format!("#!{}/bin/bash\n", a.to_absolute()).as_bytes(),
        );
        // Hash parts count on their own, whatever surrounds them, as in Nix.
        put(
            dir.path(),
            "lib/blob",
            format!("\0\0{}\x01", b.hash_part()).as_bytes(),
        );
        let candidates = BTreeSet::from([a.clone(), b.clone(), c]);
        let found = scan_references(dir.path(), &candidates).unwrap();
        assert_eq!(found, BTreeSet::from([a, b]));
    }

    #[test]
    fn finds_references_in_symlink_targets_and_single_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = store_path(4, "openssl-3");
        link(
            dir.path(),
            "tree/lib/libssl.so.3",
            &format!("{}/lib/libssl.so.3", a.to_absolute()),
        );
        let candidates = BTreeSet::from([a.clone(), store_path(5, "other")]);
        let found = scan_references(&dir.path().join("tree"), &candidates).unwrap();
        assert_eq!(found, BTreeSet::from([a.clone()]));

        let file = put(dir.path(), "file", a.base_name().as_bytes());
        assert_eq!(
            scan_references(&file, &candidates).unwrap(),
            BTreeSet::from([a])
        );
    }

    #[test]
    fn finds_a_reference_split_across_writes() {
        let a = store_path(6, "split");
        // nix32 filler on both sides makes every window near the hash a candidate.
        let data = format!("0123456789abc/store/{}-split/bin xyz 0000", a.hash_part());
        let data = data.as_bytes();
        for cut in 0..=data.len() {
            let mut s = RefScanner::new([&a]);
            s.write_all(&data[..cut]).unwrap();
            s.write_all(&data[cut..]).unwrap();
            assert!(s.found().contains(&a), "cut at {cut}");
        }
        for chunk in 1..=40 {
            let mut s = RefScanner::new([&a]);
            for piece in data.chunks(chunk) {
                s.write_all(piece).unwrap();
            }
            assert_eq!(s.into_found(), BTreeSet::from([a.clone()]), "chunk {chunk}");
        }
    }

    #[test]
    fn no_false_positives() {
        let dir = tempfile::tempdir().unwrap();
        let a = store_path(7, "wanted");
        let hash = a.hash_part();
        // One character off, cut short at the end of a file, and a long run of
        // nix32 characters that never contains it.
        let mut off_by_one = hash.as_bytes().to_vec();
        off_by_one[16] = if off_by_one[16] == b'0' { b'1' } else { b'0' };
        put(dir.path(), "a", &off_by_one);
        put(dir.path(), "b", &hash.as_bytes()[..31]);
        put(
            dir.path(),
            "c",
            "0123456789abcdfghijklmnpqrsvwxyz".repeat(500).as_bytes(),
        );
        put(
            dir.path(),
            "d",
            store_path(8, "other").to_absolute().as_bytes(),
        );
        let found = scan_references(dir.path(), &BTreeSet::from([a])).unwrap();
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn finds_a_self_reference() {
        let dir = tempfile::tempdir().unwrap();
        let out = store_path(9, "hello-2.12");
        let dep = store_path(10, "glibc");
        put(
            dir.path(),
            "share/hello/prefix",
            out.to_absolute().as_bytes(),
        );
        let found = scan_references(dir.path(), &BTreeSet::from([out.clone(), dep])).unwrap();
        assert_eq!(found, BTreeSet::from([out]));
    }

    /// A hash part straddling the writes `dump_path` makes, at every split of it,
    /// and one cut short at the end of a write: where the writes fall is learnt
    /// from the writer, not assumed.
    #[test]
    fn finds_references_across_nar_buffer_boundaries() {
        struct Cuts(Vec<u64>, u64);
        impl Write for Cuts {
            fn write(&mut self, d: &[u8]) -> io::Result<usize> {
                self.1 += d.len() as u64;
                self.0.push(self.1);
                Ok(d.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let a = store_path(11, "across");
        let hash = a.hash_part().as_bytes();
        // nix32 filler: every window near a cut is a candidate, so a lost or
        // repeated tail byte would show.
        let len = 3 * nar::CHUNK_SIZE;
        let filler = put(dir.path(), "filler", &vec![b'0'; len]);
        let mut cuts = Cuts(Vec::new(), 0);
        nar::dump_path(&filler, &mut cuts).unwrap();
        // A regular file's NAR ends with its contents (no padding at a multiple
        // of 8) and the 16 bytes of ")".
        let contents_start = cuts.1 - len as u64 - 16;
        let inside: Vec<usize> = cuts
            .0
            .iter()
            .filter_map(|&c| c.checked_sub(contents_start))
            .map(|c| c as usize)
            .filter(|&c| c > HASH_PART_LEN && c + HASH_PART_LEN < len)
            .collect();
        assert!(!inside.is_empty(), "no write ends inside the contents");
        let file = dir.path().join("file");
        for &cut in &inside {
            for shift in 1..HASH_PART_LEN {
                let mut data = vec![b'0'; len];
                data[cut - shift..cut - shift + HASH_PART_LEN].copy_from_slice(hash);
                fs::write(&file, &data).unwrap();
                let found = scan_references(&file, &BTreeSet::from([a.clone()])).unwrap();
                assert_eq!(
                    found,
                    BTreeSet::from([a.clone()]),
                    "cut {cut}, shift {shift}"
                );
            }
            let mut data = vec![b'0'; len];
            data[cut - 16..cut].copy_from_slice(&hash[..16]);
            data[cut] = b'-';
            fs::write(&file, &data).unwrap();
            let found = scan_references(&file, &BTreeSet::from([a.clone()])).unwrap();
            assert!(found.is_empty(), "cut {cut}: {found:?}");
        }
    }
}
