//! `gs://` (and Hadoop's `gcs://`): Google Cloud Storage over its JSON API,
//! staged the way Flink's GCS recoverable writer stages: components
//! composed at commit (see [`store`]).
//!
//! Parts of `gs.writer.chunk.size` are uploaded as components while bytes
//! arrive (at most `gs.upload.max.concurrent.uploads` at once); a persist
//! finalises the bytes since the last one as one more component, with its
//! CRC32C checked by the store and against the answer, and the handle
//! lists every component with its generation. A recovery continues after
//! the handle's components; a commit composes them into the target with
//! `ifGenerationMatch=0`. Components live beside the target under hidden
//! staging names, or in `gs.writer.temporary.bucket.name`.

use std::sync::Arc;

use object_store::client::HttpConnector;
use object_store::gcp::GoogleCloudStorageBuilder;

use super::object::{
    ObjectBackend, ObjectStores, StoreCache, StoreResolver, UploadConfig, need_authority,
};
use super::{BackendKind, BuildContext, Configured, Served};
use crate::error::{Result, StartError, StartResult};
use crate::settings::{RawKeys, take_memory_size, take_positive};

pub mod json;
pub mod store;

pub use store::GcsBucket;

pub static KIND: BackendKind = BackendKind {
    name: "gcs",
    schemes: &["gs", "gcs"],
    keys: KEYS,
    always: false,
    configure,
};

const KEYS: &[(&str, &str)] = &[
    (
        "gs.endpoint",
        "GCS base URL (an emulator such as http://127.0.0.1:9023); default https://storage.googleapis.com",
    ),
    (
        "gs.service-account-file",
        "service account JSON file; default from GOOGLE_APPLICATION_CREDENTIALS, else workload identity / the metadata server",
    ),
    (
        "gs.writer.temporary.bucket.name",
        "bucket for the components of files in progress (Flink's key); default the target's bucket",
    ),
    (
        "gs.writer.chunk.size",
        "bytes per component uploaded while a file is written, a multiple of 256kb (Flink's key); default 8mb",
    ),
    (
        "gs.upload.max.concurrent.uploads",
        "components of one gs:// session uploaded at once; default 4",
    ),
];

/// GCS asks for chunks in multiples of 256 KiB.
const CHUNK_GRANULE: u64 = 256 * 1024;
/// A persist of at least this many bytes since the last component makes
/// them a component; fewer go to a tail object, as on S3. Tiny, frequent
/// persists would otherwise leave an object each, all to be deleted at
/// commit, and a tail is written again by the next persist, so at most
/// this many bytes are sent twice.
const PERSIST_AS_COMPONENT: u64 = CHUNK_GRANULE;
/// Component size unless `gs.writer.chunk.size` says otherwise.
const DEFAULT_CHUNK: u64 = 8 * 1024 * 1024;

/// Google Cloud Storage (`gs://`, `gcs://`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcsConfig {
    pub endpoint: Option<String>,
    pub service_account_file: Option<String>,
    pub temporary_bucket: Option<String>,
    pub upload: UploadConfig,
}

fn configure(raw: &mut RawKeys) -> StartResult<Arc<dyn Configured>> {
    let mut upload = UploadConfig {
        part_size: DEFAULT_CHUNK,
        persist_as_part_from: Some(PERSIST_AS_COMPONENT),
        ..UploadConfig::default()
    };
    if let Some(n) = take_positive(raw, "gs.upload.max.concurrent.uploads")? {
        upload.max_concurrent_uploads = n;
    }
    if let Some(chunk) = take_memory_size(raw, "gs.writer.chunk.size")? {
        if chunk == 0 || chunk % CHUNK_GRANULE != 0 {
            return Err(StartError::Config(format!(
                "gs.writer.chunk.size is {chunk} bytes; give a multiple of 256kb (262144 bytes), e.g. 8mb"
            )));
        }
        upload.part_size = chunk;
    }
    Ok(Arc::new(GcsConfig {
        endpoint: raw.remove("gs.endpoint"),
        service_account_file: raw.remove("gs.service-account-file"),
        temporary_bucket: raw.remove("gs.writer.temporary.bucket.name"),
        upload,
    }))
}

