//! `file://`: Flink's local recoverable writer, made exact.
//!
//! A file is staged in a hidden `.<name>.inprogress.<uuid>` beside its
//! target. Persist flushes and fsyncs; Recover checks the temp file still
//! holds the handle's bytes (length and CRC32C) and truncates it to the
//! handle's position; Commit hard-links the temp file to the target, which
//! never replaces an existing file, unlinks the temp name and fsyncs the
//! directory. Targets are confined to configured roots.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    Backend, BackendCapabilities, ByteStream, Entry, Removed, StagedWriter, Staging,
    expect_staging, is_staging_name, not_found, read_range, settle_without_staging,
};
use crate::error::{Error, Result};
use crate::location::Location;
use crate::proto::{FileStaging, HandleBody};

/// Staging ids of temp files are this prefix and the temp file's path.
const STAGING_PREFIX: &str = "file:";

/// The longest file name Linux file systems take, in bytes.
const NAME_MAX: usize = 255;
/// What a temp file's name adds to its target's: `.`, `.inprogress.`, a UUID.
const TEMP_NAME_EXTRA: usize = 1 + ".inprogress.".len() + 36;
/// The longest target file name whose temp file name still fits.
const MAX_TARGET_NAME: usize = NAME_MAX - TEMP_NAME_EXTRA;

