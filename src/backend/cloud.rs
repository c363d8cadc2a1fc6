//! The cloud object stores: S3 (and OSS through its S3 API), GCS and Azure,
//! each built with object_store's own builder so that its `MultipartStore`
//! is available (`parse_url_opts` hides it).
//!
//! A resolver builds one store per bucket or container on first use and
//! keeps it. Credentials come from the configuration, then from the
//! standard environment variables each builder reads (`AWS_*`, `GOOGLE_*`,
//! `AZURE_*`); none is ever logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;

use super::object::{ObjectStores, StoreResolver};
use crate::config::{AzureConfig, GcsConfig, S3Config};
use crate::error::{Error, Result};

/// Stores built on first use, one per authority.
#[derive(Default)]
struct StoreCache {
    stores: Mutex<HashMap<String, ObjectStores>>,
}

impl StoreCache {
    fn get_or_build(
        &self,
        authority: &str,
        build: impl FnOnce() -> Result<ObjectStores>,
    ) -> Result<ObjectStores> {
        if let Some(stores) = self.stores.lock().unwrap().get(authority) {
            return Ok(stores.clone());
        }
        let stores = build()?;
        self.stores
            .lock()
            .unwrap()
            .insert(authority.to_string(), stores.clone());
        Ok(stores)
    }
}

fn misconfigured(scheme: &str, authority: &str, e: object_store::Error) -> Error {
    Error::InvalidArgument(format!(
        "cannot set up {scheme}://{authority}: {e}; check the {scheme} keys in the configuration (`sluice keys`)"
    ))
}

fn need_authority(scheme: &str, authority: &str, what: &str) -> Result<()> {
    if authority.is_empty() {
        Err(Error::InvalidArgument(format!(
            "{scheme}:// paths name a {what} first: {scheme}://{what}/path"
        )))
    } else {
        Ok(())
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
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
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
            uploads: store,
        })
    }
}

impl StoreResolver for S3Stores {
    fn resolve(&self, bucket: &str) -> Result<ObjectStores> {
        need_authority(self.scheme, bucket, "bucket")?;
        self.cache.get_or_build(bucket, || self.build(bucket))
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

/// `az://container/…`, and `abfs[s]://container@account.dfs.core.windows.net/…`.
pub struct AzureStores {
    scheme: &'static str,
    config: AzureConfig,
    cache: StoreCache,
}

impl AzureStores {
    pub fn new(scheme: &'static str, config: AzureConfig) -> AzureStores {
        AzureStores {
            scheme,
            config,
            cache: StoreCache::default(),
        }
    }

    fn build(&self, authority: &str) -> Result<ObjectStores> {
        let c = &self.config;
        // abfs: container@account.dfs.core.windows.net
        let (container, account) = match authority.split_once('@') {
            Some((container, host)) => (container, host.split('.').next().map(str::to_string)),
            None => (authority, None),
        };
        let mut builder = MicrosoftAzureBuilder::from_env().with_container_name(container);
        if let Some(account) = c.account.clone().or(account) {
            builder = builder.with_account(account);
        }
        if let Some(key) = &c.key {
            builder = builder.with_access_key(key);
        }
        if let Some(endpoint) = &c.endpoint {
            builder = builder
                .with_endpoint(endpoint.trim_end_matches('/').to_string())
                .with_allow_http(endpoint.starts_with("http://"));
        }
        let store = Arc::new(
            builder
                .build()
                .map_err(|e| misconfigured(self.scheme, authority, e))?,
        );
        Ok(ObjectStores {
            objects: store.clone(),
            uploads: store,
        })
    }
}

impl StoreResolver for AzureStores {
    fn resolve(&self, authority: &str) -> Result<ObjectStores> {
        need_authority(self.scheme, authority, "container")?;
        self.cache.get_or_build(authority, || self.build(authority))
    }
}
