//! `az://container/...` and `abfs[s]://container@account.dfs.core.windows.net/...`:
//! Azure Blob Storage through object_store's client (block blobs).

use std::sync::Arc;

use object_store::azure::MicrosoftAzureBuilder;

mod create_only;
pub use create_only::CreateOnlyBlockList;

use super::object::hook::HookedConnector;
use super::object::{
    ObjectBackend, ObjectStores, StoreCache, StoreResolver, UploadConfig, misconfigured,
    need_authority, upload_config,
};
use super::{BackendKind, BuildContext, Configured, Served};
use crate::error::{Result, StartResult};
use crate::settings::RawKeys;

pub static KIND: BackendKind = BackendKind {
    name: "azure",
    schemes: &["az", "abfs", "abfss"],
    keys: KEYS,
    always: false,
    configure,
};

const KEYS: &[(&str, &str)] = &[
    (
        "azure.account.name",
        "Azure storage account (az://, abfs://, abfss://)",
    ),
    ("azure.account.key", "Azure storage account key"),
    (
        "azure.endpoint",
        "Azure blob endpoint, e.g. http://127.0.0.1:10000/devstoreaccount1 for Azurite; default https://<account>.blob.core.windows.net",
    ),
    (
        "azure.upload.min.part.size",
        "block size of Azure uploads; default 5mb",
    ),
    (
        "azure.upload.max.concurrent.uploads",
        "blocks of one Azure session uploaded at once; default 4",
    ),
];

/// Azure Blob Storage (`az://`, `abfs://`, `abfss://`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AzureConfig {
    pub account: Option<String>,
    pub key: Option<String>,
    pub endpoint: Option<String>,
    pub upload: UploadConfig,
}

fn configure(raw: &mut RawKeys) -> StartResult<Arc<dyn Configured>> {
    Ok(Arc::new(AzureConfig {
        account: raw.remove("azure.account.name"),
        key: raw.remove("azure.account.key"),
        endpoint: raw.remove("azure.endpoint"),
        upload: upload_config(raw, "azure", 1)?,
    }))
}

impl Configured for AzureConfig {
    fn build(&self, scheme: &'static str, _context: &BuildContext) -> StartResult<Served> {
        let stores = Arc::new(AzureStores::new(scheme, self.clone()));
        Ok(Served::new(ObjectBackend::new(stores, self.upload, true)))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
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
        let account = c.account.clone().or(account);
        // Every Put Block List is create-only, so a commit never replaces a
        // blob that appeared after its check (see `create_only`).
        let env = |names: &[&str]| names.iter().find_map(|n| std::env::var(n).ok());
        let hook = CreateOnlyBlockList::new(
            account
                .clone()
                .or_else(|| env(&["AZURE_STORAGE_ACCOUNT_NAME"]))
                .as_deref(),
            c.key
                .clone()
                .or_else(|| {
                    env(&[
                        "AZURE_STORAGE_ACCOUNT_KEY",
                        "AZURE_STORAGE_ACCESS_KEY",
                        "AZURE_STORAGE_MASTER_KEY",
                    ])
                })
                .as_deref(),
        );
        let mut builder = MicrosoftAzureBuilder::from_env()
            .with_container_name(container)
            .with_http_connector(HookedConnector(Arc::new(hook)));
        if let Some(account) = account {
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
            tails: store.clone(),
            uploads: store,
            crc32c: None,
            join: None,
        })
    }
}

impl StoreResolver for AzureStores {
    fn resolve(&self, authority: &str) -> Result<ObjectStores> {
        need_authority(self.scheme, authority, "container")?;
        self.cache.get_or_build(authority, || self.build(authority))
    }
}
