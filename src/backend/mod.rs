//! Storage backends, one folder each, one line each in [`KINDS`].
//!
//! A backend has two sides: a [`Stager`] stages a file for one scheme (a
//! [`StagedWriter`] is one file being staged), a [`Namespace`] reads and
//! lists, deletes, makes directories and renames. The gateway owns everything
//! that is the same for every backend (sessions, offsets, checksums, handles,
//! state); a backend only moves bytes and reports where they are staged, as a
//! [`Staging`] that goes into the handle.
//!
//! A backend's folder declares it as a [`BackendKind`]: its schemes, its
//! configuration keys and a constructor from its section of the
//! configuration. To add a scheme: a folder with a `KIND`, and its line in
//! [`KINDS`].
//!
//! - `file`: a hidden temp file linked to its target on commit.
//! - `memory`: [`object::ObjectBackend`] over [`memory::MemoryUploads`], the
//!   same multipart code the cloud stores use, in process.
//! - `s3` (`s3`, `s3a`), `oss`, `gcs` (`gs`), `azure` (`az`, `abfs`,
//!   `abfss`): [`object::ObjectBackend`] over object_store's clients,
//!   served when one of their keys is set.
//! - `hdfs`: a hidden temp file beside the target over hdfs-native, renamed
//!   onto it on commit; served when one of its keys is set.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{Error, Result};
use crate::location::Location;

pub mod azure;
pub mod file;
pub mod gcs;
pub mod hdfs;
pub mod memory;
pub mod object;
pub mod oss;
mod rope;
pub mod s3;
mod staging;

pub use rope::Rope;
pub use staging::{FileStaging, MultipartStaging, ResumePoint, Staging, TailObject, UploadedPart};

/// Every backend sluice has. A scheme is served when its backend is
/// `always` served or one of its keys is set.
pub const KINDS: &[&BackendKind] = &[
    &file::KIND,
    &memory::KIND,
    &s3::KIND,
    &oss::KIND,
    &gcs::KIND,
    &azure::KIND,
    &hdfs::KIND,
];

/// What a backend declares about itself.
pub struct BackendKind {
    /// Its name, as logs and docs give it.
    pub name: &'static str,
    /// The schemes it serves; they share one configuration.
    pub schemes: &'static [&'static str],
    /// Its configuration keys and what they mean (`sluice keys`); setting
    /// any of them serves the backend.
    pub keys: &'static [(&'static str, &'static str)],
    /// Served with none of its keys set (`file://`, `memory://`).
    pub always: bool,
    /// Reads its keys (removing them) into the settings it is built from;
    /// bad values are start-up errors.
    pub configure:
        fn(&mut crate::settings::RawKeys) -> crate::error::StartResult<Arc<dyn Configured>>,
}

impl std::fmt::Debug for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// A backend's settings, read from its keys.
pub trait Configured: Send + Sync + std::fmt::Debug {
    /// The backend of one of its schemes.
    fn build(
        &self,
        scheme: &'static str,
        context: &BuildContext,
    ) -> crate::error::StartResult<Served>;

    /// The settings as their concrete type, for tests and tools.
    fn as_any(&self) -> &dyn std::any::Any;
}

/// A backend to serve, with its settings.
#[derive(Debug, Clone)]
pub struct ConfiguredBackend {
    pub kind: &'static BackendKind,
    pub settings: Arc<dyn Configured>,
}

/// What a backend may need from the server that builds it.
pub struct BuildContext<'a> {
    /// The data dir (`file://`'s default root lies in it).
    pub data_dir: &'a std::path::Path,
    /// The stores `memory://` serves (tests pass their own to look inside).
    pub memory: &'a Arc<memory::MemoryStores>,
}

/// `fs.<scheme>.limit.*` of one scheme; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamLimits {
    pub total: Option<usize>,
    pub output: Option<usize>,
    pub input: Option<usize>,
    /// How long to wait for a slot; `None` waits forever.
    pub timeout: Option<std::time::Duration>,
    /// Inactivity after which a stream may be reclaimed; `None` never.
    pub stream_timeout: Option<std::time::Duration>,
}

/// What a scheme promises (the `Capabilities` RPC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendCapabilities {
    pub supports_resume: bool,
    pub requires_cleanup: bool,
    pub min_part_size: u64,
    pub max_concurrent_uploads: u32,
    pub survives_restart: bool,
    /// `fs.<scheme>.limit.*` in force; all unlimited by default.
    pub limits: StreamLimits,
}

