//! `hdfs://`: HDFS through hdfs-native (the NameNode and DataNode
//! protocols in Rust: no JVM, no libhdfs), staged as Flink's Hadoop
//! recoverable writer stages.
//!
//! A file is written to a hidden `.<name>.inprogress.<uuid>` beside its
//! target. Persist is `hsync` (the bytes on every DataNode of the pipeline,
//! the length at the NameNode); the handle names the temp file and its
//! length. Commit is HDFS `rename` without overwrite, which never replaces
//! an existing target, after the lease of the temp file is recovered.
//!
//! Recover recovers the temp file's lease and continues it from the
//! handle's length. HDFS can `truncate` (Hadoop 2.7) and `concat`, but
//! hdfs-native 0.14 exposes neither call; so when the temp file holds bytes
//! past the handle (written after it, never persisted), the handle's prefix
//! is copied, its CRC32C checked, into a new temp file of the same staging
//! (`.<name>.inprogress.<the staging's first 24 UUID characters><12 new
//! hex digits>`), which the session then continues. A recovery at the
//! file's length (the common case after a gateway crash right after a
//! persist) appends and copies nothing. The older temp files stay for the
//! handles that name them, and go when the file is committed or abandoned.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use hdfs_native::{Client, HdfsError, WriteOptions};

use super::{
    BackendCapabilities, ByteStream, Entry, FileStaging, Namespace, Removed, ResumePoint, Rope,
    StagedWriter, Stager, Staging, is_staging_name, not_found, read_range, settle_without_staging,
};
use crate::error::{Error, Result};
use crate::location::Location;

mod kind;

pub use kind::{HdfsConfig, KIND};

/// How long a lease recovery may take before the caller hears UNAVAILABLE.
const LEASE_RECOVERY: Duration = Duration::from_secs(60);

/// The `hdfs://` backend: one client per NameNode (authority).
pub struct HdfsBackend {
    config: HdfsConfig,
    clients: Mutex<HashMap<String, Client>>,
}

impl HdfsBackend {
    pub fn new(config: HdfsConfig) -> HdfsBackend {
        HdfsBackend {
            config,
            clients: Mutex::default(),
        }
    }

    /// The client of `target`'s NameNode (or name service), built on first
    /// use: the authority from the URI, else `fs.defaultFS`.
    fn client(&self, target: &Location) -> Result<Client> {
        let authority = target.authority.clone();
        if !authority.is_empty() && !self.config.namenodes.contains(&authority) {
            return Err(Error::PermissionDenied(format!(
                "{target} names the NameNode {authority}, which this gateway does not serve; it serves {}; add it to fs.hdfs.namenodes",
                if self.config.namenodes.is_empty() {
                    "only hdfs:/// (the default file system)".to_string()
                } else {
                    self.config.namenodes.join(", ")
                }
            )));
        }
        if let Some(client) = self.clients.lock().unwrap().get(&authority) {
            return Ok(client.clone());
        }
        let mut builder = hdfs_native::ClientBuilder::new();
        if !authority.is_empty() {
            builder = builder.with_url(format!("hdfs://{authority}"));
        } else if let Some(default) = &self.config.default_fs {
            builder = builder.with_url(default.clone());
        }
        if let Some(dir) = &self.config.hadoop_conf_dir {
            builder = builder.with_config_dir(dir.clone());
        }
        if let Some(user) = &self.config.user {
            builder = builder.with_user(user.clone());
        }
        let client = builder.build().map_err(|e| {
            Error::InvalidArgument(format!(
                "cannot set up a client for {target}: {e}; give the NameNode as hdfs://host:port/..., or set fs.defaultFS or fs.hdfs.hadoopconf"
            ))
        })?;
        self.clients
            .lock()
            .unwrap()
            .insert(authority, client.clone());
        Ok(client)
    }

