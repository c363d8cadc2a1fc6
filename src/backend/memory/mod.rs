//! `memory://NAME/...`: an in-process object store with S3's multipart
//! semantics, for tests, demos and benchmarks.
//!
//! Objects live in [`objects::MemoryObjects`], each as the buffers it
//! arrived in. Multipart uploads have S3's behaviour (a recovery that
//! discards bytes written after a handle needs it): only the listed parts
//! make the object, and each part has a content id (like an ETag) that
//! changes when the part is uploaded again, so a stale part list is
//! detected.

mod objects;

pub use objects::MemoryObjects;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{MultipartId, PutPayload, PutResult};

use super::object::{ObjectBackend, ObjectStores, StoreResolver, UploadConfig, upload_config};
use super::{BackendKind, BuildContext, Configured, Served};
use crate::error::{Error, Result, StartResult};
use crate::settings::RawKeys;

/// Multipart uploads of one memory store.
#[derive(Debug)]
pub struct MemoryUploads {
    objects: Arc<MemoryObjects>,
    uploads: Mutex<HashMap<MultipartId, Upload>>,
}

#[derive(Debug)]
struct Upload {
    path: Path,
    /// Part index -> (content id, bytes). The payload keeps the slices it
    /// arrived as: no copy until the commit joins them.
    parts: BTreeMap<usize, (String, PutPayload)>,
}

impl MemoryUploads {
    pub fn new(objects: Arc<MemoryObjects>) -> MemoryUploads {
        MemoryUploads {
            objects,
            uploads: Mutex::new(HashMap::new()),
        }
    }

    /// Uploads not yet completed or aborted (for tests and the janitor).
    pub fn open_uploads(&self) -> usize {
        self.uploads.lock().unwrap().len()
    }

    fn no_such_upload(id: &str) -> object_store::Error {
        object_store::Error::NotFound {
            path: id.to_string(),
            source: format!("no multipart upload {id}").into(),
        }
    }
}

#[async_trait]
impl MultipartStore for MemoryUploads {
    async fn create_multipart(&self, path: &Path) -> object_store::Result<MultipartId> {
        let id = uuid::Uuid::new_v4().to_string();
        self.uploads.lock().unwrap().insert(
            id.clone(),
            Upload {
                path: path.clone(),
                parts: BTreeMap::new(),
            },
        );
        Ok(id)
    }

    async fn put_part(
        &self,
        path: &Path,
        id: &MultipartId,
        part_idx: usize,
        data: PutPayload,
    ) -> object_store::Result<PartId> {
        let mut uploads = self.uploads.lock().unwrap();
        let upload = uploads
            .get_mut(id)
            .filter(|u| &u.path == path)
            .ok_or_else(|| Self::no_such_upload(id))?;
        let content_id = uuid::Uuid::new_v4().to_string();
        upload.parts.insert(part_idx, (content_id.clone(), data));
        Ok(PartId { content_id })
    }

    async fn complete_multipart(
        &self,
        path: &Path,
        id: &MultipartId,
        parts: Vec<PartId>,
    ) -> object_store::Result<PutResult> {
        // The object is made of the parts' slices as they are: no byte is
        // copied, so a commit takes the same time for any size, and the
        // file is never held twice. A refused completion leaves the upload
        // as it was.
        let mut uploads = self.uploads.lock().unwrap();
        let upload = uploads
            .get(id)
            .filter(|u| &u.path == path)
            .ok_or_else(|| Self::no_such_upload(id))?;
        let mut listed = Vec::with_capacity(parts.len());
        for (idx, part) in parts.iter().enumerate() {
            match upload.parts.get(&idx) {
                Some((content_id, payload)) if content_id == &part.content_id => {
                    listed.push(payload)
                }
                _ => {
                    return Err(object_store::Error::Precondition {
                        path: path.to_string(),
                        source: format!("part {idx} of upload {id} is missing or was replaced")
                            .into(),
                    });
                }
            }
        }
        // Create-only, as sluice's completions are on S3 (If-None-Match:
        // *), answered as S3 answers: a failed precondition.
        let result = self
            .objects
            .create_from(path, &listed)
            .map_err(|e| match e {
                object_store::Error::AlreadyExists { path, source } => {
                    object_store::Error::Precondition { path, source }
                }
                other => other,
            })?;
        // The object holds the parts' slices now: nothing is freed here.
        uploads.remove(id);
        Ok(result)
    }

    async fn abort_multipart(&self, _path: &Path, id: &MultipartId) -> object_store::Result<()> {
        // As S3 answers NoSuchUpload for an upload that is not there.
        match self.uploads.lock().unwrap().remove(id) {
            Some(_) => Ok(()),
            None => Err(Self::no_such_upload(id)),
        }
    }
}

