//! One `gs://` bucket as object_store's two traits, over the JSON API, so
//! that the multipart code every object store shares runs on it unchanged.
//!
//! `MultipartStore` is the shape of Flink's GCS recoverable writer: a part
//! is a *component*, an object of its own under a hidden name that marks
//! its staging (`.<file>.tail.<upload token>.<uuid>`, in the temporary
//! bucket when one is configured); completing the upload composes the
//! components in order into the target, at most 32 per `compose` call and
//! through intermediate objects when there are more, with
//! `ifGenerationMatch=0` on the target (never replacing an object) and each
//! component's generation as a precondition (never publishing bytes other
//! than the ones its handle lists). Aborting deletes every object under the
//! upload's prefix. Components can have any size, so a persist finalises
//! the bytes since the last part as one more component instead of a tail
//! object that a recovery would read back.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    Attributes, CopyMode, CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload,
    ListResult, MultipartId, MultipartUpload, ObjectMeta, ObjectStore, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use super::json::{COMPOSE_MAX_SOURCES, GcsClient, Object};
use crate::backend::object::{JoinParts, PublishedCrc32c, StoredCrc32c};

/// Composes of intermediate objects in flight at once.
const COMPOSES_IN_FLIGHT: usize = 8;
/// Deletes in flight at once when an upload is aborted.
const DELETES_IN_FLIGHT: usize = 16;

/// One bucket, and where its uploads keep their components.
#[derive(Debug, Clone)]
pub struct GcsBucket {
    client: Arc<GcsClient>,
    bucket: String,
    /// `gs.writer.temporary.bucket.name`, or the bucket itself.
    components: String,
}

impl GcsBucket {
    pub fn new(client: Arc<GcsClient>, bucket: &str, components: Option<&str>) -> GcsBucket {
        GcsBucket {
            client,
            bucket: bucket.to_string(),
            components: components.unwrap_or(bucket).to_string(),
        }
    }

    async fn meta(&self, path: &Path) -> object_store::Result<Object> {
        self.client
            .object(&self.bucket, path.as_ref())
            .await?
            .ok_or_else(|| object_store::Error::NotFound {
                path: path.to_string(),
                source: "no such object".into(),
            })
    }

    /// Lists every object under `prefix` (a raw name prefix) from
    /// `start_offset` on, page after page.
    fn list_raw(
        &self,
        bucket: String,
        prefix: String,
        start_offset: Option<String>,
    ) -> BoxStream<'static, object_store::Result<Object>> {
        let client = self.client.clone();
        futures::stream::try_unfold(Some(None::<String>), move |token| {
            let (client, bucket, prefix, start) = (
                client.clone(),
                bucket.clone(),
                prefix.clone(),
                start_offset.clone(),
            );
            async move {
                let Some(token) = token else {
                    return Ok::<_, object_store::Error>(None);
                };
                let page = client
                    .list_page(&bucket, &prefix, None, start.as_deref(), token.as_deref())
                    .await?;
                let next = page.next_page_token.filter(|t| !t.is_empty()).map(Some);
                Ok(Some((
                    futures::stream::iter(page.items.into_iter().map(Ok)),
                    next,
                )))
            }
        })
        .try_flatten()
        .boxed()
    }

    /// Where an upload's components start: beside the target (in the
    /// components' bucket), marked with the upload's token.
    fn component_prefix(path: &Path, token: &str) -> String {
        let full = path.as_ref();
        let (parent, file) = match full.rsplit_once('/') {
            Some((parent, file)) => (format!("{parent}/"), file),
            None => (String::new(), full),
        };
        format!("{parent}.{file}.tail.{token}.")
    }

    fn new_component(path: &Path, token: &str) -> String {
        format!(
            "{}{}",
            Self::component_prefix(path, token),
            uuid::Uuid::new_v4()
        )
    }

    /// Composes `sources` into fewer and fewer intermediate objects until
    /// at most 32 remain.
    async fn reduce(
        &self,
        path: &Path,
        token: &str,
        mut sources: Vec<(String, Option<i64>)>,
    ) -> object_store::Result<Vec<(String, Option<i64>)>> {
        while sources.len() > COMPOSE_MAX_SOURCES {
            let groups: Vec<Vec<(String, Option<i64>)>> = sources
                .chunks(COMPOSE_MAX_SOURCES)
                .map(<[_]>::to_vec)
                .collect();
            sources = futures::stream::iter(groups.into_iter().map(|group| async move {
                if group.len() == 1 {
                    return Ok(group.into_iter().next().unwrap());
                }
                let name = Self::new_component(path, token);
                let made = self
                    .client
                    .compose(&self.components, &name, &group, Some(0))
                    .await?;
                Ok::<_, object_store::Error>((name, made.generation))
            }))
            .buffered(COMPOSES_IN_FLIGHT)
            .try_collect()
            .await?;
        }
        Ok(sources)
    }
}

impl fmt::Display for GcsBucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GcsJson(gs://{})", self.bucket)
    }
}