    /// The temp file a handle names, refused unless it is one sluice makes
    /// for `target`: beside it, named `.<file>.inprogress.<uuid>`.
    fn staged_temp(&self, target: &Location, point: &ResumePoint) -> Result<String> {
        let temp = &point.file()?.temp_path;
        let (dir, name) = temp.rsplit_once('/').unwrap_or(("", temp));
        let target_path = hdfs_path(target);
        let target_dir = target_path.rsplit_once('/').map_or("", |(d, _)| d);
        if dir == target_dir
            && is_staging_name(name)
            && name.starts_with(&format!(".{}.inprogress.", target.file_name()))
        {
            Ok(temp.clone())
        } else {
            Err(Error::InvalidArgument(format!(
                "invalid handle: its staged file {temp} is not one sluice makes for {target}"
            )))
        }
    }

    /// Recovers the lease of a file a writer may still hold (a crashed
    /// gateway, a fenced session), and waits until the NameNode has closed
    /// it at its stable length.
    async fn settle_lease(&self, client: &Client, path: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + LEASE_RECOVERY;
        loop {
            match client.recover_lease(path).await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => return Err(hdfs_error(e, &format!("recovering the lease of {path}"))),
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::StoreUnavailable {
                    message: format!(
                        "the lease of {path} was not recovered within {} s; try again",
                        LEASE_RECOVERY.as_secs()
                    ),
                    source: None,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The first `position` bytes of `temp`, copied into a new temp file of
    /// the same staging, their CRC32C checked against the handle's; returns
    /// the new file's name and its open writer.
    async fn copy_prefix(
        &self,
        client: &Client,
        temp: &str,
        point: &ResumePoint,
    ) -> Result<(String, hdfs_native::file::FileWriter)> {
        let copy = next_generation(temp);
        let mut writer = client
            .create(&copy, WriteOptions::default())
            .await
            .map_err(|e| hdfs_error(e, &format!("creating {copy}")))?;
        let reader = client
            .read(temp)
            .await
            .map_err(|e| hdfs_error(e, &format!("opening {temp}")))?;
        let mut bytes = reader.read_range_stream(0, point.position as usize).boxed();
        let mut crc = 0u32;
        while let Some(chunk) = bytes.next().await {
            let chunk = chunk.map_err(|e| hdfs_error(e, &format!("reading {temp}")))?;
            crc = crc32c::crc32c_append(crc, &chunk);
            writer
                .write_bytes(chunk)
                .await
                .map_err(|e| hdfs_error(e, &format!("writing {copy}")))?;
        }
        if crc != point.crc32c {
            let _ = writer.close().await;
            let _ = client.delete(&copy, false).await;
            return Err(Error::FailedPrecondition(format!(
                "cannot use this handle: the first {} bytes of {temp} changed since it was taken (CRC32C {crc:08x}, the handle's {:08x})",
                point.position, point.crc32c
            )));
        }
        writer
            .hsync()
            .await
            .map_err(|e| hdfs_error(e, &format!("syncing {copy}")))?;
        Ok((copy, writer))
    }

    /// The temp file of `point`, with exactly the handle's bytes, its lease
    /// recovered: the same file when it holds no more, else a copy of its
    /// prefix (closed).
    async fn exact_temp(&self, client: &Client, temp: &str, point: &ResumePoint) -> Result<String> {
        self.settle_lease(client, temp).await?;
        let length = file_length(client, temp).await?.ok_or_else(|| gone(temp))?;
        if length < point.position {
            return Err(short(temp, length, point.position));
        }
        if length == point.position {
            return Ok(temp.to_string());
        }
        let (copy, mut writer) = self.copy_prefix(client, temp, point).await?;
        writer
            .close()
            .await
            .map_err(|e| hdfs_error(e, &format!("closing {copy}")))?;
        Ok(copy)
    }

    /// Every temp file of a staging (all its generations) beside `target`.
    async fn generations(
        &self,
        client: &Client,
        target: &Location,
        temp: &str,
    ) -> Result<Vec<String>> {
        let Some(prefix) = generation_prefix(temp) else {
            return Ok(Vec::new());
        };
        let dir = hdfs_path(target)
            .rsplit_once('/')
            .map_or("/".to_string(), |(d, _)| {
                if d.is_empty() { "/".into() } else { d.into() }
            });
        match client.list_status(&dir, false).await {
            Ok(entries) => Ok(entries
                .into_iter()
                .filter(|e| {
                    e.path
                        .rsplit('/')
                        .next()
                        .is_some_and(|n| n.starts_with(&prefix))
                })
                .map(|e| e.path)
                .collect()),
            Err(e) if missing(&e) => Ok(Vec::new()),
            Err(e) => Err(hdfs_error(e, &format!("listing {dir}"))),
        }
    }
}

/// The HDFS path of a location: `/` and its path.
fn hdfs_path(location: &Location) -> String {
    format!("/{}", location.path.trim_start_matches('/'))
}

/// What every temp file of one staging starts with: the name up to the
/// first 24 characters of its UUID.
fn generation_prefix(temp: &str) -> Option<String> {
    let name = temp.rsplit('/').next()?;
    let (head, uuid) = name.rsplit_once(".inprogress.")?;
    (uuid.len() == 36).then(|| format!("{head}.inprogress.{}", &uuid[..24]))
}

/// A new temp file of the same staging: the same first 24 UUID
/// characters, 12 new random hex digits.
fn next_generation(temp: &str) -> String {
    let fresh = uuid::Uuid::new_v4().simple().to_string();
    let (dir, _) = temp.rsplit_once('/').unwrap_or(("", temp));
    let prefix = generation_prefix(temp).expect("a staged temp file name");
    format!("{dir}/{prefix}{}", &fresh[..12])
}

async fn file_length(client: &Client, path: &str) -> Result<Option<u64>> {
    match client.get_file_info(path).await {
        Ok(status) => Ok(Some(status.length as u64)),
        Err(e) if missing(&e) => Ok(None),
        Err(e) => Err(hdfs_error(e, &format!("checking {path}"))),
    }
}

fn gone(temp: &str) -> Error {
    Error::FailedPrecondition(format!(
        "cannot use this handle: its staged file {temp} is gone (committed, aborted before any persist, or removed); restart this file from your source"
    ))
}

fn short(temp: &str, length: u64, position: u64) -> Error {
    Error::FailedPrecondition(format!(
        "cannot use this handle: the staged file {temp} holds {length} bytes, fewer than the handle's {position}"
    ))
}

/// Whether the NameNode said there is no such file: hdfs-native's own
/// error, or the NameNode's `FileNotFoundException` as an RPC error.
fn missing(e: &HdfsError) -> bool {
    match e {
        HdfsError::FileNotFound(_) => true,
        HdfsError::RPCError(class, _) => class.ends_with("FileNotFoundException"),
        _ => false,
    }
}

/// Maps an HDFS failure: refusals by the NameNode that a retry cannot fix
/// keep their meaning; everything else (connections, DataNodes, safe
/// mode, a lease recovery in progress) is `Unavailable`. The NameNode's
/// message is kept, its Java stack trace is not.
fn hdfs_error(e: HdfsError, doing: &str) -> Error {
    let said = match &e {
        HdfsError::RPCError(class, message) | HdfsError::FatalRPCError(class, message) => {
            let first = message.lines().next().unwrap_or_default();
            let class = class.rsplit('.').next().unwrap_or(class);
            format!("{doing}: the NameNode refused it: {class}: {first}")
        }
        other => format!("{doing}: {other}"),
    };
    let class = match &e {
        _ if missing(&e) => return Error::FailedPrecondition(said),
        HdfsError::AlreadyExists(_) => return Error::AlreadyExists(said),
        HdfsError::RPCError(class, _) | HdfsError::FatalRPCError(class, _) => class.as_str(),
        _ => "",
    };
    match class.rsplit('.').next().unwrap_or_default() {
        "FileAlreadyExistsException" => Error::AlreadyExists(said),
        "AccessControlException" => Error::PermissionDenied(said),
        "PathIsNotEmptyDirectoryException" => Error::FailedPrecondition(format!(
            "{said}; pass recursive=true to delete a directory with its contents"
        )),
        "ParentNotDirectoryException" => Error::FailedPrecondition(said),
        "InvalidPathException" | "HadoopIllegalArgumentException" => Error::InvalidArgument(said),
        "QuotaExceededException" | "DSQuotaExceededException" | "NSQuotaExceededException" => {
            Error::ResourceExhausted(said)
        }
        _ => Error::StoreUnavailable {
            message: said,
            source: Some(Box::new(e)),
        },
    }
}

/// One file being written: its temp file and the open writer.
struct HdfsWriter {
    client: Client,
    staging_id: String,
    temp: String,
    writer: Option<hdfs_native::file::FileWriter>,
}

#[async_trait]
impl StagedWriter for HdfsWriter {
    fn staging_id(&self) -> &str {
        &self.staging_id
    }

    fn location(&self) -> &str {
        &self.temp
    }

    async fn create(&mut self) -> Result<()> {
        if self.writer.is_none() {
            let writer = self
                .client
                .create(&self.temp, WriteOptions::default())
                .await
                .map_err(|e| hdfs_error(e, &format!("creating {}", self.temp)))?;
            self.writer = Some(writer);
        }
        Ok(())
    }

    async fn write(&mut self, data: Rope) -> Result<()> {
        let temp = &self.temp;
        let writer = self.writer.as_mut().ok_or_else(|| closed(temp))?;
        for chunk in data.into_chunks() {
            writer
                .write_bytes(chunk)
                .await
                .map_err(|e| hdfs_error(e, &format!("writing {temp}")))?;
        }
        Ok(())
    }

    async fn persist(&mut self) -> Result<Staging> {
        let temp = &self.temp;
        let writer = self.writer.as_mut().ok_or_else(|| closed(temp))?;
        writer
            .hsync()
            .await
            .map_err(|e| hdfs_error(e, &format!("syncing {temp}")))?;
        Ok(self.staging())
    }

    async fn close_for_commit(&mut self) -> Result<Staging> {
        if let Some(mut writer) = self.writer.take() {
            writer
                .close()
                .await
                .map_err(|e| hdfs_error(e, &format!("closing {}", self.temp)))?;
        }
        Ok(self.staging())
    }

    async fn discard(mut self: Box<Self>) -> Result<()> {
        if let Some(mut writer) = self.writer.take() {
            let _ = writer.close().await;
        }
        match self.client.delete(&self.temp, false).await {
            Ok(_) => Ok(()),
            Err(e) if missing(&e) => Ok(()),
            Err(e) => Err(hdfs_error(e, &format!("deleting {}", self.temp))),
        }
    }
}

impl HdfsWriter {
    fn staging(&self) -> Staging {
        Staging::File(FileStaging {
            temp_path: self.temp.clone(),
        })
    }
}

fn closed(temp: &str) -> Error {
    Error::FailedPrecondition(format!("{temp} is closed for commit; no more writes"))
}

#[async_trait]
impl Stager for HdfsBackend {
    fn capabilities(&self) -> BackendCapabilities {
        BackendCapabilities::appendable_file()
    }

    fn check_target(&self, target: &Location) -> Result<()> {
        self.client(target).map(drop)
    }

    async fn open(&self, target: &Location) -> Result<Box<dyn StagedWriter>> {
        let client = self.client(target)?;
        let path = hdfs_path(target);
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", &path));
        // Only named here: `create` makes it once the gateway has the name
        // on record, so a crash never leaves a temp file no record names.
        let temp = format!("{dir}/.{name}.inprogress.{}", uuid::Uuid::new_v4());
        Ok(Box::new(HdfsWriter {
            client,
            staging_id: format!("hdfs://{}{temp}", target.authority),
            temp,
            writer: None,
        }))
    }

    async fn recover(
        &self,
        target: &Location,
        point: &ResumePoint,
    ) -> Result<Box<dyn StagedWriter>> {
        let client = self.client(target)?;
        let temp = self.staged_temp(target, point)?;
        self.settle_lease(&client, &temp).await?;
        let length = file_length(&client, &temp)
            .await?
            .ok_or_else(|| gone(&temp))?;
        if length < point.position {
            return Err(short(&temp, length, point.position));
        }
        let (temp, writer) = if length == point.position {
            let writer = client
                .append(&temp)
                .await
                .map_err(|e| hdfs_error(e, &format!("appending to {temp}")))?;
            (temp, writer)
        } else {
            let span = tracing::info_span!("copy_prefix", bytes = point.position);
            tracing::Instrument::instrument(self.copy_prefix(&client, &temp, point), span).await?
        };
        Ok(Box::new(HdfsWriter {
            client,
            staging_id: point.staging_id.clone(),
            temp,
            writer: Some(writer),
        }))
    }

    async fn commit(
        &self,
        target: &Location,
        point: &ResumePoint,
        after_recovery: bool,
    ) -> Result<u64> {
        let client = self.client(target)?;
        let temp = self.staged_temp(target, point)?;
        let path = hdfs_path(target);
        if file_length(&client, &temp).await?.is_none() {
            // Renamed onto the target by an earlier commit, or removed.
            let size = file_length(&client, &path).await?;
            return settle_without_staging(target, size, point.position, after_recovery);
        }
        let exact = self.exact_temp(&client, &temp, point).await?;
        // Without overwrite, HDFS's rename refuses an existing target,
        // atomically: the loser of a race hears ALREADY_EXISTS. The temp
        // file was still there, so the target is not this file's.
        match client.rename(&exact, &path, false).await {
            Ok(()) => Ok(point.position),
            Err(e) => match hdfs_error(e, &format!("renaming {exact} to {path}")) {
                Error::AlreadyExists(_) => {
                    let size = file_length(&client, &path).await?;
                    match size {
                        Some(size) if after_recovery && size != point.position => {
                            Err(Error::FailedPrecondition(format!(
                                "cannot commit {target}: the target exists with {size} bytes, not the handle's {}, and is not this file",
                                point.position
                            )))
                        }
                        _ => settle_without_staging(target, Some(0), 0, false),
                    }
                }
                other => Err(other),
            },
        }
    }

    async fn target_size(&self, target: &Location) -> Result<Option<u64>> {
        let client = self.client(target)?;
        file_length(&client, &hdfs_path(target)).await
    }

    async fn cleanup(&self, target: &Location, point: &ResumePoint) -> Result<bool> {
        // Every handle of a file shares its temp files: nothing belongs to
        // one handle alone.
        self.staged_temp(target, point)?;
        Ok(false)
    }

    async fn remove_staging(
        &self,
        target: &Location,
        _staging_id: &str,
        location: &str,
        _artefacts: &[String],
    ) -> Result<Removed> {
        if location.is_empty() {
            return Ok(Removed::default());
        }
        let client = self.client(target)?;
        let mut removed = Removed::default();
        for temp in self.generations(&client, target, location).await? {
            // A writer that died keeps its lease until the NameNode's hard
            // limit; a delete does not wait for it.
            match client.delete(&temp, false).await {
                Ok(true) => removed.temp_files += 1,
                Ok(false) => {}
                Err(e) if missing(&e) => {}
                Err(e) => return Err(hdfs_error(e, &format!("removing {temp}"))),
            }
        }
        Ok(removed)
    }

    async fn remove_artefacts(
        &self,
        target: &Location,
        staging_id: &str,
        _artefacts: &[String],
    ) -> Result<usize> {
        // The staging id names the first temp file: every generation of the
        // staging shares its prefix.
        let first = staging_id
            .strip_prefix(&format!("hdfs://{}", target.authority))
            .unwrap_or(staging_id);
        Ok(self
            .remove_staging(target, staging_id, first, &[])
            .await?
            .temp_files)
    }
}

fn entry(location: Location, status: &hdfs_native::client::FileStatus) -> Entry {
    Entry {
        location,
        size: if status.isdir {
            0
        } else {
            status.length as u64
        },
        is_dir: status.isdir,
        modified_ms: status.modification_time,
    }
}

#[async_trait]
impl Namespace for HdfsBackend {
    async fn read(
        &self,
        target: &Location,
        offset: u64,
        length: Option<u64>,
    ) -> Result<ByteStream> {
        let client = self.client(target)?;
        let path = hdfs_path(target);
        let reader = match client.read(&path).await {
            Ok(r) => r,
            Err(e) if missing(&e) => return Err(not_found(target)),
            Err(e) => return Err(hdfs_error(e, &format!("opening {target}"))),
        };
        let size = reader.file_length() as u64;
        let end = read_range(target, size, offset, length)?;
        let shown = target.to_string();
        Ok(reader
            .read_range_stream(offset as usize, (end - offset) as usize)
            .map_err(move |e| hdfs_error(e, &format!("reading {shown}")))
            .boxed())
    }

    async fn stat(&self, path: &Location) -> Result<Option<Entry>> {
        let client = self.client(path)?;
        match client.get_file_info(&hdfs_path(path)).await {
            Ok(status) => Ok(Some(entry(path.clone(), &status))),
            Err(e) if missing(&e) => Ok(None),
            Err(e) => Err(hdfs_error(e, &format!("checking {path}"))),
        }
    }

    async fn list(
        &self,
        dir: &Location,
        page: &crate::backend::Page,
    ) -> Result<crate::backend::Listing> {
        let client = self.client(dir)?;
        let path = hdfs_path(dir);
        let listed = match client.list_status(&path, false).await {
            Ok(entries) => entries,
            Err(e) if missing(&e) => return Err(not_found(dir)),
            Err(e) => return Err(hdfs_error(e, &format!("listing {dir}"))),
        };
        if listed.len() == 1 && !listed[0].isdir && listed[0].path.trim_end_matches('/') == path {
            return Err(Error::FailedPrecondition(format!(
                "{dir} is a file, not a directory"
            )));
        }
        let entries = listed
            .iter()
            .filter_map(|status| {
                let name = status.path.rsplit('/').next()?;
                (!is_staging_name(name)).then(|| {
                    entry(
                        dir.with_path(format!("{}/{name}", dir.path.trim_end_matches('/'))),
                        status,
                    )
                })
            })
            .collect();
        Ok(page.of(entries))
    }

    async fn delete(&self, path: &Location, recursive: bool) -> Result<bool> {
        let client = self.client(path)?;
        match client.delete(&hdfs_path(path), recursive).await {
            Ok(deleted) => Ok(deleted),
            Err(e) if missing(&e) => Ok(false),
            Err(e) => Err(hdfs_error(e, &format!("deleting {path}"))),
        }
    }

    async fn mkdirs(&self, dir: &Location) -> Result<()> {
        let client = self.client(dir)?;
        client
            .mkdirs(&hdfs_path(dir), 0o755, true)
            .await
            .map_err(|e| hdfs_error(e, &format!("creating {dir}")))
    }

    async fn rename(&self, from: &Location, to: &Location) -> Result<()> {
        if from.authority != to.authority {
            return Err(Error::InvalidArgument(format!(
                "cannot rename {from} to {to}: HDFS renames within one name service"
            )));
        }
        let client = self.client(from)?;
        if file_length(&client, &hdfs_path(from)).await?.is_none() {
            return Err(not_found(from));
        }
        // As on the other schemes, the target's folders need not exist.
        let to_path = hdfs_path(to);
        if let Some((parent, _)) = to_path.rsplit_once('/')
            && !parent.is_empty()
        {
            client
                .mkdirs(parent, 0o755, true)
                .await
                .map_err(|e| hdfs_error(e, &format!("creating the folder of {to}")))?;
        }
        client
            .rename(&hdfs_path(from), &hdfs_path(to), false)
            .await
            .map_err(
                |e| match hdfs_error(e, &format!("renaming {from} to {to}")) {
                    Error::AlreadyExists(_) => {
                        Error::AlreadyExists(format!("{to} already exists; rename never replaces"))
                    }
                    other => other,
                },
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_of_a_staging_share_a_prefix_and_stay_staging_names() {
        let temp = "/out/.part-0.inprogress.0b3c4f5e-1a2b-4c3d-8e9f-001122334455";
        assert_eq!(
            generation_prefix(temp).as_deref(),
            Some(".part-0.inprogress.0b3c4f5e-1a2b-4c3d-8e9f-")
        );
        let next = next_generation(temp);
        assert!(
            next.starts_with("/out/.part-0.inprogress.0b3c4f5e-1a2b-4c3d-8e9f-"),
            "{next}"
        );
        assert_ne!(next, temp);
        assert!(is_staging_name(next.rsplit('/').next().unwrap()), "{next}");
        assert_eq!(generation_prefix("/out/part-0"), None);
    }
}
