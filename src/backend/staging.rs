//! The contract's domain types: where a file is staged ([`Staging`]) and
//! what a handle names ([`ResumePoint`]). Handles carry them as protobuf;
//! `handle.rs` alone converts, so no backend sees a protobuf type.

use crate::error::{Error, Result};

/// Where a file's bytes are staged, as its handles record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Staging {
    /// A hidden temp file beside the target (`file://`).
    File(FileStaging),
    /// A multipart upload, and the tail object past its last part.
    Multipart(MultipartStaging),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStaging {
    /// Absolute path of the hidden in-progress file.
    pub temp_path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartStaging {
    pub upload_id: String,
    pub parts: Vec<UploadedPart>,
    /// Bytes past the last part, stored as an object of their own (resume
    /// handles only).
    pub tail: Option<TailObject>,
}

/// One uploaded part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedPart {
    /// Zero-based part index.
    pub index: u32,
    /// The store's id for the part (S3 ETag, Azure block id).
    pub content_id: String,
    pub size: u64,
}

/// A tail object: the bytes of a persist past the last full part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailObject {
    /// Object path within the target's store.
    pub path: String,
    pub size: u64,
}

impl Staging {
    /// What the janitor removes: the temp file's path, or the upload id.
    pub fn location(&self) -> &str {
        match self {
            Staging::File(f) => &f.temp_path,
            Staging::Multipart(m) => &m.upload_id,
        }
    }
}

/// What a resume or commit handle names: a staging and how far into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    /// The staging's stable id (its sled key).
    pub staging_id: String,
    /// Bytes the handle covers.
    pub position: u64,
    /// CRC32C of those bytes.
    pub crc32c: u32,
    pub staging: Staging,
}

impl ResumePoint {
    /// The temp file it names, or `InvalidArgument` for another kind.
    pub fn file(&self) -> Result<&FileStaging> {
        match &self.staging {
            Staging::File(f) => Ok(f),
            _ => Err(other_backend()),
        }
    }

    /// The upload it names, or `InvalidArgument` for another kind.
    pub fn multipart(&self) -> Result<&MultipartStaging> {
        match &self.staging {
            Staging::Multipart(m) => Ok(m),
            _ => Err(other_backend()),
        }
    }
}

fn other_backend() -> Error {
    Error::InvalidArgument(
        "invalid handle: its staging does not belong to the backend of its target's scheme".into(),
    )
}