fn object_meta(object: &Object) -> ObjectMeta {
    let last_modified = object
        .updated
        .as_deref()
        .and_then(|u| chrono::DateTime::parse_from_rfc3339(u).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_default();
    ObjectMeta {
        location: Path::from(object.name.as_str()),
        last_modified,
        size: object.size,
        e_tag: object.etag.clone(),
        version: object.generation.map(|g| g.to_string()),
    }
}

/// What a write made, with the CRC32C GCS computed for it.
fn put_result(object: &Object) -> PutResult {
    let mut extensions = object_store::Extensions::new();
    if let Some(crc) = object.crc32c() {
        extensions.insert(PublishedCrc32c(crc));
    }
    PutResult {
        e_tag: object.etag.clone(),
        version: object.generation.map(|g| g.to_string()),
        extensions,
    }
}

fn not_supported(what: &str) -> object_store::Error {
    object_store::Error::NotImplemented {
        operation: what.to_string(),
        implementer: "sluice's GCS JSON store".to_string(),
    }
}

/// A directory prefix in object_store's sense: `a/b` lists under `a/b/`.
fn dir_prefix(prefix: Option<&Path>) -> String {
    match prefix.map(Path::as_ref) {
        None | Some("") => String::new(),
        Some(p) => format!("{p}/"),
    }
}

#[async_trait]
impl ObjectStore for GcsBucket {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let condition = match &opts.mode {
            PutMode::Overwrite => None,
            PutMode::Create => Some(0),
            PutMode::Update(v) => Some(
                v.version
                    .as_deref()
                    .and_then(|g| g.parse().ok())
                    .ok_or_else(|| not_supported("a conditional update without a generation"))?,
            ),
        };
        match self
            .client
            .upload(&self.bucket, location.as_ref(), payload, condition)
            .await
        {
            Ok(object) => Ok(put_result(&object)),
            // A create over an existing object: object_store's contract
            // says AlreadyExists.
            Err(object_store::Error::Precondition { path, source })
                if matches!(opts.mode, PutMode::Create) =>
            {
                Err(object_store::Error::AlreadyExists { path, source })
            }
            Err(e) => Err(e),
        }
    }

    async fn put_multipart_opts(
        &self,
        _location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Err(not_supported("put_multipart"))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let object = self.meta(location).await?;
        let meta = object_meta(&object);
        let size = object.size;
        let range = match &options.range {
            None => 0..size,
            Some(GetRange::Bounded(r)) => r.start.min(size)..r.end.min(size),
            Some(GetRange::Offset(o)) => (*o).min(size)..size,
            Some(GetRange::Suffix(n)) => size.saturating_sub(*n)..size,
        };
        let payload = if options.head || range.is_empty() {
            futures::stream::empty().boxed()
        } else {
            let partial = range != (0..size);
            let response = self
                .client
                .download(
                    &self.bucket,
                    location.as_ref(),
                    object.generation,
                    partial.then(|| range.clone()),
                )
                .await?;
            response
                .into_body()
                .bytes_stream()
                .map_err(|e| object_store::Error::Generic {
                    store: "GCS",
                    source: Box::new(e),
                })
                .boxed()
        };
        Ok(GetResult {
            payload: GetResultPayload::Stream(payload),
            meta,
            range,
            attributes: Attributes::default(),
            extensions: Default::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let this = self.clone();
        locations
            .map(move |location| {
                let this = this.clone();
                async move {
                    let location = location?;
                    if this.client.delete(&this.bucket, location.as_ref()).await? {
                        Ok(location)
                    } else {
                        Err(object_store::Error::NotFound {
                            path: location.to_string(),
                            source: "no such object".into(),
                        })
                    }
                }
            })
            .buffered(DELETES_IN_FLIGHT)
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.list_raw(self.bucket.clone(), dir_prefix(prefix), None)
            .map_ok(|o| object_meta(&o))
            .boxed()
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        // GCS's startOffset is inclusive (and an emulator may ignore it):
        // the filter keeps object_store's "after the offset".
        let offset = offset.to_string();
        self.list_raw(
            self.bucket.clone(),
            dir_prefix(prefix),
            Some(offset.clone()),
        )
        .try_filter(move |o| futures::future::ready(o.name > offset))
        .map_ok(|o| object_meta(&o))
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let prefix = dir_prefix(prefix);
        let mut result = ListResult {
            common_prefixes: Vec::new(),
            objects: Vec::new(),
            extensions: Default::default(),
        };
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_page(&self.bucket, &prefix, Some("/"), None, token.as_deref())
                .await?;
            result.objects.extend(page.items.iter().map(object_meta));
            result.common_prefixes.extend(
                page.prefixes
                    .iter()
                    .map(|p| Path::from(p.trim_end_matches('/'))),
            );
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(next) => token = Some(next),
                None => return Ok(result),
            }
        }
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let condition = match options.mode {
            CopyMode::Overwrite => None,
            CopyMode::Create => Some(0),
        };
        match self
            .client
            .rewrite(
                (&self.bucket, from.as_ref()),
                (&self.bucket, to.as_ref()),
                condition,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::Precondition { path, source }) if condition.is_some() => {
                Err(object_store::Error::AlreadyExists { path, source })
            }
            Err(e) => Err(e),
        }
    }
}