/// Writes smaller than this are gathered before they reach the kernel.
const WRITE_BUFFER: usize = 1024 * 1024;

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
    fn staged_temp(&self, target: &Location, handle: &HandleBody) -> Result<PathBuf> {
        self.local_path(target)?;
        let staging = expect_staging(handle, file_staging)?;
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
impl Backend for FileBackend {
    fn capabilities(&self) -> BackendCapabilities {
        BackendCapabilities {
            supports_resume: true,
            requires_cleanup: false,
            min_part_size: 0,
            max_concurrent_uploads: 0,
            survives_restart: true,
            limits: Default::default(),
        }
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
        handle: &HandleBody,
    ) -> Result<Box<dyn StagedWriter>> {
        let temp = self.staged_temp(target, handle)?;
        let (position, crc) = (handle.position, handle.crc32c);
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
        handle: &HandleBody,
        after_recovery: bool,
    ) -> Result<u64> {
        let temp = self.staged_temp(target, handle)?;
        let path = self.local_path(target)?;
        let (position, crc) = (handle.position, handle.crc32c);
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

    async fn read(
        &self,
        target: &Location,
        offset: u64,
        length: Option<u64>,
    ) -> Result<ByteStream> {
        use futures::StreamExt;
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let local = self.confined(target)?;
        let mut file = match tokio::fs::File::open(&local).await {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(not_found(target)),
            Err(e) => return Err(io_error(e, &format!("opening {target}"))),
        };
        let meta = file
            .metadata()
            .await
            .map_err(|e| io_error(e, "reading metadata"))?;
        if meta.is_dir() {
            return Err(Error::FailedPrecondition(format!(
                "{target} is a directory, not a file"
            )));
        }
        let end = read_range(target, meta.len(), offset, length)?;
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| io_error(e, "seeking"))?;
        let shown = target.to_string();
        let stream = futures::stream::unfold((file, offset), move |(mut file, at)| {
            let shown = shown.clone();
            async move {
                if at >= end {
                    return None;
                }
                let mut buf = vec![0u8; (end - at).min(WRITE_BUFFER as u64) as usize];
                match file.read_exact(&mut buf).await {
                    Ok(_) => {
                        let next = at + buf.len() as u64;
                        Some((Ok(Bytes::from(buf)), (file, next)))
                    }
                    Err(e) => Some((Err(io_error(e, &format!("reading {shown}"))), (file, end))),
                }
            }
        });
        Ok(stream.boxed())
    }

    async fn stat(&self, path: &Location) -> Result<Option<Entry>> {
        let local = self.confined(path)?;
        match tokio::fs::metadata(&local).await {
            Ok(meta) => Ok(Some(entry(path.clone(), &meta))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(e, &format!("checking {path}"))),
        }
    }

    async fn list(&self, dir: &Location, page: &super::Page) -> Result<super::Listing> {
        let local = self.confined(dir)?;
        let mut entries = match tokio::fs::read_dir(&local).await {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(not_found(dir)),
            Err(e) if e.raw_os_error() == Some(20) => {
                return Err(Error::FailedPrecondition(format!(
                    "{dir} is a file, not a directory"
                )));
            }
            Err(e) => return Err(io_error(e, &format!("listing {dir}"))),
        };
        // Names first (cheap), sorted; metadata only for the page's own.
        let mut names = Vec::new();
        while let Some(e) = entries
            .next_entry()
            .await
            .map_err(|e| io_error(e, &format!("listing {dir}")))?
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if !is_staging_name(&name) && page.admits(&name) {
                names.push((name, e));
            }
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        let more = names.len() > page.limit;
        names.truncate(page.limit);
        let mut out = Vec::with_capacity(names.len());
        for (name, e) in names {
            let meta = match e.metadata().await {
                Ok(meta) => meta,
                // Removed since it was listed.
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(e, "reading metadata")),
            };
            let child = if dir.path.is_empty() {
                name
            } else {
                format!("{}/{name}", dir.path)
            };
            out.push(entry(dir.with_path(child), &meta));
        }
        Ok(super::Listing { entries: out, more })
    }

    async fn delete(&self, path: &Location, recursive: bool) -> Result<bool> {
        let local = self.confined(path)?;
        if self.roots.contains(&local) {
            return Err(Error::PermissionDenied(format!(
                "{path} is a file root; it cannot be deleted"
            )));
        }
        let meta = match tokio::fs::symlink_metadata(&local).await {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_error(e, &format!("checking {path}"))),
        };
        let result = if !meta.is_dir() {
            tokio::fs::remove_file(&local).await
        } else if recursive {
            tokio::fs::remove_dir_all(&local).await
        } else {
            let mut children = tokio::fs::read_dir(&local)
                .await
                .map_err(|e| io_error(e, &format!("listing {path}")))?;
            if children
                .next_entry()
                .await
                .map_err(|e| io_error(e, "listing"))?
                .is_some()
            {
                return Err(Error::FailedPrecondition(format!(
                    "{path} is a directory that is not empty; pass recursive=true to delete it with its contents"
                )));
            }
            tokio::fs::remove_dir(&local).await
        };
        result.map_err(|e| io_error(e, &format!("deleting {path}")))?;
        Ok(true)
    }

    async fn mkdirs(&self, dir: &Location) -> Result<()> {
        // confined() has checked the deepest existing part already.
        let local = self.confined(dir)?;
        if local.is_file() {
            return Err(Error::AlreadyExists(format!("{dir} exists and is a file")));
        }
        fs::create_dir_all(&local).map_err(|e| io_error(e, &format!("creating {dir}")))?;
        self.check_resolved(dir, &local).map(drop)
    }

    async fn rename(&self, from: &Location, to: &Location) -> Result<()> {
        let (src, dst) = (self.confined(from)?, self.local_path(to)?);
        let meta = match fs::symlink_metadata(&src) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(not_found(from)),
            Err(e) => return Err(io_error(e, &format!("checking {from}"))),
        };
        let parent = self.prepare_parent(to, &dst)?;
        let dst = parent.join(to.file_name());
        let shown = to.to_string();
        tokio::task::spawn_blocking(move || -> Result<()> {
            if meta.is_dir() {
                if dst.exists() {
                    return Err(Error::AlreadyExists(format!(
                        "{shown} already exists; rename never replaces"
                    )));
                }
                fs::rename(&src, &dst).map_err(|e| io_error(e, &format!("renaming to {shown}")))?;
            } else {
                // A hard link never replaces an existing file.
                match fs::hard_link(&src, &dst) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                        return Err(Error::AlreadyExists(format!(
                            "{shown} already exists; rename never replaces"
                        )));
                    }
                    Err(e) => return Err(io_error(e, &format!("renaming to {shown}"))),
                }
                fs::remove_file(&src).map_err(|e| io_error(e, "removing the old name"))?;
            }
            sync_dir(dst.parent().expect("a parent"))
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

    async fn cleanup(&self, target: &Location, handle: &HandleBody) -> Result<bool> {
        // Every handle of a file shares its one temp file: nothing belongs to
        // one handle alone, so there is never anything to remove.
        self.staged_temp(target, handle)?;
        Ok(false)
    }
}

fn entry(location: Location, meta: &std::fs::Metadata) -> Entry {
    let modified_ms = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64);
    Entry {
        location,
        size: if meta.is_dir() { 0 } else { meta.len() },
        is_dir: meta.is_dir(),
        modified_ms,
    }
}

fn file_staging(s: &Staging) -> Option<&FileStaging> {
    match s {
        Staging::File(f) => Some(f),
        _ => None,
    }
}

/// A temp file and the roots its directory must lie under.
struct Staged<'a> {
    temp: &'a Path,
    roots: &'a [PathBuf],
}

