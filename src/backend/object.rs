//! Object stores: a file staged as a multipart upload, resumable from a
//! handle alone.
//!
//! Full parts are uploaded as they fill, at most `max_concurrent_uploads` at
//! once, so a session holds at most part size × (in flight + 1) bytes however
//! large the file. `Persist` waits for the parts in flight and writes the
//! bytes past the last part as a separate *tail object* (S3 refuses short
//! middle parts); the handle lists the upload id, every part and the tail.
//! `Recover` reads the tail back and continues numbering after the handle's
//! parts. `Commit` uploads a resume handle's tail as the last part and
//! completes the upload; a zero-byte file becomes an empty object.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio::task::JoinSet;

use super::{
    Backend, BackendCapabilities, ByteStream, Entry, Removed, StagedWriter, Staging,
    expect_staging, is_staging_name, not_found, read_range, settle_without_staging,
};
use crate::config::UploadConfig;
use crate::error::{Error, Result};
use crate::location::Location;
use crate::proto::{HandleBody, MultipartStaging, TailObject, UploadedPart};

/// S3, OSS and GCS allow 10,000 parts per upload (Azure 50,000 blocks); the
/// cap also bounds a handle, which lists every part, to about half a MiB.
pub const MAX_PARTS: u32 = 10_000;

/// The two faces of one bucket or container.
#[derive(Clone)]
pub struct ObjectStores {
    pub objects: Arc<dyn ObjectStore>,
    pub uploads: Arc<dyn MultipartStore>,
}

/// Finds the store of an authority (bucket, container, memory store name).
pub trait StoreResolver: Send + Sync {
    fn resolve(&self, authority: &str) -> Result<ObjectStores>;
}

/// A multipart backend for one scheme.
pub struct ObjectBackend {
    resolver: Arc<dyn StoreResolver>,
    upload: UploadConfig,
    survives_restart: bool,
}

impl ObjectBackend {
    pub fn new(
        resolver: Arc<dyn StoreResolver>,
        upload: UploadConfig,
        survives_restart: bool,
    ) -> Self {
        ObjectBackend {
            resolver,
            upload,
            survives_restart,
        }
    }
}

#[async_trait]
impl Backend for ObjectBackend {
    fn capabilities(&self) -> BackendCapabilities {
        BackendCapabilities {
            supports_resume: true,
            requires_cleanup: true,
            min_part_size: self.upload.part_size,
            max_concurrent_uploads: self.upload.max_concurrent_uploads,
            survives_restart: self.survives_restart,
            limits: Default::default(),
        }
    }

    fn check_target(&self, target: &Location) -> Result<()> {
        self.resolver.resolve(&target.authority)?;
        object_path(target).map(drop)
    }

    async fn open(&self, target: &Location) -> Result<Box<dyn StagedWriter>> {
        let stores = self.resolver.resolve(&target.authority)?;
        let path = object_path(target)?;
        let upload_id = stores
            .uploads
            .create_multipart(&path)
            .await
            .map_err(|e| store_error(e, &format!("starting an upload for {target}")))?;
        // Unique per file: some stores (Azure) have no upload id to tell
        // two uploads in one container apart.
        let staging_id = format!("{target}#{}", uuid::Uuid::new_v4());
        Ok(Box::new(ObjectWriter::new(
            stores,
            target,
            path,
            staging_id,
            upload_id,
            Vec::new(),
            None,
            self.upload,
        )))
    }

    async fn recover(
        &self,
        target: &Location,
        handle: &HandleBody,
    ) -> Result<Box<dyn StagedWriter>> {
        let staging = expect_staging(handle, multipart_staging)?;
        check_parts(staging, handle.position)?;
        let stores = self.resolver.resolve(&target.authority)?;
        let path = object_path(target)?;
        let tail = match &staging.tail {
            Some(tail) if tail.size > 0 => Some(read_tail(&stores, tail, target).await?),
            _ => None,
        };
        Ok(Box::new(ObjectWriter::new(
            stores,
            target,
            path,
            handle.staging_id.clone(),
            staging.upload_id.clone(),
            staging.parts.clone(),
            tail,
            self.upload,
        )))
    }

