//! The objects of one `memory://` store, each kept as the list of buffers
//! it was written in.
//!
//! object_store's `InMemory` keeps an object as one contiguous buffer, so
//! completing a multipart upload copied every byte of the file once more:
//! a 1 GiB commit took about a second and, for a moment, twice the memory.
//! Here an object is the slices its parts arrived as (reference-counted
//! `Bytes`, never copied), so completing an upload only moves their handles
//! into the object: constant time, no new memory. Reads stream the slices
//! that a range covers.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    Attributes, CopyMode, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, UploadPart,
};

/// One object: its slices, where each starts, and its metadata.
#[derive(Debug, Clone)]
struct Object {
    slices: PutPayload,
    /// `starts[i]` is the offset of slice `i`; one more entry, the size.
    starts: Arc<[u64]>,
    last_modified: DateTime<Utc>,
    e_tag: u64,
    attributes: Attributes,
}

impl Object {
    fn size(&self) -> u64 {
        *self.starts.last().expect("starts holds the size")
    }

    fn meta(&self, location: &Path) -> ObjectMeta {
        ObjectMeta {
            location: location.clone(),
            last_modified: self.last_modified,
            size: self.size(),
            e_tag: Some(format!("\"{}\"", self.e_tag)),
            version: None,
        }
    }

    /// The slices (or parts of them) that hold `range`, in order.
    fn slices_in(&self, range: Range<u64>) -> Vec<Bytes> {
        let mut out = Vec::new();
        if range.is_empty() {
            return out;
        }
        // The last slice starting at or before range.start.
        let first = self.starts.partition_point(|&s| s <= range.start) - 1;
        for (i, slice) in self.slices.iter().enumerate().skip(first) {
            let start = self.starts[i];
            if start >= range.end {
                break;
            }
            let from = range.start.saturating_sub(start) as usize;
            let to = ((range.end - start) as usize).min(slice.len());
            if from < to {
                out.push(slice.slice(from..to));
            }
        }
        out
    }
}

#[derive(Debug, Default)]
struct Objects {
    map: BTreeMap<Path, Object>,
    next_e_tag: u64,
}

/// The objects of one memory store. An `ObjectStore`, with `InMemory`'s
/// answers (create-only and versioned puts, ranges, preconditions,
/// listings), and [`MemoryObjects::create_from`] for completed uploads.
#[derive(Debug, Default)]
pub struct MemoryObjects {
    /// Shared with the streams and uploads that outlive a call.
    objects: Arc<RwLock<Objects>>,
}

impl std::fmt::Display for MemoryObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemoryObjects")
    }
}

fn not_found(location: &Path) -> object_store::Error {
    object_store::Error::NotFound {
        path: location.to_string(),
        source: format!("no object {location} in this memory store").into(),
    }
}

/// The slices of `parts`, in order, as one payload (no byte copied).
fn concatenated<'a>(parts: impl IntoIterator<Item = &'a PutPayload>) -> PutPayload {
    parts.into_iter().flat_map(|p| p.iter().cloned()).collect()
}

/// Stores `slices` at `location` as they are, as `mode` allows.
fn put_slices(
    shared: &RwLock<Objects>,
    location: &Path,
    slices: PutPayload,
    mode: PutMode,
    attributes: Attributes,
) -> object_store::Result<PutResult> {
    let mut starts = Vec::with_capacity(slices.as_ref().len() + 1);
    let mut at = 0u64;
    for slice in slices.iter() {
        starts.push(at);
        at += slice.len() as u64;
    }
    starts.push(at);
    let mut objects = shared.write().unwrap();
    let e_tag = objects.next_e_tag;
    match (&mode, objects.map.get(location)) {
        (PutMode::Overwrite, _) | (PutMode::Create, None) => {}
        (PutMode::Create, Some(_)) => {
            return Err(object_store::Error::AlreadyExists {
                path: location.to_string(),
                source: format!("{location} exists").into(),
            });
        }
        (PutMode::Update(v), Some(existing)) => {
            let want = v.e_tag.as_deref().map(|t| t.trim_matches('"'));
            if want != Some(existing.e_tag.to_string().as_str()) {
                return Err(object_store::Error::Precondition {
                    path: location.to_string(),
                    source: format!("{location} changed: its e-tag is not {want:?}").into(),
                });
            }
        }
        (PutMode::Update(_), None) => {
            return Err(object_store::Error::Precondition {
                path: location.to_string(),
                source: format!("{location} does not exist").into(),
            });
        }
    }
    objects.next_e_tag += 1;
    let replaced = objects.map.insert(
        location.clone(),
        Object {
            slices,
            starts: starts.into(),
            last_modified: Utc::now(),
            e_tag,
            attributes,
        },
    );
    // Let go of a replaced object after the lock, not under it.
    drop(objects);
    drop(replaced);
    Ok(PutResult {
        e_tag: Some(format!("\"{e_tag}\"")),
        version: None,
        extensions: Default::default(),
    })
}