/// The temp file's directory, opened once and checked: with symlinks
/// resolved it lies under a root, and the target's directory, as its path
/// reads now, is that same directory. Publishing then goes through this
/// handle (`linkat`), so a symlink swapped on the way cannot send the
/// file anywhere else.
fn publishing_dir(staged: &Staged, target: &Path, shown: &str) -> Result<File> {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::io::AsRawFd;
    let dir = staged.temp.parent().expect("a temp file has a parent");
    let handle = File::open(dir).map_err(|e| io_error(e, &format!("opening {}", dir.display())))?;
    let real = fs::read_link(format!("/proc/self/fd/{}", handle.as_raw_fd()))
        .map_err(|e| io_error(e, "resolving the staged file's directory"))?;
    if !staged.roots.iter().any(|root| real.starts_with(root)) {
        return Err(Error::PermissionDenied(format!(
            "cannot commit {shown}: its directory now resolves to {}, outside every file root (fs.file.allowed-roots)",
            real.display()
        )));
    }
    let opened = handle
        .metadata()
        .map_err(|e| io_error(e, "checking the staged file's directory"))?;
    let target_dir = target.parent().expect("a target has a parent directory");
    match fs::metadata(target_dir) {
        Ok(now) if now.dev() == opened.dev() && now.ino() == opened.ino() => Ok(handle),
        Ok(_) | Err(_) => Err(Error::FailedPrecondition(format!(
            "cannot commit {shown}: its directory is no longer the one the file was opened in (a symlink or directory on its path was replaced); the staged file stays, put the directory back and commit again"
        ))),
    }
}

/// The last component of `path` as a C string, for the `*at` calls.
fn c_file_name(path: &Path) -> std::io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.file_name().expect("a file name").as_bytes())
        .map_err(|_| std::io::Error::from(ErrorKind::InvalidInput))
}

/// `linkat` within one directory: never replaces an existing name.
fn link_within(dir: &File, from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let (from, to) = (c_file_name(from)?, c_file_name(to)?);
    let fd = dir.as_raw_fd();
    // SAFETY: both names are NUL-terminated C strings that outlive the call.
    match unsafe { libc::linkat(fd, from.as_ptr(), fd, to.as_ptr(), 0) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// `unlinkat` within one directory.
fn unlink_within(dir: &File, name: &Path) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let name = c_file_name(name)?;
    // SAFETY: the name is a NUL-terminated C string that outlives the call.
    match unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

fn commit_blocking(
    staged: Staged,
    target: &Path,
    (position, crc): (u64, u32),
    after_recovery: bool,
    shown: &str,
) -> Result<u64> {
    let temp = staged.temp;
    match fs::metadata(temp) {
        Ok(meta) => {
            if meta.len() < position {
                return Err(Error::FailedPrecondition(format!(
                    "cannot commit {shown}: the staged file holds {} bytes, fewer than the handle's {position}",
                    meta.len()
                )));
            }
            if meta.len() > position {
                // A resume handle: bytes staged after it are not part of the
                // file. Its own bytes must still be there: a Recover of an
                // earlier handle (on any replica) may have rewritten them.
                let mut f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(temp)
                    .map_err(|e| io_error(e, "opening the staged file"))?;
                let actual = crc_of_prefix(&mut f, position)
                    .map_err(|e| io_error(e, "reading the staged file"))?;
                if actual != crc {
                    return Err(Error::FailedPrecondition(format!(
                        "cannot commit {shown}: the first {position} bytes of its staged file changed since the handle was taken (CRC32C {actual:08x}, handle {crc:08x}); a Recover of an earlier handle rewrote them"
                    )));
                }
                f.set_len(position)
                    .map_err(|e| io_error(e, "truncating the staged file"))?;
                f.sync_all()
                    .map_err(|e| io_error(e, "syncing the staged file"))?;
            }
            let dir = publishing_dir(&staged, target, shown)?;
            match link_within(&dir, temp, target) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    if after_recovery && same_file(temp, target) {
                        // A commit that linked the target and died before
                        // removing the temp name: finish it.
                    } else if after_recovery {
                        return Err(other_file_in_the_way(target, position, shown));
                    } else {
                        return Err(already_exists(shown));
                    }
                }
                Err(e) => return Err(io_error(e, &format!("publishing {shown}"))),
            }
            unlink_within(&dir, temp).map_err(|e| io_error(e, "removing the staged file name"))?;
            dir.sync_all()
                .map_err(|e| io_error(e, &format!("syncing the directory of {shown}")))?;
            Ok(position)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let size = match fs::metadata(target) {
                Ok(meta) => Some(meta.len()),
                Err(e) if e.kind() == ErrorKind::NotFound => None,
                Err(e) => return Err(io_error(e, &format!("checking {shown}"))),
            };
            settle_without_staging(shown, size, position, after_recovery)
        }
        Err(e) => Err(io_error(e, "checking the staged file")),
    }
}

