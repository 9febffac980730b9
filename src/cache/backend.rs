//! Choosing a backend from a URL, as tvix's `from_addr` does.

use super::{Backend, CacheError};

pub fn open(url: &str) -> Result<Box<dyn Backend>, CacheError> {
    let (scheme, _) = url
        .split_once("://")
        .ok_or_else(|| CacheError::UnsupportedUrl(url.to_string()))?;
    match scheme {
        "file" => Ok(Box::new(super::file::FileBackend::open(url)?)),
        "http" | "https" => Ok(Box::new(super::http::HttpBackend::open(url)?)),
        "s3" => Ok(Box::new(super::s3::S3Backend::open(url)?)),
        "ssh" => Ok(Box::new(super::ssh::SshBackend::open(url)?)),
        "oci" => Ok(Box::new(super::oci::OciBackend::open(url)?)),
        _ => Err(CacheError::UnsupportedUrl(url.to_string())),
    }
}