    async fn commit(
        &self,
        target: &Location,
        handle: &HandleBody,
        after_recovery: bool,
    ) -> Result<u64> {
        let staging = expect_staging(handle, multipart_staging)?;
        check_parts(staging, handle.position)?;
        let stores = self.resolver.resolve(&target.authority)?;
        let path = object_path(target)?;
        let position = handle.position;
        if let Some(size) = existing_size(&stores, &path, target).await? {
            let done = settle_without_staging(target, Some(size), position, after_recovery)?;
            discard_staging(&stores, &path, staging).await;
            return Ok(done);
        }
        let mut parts: Vec<PartId> = staging
            .parts
            .iter()
            .map(|p| PartId {
                content_id: p.content_id.clone(),
            })
            .collect();
        if let Some(tail) = staging.tail.as_ref().filter(|t| t.size > 0) {
            let bytes = read_tail(&stores, tail, target).await?;
            if parts.len() >= MAX_PARTS as usize {
                return Err(Error::ResourceExhausted(format!(
                    "{target}: the handle's tail would be part {}, past the {MAX_PARTS}-part limit",
                    parts.len() + 1
                )));
            }
            let part = stores
                .uploads
                .put_part(&path, &staging.upload_id, parts.len(), bytes.into())
                .await
                .map_err(|e| upload_error(e, target))?;
            parts.push(part);
        }
        let published = if parts.is_empty() {
            let created = stores
                .objects
                .put_opts(
                    &path,
                    PutPayload::new(),
                    PutOptions {
                        mode: PutMode::Create,
                        ..Default::default()
                    },
                )
                .await;
            match created {
                Err(object_store::Error::AlreadyExists { .. }) => Err(Exists),
                other => Ok(other.map(drop)),
            }
        } else {
            let span = tracing::info_span!("complete_multipart", parts = parts.len());
            let complete = stores
                .uploads
                .complete_multipart(&path, &staging.upload_id, parts);
            match tracing::Instrument::instrument(complete, span).await {
                Err(object_store::Error::NotFound { .. }) => Err(Exists),
                other => Ok(other.map(drop)),
            }
        };
        match published {
            Ok(result) => result.map_err(|e| upload_error(e, target))?,
            Err(Exists) => {
                // The upload is gone or the target appeared meanwhile: a
                // commit that already happened, or someone else's file.
                let size = existing_size(&stores, &path, target).await?;
                return settle_without_staging(target, size, position, after_recovery);
            }
        }
        discard_staging(&stores, &path, staging).await;
        Ok(position)
    }

    async fn read(
        &self,
        target: &Location,
        offset: u64,
        length: Option<u64>,
    ) -> Result<ByteStream> {
        use futures::StreamExt;
        let stores = self.resolver.resolve(&target.authority)?;
        let path = object_path(target)?;
        let size = existing_size(&stores, &path, target)
            .await?
            .ok_or_else(|| not_found(target))?;
        let end = read_range(target, size, offset, length)?;
        if end == offset {
            return Ok(futures::stream::empty().boxed());
        }
        let options = object_store::GetOptions::default().with_range(Some(offset..end));
        let shown = target.to_string();
        let result = stores
            .objects
            .get_opts(&path, options)
            .await
            .map_err(|e| store_error(e, &format!("reading {shown}")))?;
        Ok(result
            .into_stream()
            .map(move |chunk| chunk.map_err(|e| store_error(e, &format!("reading {shown}"))))
            .boxed())
    }