/// A part that is a component named by the upload's prefix and the
/// part's id.
fn source(prefix: &str, part: &PartId) -> object_store::Result<(String, Option<i64>)> {
    let (unique, generation) = part
        .content_id
        .split_once('@')
        .ok_or_else(|| not_supported("a part id that is not a GCS component"))?;
    let generation = generation.parse::<i64>().ok().filter(|g| *g != 0);
    Ok((format!("{prefix}{unique}"), generation))
}

fn part_id(name: &str, object: &Object) -> PartId {
    let unique = name.rsplit('.').next().unwrap_or_default();
    PartId {
        content_id: format!("{unique}@{}", object.generation.unwrap_or(0)),
    }
}

/// Components joined into one more component, by compose.
#[async_trait]
impl JoinParts for GcsBucket {
    async fn join_parts(
        &self,
        path: &Path,
        upload_id: &str,
        parts: Vec<PartId>,
    ) -> object_store::Result<PartId> {
        let prefix = Self::component_prefix(path, upload_id);
        let sources = parts
            .iter()
            .map(|p| source(&prefix, p))
            .collect::<object_store::Result<Vec<_>>>()?;
        let sources = self.reduce(path, upload_id, sources).await?;
        let name = Self::new_component(path, upload_id);
        let object = self
            .client
            .compose(&self.components, &name, &sources, Some(0))
            .await?;
        Ok(part_id(&name, &object))
    }
}

/// GCS keeps a CRC32C for every object, composite ones included (which
/// have no MD5).
#[async_trait]
impl StoredCrc32c for GcsBucket {
    async fn crc32c(&self, path: &Path) -> object_store::Result<Option<u32>> {
        Ok(self
            .client
            .object(&self.bucket, path.as_ref())
            .await?
            .and_then(|o| o.crc32c()))
    }
}

#[async_trait]
impl MultipartStore for GcsBucket {
    /// Nothing is created: the token names the upload's components.
    async fn create_multipart(&self, _path: &Path) -> object_store::Result<MultipartId> {
        let mut token = [0u8; 8];
        getrandom::fill(&mut token).map_err(|e| object_store::Error::Generic {
            store: "GCS",
            source: e.to_string().into(),
        })?;
        Ok(hex::encode(token))
    }

    /// Uploads one component; its id is its name's UUID and its generation.
    async fn put_part(
        &self,
        path: &Path,
        id: &MultipartId,
        _part_idx: usize,
        data: PutPayload,
    ) -> object_store::Result<PartId> {
        let name = Self::new_component(path, id);
        let object = self
            .client
            .upload(&self.components, &name, data, Some(0))
            .await?;
        Ok(part_id(&name, &object))
    }

    /// Composes the components into the target, never over an object.
    async fn complete_multipart(
        &self,
        path: &Path,
        id: &MultipartId,
        parts: Vec<PartId>,
    ) -> object_store::Result<PutResult> {
        let prefix = Self::component_prefix(path, id);
        let sources = parts
            .iter()
            .map(|p| source(&prefix, p))
            .collect::<object_store::Result<Vec<_>>>()?;
        let sources = self.reduce(path, id, sources).await?;
        let object = if self.components == self.bucket {
            self.client
                .compose(&self.bucket, path.as_ref(), &sources, Some(0))
                .await?
        } else {
            // Compose works within one bucket: join the components in
            // theirs, then copy across, still only where no object is.
            let joined = Self::new_component(path, id);
            self.client
                .compose(&self.components, &joined, &sources, Some(0))
                .await?;
            self.client
                .rewrite(
                    (&self.components, &joined),
                    (&self.bucket, path.as_ref()),
                    Some(0),
                )
                .await?
        };
        Ok(put_result(&object))
    }

    /// Deletes every component (and intermediate) of the upload.
    async fn abort_multipart(&self, path: &Path, id: &MultipartId) -> object_store::Result<()> {
        let prefix = Self::component_prefix(path, id);
        let names: Vec<String> = self
            .list_raw(self.components.clone(), prefix, None)
            .map_ok(|o| o.name)
            .try_collect()
            .await?;
        let client = &self.client;
        let bucket = &self.components;
        futures::stream::iter(names)
            .map(|name| async move { client.delete(bucket, &name).await })
            .buffer_unordered(DELETES_IN_FLIGHT)
            .try_collect::<Vec<bool>>()
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_staging_names_beside_the_target() {
        let path = Path::from("out/dir/part-0");
        let prefix = GcsBucket::component_prefix(&path, "0123456789abcdef");
        assert_eq!(prefix, "out/dir/.part-0.tail.0123456789abcdef.");
        let name = GcsBucket::new_component(&path, "0123456789abcdef");
        let file = name.rsplit('/').next().unwrap();
        assert!(crate::backend::is_staging_name(file), "{file}");
        assert_eq!(
            GcsBucket::component_prefix(&Path::from("top"), "0123456789abcdef"),
            ".top.tail.0123456789abcdef."
        );
    }
}
