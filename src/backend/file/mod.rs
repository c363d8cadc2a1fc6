//! `file://`: Flink's local recoverable writer, made exact.
//!
//! A file is staged in a hidden `.<name>.inprogress.<uuid>` beside its
//! target. Persist flushes and fsyncs; Recover checks the temp file still
//! holds the handle's bytes (length and CRC32C) and truncates it to the
//! handle's position; Commit hard-links the temp file to the target, which
//! never replaces an existing file, unlinks the temp name and fsyncs the
//! directory. Targets are confined to configured roots.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, IoSlice, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    BackendCapabilities, ByteStream, Entry, FileStaging, Namespace, Removed, ResumePoint, Rope,
    StagedWriter, Stager, Staging, is_staging_name, not_found, read_range, settle_without_staging,
};
use crate::error::{Error, Result};
use crate::location::Location;

mod kind;
mod namespace;
mod publish;
mod writer;

pub use kind::KIND;
use publish::*;
use writer::FileWriter;

/// Staging ids of temp files are this prefix and the temp file's path.
const STAGING_PREFIX: &str = "file:";

/// The longest file name Linux file systems take, in bytes.
const NAME_MAX: usize = 255;
/// What a temp file's name adds to its target's: `.`, `.inprogress.`, a UUID.
const TEMP_NAME_EXTRA: usize = 1 + ".inprogress.".len() + 36;
/// The longest target file name whose temp file name still fits.
const MAX_TARGET_NAME: usize = NAME_MAX - TEMP_NAME_EXTRA;

/// Small writes are gathered up to this many bytes before they reach the
/// kernel.
const WRITE_BUFFER: usize = 1024 * 1024;
/// Writes this large or larger go to the kernel as they are.
const GATHER_BELOW: usize = 128 * 1024;
/// Once this many bytes were written since, the kernel is asked to start
/// writing them to disk (see `FileWriter::write_out`).
const WRITE_BEHIND: u64 = 8 * 1024 * 1024;

/// The `file://` backend.
pub struct FileBackend {
    /// Canonical directories every target must lie under.
    roots: Vec<PathBuf>,
}