impl BackendCapabilities {
    /// A file system that stages in a temp file it can reopen and append
    /// to (`file://`, `hdfs://`): resumable, nothing to clean up after a
    /// commit, no part sizes, staging that outlives a restart.
    pub fn appendable_file() -> BackendCapabilities {
        BackendCapabilities {
            supports_resume: true,
            requires_cleanup: false,
            min_part_size: 0,
            max_concurrent_uploads: 0,
            survives_restart: true,
            limits: Default::default(),
        }
    }
}

/// The staging side of a scheme: a file staged, recovered, published and
/// cleaned up (what the write protocol needs of a backend).
#[async_trait]
pub trait Stager: Send + Sync {
    fn capabilities(&self) -> BackendCapabilities;

    /// Checks that `target` may be written, before a session is opened.
    fn check_target(&self, target: &Location) -> Result<()>;

    /// Starts staging a new file for `target`.
    async fn open(&self, target: &Location) -> Result<Box<dyn StagedWriter>>;

    /// Reopens the staging a resume handle names at exactly its position;
    /// bytes staged after it are discarded.
    async fn recover(
        &self,
        target: &Location,
        point: &ResumePoint,
    ) -> Result<Box<dyn StagedWriter>>;

    /// Publishes what a (commit or resume) handle names; returns the size.
    /// `after_recovery`: a commit that already happened (target present with
    /// the handle's size, staging gone) is success.
    async fn commit(
        &self,
        target: &Location,
        point: &ResumePoint,
        after_recovery: bool,
    ) -> Result<u64>;

    /// Size of the published target, `None` when there is none.
    async fn target_size(&self, target: &Location) -> Result<Option<u64>>;

    /// Removes what only this resume handle references; `true` when it
    /// removed something.
    async fn cleanup(&self, target: &Location, point: &ResumePoint) -> Result<bool>;

    /// Removes an abandoned staging: its temp file, or its upload and its
    /// tail objects. `location` is [`StagedWriter::location`].
    async fn remove_staging(
        &self,
        target: &Location,
        staging_id: &str,
        location: &str,
        artefacts: &[String],
    ) -> Result<Removed>;

    /// Deletes a staging's artefacts (tail objects) once nothing can use
    /// them any more: those recorded for it, and any its name marks as
    /// its own that a crash kept from being recorded. Returns how many it
    /// removed.
    async fn remove_artefacts(
        &self,
        _target: &Location,
        _staging_id: &str,
        _artefacts: &[String],
    ) -> Result<usize> {
        Ok(0)
    }
}

/// The namespace side of a scheme: reads and the file-system calls.
#[async_trait]
pub trait Namespace: Send + Sync {
    /// Streams `length` bytes (`None`: to the end) from `offset`.
    async fn read(&self, target: &Location, offset: u64, length: Option<u64>)
    -> Result<ByteStream>;

    /// What is at `path`: a file, a directory (or prefix), or nothing.
    async fn stat(&self, path: &Location) -> Result<Option<Entry>>;

    /// One page of the entries one level below `dir`, staging excluded,
    /// sorted by name.
    async fn list(&self, dir: &Location, page: &Page) -> Result<Listing>;

    /// Removes a file, or a directory with `recursive`; `false` when there
    /// was nothing. A non-empty directory without `recursive` is refused.
    async fn delete(&self, path: &Location, recursive: bool) -> Result<bool>;

    /// Creates a directory and its parents.
    async fn mkdirs(&self, dir: &Location) -> Result<()>;

    /// Moves a file within this backend; never replaces an existing target.
    async fn rename(&self, from: &Location, to: &Location) -> Result<()>;
}

/// A scheme as the gateway calls it: its staging side and its namespace
/// side, which a wrapper (the stream limits) can change apart.
#[derive(Clone)]
pub struct Served {
    pub stager: Arc<dyn Stager>,
    pub namespace: Arc<dyn Namespace>,
}

impl Served {
    /// Both sides from one backend.
    pub fn new<B: Stager + Namespace + 'static>(backend: B) -> Served {
        let backend = Arc::new(backend);
        Served {
            stager: backend.clone(),
            namespace: backend,
        }
    }
}

