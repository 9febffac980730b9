//! Two directory trees walked together in sorted-name order (a merge join), with
//! the content of same-size regular files compared on a small thread pool.

use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use super::bytes::ContentDiff;
use super::content;
use super::{io_at, DiffOptions, OutputDiffError};

/// Large reads keep the disk streaming; two buffers per worker.
const COMPARE_BUF: usize = 256 * 1024;

/// Workers comparing files: one reads while the other compares, which is all the
/// overlap a shared disk gives; more only adds seeking.
const WORKERS: usize = 2;

/// What sits at a path, without following symlinks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EntryKind {
    File {
        size: u64,
        mode: u32,
    },
    Symlink {
        target: String,
    },
    Directory {
        mode: u32,
    },
    /// A device, fifo or socket.
    Other {
        what: String,
    },
}

impl EntryKind {
    fn of(path: &Path, md: &Metadata) -> Result<EntryKind, OutputDiffError> {
        let ft = md.file_type();
        let mode = md.permissions().mode() & 0o7777;
        Ok(if ft.is_file() {
            EntryKind::File {
                size: md.len(),
                mode,
            }
        } else if ft.is_dir() {
            EntryKind::Directory { mode }
        } else if ft.is_symlink() {
            let t = fs::read_link(path).map_err(io_at(path))?;
            EntryKind::Symlink {
                target: t.to_string_lossy().into_owned(),
            }
        } else {
            let what = if ft.is_fifo() {
                "fifo"
            } else if ft.is_socket() {
                "socket"
            } else if ft.is_block_device() {
                "block device"
            } else if ft.is_char_device() {
                "character device"
            } else {
                "special file"
            };
            EntryKind::Other { what: what.into() }
        })
    }

    pub(crate) fn kind_name(&self) -> &str {
        match self {
            EntryKind::File { .. } => "file",
            EntryKind::Symlink { .. } => "symlink",
            EntryKind::Directory { .. } => "directory",
            EntryKind::Other { what } => what,
        }
    }
}

