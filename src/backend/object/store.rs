//! Object paths (targets and tail objects), the staging a handle names,
//! small reads and deletes, and store errors mapped to statuses.

use super::*;

pub(super) fn object_entry(location: &Location, meta: &object_store::ObjectMeta) -> Entry {
    Entry {
        location: location.clone(),
        size: meta.size,
        is_dir: false,
        modified_ms: meta.last_modified.timestamp_millis().max(0) as u64,
    }
}

/// Marker: the target exists, or the upload vanished; `conflict` when the
/// store answered 409 (a create-only write found the key taken, or, on
/// S3, another conditional write to it under way).
pub(super) struct Exists {
    pub conflict: bool,
}

/// Parts must be numbered 0..n and, with the tail, add up to the position.
pub(super) fn check_parts(staging: &MultipartStaging, position: u64) -> Result<()> {
    let contiguous = staging
        .parts
        .iter()
        .enumerate()
        .all(|(i, p)| p.index as usize == i);
    let total: u64 = staging.parts.iter().map(|p| p.size).sum::<u64>()
        + staging.tail.as_ref().map_or(0, |t| t.size);
    if contiguous && total == position {
        Ok(())
    } else {
        Err(Error::InvalidArgument(
            "invalid handle: its parts do not add up to its position".into(),
        ))
    }
}