impl Configured for GcsConfig {
    fn build(&self, scheme: &'static str, _context: &BuildContext) -> StartResult<Served> {
        let stores = Arc::new(GcsStores::new(scheme, self.clone())?);
        Ok(Served::new(ObjectBackend::new(stores, self.upload, true)))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// `gs://` buckets, sharing one client.
pub struct GcsStores {
    scheme: &'static str,
    config: GcsConfig,
    client: Arc<json::GcsClient>,
    cache: StoreCache,
}

impl GcsStores {
    pub fn new(scheme: &'static str, config: GcsConfig) -> StartResult<GcsStores> {
        let client = Arc::new(client(&config).map_err(|e| {
            StartError::Config(format!(
                "cannot set up {scheme}://: {e}; check gs.endpoint and gs.service-account-file"
            ))
        })?);
        Ok(GcsStores {
            scheme,
            config,
            client,
            cache: StoreCache::default(),
        })
    }
}

/// The HTTP client and credentials: object_store's GCS builder reads the
/// service account (file, environment, metadata server) and the client
/// options; an emulator endpoint without a service account sends no token.
fn client(c: &GcsConfig) -> object_store::Result<json::GcsClient> {
    let base = c
        .endpoint
        .clone()
        .unwrap_or_else(|| "https://storage.googleapis.com".to_string());
    let options = object_store::ClientOptions::new().with_allow_http(base.starts_with("http://"));
    let http = object_store::client::ReqwestConnector::default().connect(&options)?;
    let anonymous = c.endpoint.is_some() && c.service_account_file.is_none();
    let credentials = if anonymous {
        None
    } else {
        let mut builder = GoogleCloudStorageBuilder::from_env()
            .with_bucket_name("sluice-credentials")
            .with_client_options(options);
        if let Some(path) = &c.service_account_file {
            builder = builder.with_service_account_path(path);
        }
        Some(builder.build()?.credentials().clone())
    };
    Ok(json::GcsClient::new(http, base, credentials))
}

impl StoreResolver for GcsStores {
    fn resolve(&self, bucket: &str) -> Result<ObjectStores> {
        need_authority(self.scheme, bucket, "bucket")?;
        self.cache.get_or_build(bucket, || {
            let store = Arc::new(GcsBucket::new(
                self.client.clone(),
                bucket,
                self.config.temporary_bucket.as_deref(),
            ));
            let tails: Arc<dyn object_store::ObjectStore> = match &self.config.temporary_bucket {
                Some(scratch) => Arc::new(GcsBucket::new(self.client.clone(), scratch, None)),
                None => store.clone(),
            };
            Ok(ObjectStores {
                objects: store.clone(),
                tails,
                uploads: store.clone(),
                crc32c: Some(store.clone()),
                join: Some(store),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configured(yaml: &str) -> StartResult<GcsConfig> {
        let mut raw = crate::settings::parse_yaml(yaml).unwrap();
        let c = configure(&mut raw)?;
        Ok(c.as_any().downcast_ref::<GcsConfig>().unwrap().clone())
    }

    #[test]
    fn flink_keys_set_the_component_size_and_the_temporary_bucket() {
        let c = configured("gs.endpoint: http://127.0.0.1:1\n").unwrap();
        assert_eq!(c.upload.part_size, 8 * 1024 * 1024);
        assert_eq!(c.upload.persist_as_part_from, Some(256 * 1024));
        assert_eq!(c.temporary_bucket, None);
        let c =
            configured("gs.writer.chunk.size: 512kb\ngs.writer.temporary.bucket.name: scratch\n")
                .unwrap();
        assert_eq!(c.upload.part_size, 512 * 1024);
        assert_eq!(c.temporary_bucket.as_deref(), Some("scratch"));
        let e = configured("gs.writer.chunk.size: 300kb\n").unwrap_err();
        assert!(e.to_string().contains("multiple of 256kb"), "{e}");
    }
}
