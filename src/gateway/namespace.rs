//! The namespace side: Read, Stat, Exists, List, Delete, Mkdirs, Rename.

use super::{Gateway, refuse_staging_names};
use crate::auth::Caller;
use crate::backend::{ByteStream, Entry, Page};
use crate::error::{Error, Result};
use crate::location::Location;

/// A file being read.
pub struct Reading {
    pub location: Location,
    pub stream: ByteStream,
}

/// One page of a listing, and the token of the next (empty on the last).
#[derive(Debug, Clone)]
pub struct ListPage {
    pub entries: Vec<Entry>,
    pub next_page_token: String,
}

/// Entries a List answers with by default, and at most.
const DEFAULT_PAGE: usize = 1000;
const MAX_PAGE: usize = 10_000;

impl Gateway {
    fn refuse_live_under(&self, path: &Location, what: &str) -> Result<()> {
        let sessions = self.sessions.lock().unwrap();
        let under = |target: &Location| {
            target.scheme == path.scheme
                && target.authority == path.authority
                && (path.path.is_empty()
                    || target.path == path.path
                    || target
                        .path
                        .strip_prefix(path.path.as_str())
                        .is_some_and(|rest| rest.starts_with('/')))
        };
        match sessions.values().find(|s| under(&s.target)) {
            Some(s) => Err(Error::FailedPrecondition(format!(
                "cannot {what} {path}: session {} is writing {} under it; close it for commit or abort it first",
                s.id, s.target
            ))),
            None => Ok(()),
        }
    }

    // ---- the read side ----

    /// Streams `length` bytes (0: to the end) of a file from `offset`.
    pub async fn read(
        &self,
        path: &str,
        offset: u64,
        length: u64,
        caller: &Caller,
    ) -> Result<Reading> {
        let (location, backend) = self.resolve(path)?;
        caller.check(&location)?;
        let stream = backend
            .namespace
            .read(&location, offset, (length > 0).then_some(length))
            .await?;
        Ok(Reading { location, stream })
    }

    /// What is at `path`; `NotFound` when nothing is.
    pub async fn stat(&self, path: &str, caller: &Caller) -> Result<Entry> {
        let (location, backend) = self.resolve_dir(path)?;
        caller.check(&location)?;
        backend
            .namespace
            .stat(&location)
            .await?
            .ok_or_else(|| Error::NotFound(format!("{location} does not exist")))
    }

    pub async fn exists(&self, path: &str, caller: &Caller) -> Result<bool> {
        let (location, backend) = self.resolve_dir(path)?;
        caller.check(&location)?;
        Ok(backend.namespace.stat(&location).await?.is_some())
    }

    /// One page of the entries one level below a directory: at most
    /// `page_size` (0: 1000; at most 10,000) after the name `page_token`.
    /// Returns them and the next page's token (empty on the last page).
    pub async fn list(
        &self,
        path: &str,
        page_size: u32,
        page_token: &str,
        caller: &Caller,
    ) -> Result<ListPage> {
        let (location, backend) = self.resolve_dir(path)?;
        caller.check(&location)?;
        let limit = match page_size {
            0 => DEFAULT_PAGE,
            n => (n as usize).min(MAX_PAGE),
        };
        let page = Page {
            after: page_token.to_string(),
            limit,
        };
        let listing = backend.namespace.list(&location, &page).await?;
        let next = match listing.entries.last() {
            Some(last) if listing.more => last.location.file_name().to_string(),
            _ => String::new(),
        };
        Ok(ListPage {
            entries: listing.entries,
            next_page_token: next,
        })
    }

    /// Removes a file, or a directory with `recursive`.
    pub async fn delete(&self, path: &str, recursive: bool, caller: &Caller) -> Result<bool> {
        let (location, backend) = self.resolve_dir(path)?;
        caller.check(&location)?;
        if location.path.is_empty() {
            return Err(Error::PermissionDenied(format!(
                "{location} is a whole bucket or root; sluice does not delete those"
            )));
        }
        self.refuse_live_under(&location, "delete")?;
        backend.namespace.delete(&location, recursive).await
    }

    pub async fn mkdirs(&self, path: &str, caller: &Caller) -> Result<()> {
        let (location, backend) = self.resolve_dir(path)?;
        caller.check(&location)?;
        backend.namespace.mkdirs(&location).await
    }

    /// Moves a file within one scheme; never replaces.
    pub async fn rename(&self, from: &str, to: &str, caller: &Caller) -> Result<()> {
        let (from, backend) = self.resolve(from)?;
        let to = Location::resolve(to, &self.default_scheme)?;
        caller.check(&from)?;
        caller.check(&to)?;
        if from.scheme != to.scheme {
            return Err(Error::InvalidArgument(format!(
                "cannot rename {from} to {to}: both must have the same scheme"
            )));
        }
        refuse_staging_names(&to)?;
        self.refuse_live_under(&from, "rename")?;
        backend.namespace.rename(&from, &to).await
    }
}