pub(super) async fn existing_size(
    stores: &ObjectStores,
    path: &Path,
    target: &Location,
) -> Result<Option<u64>> {
    match stores.objects.head(path).await {
        Ok(meta) => Ok(Some(meta.size)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(store_error(e, &format!("checking {target}"))),
    }
}

/// The CRC32C the store keeps for the object, where it keeps one.
pub(super) async fn stored_crc32c(
    stores: &ObjectStores,
    path: &Path,
    target: &Location,
) -> Result<Option<u32>> {
    match &stores.crc32c {
        Some(check) => check
            .crc32c(path)
            .await
            .map_err(|e| store_error(e, &format!("checking {target}"))),
        None => Ok(None),
    }
}

/// DESIGN.md 1.3 for a commit that finds the target there (`size`) or
/// nothing at all; on a store that keeps CRC32Cs, `after_recovery` is OK
/// only for a target with the handle's bytes, not merely its size.
pub(super) async fn settle(
    stores: &ObjectStores,
    path: &Path,
    target: &Location,
    size: Option<u64>,
    point: &ResumePoint,
    after_recovery: bool,
) -> Result<u64> {
    if after_recovery
        && size == Some(point.position)
        && let Some(crc) = stored_crc32c(stores, path, target).await?
        && crc != point.crc32c
    {
        return Err(Error::FailedPrecondition(format!(
            "cannot commit {target}: it holds {} bytes, as many as the handle, but other bytes (CRC32C {crc:#010x}, the handle's {:#010x}): another writer's file",
            point.position, point.crc32c
        )));
    }
    settle_without_staging(target, size, point.position, after_recovery)
}

/// Best effort after a commit: the upload is finished and the tail is no
/// longer needed. Failures leave work for the janitor, nothing worse.
pub(super) async fn discard_staging(
    stores: &ObjectStores,
    path: &Path,
    staging: &MultipartStaging,
) {
    let _ = stores
        .uploads
        .abort_multipart(path, &staging.upload_id)
        .await;
    if let Some(tail) = &staging.tail
        && let Ok(tail) = tail_path(tail)
    {
        let _ = stores.tails.delete(&tail).await;
    }
}

pub(super) async fn read_tail(
    stores: &ObjectStores,
    tail: &TailObject,
    target: &Location,
) -> Result<Bytes> {
    let path = tail_path(tail)?;
    let bytes = match stores.tails.get(&path).await {
        Ok(r) => r.bytes().await,
        Err(e) => Err(e),
    };
    match bytes {
        Ok(b) if b.len() as u64 == tail.size => Ok(b),
        Ok(b) => Err(Error::FailedPrecondition(format!(
            "cannot use this handle of {target}: its tail object holds {} bytes, not {}",
            b.len(),
            tail.size
        ))),
        Err(object_store::Error::NotFound { .. }) => Err(Error::FailedPrecondition(format!(
            "cannot use this handle of {target}: its tail object is gone (cleaned up, committed, or expired)"
        ))),
        Err(e) => Err(store_error(
            e,
            &format!("reading the tail object of {target}"),
        )),
    }
}

pub(super) fn object_path(target: &Location) -> Result<Path> {
    Path::parse(&target.path)
        .map_err(|e| Error::InvalidArgument(format!("{target} is not a valid object key: {e}")))
}

pub(super) fn tail_path(tail: &TailObject) -> Result<Path> {
    Path::parse(&tail.path).map_err(|e| Error::Internal(format!("bad tail object path: {e}")))
}

/// A hidden name beside the target, unique per persist, that names its
/// staging: `.<file>.tail.<staging token>.<uuid>`.
pub(super) fn new_tail_path(target: &Location, staging_id: &str) -> String {
    format!(
        "{}{}",
        tail_prefix(target, staging_id),
        uuid::Uuid::new_v4()
    )
}

/// What every tail of one staging starts with. The token is the first 8
/// bytes of the SHA-256 of the staging id, in hex.
pub(super) fn tail_prefix(target: &Location, staging_id: &str) -> String {
    use sha2::Digest;
    let token = hex::encode(&sha2::Sha256::digest(staging_id.as_bytes())[..8]);
    let name = format!(".{}.tail.{token}.", target.file_name());
    match target.parent() {
        "" => name,
        parent => format!("{parent}/{name}"),
    }
}

pub(super) fn upload_error(e: object_store::Error, target: &Location) -> Error {
    match e {
        object_store::Error::NotFound { .. } => Error::FailedPrecondition(format!(
            "the upload of {target} no longer exists (committed, aborted, expired, or lost in a restart of a memory store); restart the file"
        )),
        object_store::Error::Precondition { .. } => Error::FailedPrecondition(format!(
            "the staged parts of {target} changed since this handle was taken (a later recovery replaced them)"
        )),
        e => store_error(e, &format!("uploading {target}")),
    }
}

/// Maps a store failure: refused credentials and missing buckets are not
/// worth retrying; everything else (the store unreachable after
/// object_store's own retries, 5xx answers) is `Unavailable`.
pub(super) fn store_error(e: object_store::Error, doing: &str) -> Error {
    match e {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => Error::PermissionDenied(format!(
            "{doing}: the store refused sluice's credentials ({e}); check the scheme's keys"
        )),
        object_store::Error::NotFound { .. } => Error::FailedPrecondition(format!(
            "{doing}: {e} (does the bucket or container exist?)"
        )),
        e => Error::StoreUnavailable {
            message: format!("{doing}: {e}"),
            source: Some(Box::new(e)),
        },
    }
}

/// The ETag S3 gives an object completed from `parts` (their ETags, in
/// order): the MD5 of their binary MD5s, then `-` and their number. A
/// commit whose completion answered 412 compares it with the object's, to
/// tell its own earlier completion (a retry after a lost answer) from
/// another writer's file.
pub(super) fn multipart_etag<'a>(parts: impl IntoIterator<Item = &'a str>) -> Option<String> {
    use md5::Digest;
    let mut outer = md5::Md5::new();
    let mut n = 0;
    for etag in parts {
        let digest = hex::decode(etag.trim_matches('"')).ok()?;
        if digest.len() != 16 {
            return None;
        }
        outer.update(&digest);
        n += 1;
    }
    Some(format!("{}-{n}", hex::encode(outer.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::Digest;

    #[test]
    fn the_etag_of_a_completed_upload() {
        // Two parts of 5 MiB of b'a' and 1 byte b'b', as S3 and moto name them.
        let a = hex::encode(md5::Md5::digest(vec![b'a'; 5 * 1024 * 1024]));
        let b = hex::encode(md5::Md5::digest(b"b"));
        let mut both = hex::decode(&a).unwrap();
        both.extend(hex::decode(&b).unwrap());
        let want = format!("{}-2", hex::encode(md5::Md5::digest(&both)));
        let quoted = [format!("\"{a}\""), format!("\"{b}\"")];
        assert_eq!(
            multipart_etag(quoted.iter().map(String::as_str)).as_deref(),
            Some(want.as_str())
        );
        assert_eq!(multipart_etag(["not hex"]), None);
    }
}
