//! The Lambda zip of a function: the handler binary as `bootstrap` (the
//! `provided.al2023` runtime's entry point) and the static `ffmpeg` next to
//! it (found there by [`facefleet_video::Ffmpeg::locate`]).
//!
//! The zip is deterministic (fixed entry order and timestamps), so the same
//! inputs give the same bytes and the same `CodeSha256`: the deployment
//! skips unchanged code.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

/// A built package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// The zip file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Base64 SHA-256 of the zip, as Lambda reports `CodeSha256`.
    pub sha256: String,
}

/// Why packaging failed.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// Reading an input or writing the zip failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The zip library failed.
    #[error("writing the zip: {0}")]
    Zip(#[from] zip::result::ZipError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PackageError + '_ {
    move |source| PackageError::Io { path: path.to_path_buf(), source }
}

/// Writes `out` with `bootstrap` and (if given) `ffmpeg`, both executable.
pub fn package(bootstrap: &Path, ffmpeg: Option<&Path>, out: &Path) -> Result<Package, PackageError> {
    let file = File::create(out).map_err(io(out))?;
    let mut zip = ZipWriter::new(BufWriter::new(file));
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .last_modified_time(DateTime::default())
        .unix_permissions(0o755)
        .large_file(true);
    let mut entries = vec![("bootstrap", bootstrap)];
    if let Some(f) = ffmpeg {
        entries.push(("ffmpeg", f));
    }
    for (name, path) in entries {
        zip.start_file(name, options)?;
        let mut reader = BufReader::new(File::open(path).map_err(io(path))?);
        std::io::copy(&mut reader, &mut zip).map_err(io(path))?;
    }
    let mut writer = zip.finish()?;
    writer.flush().map_err(io(out))?;
    drop(writer);
    let (size, sha256) = sha256_of(out)?;
    Ok(Package { path: out.to_path_buf(), size, sha256 })
}

/// Size and base64 SHA-256 of a file.
pub fn sha256_of(path: &Path) -> Result<(u64, String), PackageError> {
    let mut hasher = Sha256::new();
    let mut reader = BufReader::new(File::open(path).map_err(io(path))?);
    let size = std::io::copy(&mut reader, &mut hasher).map_err(io(path))?;
    Ok((size, base64::engine::general_purpose::STANDARD.encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_are_deterministic_and_executable() {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path().join("handler");
        let ff = dir.path().join("ff");
        std::fs::write(&boot, b"#!/bin/sh\necho hi\n").unwrap();
        std::fs::write(&ff, vec![7u8; 100_000]).unwrap();
        let a = package(&boot, Some(&ff), &dir.path().join("a.zip")).unwrap();
        let b = package(&boot, Some(&ff), &dir.path().join("b.zip")).unwrap();
        assert_eq!(a.sha256, b.sha256);
        assert!(a.size < 100_000, "compressed: {}", a.size);
        let mut archive = zip::ZipArchive::new(File::open(&a.path).unwrap()).unwrap();
        let names: Vec<String> = (0..archive.len()).map(|i| archive.by_index(i).unwrap().name().unwrap().to_string()).collect();
        assert_eq!(names, ["bootstrap", "ffmpeg"]);
        assert_eq!(archive.by_name("bootstrap").unwrap().unix_mode().unwrap() & 0o777, 0o755);
        std::fs::write(&boot, b"#!/bin/sh\necho changed\n").unwrap();
        let c = package(&boot, Some(&ff), &dir.path().join("c.zip")).unwrap();
        assert_ne!(a.sha256, c.sha256);
    }
}