impl MemoryObjects {
    pub fn new() -> MemoryObjects {
        MemoryObjects::default()
    }

    fn object(&self, location: &Path) -> object_store::Result<Object> {
        self.objects
            .read()
            .unwrap()
            .map
            .get(location)
            .cloned()
            .ok_or_else(|| not_found(location))
    }

    /// Creates `location` from the slices of `parts`, in order, without
    /// copying a byte; `AlreadyExists` when something is there.
    pub fn create_from(
        &self,
        location: &Path,
        parts: &[&PutPayload],
    ) -> object_store::Result<PutResult> {
        let slices = concatenated(parts.iter().copied());
        put_slices(
            &self.objects,
            location,
            slices,
            PutMode::Create,
            Attributes::new(),
        )
    }

    /// The objects below `prefix` (as a path), in key order.
    fn entries_under(&self, prefix: Option<&Path>) -> Vec<ObjectMeta> {
        let root = Path::default();
        let prefix = prefix.unwrap_or(&root);
        self.objects
            .read()
            .unwrap()
            .map
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.as_ref().starts_with(prefix.as_ref()))
            .filter(|(key, _)| {
                // Below the prefix as a path, never the prefix itself.
                key.prefix_match(prefix)
                    .is_some_and(|mut rest| rest.next().is_some())
            })
            .map(|(key, object)| object.meta(key))
            .collect()
    }
}