/// Which page of a listing: the entries whose names sort after `after`
/// (all when empty), at most `limit` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub after: String,
    pub limit: usize,
}

/// One page of a listing, and whether more entries follow it.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub entries: Vec<Entry>,
    pub more: bool,
}

impl Page {
    /// Whether an entry named `name` belongs to this page or a later one.
    pub fn admits(&self, name: &str) -> bool {
        self.after.is_empty() || name > self.after.as_str()
    }

    /// This page of `entries` (in any order).
    pub fn of(&self, mut entries: Vec<Entry>) -> Listing {
        entries.retain(|e| self.admits(e.location.file_name()));
        entries.sort_by(|a, b| a.location.file_name().cmp(b.location.file_name()));
        let more = entries.len() > self.limit;
        entries.truncate(self.limit);
        Listing { entries, more }
    }
}

/// A stream of file contents.
pub type ByteStream = futures::stream::BoxStream<'static, Result<Bytes>>;

/// Takes the first `n` bytes of `queue` as the slices they lie in (the last
/// one split off, its rest left at the front): no byte is copied. `queue`
/// must hold at least `n` bytes.
pub fn take_front(queue: &mut std::collections::VecDeque<Bytes>, mut n: usize) -> Vec<Bytes> {
    let mut out = Vec::new();
    while n > 0 {
        let mut front = queue.pop_front().expect("the queue holds n bytes");
        if front.len() > n {
            queue.push_front(front.split_off(n));
        }
        n -= front.len();
        out.push(front);
    }
    out
}

/// One file or directory, as the read side reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub location: Location,
    pub size: u64,
    pub is_dir: bool,
    /// Unix milliseconds; 0 when unknown.
    pub modified_ms: u64,
}

/// Whether a file name is one sluice makes for staging: an in-progress temp
/// file `.<file>.inprogress.<uuid>` or a tail object
/// `.<file>.tail.<16 hex digits>.<uuid>`. The namespace calls refuse these
/// names and List never shows them; a name that only looks alike (no UUID
/// where sluice puts one) is an ordinary file and is listed.
pub fn is_staging_name(name: &str) -> bool {
    fn is_uuid(s: &str) -> bool {
        s.len() == 36 && uuid::Uuid::try_parse(s).is_ok()
    }
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    if let Some((file, id)) = rest.rsplit_once(".inprogress.") {
        return !file.is_empty() && is_uuid(id);
    }
    let Some((head, id)) = rest.rsplit_once('.') else {
        return false;
    };
    match head.rsplit_once(".tail.") {
        Some((file, token)) => {
            !file.is_empty()
                && token.len() == 16
                && token.bytes().all(|b| b.is_ascii_hexdigit())
                && is_uuid(id)
        }
        None => false,
    }
}

#[cfg(test)]
mod staging_name_tests {
    use super::is_staging_name;

    #[test]
    fn only_names_sluice_makes_are_staging_names() {
        let uuid = "0b3c4f5e-1a2b-4c3d-8e9f-001122334455";
        assert!(is_staging_name(&format!(".part-0.inprogress.{uuid}")));
        assert!(is_staging_name(&format!(
            ".a.b.tail.0123456789abcdef.{uuid}"
        )));
        for ordinary in [
            "part-0".to_string(),
            ".x.inprogress.notes".to_string(),
            format!(".inprogress.{uuid}"),
            format!("x.inprogress.{uuid}"),
            format!(".x.tail.0123.{uuid}"),
            ".x.tail.0123456789abcdef.later".to_string(),
            format!(".x.inprogress.{}", &uuid[..35]),
        ] {
            assert!(!is_staging_name(&ordinary), "{ordinary}");
        }
    }
}

/// DESIGN.md 1.3 for a Commit whose staging is gone (published already, or
/// removed): only the target can answer. `size` is the target's size, `None`
/// when there is no target.
pub(crate) fn settle_without_staging(
    target: impl std::fmt::Display,
    size: Option<u64>,
    position: u64,
    after_recovery: bool,
) -> Result<u64> {
    match size {
        Some(_) if !after_recovery => Err(Error::AlreadyExists(format!(
            "{target} already exists; sluice never replaces a file (commit with after_recovery=true if this is a retry of your own commit)"
        ))),
        Some(size) if size == position => Ok(position),
        Some(size) => Err(Error::FailedPrecondition(format!(
            "cannot commit {target}: the staging is gone and the target holds {size} bytes, not the handle's {position}"
        ))),
        None => Err(Error::FailedPrecondition(format!(
            "cannot commit {target}: neither the staging nor the target exists (aborted, cleaned up, expired or removed)"
        ))),
    }
}