impl FileBackend {
    /// Creates the roots when missing and resolves them.
    pub fn new(roots: &[PathBuf]) -> Result<FileBackend> {
        let mut canonical = Vec::new();
        for root in roots {
            fs::create_dir_all(root).map_err(|e| {
                Error::InvalidArgument(format!("cannot create file root {}: {e}", root.display()))
            })?;
            canonical.push(fs::canonicalize(root).map_err(|e| {
                Error::InvalidArgument(format!("cannot resolve file root {}: {e}", root.display()))
            })?);
        }
        Ok(FileBackend { roots: canonical })
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// The local path of `target`, refused unless it lies under a root.
    fn local_path(&self, target: &Location) -> Result<PathBuf> {
        let path = Path::new("/").join(&target.path);
        if path
            .components()
            .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
        {
            return Err(Error::InvalidArgument(format!(
                "{target}: not a plain absolute path"
            )));
        }
        if !self.roots.iter().any(|root| path.starts_with(root)) {
            return Err(self.outside_roots(target));
        }
        if let Some(long) = target.path.split('/').find(|s| s.len() > NAME_MAX) {
            return Err(Error::InvalidArgument(format!(
                "{target}: the name {long:?} has {} bytes; file systems allow {NAME_MAX}",
                long.len()
            )));
        }
        let name = target.file_name().len();
        if name > MAX_TARGET_NAME {
            return Err(Error::InvalidArgument(format!(
                "{target}: its file name has {name} bytes; file:// targets may have at most {MAX_TARGET_NAME}, so that the hidden temp file beside it (the name plus {TEMP_NAME_EXTRA} bytes) fits the file system's {NAME_MAX}"
            )));
        }
        Ok(path)
    }

    /// The temp file a handle names, refused unless it is one sluice would
    /// have made for `target`: under a root, named `.<file>.inprogress.*`.
    /// Handles are signed, so this only matters if the key leaked; then it
    /// still keeps a forged handle from renaming any file it likes.
    fn staged_temp(&self, target: &Location, point: &ResumePoint) -> Result<PathBuf> {
        self.local_path(target)?;
        let staging = point.file()?;
        let temp = PathBuf::from(&staging.temp_path);
        let plain = temp
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        let named = temp
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&format!(".{}.inprogress.", target.file_name())));
        let rooted = temp
            .parent()
            .is_some_and(|dir| self.roots.iter().any(|root| dir.starts_with(root)));
        if temp.is_absolute() && plain && named && rooted {
            Ok(temp)
        } else {
            Err(Error::InvalidArgument(format!(
                "invalid handle: its staged file {} is not one sluice makes for {target}",
                temp.display()
            )))
        }
    }

    /// The local path of a file or directory for the read side: under a
    /// root lexically, and still under it with symlinks resolved (checked
    /// on the deepest part of the path that exists).
    fn confined(&self, path: &Location) -> Result<PathBuf> {
        let local = Path::new("/").join(&path.path);
        if !self.roots.iter().any(|root| local.starts_with(root)) {
            return Err(self.outside_roots(path));
        }
        self.check_existing_ancestor(path, &local)?;
        Ok(local)
    }

    /// Checks, with symlinks resolved, the deepest part of `dir` that exists:
    /// nothing may be created behind a symlink that leads out of the roots.
    fn check_existing_ancestor(&self, shown: &Location, dir: &Path) -> Result<()> {
        let existing = dir
            .ancestors()
            .find(|p| p.exists())
            .expect("the root directory exists");
        self.check_resolved(shown, existing).map(drop)
    }

    fn outside_roots(&self, target: &Location) -> Error {
        let roots: Vec<String> = self.roots.iter().map(|r| r.display().to_string()).collect();
        Error::PermissionDenied(format!(
            "{target} lies outside the allowed file roots ({}); write under one of them or add a root with fs.file.allowed-roots",
            roots.join(", ")
        ))
    }

    /// Creates the target's directory and checks that, with symlinks
    /// resolved, it still lies under a root. The deepest directory that
    /// already exists is checked before anything is created, so a symlink
    /// that points outside a root never gets a directory made behind it.
    fn prepare_parent(&self, target: &Location, path: &Path) -> Result<PathBuf> {
        let parent = path.parent().expect("a target has a parent directory");
        self.check_existing_ancestor(target, parent)?;
        fs::create_dir_all(parent)
            .map_err(|e| io_error(e, &format!("creating {}", parent.display())))?;
        self.check_resolved(target, parent)
    }

    /// `dir` with symlinks resolved, refused unless it lies under a root.
    fn check_resolved(&self, target: &Location, dir: &Path) -> Result<PathBuf> {
        let real = fs::canonicalize(dir)
            .map_err(|e| io_error(e, &format!("resolving {}", dir.display())))?;
        if self.roots.iter().any(|root| real.starts_with(root)) {
            Ok(real)
        } else {
            Err(self.outside_roots(target))
        }
    }
}

#[async_trait]
impl Stager for FileBackend {
    fn capabilities(&self) -> BackendCapabilities {
        BackendCapabilities::appendable_file()
    }

    fn check_target(&self, target: &Location) -> Result<()> {
        self.local_path(target).map(drop)
    }

    async fn open(&self, target: &Location) -> Result<Box<dyn StagedWriter>> {
        let path = self.local_path(target)?;
        let lexical_parent = path.parent().expect("a target has a parent directory");
        let existing = lexical_parent
            .ancestors()
            .find(|p| p.exists())
            .map(Path::to_path_buf);
        let parent = self.prepare_parent(target, &path)?;
        let name = target.file_name().to_string();
        // Only named here: the file is created by `create`, once the gateway
        // has this name on record, so a crash never leaves a temp file that
        // no record names.
        let temp = parent.join(format!(".{name}.inprogress.{}", uuid::Uuid::new_v4()));
        let mut writer = FileWriter::named(temp);
        // The directories whose entries this Open changes: the temp file's,
        // and the parent of each directory it created. They are fsynced
        // before the first handle is returned, so a power cut cannot lose
        // the name of a persisted file.
        writer.dirs_to_sync = lexical_parent
            .ancestors()
            .take_while(|d| Some(*d) != existing.as_deref().and_then(Path::parent))
            .map(Path::to_path_buf)
            .collect();
        Ok(Box::new(writer))
    }