#[async_trait]
impl ObjectStore for MemoryObjects {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        put_slices(&self.objects, location, payload, opts.mode, opts.attributes)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Ok(Box::new(Upload {
            objects: self.objects.clone(),
            location: location.clone(),
            attributes: opts.attributes,
            parts: Vec::new(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let object = self.object(location)?;
        let meta = object.meta(location);
        options.check_preconditions(&meta)?;
        let range =
            match &options.range {
                Some(range) => range.as_range(object.size()).map_err(|source| {
                    object_store::Error::Generic {
                        store: "memory",
                        source: Box::new(source),
                    }
                })?,
                None => 0..object.size(),
            };
        let slices = if options.head {
            Vec::new()
        } else {
            object.slices_in(range.clone())
        };
        let stream = futures::stream::iter(slices.into_iter().map(Ok));
        Ok(GetResult {
            payload: GetResultPayload::Stream(stream.boxed()),
            attributes: object.attributes,
            meta,
            range,
            extensions: Default::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let objects = self.objects.clone();
        locations
            .map(move |location| {
                let location = location?;
                // Taken out under the lock, let go of after it: dropping a
                // large object's slices can take a while.
                let gone = objects.write().unwrap().map.remove(&location);
                drop(gone);
                Ok(location)
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let entries = self.entries_under(prefix);
        futures::stream::iter(entries.into_iter().map(Ok)).boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let root = Path::default();
        let base = prefix.unwrap_or(&root);
        let mut common_prefixes = BTreeSet::new();
        let mut objects = Vec::new();
        for meta in self.entries_under(prefix) {
            // The first path segment below the prefix, when more follow.
            let dir = {
                let mut rest = meta
                    .location
                    .prefix_match(base)
                    .expect("entries are under the prefix");
                let first = rest.next().expect("entries are below the prefix");
                rest.next().is_some().then(|| base.clone().join(first))
            };
            match dir {
                Some(dir) => {
                    common_prefixes.insert(dir);
                }
                None => objects.push(meta),
            }
        }
        Ok(ListResult {
            common_prefixes: common_prefixes.into_iter().collect(),
            objects,
            extensions: Default::default(),
        })
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let object = self.object(from)?;
        let mode = match options.mode {
            CopyMode::Overwrite => PutMode::Overwrite,
            CopyMode::Create => PutMode::Create,
        };
        put_slices(&self.objects, to, object.slices, mode, object.attributes).map(|_| ())
    }
}

/// A multipart upload through the `ObjectStore` interface (sluice's own
/// uploads go through `MemoryUploads`): its parts, kept as they came.
#[derive(Debug)]
struct Upload {
    objects: Arc<RwLock<Objects>>,
    location: Path,
    attributes: Attributes,
    parts: Vec<PutPayload>,
}

#[async_trait]
impl MultipartUpload for Upload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.parts.push(data);
        Box::pin(futures::future::ready(Ok(())))
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let slices = concatenated(&std::mem::take(&mut self.parts));
        put_slices(
            &self.objects,
            &self.location,
            slices,
            PutMode::Overwrite,
            std::mem::take(&mut self.attributes),
        )
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.parts.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::{ObjectStoreExt, UpdateVersion};

    fn payload(slices: &[&'static [u8]]) -> PutPayload {
        slices.iter().map(|s| Bytes::from_static(s)).collect()
    }

    async fn read(store: &MemoryObjects, path: &Path, range: Option<Range<u64>>) -> Vec<u8> {
        let options = GetOptions::default().with_range(range);
        let got = store.get_opts(path, options).await.unwrap();
        got.bytes().await.unwrap().to_vec()
    }

    #[tokio::test]
    async fn ranges_across_slices_read_the_right_bytes() {
        let store = MemoryObjects::new();
        let path = Path::from("a/b");
        store
            .put(&path, payload(&[b"abc", b"", b"defg", b"h", b"ijkl"]))
            .await
            .unwrap();
        let whole = b"abcdefghijkl";
        assert_eq!(read(&store, &path, None).await, whole);
        for start in 0..whole.len() as u64 {
            for end in start + 1..=whole.len() as u64 {
                let got = read(&store, &path, Some(start..end)).await;
                assert_eq!(got, &whole[start as usize..end as usize], "{start}..{end}");
            }
        }
        assert!(
            store
                .get_opts(&path, GetOptions::default().with_range(Some(20..30)))
                .await
                .is_err()
        );
        assert_eq!(store.head(&path).await.unwrap().size, 12);
    }

    #[tokio::test]
    async fn puts_honour_their_mode() {
        let store = MemoryObjects::new();
        let path = Path::from("x");
        let first = store
            .put_opts(&path, payload(&[b"one"]), PutMode::Create.into())
            .await
            .unwrap();
        let again = store
            .put_opts(&path, payload(&[b"two"]), PutMode::Create.into())
            .await
            .unwrap_err();
        assert!(matches!(again, object_store::Error::AlreadyExists { .. }));
        let stale = UpdateVersion {
            e_tag: Some("\"999\"".into()),
            version: None,
        };
        let refused = store
            .put_opts(&path, payload(&[b"two"]), PutMode::Update(stale).into())
            .await
            .unwrap_err();
        assert!(matches!(refused, object_store::Error::Precondition { .. }));
        let current = UpdateVersion {
            e_tag: first.e_tag,
            version: None,
        };
        store
            .put_opts(
                &path,
                payload(&[b"tw", b"o"]),
                PutMode::Update(current).into(),
            )
            .await
            .unwrap();
        assert_eq!(read(&store, &path, None).await, b"two");
        let copied = Path::from("y");
        store.copy_if_not_exists(&path, &copied).await.unwrap();
        assert!(store.copy_if_not_exists(&path, &copied).await.is_err());
        store.delete(&path).await.unwrap();
        assert!(matches!(
            store.head(&path).await.unwrap_err(),
            object_store::Error::NotFound { .. }
        ));
        assert_eq!(read(&store, &copied, None).await, b"two");
    }

    #[tokio::test]
    async fn listings_see_paths_not_string_prefixes() {
        let store = MemoryObjects::new();
        for key in ["d/a", "d/sub/b", "d/sub/c", "dx/e", "d"] {
            store.put(&Path::from(key), payload(&[b"1"])).await.unwrap();
        }
        let under: Vec<String> = store
            .list(Some(&Path::from("d")))
            .map(|m| m.unwrap().location.to_string())
            .collect()
            .await;
        assert_eq!(under, ["d/a", "d/sub/b", "d/sub/c"]);
        let level = store
            .list_with_delimiter(Some(&Path::from("d")))
            .await
            .unwrap();
        let objects: Vec<_> = level
            .objects
            .iter()
            .map(|m| m.location.to_string())
            .collect();
        let dirs: Vec<_> = level
            .common_prefixes
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(objects, ["d/a"]);
        assert_eq!(dirs, ["d/sub"]);
    }

    #[tokio::test]
    async fn an_object_made_from_parts_shares_their_buffers() {
        let store = MemoryObjects::new();
        let big = Bytes::from(vec![7u8; 1 << 20]);
        let parts: Vec<PutPayload> = (0..4).map(|_| PutPayload::from(big.clone())).collect();
        let listed: Vec<&PutPayload> = parts.iter().collect();
        let path = Path::from("joined");
        store.create_from(&path, &listed).unwrap();
        let got = store.get(&path).await.unwrap();
        let chunks: Vec<Bytes> = got.into_stream().map(|c| c.unwrap()).collect().await;
        assert_eq!(chunks.len(), 4);
        // Not copies: the very buffer each part was written from.
        assert!(chunks.iter().all(|c| c.as_ptr() == big.as_ptr()));
        assert!(matches!(
            store.create_from(&path, &listed).unwrap_err(),
            object_store::Error::AlreadyExists { .. }
        ));
    }

    #[tokio::test]
    async fn a_multipart_put_through_the_trait() {
        let store = MemoryObjects::new();
        let path = Path::from("m");
        let mut upload = store.put_multipart(&path).await.unwrap();
        upload.put_part(payload(&[b"ab"])).await.unwrap();
        upload.put_part(payload(&[b"cd", b"e"])).await.unwrap();
        upload.complete().await.unwrap();
        assert_eq!(read(&store, &path, Some(1..4)).await, b"bcd");
    }
}