/// A change of a path's metadata (content changes are the entry's `content`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "field", rename_all = "snake_case")]
pub enum MetaChange {
    Kind {
        from: EntryKind,
        to: EntryKind,
    },
    /// Permission bits (`0o7777`), of files and directories.
    Mode {
        from: u32,
        to: u32,
    },
    Target {
        from: String,
        to: String,
    },
    Size {
        from: u64,
        to: u64,
    },
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum EntryChange {
    /// Only in the second tree; `beneath`: entries inside it when a directory.
    Added {
        entry: EntryKind,
        beneath: usize,
    },
    Removed {
        entry: EntryKind,
        beneath: usize,
    },
    Changed {
        meta: Vec<MetaChange>,
        /// Set when the bytes of a regular file differ.
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<ContentDiff>,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct EntryDiff {
    /// Relative to the tree's root; "." for the root itself.
    pub path: String,
    #[serde(flatten)]
    pub change: EntryChange,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TreeDiff {
    /// In sorted path order.
    pub entries: Vec<EntryDiff>,
    /// Regular files present on both sides whose bytes were compared.
    pub files_compared: usize,
}

impl TreeDiff {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// (added, removed, changed).
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for e in &self.entries {
            match e.change {
                EntryChange::Added { .. } => c.0 += 1,
                EntryChange::Removed { .. } => c.1 += 1,
                EntryChange::Changed { .. } => c.2 += 1,
            }
        }
        c
    }
}

/// Walk both trees (each a directory, a regular file or a symlink) and report every
/// path that differs. Symlinks are never followed.
pub fn diff_trees(a: &Path, b: &Path, opts: &DiffOptions) -> Result<TreeDiff, OutputDiffError> {
    let mut w = Walk {
        nar_modes: opts.nar_modes,
        ..Walk::default()
    };
    let ma = fs::symlink_metadata(a).map_err(io_at(a))?;
    let mb = fs::symlink_metadata(b).map_err(io_at(b))?;
    if ma.is_dir() && mb.is_dir() {
        // The roots' own modes belong to whoever created them (a temp dir for an
        // unpacked layer), so only what is inside is compared.
        w.dir(Path::new(""), a, b)?;
    } else {
        w.pair(Path::new("."), a, b, ma, mb)?;
    }
    let files_compared = w.jobs.len();
    let mut results = run_jobs(&w.jobs, opts);
    let mut entries = Vec::with_capacity(w.items.len());
    for item in w.items {
        match item {
            Item::Done(e) => entries.push(e),
            Item::Job { path, meta, job } => {
                let content = std::mem::replace(&mut results[job], Ok(None))?;
                if content.is_none() && meta.is_empty() {
                    continue;
                }
                entries.push(EntryDiff {
                    path,
                    change: EntryChange::Changed { meta, content },
                });
            }
        }
    }
    Ok(TreeDiff {
        entries,
        files_compared,
    })
}

enum Item {
    Done(EntryDiff),
    /// A regular file on both sides, its content decided by `jobs[job]`.
    Job {
        path: String,
        meta: Vec<MetaChange>,
        job: usize,
    },
}

struct Job {
    a: PathBuf,
    b: PathBuf,
    /// Sizes differ: no need to compare, only to explain.
    known_different: bool,
}

#[derive(Default)]
struct Walk {
    items: Vec<Item>,
    jobs: Vec<Job>,
    /// Only the executable bit of files counts ([`DiffOptions::nar_modes`]).
    nar_modes: bool,
}

fn rel_string(rel: &Path) -> String {
    rel.to_string_lossy().into_owned()
}

fn sorted_names(dir: &Path) -> Result<Vec<OsString>, OutputDiffError> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir).map_err(io_at(dir))? {
        names.push(e.map_err(io_at(dir))?.file_name());
    }
    // OsString orders by bytes on Unix: the same order on both sides.
    names.sort_unstable();
    Ok(names)
}

impl Walk {
    fn dir(&mut self, rel: &Path, a: &Path, b: &Path) -> Result<(), OutputDiffError> {
        let (na, nb) = (sorted_names(a)?, sorted_names(b)?);
        let (mut i, mut j) = (0, 0);
        while i < na.len() || j < nb.len() {
            let ord = match (na.get(i), nb.get(j)) {
                (Some(x), Some(y)) => x.cmp(y),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match ord {
                std::cmp::Ordering::Less => {
                    self.one_side(&rel.join(&na[i]), &a.join(&na[i]), false)?;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    self.one_side(&rel.join(&nb[j]), &b.join(&nb[j]), true)?;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    let (pa, pb) = (a.join(&na[i]), b.join(&nb[j]));
                    let ma = fs::symlink_metadata(&pa).map_err(io_at(&pa))?;
                    let mb = fs::symlink_metadata(&pb).map_err(io_at(&pb))?;
                    self.pair(&rel.join(&na[i]), &pa, &pb, ma, mb)?;
                    i += 1;
                    j += 1;
                }
            }
        }
        Ok(())
    }

    fn one_side(&mut self, rel: &Path, p: &Path, added: bool) -> Result<(), OutputDiffError> {
        let md = fs::symlink_metadata(p).map_err(io_at(p))?;
        let entry = EntryKind::of(p, &md)?;
        let beneath = if md.is_dir() { count_beneath(p)? } else { 0 };
        let change = if added {
            EntryChange::Added { entry, beneath }
        } else {
            EntryChange::Removed { entry, beneath }
        };
        self.items.push(Item::Done(EntryDiff {
            path: rel_string(rel),
            change,
        }));
        Ok(())
    }

    fn pair(
        &mut self,
        rel: &Path,
        a: &Path,
        b: &Path,
        ma: Metadata,
        mb: Metadata,
    ) -> Result<(), OutputDiffError> {
        let (ka, kb) = (EntryKind::of(a, &ma)?, EntryKind::of(b, &mb)?);
        let path = rel_string(rel);
        let done = |meta: Vec<MetaChange>| {
            Item::Done(EntryDiff {
                path: path.clone(),
                change: EntryChange::Changed {
                    meta,
                    content: None,
                },
            })
        };
        match (&ka, &kb) {
            (EntryKind::Directory { mode: x }, EntryKind::Directory { mode: y }) => {
                if x != y && !self.nar_modes {
                    self.items
                        .push(done(vec![MetaChange::Mode { from: *x, to: *y }]));
                }
                self.dir(rel, a, b)?;
            }
            (EntryKind::File { size: sa, mode: xa }, EntryKind::File { size: sb, mode: xb }) => {
                let mut meta = Vec::new();
                let executable = |m: &u32| m & 0o111 != 0;
                let differ = if self.nar_modes {
                    executable(xa) != executable(xb)
                } else {
                    xa != xb
                };
                if differ {
                    meta.push(MetaChange::Mode { from: *xa, to: *xb });
                }
                if sa != sb {
                    meta.push(MetaChange::Size { from: *sa, to: *sb });
                }
                // One inode (a hard link, or the same tree twice): equal unread.
                if ma.dev() == mb.dev() && ma.ino() == mb.ino() {
                    if !meta.is_empty() {
                        self.items.push(done(meta));
                    }
                    return Ok(());
                }
                self.jobs.push(Job {
                    a: a.to_path_buf(),
                    b: b.to_path_buf(),
                    known_different: sa != sb,
                });
                self.items.push(Item::Job {
                    path,
                    meta,
                    job: self.jobs.len() - 1,
                });
            }
            (EntryKind::Symlink { target: x }, EntryKind::Symlink { target: y }) => {
                if x != y {
                    self.items.push(done(vec![MetaChange::Target {
                        from: x.clone(),
                        to: y.clone(),
                    }]));
                }
            }
            (EntryKind::Other { what: x }, EntryKind::Other { what: y }) if x == y => {}
            _ => self
                .items
                .push(done(vec![MetaChange::Kind { from: ka, to: kb }])),
        }
        Ok(())
    }
}

fn count_beneath(dir: &Path) -> Result<usize, OutputDiffError> {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).map_err(io_at(&d))? {
            let e = e.map_err(io_at(&d))?;
            n += 1;
            if e.file_type().map_err(io_at(&e.path()))?.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok(n)
}

type JobResult = Result<Option<ContentDiff>, OutputDiffError>;

/// Run every comparison (and the explanation of those that differ) on the pool;
/// results in job order.
fn run_jobs(jobs: &[Job], opts: &DiffOptions) -> Vec<JobResult> {
    let next = AtomicUsize::new(0);
    let workers = WORKERS.min(jobs.len()).max(1);
    let mut out: Vec<(usize, JobResult)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut bufs = (vec![0u8; COMPARE_BUF], vec![0u8; COMPARE_BUF]);
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else { break };
                        done.push((i, run_job(job, opts, &mut bufs)));
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(v) => v,
                Err(p) => std::panic::resume_unwind(p),
            })
            .collect()
    });
    out.sort_unstable_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