    async fn stat(&self, path: &Location) -> Result<Option<Entry>> {
        let stores = self.resolver.resolve(&path.authority)?;
        if !path.path.is_empty()
            && let Ok(key) = object_path(path)
        {
            match stores.objects.head(&key).await {
                Ok(meta) => return Ok(Some(object_entry(path, &meta))),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_error(e, &format!("checking {path}"))),
            }
        }
        // A directory is a prefix that something lies under.
        let listed = self.list_prefix(&stores, path).await?;
        let is_dir = path.path.is_empty()
            || !listed.objects.is_empty()
            || !listed.common_prefixes.is_empty();
        Ok(is_dir.then(|| Entry {
            location: path.clone(),
            size: 0,
            is_dir: true,
            modified_ms: 0,
        }))
    }

    async fn list(&self, dir: &Location, page: &super::Page) -> Result<super::Listing> {
        let stores = self.resolver.resolve(&dir.authority)?;
        let listed = self.list_prefix(&stores, dir).await?;
        if listed.objects.is_empty() && listed.common_prefixes.is_empty() && !dir.path.is_empty() {
            // An object of that name is a file, not a directory.
            return match self.stat(dir).await? {
                Some(e) if !e.is_dir => Err(Error::FailedPrecondition(format!(
                    "{dir} is a file, not a directory"
                ))),
                _ => Err(not_found(dir)),
            };
        }
        let out: Vec<Entry> = listed
            .common_prefixes
            .iter()
            .map(|p| Entry {
                location: dir.with_path(p.to_string()),
                size: 0,
                is_dir: true,
                modified_ms: 0,
            })
            .chain(
                listed
                    .objects
                    .iter()
                    .map(|m| object_entry(&dir.with_path(m.location.to_string()), m)),
            )
            .filter(|e| !is_staging_name(e.location.file_name()))
            .collect();
        Ok(page.of(out))
    }

    async fn delete(&self, path: &Location, recursive: bool) -> Result<bool> {
        let stores = self.resolver.resolve(&path.authority)?;
        match self.stat(path).await? {
            None => Ok(false),
            Some(entry) if !entry.is_dir => {
                match stores.objects.delete(&object_path(path)?).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
                    Err(e) => Err(store_error(e, &format!("deleting {path}"))),
                }
            }
            Some(_) if !recursive => Err(Error::FailedPrecondition(format!(
                "{path} is a directory that is not empty; pass recursive=true to delete it with its contents"
            ))),
            Some(_) => {
                let prefix = (!path.path.is_empty()).then(|| Path::from(path.path.as_str()));
                let keys: Vec<Path> = stores
                    .objects
                    .list(prefix.as_ref())
                    .map_ok(|m| m.location)
                    .try_collect()
                    .await
                    .map_err(|e| store_error(e, &format!("listing {path}")))?;
                for key in keys {
                    match stores.objects.delete(&key).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(store_error(e, &format!("deleting under {path}"))),
                    }
                }
                Ok(true)
            }
        }
    }

    async fn mkdirs(&self, dir: &Location) -> Result<()> {
        // Object stores have no directories: a prefix exists once an object
        // lies under it. Refuse only what would shadow a file.
        match self.stat(dir).await? {
            Some(e) if !e.is_dir => {
                Err(Error::AlreadyExists(format!("{dir} exists and is a file")))
            }
            _ => Ok(()),
        }
    }

    async fn rename(&self, from: &Location, to: &Location) -> Result<()> {
        if from.authority != to.authority {
            return Err(Error::InvalidArgument(format!(
                "cannot rename {from} to {to}: object stores rename within one bucket or container"
            )));
        }
        let stores = self.resolver.resolve(&from.authority)?;
        let (src, dst) = (object_path(from)?, object_path(to)?);
        if existing_size(&stores, &src, from).await?.is_none() {
            return Err(not_found(from));
        }
        if existing_size(&stores, &dst, to).await?.is_some() {
            return Err(Error::AlreadyExists(format!(
                "{to} already exists; rename never replaces"
            )));
        }
        // Checked, then copied: object stores offer no atomic no-replace
        // rename, so a writer racing for the same target can still win.
        stores
            .objects
            .copy(&src, &dst)
            .await
            .map_err(|e| store_error(e, &format!("copying {from} to {to}")))?;
        stores
            .objects
            .delete(&src)
            .await
            .map_err(|e| store_error(e, &format!("deleting {from} after copying it")))
    }

    async fn target_size(&self, target: &Location) -> Result<Option<u64>> {
        let stores = self.resolver.resolve(&target.authority)?;
        existing_size(&stores, &object_path(target)?, target).await
    }

    async fn cleanup(&self, target: &Location, handle: &HandleBody) -> Result<bool> {
        let staging = expect_staging(handle, multipart_staging)?;
        let Some(tail) = &staging.tail else {
            return Ok(false);
        };
        let stores = self.resolver.resolve(&target.authority)?;
        let path = tail_path(tail)?;
        match stores.objects.head(&path).await {
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(store_error(
                e,
                &format!("checking the tail object of {target}"),
            )),
            Ok(_) => match stores.objects.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
                Err(e) => Err(store_error(
                    e,
                    &format!("deleting the tail object of {target}"),
                )),
            },
        }
    }

    async fn remove_staging(
        &self,
        target: &Location,
        staging_id: &str,
        location: &str,
        artefacts: &[String],
    ) -> Result<Removed> {
        let mut removed = Removed::default();
        if !location.is_empty() {
            let stores = self.resolver.resolve(&target.authority)?;
            match stores
                .uploads
                .abort_multipart(&object_path(target)?, &location.to_string())
                .await
            {
                Ok(()) => removed.uploads = 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_error(e, &format!("aborting an upload of {target}"))),
            }
        }
        removed.tails = self.remove_artefacts(target, staging_id, artefacts).await?;
        Ok(removed)
    }

    async fn remove_artefacts(
        &self,
        target: &Location,
        staging_id: &str,
        artefacts: &[String],
    ) -> Result<usize> {
        let stores = self.resolver.resolve(&target.authority)?;
        // Every tail of a staging starts with its prefix, and listings are
        // consistent (S3, GCS, Azure, memory): the listing is what exists,
        // including a tail written just before a crash that never reached
        // sled. Recorded names that are not listed are gone already (a
        // Cleanup took them); deleting them again cost a round trip each,
        // which made a commit after 1,300 persists take 20 s on Azurite.
        let prefix = tail_prefix(target, staging_id);
        let mut paths: Vec<String> = artefacts
            .iter()
            .filter(|a| !a.starts_with(&prefix))
            .cloned()
            .collect();
        let mut known: std::collections::HashSet<String> = paths.iter().cloned().collect();
        let offset = Path::parse(&prefix).map_err(|e| Error::Internal(e.to_string()))?;
        let dir = Path::parse(target.parent()).map_err(|e| Error::Internal(e.to_string()))?;
        let mut listing = stores.objects.list_with_offset(Some(&dir), &offset);
        while let Some(meta) = listing.next().await {
            let meta =
                meta.map_err(|e| store_error(e, &format!("listing the tail objects of {target}")))?;
            // Listings are in key order (S3, GCS, Azure, memory).
            if !meta.location.as_ref().starts_with(&prefix) {
                break;
            }
            if known.insert(meta.location.to_string()) {
                paths.push(meta.location.to_string());
            }
        }
        // A file persisted thousands of times has thousands of tails: delete
        // them a few at a time rather than one round trip after another.
        let shown = target.to_string();
        let deletes = paths.into_iter().map(|artefact| {
            let objects = stores.objects.clone();
            let shown = shown.clone();
            async move {
                let path = Path::parse(&artefact).map_err(|e| Error::Internal(e.to_string()))?;
                match objects.delete(&path).await {
                    Ok(()) => Ok(1usize),
                    Err(object_store::Error::NotFound { .. }) => Ok(0),
                    Err(e) => Err(store_error(
                        e,
                        &format!("deleting a tail object of {shown}"),
                    )),
                }
            }
        });
        futures::stream::iter(deletes)
            .buffer_unordered(TAIL_DELETES_IN_FLIGHT)
            .try_fold(0, |n, removed| async move { Ok(n + removed) })
            .await
    }
}

