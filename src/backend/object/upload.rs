//! Part size and upload concurrency, the two keys every multipart backend
//! reads (`<section>.upload.min.part.size`,
//! `<section>.upload.max.concurrent.uploads`).

use crate::error::{StartError, StartResult as Result};
use crate::settings::{RawKeys, take_memory_size, take_positive};

/// 5 MiB: S3's smallest non-final part, the default part size everywhere.
pub const DEFAULT_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Parts uploaded at once per session, unless configured.
pub const DEFAULT_MAX_CONCURRENT_UPLOADS: u32 = 4;

/// Part size and upload concurrency of a multipart backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadConfig {
    pub part_size: u64,
    pub max_concurrent_uploads: u32,
    /// A persist with at least this many bytes since the last part
    /// uploads them as one more part; with fewer it writes a tail object,
    /// which a recovery reads back and a later persist or part sends
    /// again. `None`: the part size, the smallest non-final part every
    /// store takes; GCS's components may be of any size, so it uploads
    /// from 256 KiB. A session keeps this many bytes back from its parts,
    /// so that a persist finds them.
    pub persist_as_part_from: Option<u64>,
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig {
            part_size: DEFAULT_PART_SIZE,
            max_concurrent_uploads: DEFAULT_MAX_CONCURRENT_UPLOADS,
            persist_as_part_from: None,
        }
    }
}

/// `<section>.upload.min.part.size` (at least `min` bytes) and
/// `<section>.upload.max.concurrent.uploads`.
pub fn upload_config(raw: &mut RawKeys, section: &str, min: u64) -> Result<UploadConfig> {
    let mut upload = UploadConfig::default();
    let size_key = format!("{section}.upload.min.part.size");
    if let Some(size) = take_memory_size(raw, &size_key)? {
        if size < min.max(1) {
            return Err(StartError::Config(format!(
                "{size_key} is {size} bytes; this store needs at least {} bytes per part",
                min.max(1)
            )));
        }
        upload.part_size = size;
    }
    let count_key = format!("{section}.upload.max.concurrent.uploads");
    if let Some(n) = take_positive(raw, &count_key)? {
        upload.max_concurrent_uploads = n;
    }
    Ok(upload)
}