fn run_job(job: &Job, opts: &DiffOptions, bufs: &mut (Vec<u8>, Vec<u8>)) -> JobResult {
    if !job.known_different && same_contents(&job.a, &job.b, bufs)? {
        return Ok(None);
    }
    content::explain_files(&job.a, &job.b, opts).map(Some)
}

/// Both files streamed in lock-step, stopping at the first difference: equal files
/// are read once, which is the least any comparison can do.
pub(crate) fn same_contents(
    a: &Path,
    b: &Path,
    (ba, bb): &mut (Vec<u8>, Vec<u8>),
) -> Result<bool, OutputDiffError> {
    crate::io_util::same_contents(a, b, (ba, bb))
        .map_err(|(path, source)| OutputDiffError::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn write(p: &Path, data: &[u8], mode: u32) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn find<'a>(d: &'a TreeDiff, path: &str) -> &'a EntryChange {
        &d.entries
            .iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("{path} not reported in {d:#?}"))
            .change
    }

    #[test]
    fn reports_each_kind_of_change_in_path_order() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        for (root, text, mode, target) in [
            (&a, "one\ntwo\n", 0o644, "t1"),
            (&b, "one\nTWO\n", 0o755, "t2"),
        ] {
            write(&root.join("same/file"), b"equal", 0o644);
            write(&root.join("text"), text.as_bytes(), 0o644);
            write(&root.join("tool"), b"#!/bin/sh\n", mode);
            write(
                &root.join("grow"),
                if mode == 0o644 { b"ab" } else { b"abc" },
                0o644,
            );
            symlink(target, root.join("link")).unwrap();
        }
        write(&a.join("kind"), b"file", 0o644);
        fs::create_dir(b.join("kind")).unwrap();
        write(&a.join("gone"), b"x", 0o644);
        write(&b.join("new/one"), b"1", 0o644);
        write(&b.join("new/two"), b"2", 0o644);

        let d = diff_trees(&a, &b, &DiffOptions::default()).unwrap();
        let paths: Vec<&str> = d.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["gone", "grow", "kind", "link", "new", "text", "tool"]
        );
        assert_eq!(d.counts(), (1, 1, 5));
        assert!(matches!(
            find(&d, "gone"),
            EntryChange::Removed {
                entry: EntryKind::File { size: 1, .. },
                ..
            }
        ));
        assert!(matches!(
            find(&d, "new"),
            EntryChange::Added {
                entry: EntryKind::Directory { .. },
                beneath: 2
            }
        ));
        match find(&d, "grow") {
            EntryChange::Changed { meta, content } => {
                assert_eq!(meta, &[MetaChange::Size { from: 2, to: 3 }]);
                assert!(content.is_some());
            }
            other => panic!("{other:?}"),
        }
        match find(&d, "kind") {
            EntryChange::Changed {
                meta,
                content: None,
            } => {
                assert!(matches!(
                    &meta[..],
                    [MetaChange::Kind {
                        from: EntryKind::File { .. },
                        to: EntryKind::Directory { .. }
                    }]
                ));
            }
            other => panic!("{other:?}"),
        }
        match find(&d, "link") {
            EntryChange::Changed {
                meta,
                content: None,
            } => assert_eq!(
                meta,
                &[MetaChange::Target {
                    from: "t1".into(),
                    to: "t2".into()
                }]
            ),
            other => panic!("{other:?}"),
        }
        match find(&d, "tool") {
            // Same bytes, only the mode: no content explanation.
            EntryChange::Changed {
                meta,
                content: None,
            } => {
                assert_eq!(
                    meta,
                    &[MetaChange::Mode {
                        from: 0o644,
                        to: 0o755
                    }]
                )
            }
            other => panic!("{other:?}"),
        }
        match find(&d, "text") {
            EntryChange::Changed {
                meta,
                content: Some(ContentDiff::Text { lines, .. }),
            } => {
                assert!(meta.is_empty());
                assert_eq!(lines, "2");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(d.files_compared, 4);
    }

    #[test]
    fn nar_modes_see_only_the_executable_bit() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        write(&a.join("d/plain"), b"x", 0o444);
        write(&b.join("d/plain"), b"x", 0o644);
        write(&a.join("d/tool"), b"y", 0o644);
        write(&b.join("d/tool"), b"y", 0o755);
        fs::set_permissions(a.join("d"), fs::Permissions::from_mode(0o555)).unwrap();
        let nar = DiffOptions {
            nar_modes: true,
            ..DiffOptions::default()
        };
        let d = diff_trees(&a, &b, &nar).unwrap();
        let paths: Vec<&str> = d.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["d/tool"], "{d:#?}");
        let full = diff_trees(&a, &b, &DiffOptions::default()).unwrap();
        assert_eq!(full.entries.len(), 3, "{full:#?}");
        fs::set_permissions(a.join("d"), fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn equal_trees_and_single_files() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        for root in [&a, &b] {
            write(&root.join("x/y"), &vec![5u8; 600_000], 0o555);
            symlink("x/y", root.join("l")).unwrap();
        }
        let d = diff_trees(&a, &b, &DiffOptions::default()).unwrap();
        assert!(d.is_empty(), "{d:#?}");
        assert_eq!(d.to_string(), "no differences\n");
        // A single file is a tree of one entry, named ".".
        let d = diff_trees(&a.join("x/y"), &b.join("l"), &DiffOptions::default()).unwrap();
        assert_eq!(d.entries.len(), 1);
        assert_eq!(d.entries[0].path, ".");
        assert!(
            diff_trees(&a.join("x/y"), &b.join("x/y"), &DiffOptions::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn unreadable_file_is_an_error_naming_it() {
        // root reads mode-000 files anyway: as root, this runs again as nobody.
        if crate::test_skip::rerun_unprivileged() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        write(&a.join("f"), b"1", 0o000);
        write(&b.join("f"), b"2", 0o644);
        let e = diff_trees(&a, &b, &DiffOptions::default()).unwrap_err();
        assert!(e.to_string().contains("a/f"), "{e}");
    }
}

/// Timing aid, not a test: `BENCH_DIFF_A=… BENCH_DIFF_B=… cargo test --lib
/// audit::outputs::tree::timing -- --ignored --nocapture` (bench/diff.sh measures
/// the CLI).
#[cfg(test)]
mod timing {
    #[test]
    #[ignore]
    fn timing() {
        let (Some(a), Some(b)) = (
            std::env::var_os("BENCH_DIFF_A"),
            std::env::var_os("BENCH_DIFF_B"),
        ) else {
            eprintln!("SKIPPED: set BENCH_DIFF_A and BENCH_DIFF_B");
            return;
        };
        for _ in 0..3 {
            let t = std::time::Instant::now();
            let d = super::diff_trees(a.as_ref(), b.as_ref(), &Default::default()).unwrap();
            eprintln!("{} entries differ, {:?}", d.entries.len(), t.elapsed());
        }
    }
}
