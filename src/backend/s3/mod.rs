//! `s3://` and `s3a://` (S3 and S3-compatible stores such as MinIO and
//! moto); `oss://` reaches Aliyun OSS through the same client.

use std::sync::Arc;

use object_store::aws::AmazonS3Builder;

mod create_only;
pub use create_only::CreateOnlyCompletion;

use super::object::hook::HookedConnector;
use super::object::{
    ObjectBackend, ObjectStores, StoreCache, StoreResolver, UploadConfig, misconfigured,
    need_authority, upload_config,
};
use super::{BackendKind, BuildContext, Configured, Served};
use crate::error::{Result, StartError, StartResult};
use crate::settings::{RawKeys, parse_bool, take_duration};

/// S3 refuses non-final parts under 5 MiB (GCS's XML API too).
pub const S3_MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

pub static KIND: BackendKind = BackendKind {
    name: "s3",
    schemes: &["s3", "s3a"],
    keys: KEYS,
    always: false,
    configure,
};

const KEYS: &[(&str, &str)] = &[
    (
        "s3.endpoint",
        "S3 endpoint URL (e.g. http://127.0.0.1:9000 for MinIO or moto); default AWS",
    ),
    (
        "s3.region",
        "S3 region; default from AWS_REGION or us-east-1",
    ),
    (
        "s3.access-key",
        "S3 access key id; default from AWS_ACCESS_KEY_ID",
    ),
    (
        "s3.secret-key",
        "S3 secret access key; default from AWS_SECRET_ACCESS_KEY",
    ),
    (
        "s3.path.style.access",
        "true: bucket in the path (MinIO, moto); false: virtual-hosted (AWS default)",
    ),
    (
        "s3.upload.min.part.size",
        "part size of s3:// uploads, at least 5mb (S3's minimum); default 5mb",
    ),
    (
        "s3.upload.max.concurrent.uploads",
        "parts of one s3:// session uploaded at once; default 4",
    ),
    (
        "s3.request.timeout",
        "longest wait for one S3 request (then it is retried), e.g. 10s; default 30s",
    ),
    (
        "s3.retry.max-retries",
        "retries of a failed S3 request before the client gets UNAVAILABLE; default 10",
    ),
];

/// An S3-compatible store (`s3://`, `s3a://`, and `oss://` through OSS's
/// S3 API).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    /// Bucket in the path rather than in the host name.
    pub path_style: bool,
    /// Every bucket is reached at `<scheme>://<bucket>.<endpoint host>` (OSS).
    pub virtual_hosted: bool,
    pub proxy_url: Option<String>,
    pub upload: UploadConfig,
    /// `s3.request.timeout`; `None`: object_store's default.
    pub request_timeout: Option<std::time::Duration>,
    /// `s3.retry.max-retries`; `None`: object_store's default.
    pub max_retries: Option<usize>,
}

fn configure(raw: &mut RawKeys) -> StartResult<Arc<dyn Configured>> {
    Ok(Arc::new(S3Config {
        endpoint: raw.remove("s3.endpoint"),
        region: raw.remove("s3.region"),
        access_key: raw.remove("s3.access-key"),
        secret_key: raw.remove("s3.secret-key"),
        path_style: parse_bool(raw, "s3.path.style.access")?.unwrap_or(false),
        virtual_hosted: false,
        proxy_url: None,
        upload: upload_config(raw, "s3", S3_MIN_PART_SIZE)?,
        request_timeout: take_duration(raw, "s3.request.timeout")?,
        max_retries: raw
            .remove("s3.retry.max-retries")
            .map(|v| {
                v.trim().parse::<usize>().map_err(|_| {
                    StartError::Config(format!(
                        "s3.retry.max-retries: {v:?} is not a whole number (0 turns retries off)"
                    ))
                })
            })
            .transpose()?,
    }))
}

impl Configured for S3Config {
    fn build(&self, scheme: &'static str, _context: &BuildContext) -> StartResult<Served> {
        let stores = Arc::new(S3Stores::new(scheme, self.clone()));
        Ok(Served::new(ObjectBackend::new(stores, self.upload, true)))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// `s3://`, `s3a://` and `oss://` buckets.
pub struct S3Stores {
    scheme: &'static str,
    config: S3Config,
    cache: StoreCache,
}

impl S3Stores {
    pub fn new(scheme: &'static str, config: S3Config) -> S3Stores {
        S3Stores {
            scheme,
            config,
            cache: StoreCache::default(),
        }
    }

    fn build(&self, bucket: &str) -> Result<ObjectStores> {
        let c = &self.config;
        // Every completion is create-only, so a commit never replaces a
        // file that appeared after its check (see `create_only`).
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_http_connector(HookedConnector(Arc::new(CreateOnlyCompletion {
                oss: c.virtual_hosted,
            })));
        if let Some(timeout) = c.request_timeout {
            // First: the client options are replaced as a whole, and the
            // settings below (allow_http, proxy) live in them.
            builder = builder
                .with_client_options(object_store::ClientOptions::new().with_timeout(timeout));
        }
        if let Some(endpoint) = &c.endpoint {
            builder = builder.with_allow_http(endpoint.starts_with("http://"));
            if c.virtual_hosted {
                // OSS refuses path-style requests: every bucket has its own
                // host name, <bucket>.<endpoint host>.
                let (proto, host) = endpoint.split_once("://").unwrap_or(("https", endpoint));
                let host = host.trim_end_matches('/');
                builder = builder
                    .with_endpoint(format!("{proto}://{bucket}.{host}"))
                    .with_virtual_hosted_style_request(true);
                let region = c
                    .region
                    .clone()
                    .unwrap_or_else(|| host.split(['.', ':']).next().unwrap_or("oss").to_string());
                builder = builder.with_region(region);
            } else {
                builder = builder
                    .with_endpoint(endpoint)
                    .with_virtual_hosted_style_request(!c.path_style);
            }
        }
        if let Some(region) = c.region.as_ref().filter(|_| !c.virtual_hosted) {
            builder = builder.with_region(region);
        }
        if let Some(key) = &c.access_key {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &c.secret_key {
            builder = builder.with_secret_access_key(secret);
        }
        if let Some(max_retries) = c.max_retries {
            builder = builder.with_retry(object_store::RetryConfig {
                max_retries,
                ..Default::default()
            });
        }
        if let Some(proxy) = &c.proxy_url {
            builder = builder.with_proxy_url(proxy);
        }
        let store = Arc::new(
            builder
                .build()
                .map_err(|e| misconfigured(self.scheme, bucket, e))?,
        );
        Ok(ObjectStores {
            objects: store.clone(),
            tails: store.clone(),
            uploads: store,
            crc32c: None,
            join: None,
        })
    }
}

impl StoreResolver for S3Stores {
    fn resolve(&self, bucket: &str) -> Result<ObjectStores> {
        need_authority(self.scheme, bucket, "bucket")?;
        self.cache.get_or_build(bucket, || self.build(bucket))
    }
}