/// The memory stores, one per authority (`memory://NAME/`), made on first
/// use and kept for the life of the process.
#[derive(Debug, Default)]
pub struct MemoryStores {
    stores: Mutex<HashMap<String, MemoryStore>>,
}

/// One memory store: its objects and its multipart uploads.
pub type MemoryStore = (Arc<MemoryObjects>, Arc<MemoryUploads>);

impl MemoryStores {
    /// The objects and uploads of store `name`.
    pub fn store(&self, name: &str) -> MemoryStore {
        self.stores
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_insert_with(|| {
                let objects = Arc::new(MemoryObjects::new());
                let uploads = Arc::new(MemoryUploads::new(objects.clone()));
                (objects, uploads)
            })
            .clone()
    }
}

impl StoreResolver for MemoryStores {
    fn resolve(&self, authority: &str) -> Result<ObjectStores> {
        if authority.is_empty() {
            return Err(Error::InvalidArgument(
                "memory:// paths name a store first: memory://NAME/path".into(),
            ));
        }
        let (objects, uploads) = self.store(authority);
        Ok(ObjectStores {
            tails: objects.clone(),
            objects,
            uploads,
            crc32c: None,
            join: None,
        })
    }
}

pub static KIND: BackendKind = BackendKind {
    name: "memory",
    schemes: &["memory"],
    keys: KEYS,
    always: true,
    configure,
};

const KEYS: &[(&str, &str)] = &[
    (
        "memory.upload.min.part.size",
        "part size of memory:// uploads (Flink memory size, e.g. 5mb); default 5mb",
    ),
    (
        "memory.upload.max.concurrent.uploads",
        "parts of one memory:// session uploaded at once; default 4",
    ),
];

/// `memory://`'s settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryConfig {
    pub upload: UploadConfig,
}

fn configure(raw: &mut RawKeys) -> StartResult<Arc<dyn Configured>> {
    Ok(Arc::new(MemoryConfig {
        upload: upload_config(raw, "memory", 1)?,
    }))
}

impl Configured for MemoryConfig {
    fn build(&self, _scheme: &'static str, context: &BuildContext) -> StartResult<Served> {
        Ok(Served::new(ObjectBackend::new(
            context.memory.clone(),
            self.upload,
            false,
        )))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    async fn staged(
        uploads: &MemoryUploads,
        path: &Path,
        parts: &[&[u8]],
    ) -> (String, Vec<PartId>) {
        let id = uploads.create_multipart(path).await.unwrap();
        let mut ids = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            // Each part in two slices, as Write messages arrive.
            let (a, b) = part.split_at(part.len() / 2);
            let payload: PutPayload = vec![
                bytes::Bytes::copy_from_slice(a),
                bytes::Bytes::copy_from_slice(b),
            ]
            .into_iter()
            .collect();
            ids.push(uploads.put_part(path, &id, i, payload).await.unwrap());
        }
        (id, ids)
    }

    #[tokio::test]
    async fn a_refused_completion_keeps_its_upload_whole() {
        let objects = Arc::new(MemoryObjects::new());
        let uploads = MemoryUploads::new(objects.clone());
        let path = Path::from("dir/target");
        let (first, first_parts) = staged(&uploads, &path, &[b"first-0", b"first-1"]).await;
        let (second, second_parts) =
            staged(&uploads, &path, &[b"second-0", b"second-1", b"x"]).await;
        uploads
            .complete_multipart(&path, &first, first_parts)
            .await
            .unwrap();
        let refused = uploads
            .complete_multipart(&path, &second, second_parts[..2].to_vec())
            .await
            .unwrap_err();
        assert!(
            matches!(refused, object_store::Error::Precondition { .. }),
            "{refused}"
        );
        let held = |o: Arc<MemoryObjects>| async move {
            o.get(&Path::from("dir/target"))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
        };
        assert_eq!(held(objects.clone()).await.as_ref(), b"first-0first-1");
        // A stale part list is still refused, and the upload still holds
        // every part with its content id.
        let mut stale = second_parts.clone();
        stale[1].content_id = "stale".into();
        assert!(
            uploads
                .complete_multipart(&path, &second, stale)
                .await
                .is_err()
        );
        assert_eq!(uploads.open_uploads(), 1);
        objects.delete(&path).await.unwrap();
        uploads
            .complete_multipart(&path, &second, second_parts)
            .await
            .unwrap();
        assert_eq!(held(objects.clone()).await.as_ref(), b"second-0second-1x");
        assert_eq!(uploads.open_uploads(), 0);
    }
}
