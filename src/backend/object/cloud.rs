//! What the cloud stores share: one store per bucket or container, built
//! on first use and kept, and the errors of setting one up. Credentials come
//! from the configuration, then from the standard environment variables each
//! object_store builder reads (`AWS_*`, `GOOGLE_*`, `AZURE_*`); none is ever
//! logged. Each store is built with object_store's own builder so that its
//! `MultipartStore` is available (`parse_url_opts` hides it).

use std::collections::HashMap;
use std::sync::Mutex;

use super::ObjectStores;
use crate::error::{Error, Result};

/// Stores built on first use, one per authority.
#[derive(Default)]
pub struct StoreCache {
    stores: Mutex<HashMap<String, ObjectStores>>,
}

impl StoreCache {
    pub fn get_or_build(
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

pub fn misconfigured(scheme: &str, authority: &str, e: object_store::Error) -> Error {
    Error::InvalidArgument(format!(
        "cannot set up {scheme}://{authority}: {e}; check the {scheme} keys in the configuration (`sluice keys`)"
    ))
}

pub fn need_authority(scheme: &str, authority: &str, what: &str) -> Result<()> {
    if authority.is_empty() {
        Err(Error::InvalidArgument(format!(
            "{scheme}:// paths name a {what} first: {scheme}://{what}/path"
        )))
    } else {
        Ok(())
    }
}