    async fn recover(
        &self,
        target: &Location,
        point: &ResumePoint,
    ) -> Result<Box<dyn StagedWriter>> {
        let temp = self.staged_temp(target, point)?;
        let (position, crc) = (point.position, point.crc32c);
        let writer = tokio::task::spawn_blocking(move || -> Result<FileWriter> {
            let mut file = match OpenOptions::new().read(true).write(true).open(&temp) {
                Ok(f) => f,
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return Err(Error::FailedPrecondition(format!(
                        "cannot recover: the staged file {} is gone (committed, aborted before any persist, or removed); restart this file from your source",
                        temp.display()
                    )));
                }
                Err(e) => return Err(io_error(e, &format!("opening {}", temp.display()))),
            };
            let len = file.metadata().map_err(|e| io_error(e, "reading metadata"))?.len();
            if len < position {
                return Err(Error::FailedPrecondition(format!(
                    "cannot recover: the staged file {} holds {len} bytes, fewer than the handle's {position} (a later recovery truncated it)",
                    temp.display()
                )));
            }
            let actual = crc_of_prefix(&mut file, position).map_err(|e| io_error(e, "reading the staged file"))?;
            if actual != crc {
                return Err(Error::FailedPrecondition(format!(
                    "cannot recover: the first {position} bytes of {} changed since the handle was taken (CRC32C {actual:08x}, handle {crc:08x}); an earlier recovery rewrote them",
                    temp.display()
                )));
            }
            file.set_len(position).map_err(|e| io_error(e, "truncating the staged file"))?;
            file.sync_all().map_err(|e| io_error(e, "syncing the staged file"))?;
            drop(file);
            let file = OpenOptions::new()
                .append(true)
                .open(&temp)
                .map_err(|e| io_error(e, &format!("reopening {}", temp.display())))?;
            let meta = file.metadata().map_err(|e| io_error(e, "checking the staged file"))?;
            let mut writer = FileWriter::named(temp);
            writer.identity = Some(identity_of(&meta));
            writer.file = Some(Arc::new(file));
            Ok(writer)
        })
        .await??;
        Ok(Box::new(writer))
    }

    async fn commit(
        &self,
        target: &Location,
        point: &ResumePoint,
        after_recovery: bool,
    ) -> Result<u64> {
        let temp = self.staged_temp(target, point)?;
        let path = self.local_path(target)?;
        let (position, crc) = (point.position, point.crc32c);
        let shown = target.to_string();
        let roots = self.roots.clone();
        let span = tracing::info_span!("publish", bytes = position);
        tokio::task::spawn_blocking(move || {
            span.in_scope(|| {
                let staged = Staged {
                    temp: &temp,
                    roots: &roots,
                };
                commit_blocking(staged, &path, (position, crc), after_recovery, &shown)
            })
        })
        .await?
    }

    async fn target_size(&self, target: &Location) -> Result<Option<u64>> {
        let path = self.local_path(target)?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(e, &format!("checking {target}"))),
        }
    }

    async fn remove_staging(
        &self,
        _target: &Location,
        _staging_id: &str,
        location: &str,
        _artefacts: &[String],
    ) -> Result<Removed> {
        if location.is_empty() {
            return Ok(Removed::default());
        }
        let temp = location;
        match tokio::fs::remove_file(temp).await {
            Ok(()) => Ok(Removed {
                temp_files: 1,
                ..Removed::default()
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Removed::default()),
            Err(e) => Err(io_error(e, &format!("removing {temp}"))),
        }
    }

    async fn cleanup(&self, target: &Location, point: &ResumePoint) -> Result<bool> {
        // Every handle of a file shares its one temp file: nothing belongs to
        // one handle alone, so there is never anything to remove.
        self.staged_temp(target, point)?;
        Ok(false)
    }
}