impl ObjectBackend {
    /// One level of keys and prefixes under `dir`.
    async fn list_prefix(
        &self,
        stores: &ObjectStores,
        dir: &Location,
    ) -> Result<object_store::ListResult> {
        let prefix = (!dir.path.is_empty()).then(|| Path::from(dir.path.as_str()));
        stores
            .objects
            .list_with_delimiter(prefix.as_ref())
            .await
            .map_err(|e| store_error(e, &format!("listing {dir}")))
    }
}

fn object_entry(location: &Location, meta: &object_store::ObjectMeta) -> Entry {
    Entry {
        location: location.clone(),
        size: meta.size,
        is_dir: false,
        modified_ms: meta.last_modified.timestamp_millis().max(0) as u64,
    }
}

/// Marker: the target exists, or the upload vanished.
struct Exists;

fn multipart_staging(s: &Staging) -> Option<&MultipartStaging> {
    match s {
        Staging::Multipart(m) => Some(m),
        _ => None,
    }
}

/// Parts must be numbered 0..n and, with the tail, add up to the position.
fn check_parts(staging: &MultipartStaging, position: u64) -> Result<()> {
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

async fn existing_size(
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

/// Best effort after a commit: the upload is finished and the tail is no
/// longer needed. Failures leave work for the janitor, nothing worse.
async fn discard_staging(stores: &ObjectStores, path: &Path, staging: &MultipartStaging) {
    let _ = stores
        .uploads
        .abort_multipart(path, &staging.upload_id)
        .await;
    if let Some(tail) = &staging.tail
        && let Ok(tail) = tail_path(tail)
    {
        let _ = stores.objects.delete(&tail).await;
    }
}

async fn read_tail(stores: &ObjectStores, tail: &TailObject, target: &Location) -> Result<Bytes> {
    let path = tail_path(tail)?;
    let bytes = match stores.objects.get(&path).await {
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

fn object_path(target: &Location) -> Result<Path> {
    Path::parse(&target.path)
        .map_err(|e| Error::InvalidArgument(format!("{target} is not a valid object key: {e}")))
}

fn tail_path(tail: &TailObject) -> Result<Path> {
    Path::parse(&tail.path).map_err(|e| Error::Internal(format!("bad tail object path: {e}")))
}

/// A hidden name beside the target, unique per persist, that names its
/// staging: `.<file>.tail.<staging token>.<uuid>`.
fn new_tail_path(target: &Location, staging_id: &str) -> String {
    format!(
        "{}{}",
        tail_prefix(target, staging_id),
        uuid::Uuid::new_v4()
    )
}

/// What every tail of one staging starts with. The token is the first 8
/// bytes of the SHA-256 of the staging id, in hex.
fn tail_prefix(target: &Location, staging_id: &str) -> String {
    use sha2::Digest;
    let token = hex::encode(&sha2::Sha256::digest(staging_id.as_bytes())[..8]);
    let name = format!(".{}.tail.{token}.", target.file_name());
    match target.parent() {
        "" => name,
        parent => format!("{parent}/{name}"),
    }
}

fn upload_error(e: object_store::Error, target: &Location) -> Error {
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
fn store_error(e: object_store::Error, doing: &str) -> Error {
    match e {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => Error::PermissionDenied(format!(
            "{doing}: the store refused sluice's credentials ({e}); check the scheme's keys"
        )),
        object_store::Error::NotFound { .. } => Error::FailedPrecondition(format!(
            "{doing}: {e} (does the bucket or container exist?)"
        )),
        e => Error::Unavailable(format!("{doing}: {e}")),
    }
}

/// One multipart upload being written.
struct ObjectWriter {
    stores: ObjectStores,
    target: Location,
    path: Path,
    upload_id: String,
    staging_id: String,
    /// Parts known uploaded, by index.
    parts: BTreeMap<u32, UploadedPart>,
    next_index: u32,
    in_flight: JoinSet<Result<UploadedPart>>,
    /// Bytes not yet in a part: large slices as they arrived (no copies),
    /// small ones gathered into `gather` first.
    pending: VecDeque<Bytes>,
    /// Small writes, copied together: a small slice of a message keeps its
    /// whole receive buffer alive, so keeping them as they came let 1,200
    /// one-byte writes hold over a GiB.
    gather: bytes::BytesMut,
    /// Bytes in `pending` and `gather`.
    pending_len: u64,
    config: UploadConfig,
    /// Set when a part failed: the session cannot go on, recover instead.
    broken: Option<String>,
}

/// Tail objects deleted at once after a commit.
const TAIL_DELETES_IN_FLIGHT: usize = 16;

/// Writes shorter than this are copied together rather than kept as slices.
const GATHER: usize = 64 * 1024;

impl ObjectWriter {
    #[allow(clippy::too_many_arguments)]
    fn new(
        stores: ObjectStores,
        target: &Location,
        path: Path,
        staging_id: String,
        upload_id: String,
        parts: Vec<UploadedPart>,
        tail: Option<Bytes>,
        config: UploadConfig,
    ) -> ObjectWriter {
        let next_index = parts.len() as u32;
        let pending_len = tail.as_ref().map_or(0, |t| t.len() as u64);
        ObjectWriter {
            staging_id,
            stores,
            target: target.clone(),
            path,
            upload_id,
            parts: parts.into_iter().map(|p| (p.index, p)).collect(),
            next_index,
            in_flight: JoinSet::new(),
            pending: tail.into_iter().collect(),
            gather: bytes::BytesMut::new(),
            pending_len,
            config,
            broken: None,
        }
    }

    fn check(&self) -> Result<()> {
        match &self.broken {
            None => Ok(()),
            Some(why) => Err(Error::Unavailable(format!(
                "an upload of {} failed earlier ({why}); recover from your last handle",
                self.target
            ))),
        }
    }

    /// Moves what `gather` holds to the end of `pending`.
    fn seal_gather(&mut self) {
        if !self.gather.is_empty() {
            self.pending.push_back(self.gather.split().freeze());
        }
    }

    /// Takes the first `n` pending bytes.
    fn take(&mut self, mut n: u64) -> Vec<Bytes> {
        self.seal_gather();
        let mut out = Vec::new();
        self.pending_len -= n;
        while n > 0 {
            let mut front = self.pending.pop_front().expect("pending holds n bytes");
            if front.len() as u64 > n {
                let rest = front.split_off(n as usize);
                self.pending.push_front(rest);
            }
            n -= front.len() as u64;
            out.push(front);
        }
        out
    }

    fn start_part(&mut self, slices: Vec<Bytes>) -> Result<()> {
        if self.next_index >= MAX_PARTS {
            let err = Error::ResourceExhausted(format!(
                "{} reached {MAX_PARTS} parts of {} bytes, the most an upload may have; raise the scheme's upload.min.part.size for files this large",
                self.target, self.config.part_size
            ));
            self.broken = Some(err.to_string());
            return Err(err);
        }
        let index = self.next_index;
        self.next_index += 1;
        let size = slices.iter().map(|b| b.len() as u64).sum();
        let payload: PutPayload = slices.into_iter().collect();
        let uploads = self.stores.uploads.clone();
        let (path, id, target) = (
            self.path.clone(),
            self.upload_id.clone(),
            self.target.clone(),
        );
        // A child of the RPC that filled the part, though it runs on.
        let span = tracing::info_span!("upload_part", part = index, bytes = size);
        let upload = async move {
            let part = uploads
                .put_part(&path, &id, index as usize, payload)
                .await
                .map_err(|e| upload_error(e, &target))?;
            Ok(UploadedPart {
                index,
                content_id: part.content_id,
                size,
            })
        };
        self.in_flight
            .spawn(tracing::Instrument::instrument(upload, span));
        Ok(())
    }

    /// Waits for one part in flight.
    async fn finish_one(&mut self) -> Result<()> {
        let Some(joined) = self.in_flight.join_next().await else {
            return Ok(());
        };
        match joined.map_err(Error::from).and_then(|r| r) {
            Ok(part) => {
                self.parts.insert(part.index, part);
                Ok(())
            }
            Err(e) => {
                self.broken = Some(e.to_string());
                Err(e)
            }
        }
    }

    async fn finish_all(&mut self) -> Result<()> {
        while !self.in_flight.is_empty() {
            self.finish_one().await?;
        }
        Ok(())
    }

    fn staging(&self, tail: Option<TailObject>) -> Staging {
        Staging::Multipart(MultipartStaging {
            upload_id: self.upload_id.clone(),
            parts: self.parts.values().cloned().collect(),
            tail,
        })
    }
}

#[async_trait]
impl StagedWriter for ObjectWriter {
    fn staging_id(&self) -> &str {
        &self.staging_id
    }

    fn location(&self) -> &str {
        &self.upload_id
    }

    async fn create(&mut self) -> Result<()> {
        // The store named the upload when `open` created it.
        Ok(())
    }

    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.check()?;
        self.pending_len += data.len() as u64;
        if data.len() < GATHER {
            if self.gather.capacity() - self.gather.len() < data.len() {
                self.seal_gather();
                self.gather.reserve(GATHER);
            }
            self.gather.extend_from_slice(&data);
        } else {
            self.seal_gather();
            self.pending.push_back(data);
        }
        while self.pending_len >= self.config.part_size {
            while self.in_flight.len() >= self.config.max_concurrent_uploads as usize {
                self.finish_one().await?;
            }
            let slices = self.take(self.config.part_size);
            self.start_part(slices)?;
        }
        Ok(())
    }

    async fn persist(&mut self) -> Result<Staging> {
        self.check()?;
        self.finish_all().await?;
        self.seal_gather();
        let tail = if self.pending_len == 0 {
            None
        } else {
            let path = new_tail_path(&self.target, &self.staging_id);
            let payload: PutPayload = self.pending.iter().cloned().collect();
            let key = Path::parse(&path).map_err(|e| Error::Internal(e.to_string()))?;
            let span = tracing::info_span!("put_tail", bytes = self.pending_len);
            tracing::Instrument::instrument(self.stores.objects.put(&key, payload), span)
                .await
                .map_err(|e| {
                    store_error(e, &format!("writing the tail object of {}", self.target))
                })?;
            Some(TailObject {
                path,
                size: self.pending_len,
            })
        };
        Ok(self.staging(tail))
    }

    async fn close_for_commit(&mut self) -> Result<Staging> {
        self.check()?;
        self.finish_all().await?;
        if self.pending_len > 0 {
            let slices = self.take(self.pending_len);
            self.start_part(slices)?;
            self.finish_all().await?;
        }
        Ok(self.staging(None))
    }

    async fn discard(mut self: Box<Self>) -> Result<()> {
        self.in_flight.abort_all();
        self.stores
            .uploads
            .abort_multipart(&self.path, &self.upload_id)
            .await
            .map_err(|e| store_error(e, &format!("aborting the upload of {}", self.target)))
    }
}
