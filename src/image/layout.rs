//! Reading OCI image layouts that may be hostile — a directory or an `oci-archive`
//! tar of one — strictly by digest and strictly inside themselves.
//!
//! Every digest is `sha256:` or `sha512:` and lowercase hex of the algorithm's
//! length, so the blob name `blobs/<alg>/<hex>` can hold no `/` or `..`. In a
//! directory each name is opened component by component relative to the layout
//! directory, refusing symlinks (`O_NOFOLLOW`), and must be a regular file; in an
//! archive it is looked up among the archive's regular members, nothing is
//! unpacked. JSON documents are read up to [`MAX_DOCUMENT`] bytes; every blob's
//! size and hash are checked while it streams, so a layer is never held in memory
//! and content that does not match its descriptor is an error, not data.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use buildit_store::hash::Hasher;
use buildit_store::HashAlgo;
use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstatat, Mode};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use serde::de::DeserializeOwned;
use thiserror::Error;

/// The largest `index.json`, manifest or config read: buildit's are a few KiB, and
/// a hostile layout must not make us hold gigabytes.
pub const MAX_DOCUMENT: u64 = 4 << 20;

/// Members of an `oci-archive` indexed at most: an image has a few hundred.
const MAX_ARCHIVE_MEMBERS: usize = 100_000;

/// A blob digest that is safe to use as a file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobDigest {
    algo: HashAlgo,
    hex: String,
}

impl BlobDigest {
    /// `sha256:<64 hex>` or `sha512:<128 hex>`, lowercase; anything else is refused
    /// with the reason.
    pub fn parse(s: &str) -> Result<BlobDigest, &'static str> {
        let (algo, hex) = s.split_once(':').ok_or("not <algorithm>:<hex> (no ':')")?;
        let algo = match algo {
            "sha256" => HashAlgo::Sha256,
            "sha512" => HashAlgo::Sha512,
            _ => return Err("the algorithm is not sha256 or sha512"),
        };
        if hex.len() != 2 * algo.size() {
            return Err(match algo {
                HashAlgo::Sha512 => "not 128 hex digits",
                _ => "not 64 hex digits",
            });
        }
        if !hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
            return Err("not lowercase hex");
        }
        Ok(BlobDigest {
            algo,
            hex: hex.to_string(),
        })
    }

    pub fn algo(&self) -> HashAlgo {
        self.algo
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// `blobs/<alg>/<hex>`: the blob's name inside a layout.
    pub fn blob_name(&self) -> String {
        format!("blobs/{}/{}", self.algo, self.hex)
    }
}

impl fmt::Display for BlobDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algo, self.hex)
    }
}

#[derive(Debug, Error)]
pub enum LayoutError {
    #[error("{}: bad digest {digest:?}: {why}", at.display())]
    BadDigest {
        at: PathBuf,
        digest: String,
        why: &'static str,
    },
    #[error("{}: {name} is {what}; a layout is read through its own directories and regular files only", at.display())]
    NotAFile {
        at: PathBuf,
        name: String,
        what: &'static str,
    },
    #[error("{}: {name} is missing", at.display())]
    Missing { at: PathBuf, name: String },
    #[error("{}: {name}: {source}", at.display())]
    Io {
        at: PathBuf,
        name: String,
        source: io::Error,
    },
    #[error("{}: {name} is larger than {limit} bytes", at.display())]
    TooLarge {
        at: PathBuf,
        name: String,
        limit: u64,
    },
    #[error("{}: {name} does not match its digest (its content is {actual})", at.display())]
    DigestMismatch {
        at: PathBuf,
        name: String,
        actual: String,
    },
    #[error("{}: {name} is {actual} bytes, its descriptor says {expected}", at.display())]
    SizeMismatch {
        at: PathBuf,
        name: String,
        expected: u64,
        actual: u64,
    },
    #[error("{}: {name}: {source}", at.display())]
    Json {
        at: PathBuf,
        name: String,
        source: serde_json::Error,
    },
    #[error("{}: {why}", at.display())]
    Invalid { at: PathBuf, why: String },
}

