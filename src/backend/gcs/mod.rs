//! `gs://`: Google Cloud Storage through object_store's client (its XML
//! multipart API).

use std::sync::Arc;

use object_store::gcp::GoogleCloudStorageBuilder;

use super::object::{
    ObjectBackend, ObjectStores, StoreCache, StoreResolver, UploadConfig, misconfigured,
    need_authority, upload_config,
};
use super::s3::S3_MIN_PART_SIZE;
use super::{BackendKind, BuildContext, Configured, Served};
use crate::error::{Result, StartResult};
use crate::settings::RawKeys;

pub static KIND: BackendKind = BackendKind {
    name: "gcs",
    schemes: &["gs"],
    keys: KEYS,
    always: false,
    configure,
};

const KEYS: &[(&str, &str)] = &[
    (
        "gs.endpoint",
        "GCS base URL (an emulator such as http://127.0.0.1:9023); default Google",
    ),
    (
        "gs.service-account-file",
        "service account JSON file; default from GOOGLE_APPLICATION_CREDENTIALS",
    ),
    (
        "gs.upload.min.part.size",
        "part size of gs:// uploads (XML multipart API), at least 5mb; default 5mb",
    ),
    (
        "gs.upload.max.concurrent.uploads",
        "parts of one gs:// session uploaded at once; default 4",
    ),
];

/// Google Cloud Storage (`gs://`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcsConfig {
    pub endpoint: Option<String>,
    pub service_account_file: Option<String>,
    pub upload: UploadConfig,
}

fn configure(raw: &mut RawKeys) -> StartResult<Arc<dyn Configured>> {
    Ok(Arc::new(GcsConfig {
        endpoint: raw.remove("gs.endpoint"),
        service_account_file: raw.remove("gs.service-account-file"),
        upload: upload_config(raw, "gs", S3_MIN_PART_SIZE)?,
    }))
}

impl Configured for GcsConfig {
    fn build(&self, _scheme: &'static str, _context: &BuildContext) -> StartResult<Served> {
        let stores = Arc::new(GcsStores::new(self.clone()));
        Ok(Served::new(ObjectBackend::new(stores, self.upload, true)))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// `gs://` buckets.
pub struct GcsStores {
    config: GcsConfig,
    cache: StoreCache,
}

impl GcsStores {
    pub fn new(config: GcsConfig) -> GcsStores {
        GcsStores {
            config,
            cache: StoreCache::default(),
        }
    }

    fn build(&self, bucket: &str) -> Result<ObjectStores> {
        let c = &self.config;
        let mut builder = GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket);
        if let Some(path) = &c.service_account_file {
            builder = builder.with_service_account_path(path);
        }
        if let Some(endpoint) = &c.endpoint {
            builder = builder.with_base_url(endpoint.trim_end_matches('/'));
            if c.service_account_file.is_none() {
                // An emulator: nothing to sign with. Explicit empty
                // credentials, so that no request ever falls back to the
                // cloud metadata server for a token.
                let anonymous =
                    object_store::StaticCredentialProvider::new(object_store::gcp::GcpCredential {
                        bearer: String::new(),
                    });
                builder = builder
                    .with_credentials(Arc::new(anonymous))
                    .with_skip_signature(true);
            }
        }
        let store = Arc::new(
            builder
                .build()
                .map_err(|e| misconfigured("gs", bucket, e))?,
        );
        Ok(ObjectStores {
            objects: store.clone(),
            uploads: store,
        })
    }
}

impl StoreResolver for GcsStores {
    fn resolve(&self, bucket: &str) -> Result<ObjectStores> {
        need_authority("gs", bucket, "bucket")?;
        self.cache.get_or_build(bucket, || self.build(bucket))
    }
}