/// A missing path on the read side.
pub(crate) fn not_found(path: &Location) -> Error {
    Error::NotFound(format!("{path} does not exist"))
}

/// Checks a read range against a file of `size` bytes; returns its end.
pub(crate) fn read_range(
    path: &Location,
    size: u64,
    offset: u64,
    length: Option<u64>,
) -> Result<u64> {
    if offset > size {
        return Err(Error::OutOfRange(format!(
            "cannot read {path} from offset {offset}: it holds {size} bytes"
        )));
    }
    Ok(length.map_or(size, |l| offset.saturating_add(l).min(size)))
}

/// What the janitor removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    pub uploads: usize,
    pub tails: usize,
    pub temp_files: usize,
}

impl std::ops::AddAssign for Removed {
    fn add_assign(&mut self, other: Removed) {
        self.uploads += other.uploads;
        self.tails += other.tails;
        self.temp_files += other.temp_files;
    }
}

/// One file being staged.
#[async_trait]
pub trait StagedWriter: Send {
    /// Stable, unique name of the staging: the sled key and lock name.
    fn staging_id(&self) -> &str;

    /// Where the staging lives, for the janitor: the temp file's path, or
    /// the upload id.
    fn location(&self) -> &str;

    /// Creates the staging, once the gateway has put [`Self::location`] on
    /// record. A backend that can name its staging before creating it (a
    /// temp file) creates it here, so that a crash never leaves a staging
    /// that no record names; one whose store names it (a multipart upload
    /// id) has created it in [`Backend::open`]. (No default: a wrapper
    /// that forgot to pass it on would leave the file uncreated.)
    async fn create(&mut self) -> Result<()>;

    /// Whether a stream limit took this staging's slot away for inactivity.
    fn reclaimed(&self) -> bool {
        false
    }

    /// Appends bytes (the gateway has already applied offsets), as the
    /// slices they arrived in.
    async fn write(&mut self, data: Rope) -> Result<()>;

    /// Makes everything written durable; says where it is staged.
    async fn persist(&mut self) -> Result<Staging>;

    /// Makes everything durable for a commit; no writes follow.
    async fn close_for_commit(&mut self) -> Result<Staging>;

    /// Drops the staging entirely; only called when no handle references it.
    async fn discard(self: Box<Self>) -> Result<()>;
}

/// The backends by scheme.
#[derive(Clone, Default)]
pub struct Registry {
    backends: BTreeMap<String, Served>,
}

impl Registry {
    /// The backends of every scheme `backends` serve.
    pub fn build(
        backends: &[ConfiguredBackend],
        context: &BuildContext,
    ) -> crate::error::StartResult<Registry> {
        let mut registry = Registry::default();
        for backend in backends {
            for scheme in backend.kind.schemes {
                registry.register(scheme, backend.settings.build(scheme, context)?);
            }
        }
        Ok(registry)
    }

    /// The backend of `scheme`, if it is served.
    pub fn backend(&self, scheme: &str) -> Option<&Served> {
        self.backends.get(scheme)
    }

    pub fn register(&mut self, scheme: &str, backend: Served) {
        self.backends.insert(scheme.to_string(), backend);
    }

    /// The backend for `scheme`, or `Unimplemented` naming the ones there are.
    pub fn get(&self, scheme: &str) -> Result<&Served> {
        self.backends.get(scheme).ok_or_else(|| {
            let known: Vec<&str> = self.backends.keys().map(String::as_str).collect();
            let hint = if scheme == "hdfs" {
                " (set fs.defaultFS or fs.hdfs.hadoopconf to serve it)"
            } else {
                ""
            };
            Error::Unimplemented(format!(
                "no backend for scheme {scheme:?}{hint}; this gateway serves: {}",
                known.join(", ")
            ))
        })
    }

    pub fn schemes(&self) -> impl Iterator<Item = &str> {
        self.backends.keys().map(String::as_str)
    }
}