/// Where a layout's members come from.
enum Source {
    /// An OCI layout directory, opened once; members are opened relative to it.
    Dir(File),
    /// An `oci-archive`: its regular members by name (offset, size), and the names
    /// of members that are anything else (links, directories).
    Archive {
        file: File,
        members: HashMap<String, (u64, u64)>,
        others: HashMap<String, &'static str>,
    },
}

/// An OCI image layout to read from.
pub struct Layout {
    at: PathBuf,
    source: Source,
}

/// The image an `index.json` names first, read and verified.
pub struct Image {
    /// `org.opencontainers.image.ref.name` of the manifest descriptor, if any.
    pub ref_name: Option<String>,
    pub manifest_digest: BlobDigest,
    pub manifest: ImageManifest,
    /// The manifest's bytes as read (for callers that compare documents).
    pub manifest_bytes: Vec<u8>,
}

impl Layout {
    /// A layout directory. The directory itself may be reached through symlinks
    /// (a result link); nothing inside it is.
    pub fn open_dir(dir: &Path) -> Result<Layout, LayoutError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(dir)
            .map_err(|source| LayoutError::Io {
                at: dir.to_path_buf(),
                name: ".".into(),
                source,
            })?;
        Ok(Layout {
            at: dir.to_path_buf(),
            source: Source::Dir(file),
        })
    }

    /// An `oci-archive`: a plain (uncompressed) tar of a layout. Its members are
    /// indexed, not unpacked.
    pub fn open_archive(path: &Path) -> Result<Layout, LayoutError> {
        let io_err = |source| LayoutError::Io {
            at: path.to_path_buf(),
            name: ".".into(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let mut members = HashMap::new();
        let mut others = HashMap::new();
        {
            let mut ar = tar::Archive::new(&file);
            for (i, e) in ar.entries_with_seek().map_err(io_err)?.enumerate() {
                if i >= MAX_ARCHIVE_MEMBERS {
                    return Err(LayoutError::Invalid {
                        at: path.to_path_buf(),
                        why: format!("more than {MAX_ARCHIVE_MEMBERS} members"),
                    });
                }
                let e = e.map_err(io_err)?;
                let raw = e.path().map_err(io_err)?;
                let Some(name) = member_name(&raw) else {
                    continue;
                };
                let kind = e.header().entry_type();
                let duplicate = if kind.is_file() {
                    members
                        .insert(name.clone(), (e.raw_file_position(), e.size()))
                        .is_some()
                        || others.contains_key(&name)
                } else {
                    let what = match kind {
                        tar::EntryType::Symlink => "a symlink",
                        tar::EntryType::Link => "a hard link",
                        tar::EntryType::Directory => "a directory",
                        _ => "a special file",
                    };
                    others.insert(name.clone(), what).is_some() || members.contains_key(&name)
                };
                if duplicate {
                    // Which copy counts would depend on the reader: refuse.
                    return Err(LayoutError::Invalid {
                        at: path.to_path_buf(),
                        why: format!("{name} appears more than once"),
                    });
                }
            }
        }
        Ok(Layout {
            at: path.to_path_buf(),
            source: Source::Archive {
                file,
                members,
                others,
            },
        })
    }

    /// The directory or archive read.
    pub fn at(&self) -> &Path {
        &self.at
    }

    /// A member by its name inside the layout (`index.json`, `blobs/sha256/…`),
    /// with its size. `name` is built here from fixed names or a [`BlobDigest`].
    fn open(&self, name: &str) -> Result<(Box<dyn Read + Send>, u64), LayoutError> {
        let io_err = |source: io::Error| LayoutError::Io {
            at: self.at.clone(),
            name: name.to_string(),
            source,
        };
        match &self.source {
            Source::Dir(dir) => {
                let parts: Vec<&str> = name.split('/').collect();
                let mut fd: Option<std::os::fd::OwnedFd> = None;
                for (i, part) in parts.iter().enumerate() {
                    let last = i + 1 == parts.len();
                    let flags = OFlag::O_RDONLY
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC
                        | OFlag::O_NONBLOCK
                        | if last {
                            OFlag::empty()
                        } else {
                            OFlag::O_DIRECTORY
                        };
                    let opened = match &fd {
                        None => openat(dir, *part, flags, Mode::empty()),
                        Some(parent) => openat(parent, *part, flags, Mode::empty()),
                    };
                    let not_a_file = |fallback: &'static str| {
                        // O_NOFOLLOW|O_DIRECTORY on a symlink says ENOTDIR: ask.
                        let is_link = match &fd {
                            None => fstatat(dir, *part, AtFlags::AT_SYMLINK_NOFOLLOW),
                            Some(parent) => fstatat(parent, *part, AtFlags::AT_SYMLINK_NOFOLLOW),
                        }
                        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK);
                        LayoutError::NotAFile {
                            at: self.at.clone(),
                            name: parts[..=i].join("/"),
                            what: if is_link { "a symlink" } else { fallback },
                        }
                    };
                    fd = Some(opened.map_err(|e| match e {
                        Errno::ELOOP => not_a_file("a symlink"),
                        Errno::ENOTDIR => not_a_file("not a directory"),
                        Errno::ENOENT => LayoutError::Missing {
                            at: self.at.clone(),
                            name: name.to_string(),
                        },
                        e => io_err(e.into()),
                    })?);
                }
                let file = File::from(fd.ok_or_else(|| io_err(io::ErrorKind::NotFound.into()))?);
                let md = file.metadata().map_err(io_err)?;
                if !md.is_file() {
                    return Err(LayoutError::NotAFile {
                        at: self.at.clone(),
                        name: name.to_string(),
                        what: if md.is_dir() {
                            "a directory"
                        } else {
                            "a special file"
                        },
                    });
                }
                Ok((Box::new(BufReader::with_capacity(1 << 16, file)), md.len()))
            }
            Source::Archive {
                file,
                members,
                others,
            } => {
                if let Some(what) = others.get(name) {
                    return Err(LayoutError::NotAFile {
                        at: self.at.clone(),
                        name: name.to_string(),
                        what,
                    });
                }
                let &(offset, size) = members.get(name).ok_or_else(|| LayoutError::Missing {
                    at: self.at.clone(),
                    name: name.to_string(),
                })?;
                let file = file.try_clone().map_err(io_err)?;
                Ok((
                    Box::new(BufReader::with_capacity(
                        1 << 16,
                        Section {
                            file,
                            pos: offset,
                            end: offset.saturating_add(size),
                        },
                    )),
                    size,
                ))
            }
        }
    }

    /// Whether the layout has a member (a regular file) of that name.
    pub fn has(&self, name: &str) -> bool {
        self.open(name).is_ok()
    }

    /// A small JSON member (at most [`MAX_DOCUMENT`] bytes), its bytes.
    fn read_small(&self, name: &str) -> Result<Vec<u8>, LayoutError> {
        let (r, size) = self.open(name)?;
        if size > MAX_DOCUMENT {
            return Err(self.too_large(name));
        }
        let mut buf = Vec::with_capacity(size as usize);
        r.take(MAX_DOCUMENT + 1)
            .read_to_end(&mut buf)
            .map_err(|source| LayoutError::Io {
                at: self.at.clone(),
                name: name.to_string(),
                source,
            })?;
        if buf.len() as u64 > MAX_DOCUMENT {
            return Err(self.too_large(name));
        }
        Ok(buf)
    }

    fn too_large(&self, name: &str) -> LayoutError {
        LayoutError::TooLarge {
            at: self.at.clone(),
            name: name.to_string(),
            limit: MAX_DOCUMENT,
        }
    }

    fn parse<T: DeserializeOwned>(&self, name: &str, bytes: &[u8]) -> Result<T, LayoutError> {
        let json_err = |source| LayoutError::Json {
            at: self.at.clone(),
            name: name.to_string(),
            source,
        };
        // Every digest first, so that a bad one is named whole with our reason
        // (oci-spec's messages name part of it, or none).
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(json_err)?;
        self.check_digests(&value)?;
        serde_json::from_value(value).map_err(json_err)
    }

    /// The digest of every descriptor of a document is a [`BlobDigest`].
    /// Iterative: serde_json bounds the depth at 128, nothing here recurses.
    fn check_digests(&self, doc: &serde_json::Value) -> Result<(), LayoutError> {
        let mut stack = vec![doc];
        while let Some(v) = stack.pop() {
            match v {
                serde_json::Value::Object(m) => {
                    // A descriptor (not, say, an annotation named "digest").
                    let descriptor = m.contains_key("mediaType") && m.contains_key("size");
                    if let (true, Some(serde_json::Value::String(d))) =
                        (descriptor, m.get("digest"))
                    {
                        BlobDigest::parse(d).map_err(|why| LayoutError::BadDigest {
                            at: self.at.clone(),
                            digest: d.clone(),
                            why,
                        })?;
                    }
                    stack.extend(m.values());
                }
                serde_json::Value::Array(a) => stack.extend(a),
                _ => {}
            }
        }
        Ok(())
    }

    /// `index.json`, typed.
    pub fn index(&self) -> Result<ImageIndex, LayoutError> {
        let bytes = self.read_small("index.json")?;
        self.parse("index.json", &bytes)
    }

    /// The validated digest of a descriptor.
    pub fn digest_of(&self, desc: &Descriptor) -> Result<BlobDigest, LayoutError> {
        let s = desc.digest().to_string();
        BlobDigest::parse(&s).map_err(|why| LayoutError::BadDigest {
            at: self.at.clone(),
            digest: s,
            why,
        })
    }

    /// A JSON blob (manifest, config) of at most [`MAX_DOCUMENT`] bytes, its size
    /// and digest checked; its bytes.
    pub fn read_document(&self, desc: &Descriptor) -> Result<Vec<u8>, LayoutError> {
        let digest = self.digest_of(desc)?;
        let name = digest.blob_name();
        if desc.size() > MAX_DOCUMENT {
            return Err(self.too_large(&name));
        }
        let mut blob = self.open_blob(desc)?;
        let mut buf = Vec::with_capacity(desc.size() as usize);
        blob.read_to_end(&mut buf).map_err(|e| blob.error(e))?;
        blob.finish()?;
        Ok(buf)
    }

    /// The first image `index.json` lists: its manifest, read and verified.
    pub fn first_image(&self) -> Result<Image, LayoutError> {
        let index = self.index()?;
        let desc = index
            .manifests()
            .first()
            .ok_or_else(|| LayoutError::Invalid {
                at: self.at.clone(),
                why: "index.json lists no manifest".into(),
            })?;
        let manifest_digest = self.digest_of(desc)?;
        let manifest_bytes = self.read_document(desc)?;
        let manifest: ImageManifest = self.parse(&manifest_digest.blob_name(), &manifest_bytes)?;
        let ref_name = desc
            .annotations()
            .as_ref()
            .and_then(|a| a.get(oci_spec::image::ANNOTATION_REF_NAME))
            .cloned();
        Ok(Image {
            ref_name,
            manifest_digest,
            manifest,
            manifest_bytes,
        })
    }

    /// An image's config, read and verified; also its bytes.
    pub fn config(
        &self,
        manifest: &ImageManifest,
    ) -> Result<(ImageConfiguration, Vec<u8>), LayoutError> {
        let desc = manifest.config();
        let bytes = self.read_document(desc)?;
        let name = self.digest_of(desc)?.blob_name();
        // A config holds no descriptors; its labels may use any key.
        let config = serde_json::from_slice(&bytes).map_err(|source| LayoutError::Json {
            at: self.at.clone(),
            name,
            source,
        })?;
        Ok((config, bytes))
    }

    /// A blob as a stream whose size and hash are checked as it is read: reading
    /// past the descriptor's size, or to the end of content that does not hash to
    /// its digest, is an error. [`VerifiedBlob::finish`] reads what is left and
    /// checks, for readers (tar, decompressors) that stop before the end.
    pub fn open_blob(&self, desc: &Descriptor) -> Result<VerifiedBlob, LayoutError> {
        let digest = self.digest_of(desc)?;
        let name = digest.blob_name();
        let (inner, actual_size) = self.open(&name)?;
        if actual_size != desc.size() {
            return Err(LayoutError::SizeMismatch {
                at: self.at.clone(),
                name,
                expected: desc.size(),
                actual: actual_size,
            });
        }
        Ok(VerifiedBlob {
            at: self.at.clone(),
            name,
            hasher: Some(Hasher::new(digest.algo())),
            digest,
            expected: desc.size(),
            read: 0,
            inner,
            failed: None,
        })
    }
}

