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
    BackendCapabilities, ByteStream, Entry, MultipartStaging, Namespace, Removed, ResumePoint,
    Rope, StagedWriter, Stager, Staging, TailObject, UploadedPart, is_staging_name, not_found,
    read_range, settle_without_staging,
};
use crate::error::{Error, Result};
use crate::location::Location;

mod cloud;
pub mod hook;
mod namespace;
mod store;
mod upload;
mod writer;

pub use cloud::{StoreCache, misconfigured, need_authority};
use store::*;
pub use upload::{UploadConfig, upload_config};
use writer::{ObjectWriter, TAIL_DELETES_IN_FLIGHT};

/// S3, OSS and GCS allow 10,000 parts per upload (Azure 50,000 blocks); the
/// cap also bounds a handle, which lists every part, to about half a MiB.
pub const MAX_PARTS: u32 = 10_000;

/// The two faces of one bucket or container.
#[derive(Clone)]
pub struct ObjectStores {
    pub objects: Arc<dyn ObjectStore>,
    /// Where tail objects go: `objects`, or a bucket of their own
    /// (`gs.writer.temporary.bucket.name`).
    pub tails: Arc<dyn ObjectStore>,
    pub uploads: Arc<dyn MultipartStore>,
    /// The CRC32C a store keeps for every object (GCS), which tells a
    /// target holding a handle's bytes from one of the same size.
    pub crc32c: Option<Arc<dyn StoredCrc32c>>,
    /// Joins parts into one (GCS), where parts are objects.
    pub join: Option<Arc<dyn JoinParts>>,
}

/// A store whose parts are objects of their own that it can join (GCS
/// components): a long session's parts are joined into one from time to
/// time, so its handles stay short however often it persists.
#[async_trait]
pub trait JoinParts: Send + Sync {
    /// One part holding `parts`' bytes in order; the parts stay.
    async fn join_parts(
        &self,
        path: &Path,
        upload_id: &str,
        parts: Vec<PartId>,
    ) -> object_store::Result<PartId>;
}

/// The CRC32C a store computed for the object a write made, as its
/// answer to that write gave it (in `PutResult::extensions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishedCrc32c(pub u32);

/// A store that keeps a CRC32C of each object's bytes.
#[async_trait]
pub trait StoredCrc32c: Send + Sync {
    /// The object's CRC32C; `None` when there is no object or no CRC.
    async fn crc32c(&self, path: &Path) -> object_store::Result<Option<u32>>;
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
impl Stager for ObjectBackend {
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
        point: &ResumePoint,
    ) -> Result<Box<dyn StagedWriter>> {
        let staging = point.multipart()?;
        check_parts(staging, point.position)?;
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
            point.staging_id.clone(),
            staging.upload_id.clone(),
            staging.parts.clone(),
            tail,
            self.upload,
        )))
    }

    async fn commit(
        &self,
        target: &Location,
        point: &ResumePoint,
        after_recovery: bool,
    ) -> Result<u64> {
        let staging = point.multipart()?;
        check_parts(staging, point.position)?;
        let stores = self.resolver.resolve(&target.authority)?;
        let path = object_path(target)?;
        let position = point.position;
        if let Some(size) = existing_size(&stores, &path, target).await? {
            let done = settle(&stores, &path, target, Some(size), point, after_recovery).await?;
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
        // What S3 names the object this upload completes into.
        let ours = multipart_etag(parts.iter().map(|p| p.content_id.as_str()));
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
                Err(object_store::Error::AlreadyExists { .. }) => Err(Exists { conflict: false }),
                other => Ok(other),
            }
        } else {
            let span = tracing::info_span!("complete_multipart", parts = parts.len());
            let complete = stores
                .uploads
                .complete_multipart(&path, &staging.upload_id, parts);
            match tracing::Instrument::instrument(complete, span).await {
                // No such upload; or the completion's create-only
                // condition failed (S3 412, Azure 409 BlobAlreadyExists,
                // GCS 412), or S3's 409 for a conditional write to the
                // same key at the same moment: the target decides below.
                Err(object_store::Error::NotFound { .. })
                | Err(object_store::Error::Precondition { .. }) => Err(Exists { conflict: false }),
                Err(object_store::Error::AlreadyExists { .. }) => Err(Exists { conflict: true }),
                other => Ok(other),
            }
        };
        match published {
            Ok(result) => {
                let put = result.map_err(|e| upload_error(e, target))?;
                // The store's own CRC32C of what it published (GCS), as its
                // answer gave it, must be the handle's: the end of the
                // checksum chain from the client's Write messages.
                if let Some(PublishedCrc32c(stored)) = put.extensions.get::<PublishedCrc32c>()
                    && *stored != point.crc32c
                {
                    return Err(Error::DataLoss(format!(
                        "{target} was published with CRC32C {stored:#010x}, not the handle's {:#010x}: the store holds other bytes than were written; its staging is kept for inspection",
                        point.crc32c
                    )));
                }
            }
            Err(Exists { conflict }) => {
                // The upload is gone or the target appeared meanwhile: a
                // commit that already happened, or someone else's file.
                let (size, etag) = match stores.objects.head(&path).await {
                    Ok(meta) => (Some(meta.size), meta.e_tag),
                    Err(object_store::Error::NotFound { .. }) => (None, None),
                    Err(e) => return Err(store_error(e, &format!("checking {target}"))),
                };
                let own_completion = size == Some(position)
                    && ((ours.is_some()
                        && etag.as_deref().map(|e| e.trim_matches('"')) == ours.as_deref())
                        || stored_crc32c(&stores, &path, target).await? == Some(point.crc32c));
                if size.is_none() && conflict {
                    // Refused, yet no target: a conditional write to the
                    // key was under way at that moment (S3's 409); nothing
                    // was completed, and a retry decides.
                    return Err(Error::StoreUnavailable {
                        message: format!(
                            "another write to {target} raced this commit and the store completed neither; retry the commit"
                        ),
                        source: None,
                    });
                }
                if !own_completion {
                    return settle(&stores, &path, target, size, point, after_recovery).await;
                }
                // This very completion, answered twice (a retry after a
                // lost answer): the object is the upload's own.
            }
        }
        discard_staging(&stores, &path, staging).await;
        Ok(position)
    }

    async fn target_size(&self, target: &Location) -> Result<Option<u64>> {
        let stores = self.resolver.resolve(&target.authority)?;
        existing_size(&stores, &object_path(target)?, target).await
    }

    async fn cleanup(&self, target: &Location, point: &ResumePoint) -> Result<bool> {
        let staging = point.multipart()?;
        let Some(tail) = &staging.tail else {
            return Ok(false);
        };
        let stores = self.resolver.resolve(&target.authority)?;
        let path = tail_path(tail)?;
        match stores.tails.head(&path).await {
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(store_error(
                e,
                &format!("checking the tail object of {target}"),
            )),
            Ok(_) => match stores.tails.delete(&path).await {
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
        let mut listing = stores.tails.list_with_offset(Some(&dir), &offset);
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
            let objects = stores.tails.clone();
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