/// `Commit` after recovery found a target that is not this staging's.
fn other_file_in_the_way(target: &Path, position: u64, shown: &str) -> Error {
    match fs::metadata(target) {
        Ok(meta) if meta.len() != position => Error::FailedPrecondition(format!(
            "cannot commit {shown}: the target exists with {} bytes, not the handle's {position}, and is not this file",
            meta.len()
        )),
        _ => already_exists(shown),
    }
}

fn already_exists(shown: &str) -> Error {
    Error::AlreadyExists(format!(
        "{shown} already exists; sluice never replaces a file (commit with after_recovery=true if this is a retry of your own commit)"
    ))
}

#[cfg(unix)]
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_: &Path, _: &Path) -> bool {
    false
}

/// A file's device and inode.
fn identity_of(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// The staged file is no longer at its name.
fn gone(name: &Path) -> Error {
    Error::FailedPrecondition(format!(
        "the staged file {} was deleted, renamed or replaced while this session wrote it; its bytes are not where a handle could find them: recover from a handle taken before, or restart the file",
        name.display()
    ))
}

/// Whether `file` is still the file at `name`.
fn still_named(file: &File, name: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let open = file
        .metadata()
        .map_err(|e| io_error(e, "checking the staged file"))?;
    if open.nlink() == 0 {
        return Err(gone(name));
    }
    still_at(name, Some(identity_of(&open)))
}

/// Whether the file at `name` is the one with `identity`.
fn still_at(name: &Path, identity: Option<(u64, u64)>) -> Result<()> {
    match fs::metadata(name) {
        Ok(named) if Some(identity_of(&named)) == identity => Ok(()),
        Ok(_) => Err(gone(name)),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(gone(name)),
        Err(e) => Err(io_error(e, &format!("checking {}", name.display()))),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(e, &format!("syncing directory {}", dir.display())))
}

fn crc_of_prefix(file: &mut File, len: u64) -> std::io::Result<u32> {
    let mut crc = 0u32;
    let mut buf = vec![0u8; WRITE_BUFFER];
    let mut left = len;
    while left > 0 {
        let n = buf.len().min(left as usize);
        file.read_exact(&mut buf[..n])?;
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        left -= n as u64;
    }
    Ok(crc)
}

/// Maps a local I/O failure to what the client should do about it.
fn io_error(e: std::io::Error, doing: &str) -> Error {
    match e.kind() {
        ErrorKind::PermissionDenied => Error::PermissionDenied(format!("{doing}: {e}")),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => Error::ResourceExhausted(format!(
            "{doing}: {e}; free space, then recover from your last handle"
        )),
        _ => Error::Unavailable(format!("{doing}: {e}")),
    }
}

/// A temp file being written.
struct FileWriter {
    temp: PathBuf,
    /// Open only while the session has bytes written since its last
    /// Persist: an idle or persisted session holds no file descriptor.
    file: Option<Arc<File>>,
    /// The temp file's device and inode, once created: a reopen must find
    /// the same file at the name.
    identity: Option<(u64, u64)>,
    /// Closed for commit: no more writes.
    closed: bool,
    /// Small writes gathered until `WRITE_BUFFER` bytes.
    buffer: Vec<u8>,
    staging_id: String,
    /// The temp file's path as text.
    location: String,
    /// Directories to fsync at the next Persist (see `open`).
    dirs_to_sync: Vec<PathBuf>,
}

impl FileWriter {
    /// A writer for `temp`, which is neither created nor opened yet.
    fn named(temp: PathBuf) -> FileWriter {
        FileWriter {
            staging_id: format!("{STAGING_PREFIX}{}", temp.display()),
            location: temp.display().to_string(),
            temp,
            file: None,
            identity: None,
            closed: false,
            buffer: Vec::new(),
            dirs_to_sync: Vec::new(),
        }
    }

    /// The temp file, opened again (for appending) if it was closed at the
    /// last Persist; it must still be the file this session created.
    async fn file(&mut self) -> Result<Arc<File>> {
        if let Some(file) = &self.file {
            return Ok(file.clone());
        }
        if self.closed {
            return Err(Error::Internal("the staged file is already closed".into()));
        }
        let (temp, identity) = (self.temp.clone(), self.identity);
        let file = tokio::task::spawn_blocking(move || -> Result<File> {
            let file = match OpenOptions::new().append(true).open(&temp) {
                Ok(f) => f,
                Err(e) if e.kind() == ErrorKind::NotFound => return Err(gone(&temp)),
                Err(e) => return Err(io_error(e, &format!("reopening {}", temp.display()))),
            };
            let meta = file
                .metadata()
                .map_err(|e| io_error(e, "checking the staged file"))?;
            if identity.is_some_and(|id| id != identity_of(&meta)) {
                return Err(gone(&temp));
            }
            Ok(file)
        })
        .await??;
        let file = Arc::new(file);
        self.file = Some(file.clone());
        Ok(file)
    }

    /// Writes `data` (after anything buffered) to the file, off the runtime.
    async fn write_out(&mut self, data: Option<Bytes>) -> Result<()> {
        if data.is_none() && self.buffer.is_empty() {
            return Ok(());
        }
        let file = self.file().await?;
        let mut buffered = std::mem::take(&mut self.buffer);
        let (mut buffered, result) = tokio::task::spawn_blocking(move || {
            let mut f = &*file;
            let mut result = f.write_all(&buffered);
            if let (Ok(()), Some(data)) = (&result, &data) {
                result = f.write_all(data);
            }
            buffered.clear();
            (buffered, result)
        })
        .await?;
        // Keep the allocation for the next small writes.
        std::mem::swap(&mut self.buffer, &mut buffered);
        result.map_err(|e| io_error(e, &format!("writing {}", self.temp.display())))
    }

    /// Writes out and fsyncs, then checks that the temp file is still the
    /// one at its name: a file deleted, renamed or replaced under a live
    /// session (by a namespace call, another replica or anyone with a
    /// shell) would otherwise get an OK Persist for bytes that are gone.
    async fn sync(&mut self) -> Result<()> {
        self.write_out(None).await?;
        // Closed once synced (dropped with this task): see `file`.
        let file = self.file.take();
        let (temp, identity) = (self.temp.clone(), self.identity);
        let dirs = std::mem::take(&mut self.dirs_to_sync);
        let span = tracing::info_span!("fsync");
        let unsynced = tokio::task::spawn_blocking(move || {
            let synced = match &file {
                Some(file) => span
                    .in_scope(|| file.sync_data())
                    .map_err(|e| io_error(e, &format!("syncing {}", temp.display())))
                    .and_then(|()| still_named(file, &temp)),
                // Nothing written since the last sync: only check the name.
                None => still_at(&temp, identity),
            };
            synced
                .and_then(|()| dirs.iter().try_for_each(|d| sync_dir(d)))
                .map_err(|e| (e, dirs))
        })
        .await?;
        unsynced.map_err(|(e, dirs)| {
            self.dirs_to_sync = dirs;
            e
        })
    }

    fn staging(&self) -> Staging {
        Staging::File(FileStaging {
            temp_path: self.temp.display().to_string(),
        })
    }
}

#[async_trait]
impl StagedWriter for FileWriter {
    fn staging_id(&self) -> &str {
        &self.staging_id
    }

    fn location(&self) -> &str {
        &self.location
    }

    async fn create(&mut self) -> Result<()> {
        let temp = self.temp.clone();
        let file = tokio::task::spawn_blocking(move || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)
                .map_err(|e| io_error(e, &format!("creating {}", temp.display())))
        })
        .await??;
        let meta = file
            .metadata()
            .map_err(|e| io_error(e, "checking the staged file"))?;
        self.identity = Some(identity_of(&meta));
        // Not kept open: the first write opens it (see `file`).
        Ok(())
    }

    async fn write(&mut self, data: Bytes) -> Result<()> {
        if self.buffer.len() + data.len() <= WRITE_BUFFER {
            self.buffer.extend_from_slice(&data);
            Ok(())
        } else {
            self.write_out(Some(data)).await
        }
    }

    async fn persist(&mut self) -> Result<Staging> {
        self.sync().await?;
        Ok(self.staging())
    }

    async fn close_for_commit(&mut self) -> Result<Staging> {
        self.sync().await?;
        self.closed = true;
        Ok(self.staging())
    }

    async fn discard(self: Box<Self>) -> Result<()> {
        let temp = self.temp.clone();
        drop(self);
        match tokio::fs::remove_file(&temp).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(e, &format!("removing {}", temp.display()))),
        }
    }
}