/// A tar member name as a layout name: `./` and trailing `/` dropped; `None` for
/// names that could not be a layout member (absolute, `..`).
fn member_name(p: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// A byte range of a file, read with `pread`: sections of one archive do not
/// share a file offset.
struct Section {
    file: File,
    pos: u64,
    end: u64,
}

impl Read for Section {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// See [`Layout::open_blob`].
pub struct VerifiedBlob {
    at: PathBuf,
    name: String,
    digest: BlobDigest,
    /// `None` once the end was reached and checked.
    hasher: Option<Hasher>,
    expected: u64,
    read: u64,
    inner: Box<dyn Read + Send>,
    failed: Option<LayoutError>,
}

impl VerifiedBlob {
    /// The blob's name inside the layout.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn check_end(&mut self) -> Result<(), LayoutError> {
        let Some(h) = self.hasher.take() else {
            return Ok(());
        };
        if self.read != self.expected {
            return Err(LayoutError::SizeMismatch {
                at: self.at.clone(),
                name: self.name.clone(),
                expected: self.expected,
                actual: self.read,
            });
        }
        let actual = h.finish();
        if actual.to_hex() != self.digest.hex() {
            return Err(LayoutError::DigestMismatch {
                at: self.at.clone(),
                name: self.name.clone(),
                actual: format!("{}:{}", self.digest.algo(), actual.to_hex()),
            });
        }
        Ok(())
    }

    /// Read the rest and check size and digest.
    pub fn finish(mut self) -> Result<(), LayoutError> {
        if let Err(e) = io::copy(&mut self, &mut io::sink()) {
            return Err(self.error(e));
        }
        self.check_end()
    }

    /// A read error (perhaps through a decompressor or tar reader) as a layout
    /// error: the size or digest mismatch this reader found, if it found one.
    pub fn error(&mut self, e: io::Error) -> LayoutError {
        self.failed.take().unwrap_or_else(|| LayoutError::Io {
            at: self.at.clone(),
            name: self.name.clone(),
            source: e,
        })
    }

    /// The size or digest mismatch found while reading, if any: the error to
    /// report when a reader above failed on the message of it.
    pub fn take_failure(&mut self) -> Option<LayoutError> {
        self.failed.take()
    }

    /// Remember a mismatch for [`Self::error`]; readers above see its message.
    fn fail(&mut self, e: LayoutError) -> io::Error {
        let err = io::Error::new(io::ErrorKind::InvalidData, e.to_string());
        self.failed = Some(e);
        err
    }
}

impl Read for VerifiedBlob {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.hasher.is_none() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.expected {
            // A file that grew after it was opened: stop at once.
            let e = LayoutError::SizeMismatch {
                at: self.at.clone(),
                name: self.name.clone(),
                expected: self.expected,
                actual: self.read,
            };
            return Err(self.fail(e));
        }
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        if n == 0 && !buf.is_empty() {
            if let Err(e) = self.check_end() {
                return Err(self.fail(e));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_sha256_or_sha512_lowercase_hex_of_the_right_length() {
        let h64 = "a".repeat(64);
        let ok = BlobDigest::parse(&format!("sha256:{h64}")).unwrap();
        assert_eq!(ok.blob_name(), format!("blobs/sha256/{h64}"));
        assert!(BlobDigest::parse(&format!("sha512:{}", "0".repeat(128))).is_ok());
        for bad in [
            "sha256:../../../../etc/passwd".to_string(),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha256:{}/..", "a".repeat(61)),
            format!("sha512:{h64}"),
            format!("sha384:{}", "a".repeat(96)),
            format!("md5:{}", "a".repeat(32)),
            h64.clone(),
            String::new(),
        ] {
            assert!(BlobDigest::parse(&bad).is_err(), "{bad}");
        }
    }
}
