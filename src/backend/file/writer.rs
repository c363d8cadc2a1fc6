//! A temp file being written.

use super::*;

/// A temp file being written.
pub(super) struct FileWriter {
    pub(super) temp: PathBuf,
    /// Open only while the session has bytes written since its last
    /// Persist: an idle or persisted session holds no file descriptor.
    pub(super) file: Option<Arc<File>>,
    /// The temp file's device and inode, once created: a reopen must find
    /// the same file at the name.
    pub(super) identity: Option<(u64, u64)>,
    /// Closed for commit: no more writes.
    pub(super) closed: bool,
    /// Writes under `GATHER_BELOW` bytes, gathered until `WRITE_BUFFER`.
    pub(super) buffer: Vec<u8>,
    pub(super) staging_id: String,
    /// The temp file's path as text.
    pub(super) location: String,
    /// Directories to fsync at the next Persist (see `open`).
    pub(super) dirs_to_sync: Vec<PathBuf>,
    /// Bytes written to the file since its write-back was last started.
    pub(super) not_started: u64,
}

impl FileWriter {
    /// A writer for `temp`, which is neither created nor opened yet.
    pub(super) fn named(temp: PathBuf) -> FileWriter {
        FileWriter {
            staging_id: format!("{STAGING_PREFIX}{}", temp.display()),
            location: temp.display().to_string(),
            temp,
            file: None,
            identity: None,
            closed: false,
            buffer: Vec::new(),
            dirs_to_sync: Vec::new(),
            not_started: 0,
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

    /// Writes `data` (after anything buffered) to the file, off the runtime,
    /// in one vectored write of all the slices.
    ///
    /// Every `WRITE_BEHIND` bytes it also starts the kernel's write-back of
    /// the file (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not
    /// wait for it), so that a Persist finds most bytes on their way to
    /// disk already and its `fdatasync` has little left to wait for,
    /// instead of all that was written since the last one.
    async fn write_out(&mut self, data: Rope) -> Result<()> {
        if data.is_empty() && self.buffer.is_empty() {
            return Ok(());
        }
        let file = self.file().await?;
        let mut buffered = std::mem::take(&mut self.buffer);
        let written = (buffered.len() + data.len()) as u64;
        let start_write_back = self.not_started + written >= WRITE_BEHIND;
        let (mut buffered, result) = tokio::task::spawn_blocking(move || {
            let mut f = &*file;
            let mut slices: Vec<IoSlice> = std::iter::once(&buffered[..])
                .chain(data.chunks().iter().map(|c| &c[..]))
                .filter(|s| !s.is_empty())
                .map(IoSlice::new)
                .collect();
            let result = write_all_vectored(&mut f, &mut slices);
            drop(slices);
            if result.is_ok() && start_write_back {
                start_writing_back(f);
            }
            buffered.clear();
            (buffered, result)
        })
        .await?;
        self.not_started = if start_write_back {
            0
        } else {
            self.not_started + written
        };
        // Keep the allocation for the next small writes.
        std::mem::swap(&mut self.buffer, &mut buffered);
        result.map_err(|e| io_error(e, &format!("writing {}", self.temp.display())))
    }

    /// Writes out and fsyncs, then checks that the temp file is still the
    /// one at its name: a file deleted, renamed or replaced under a live
    /// session (by a namespace call, another replica or anyone with a
    /// shell) would otherwise get an OK Persist for bytes that are gone.
    async fn sync(&mut self) -> Result<()> {
        self.write_out(Rope::default()).await?;
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

    async fn write(&mut self, data: Rope) -> Result<()> {
        // A large write reaches the kernel as the slices it came in, never
        // copied (every other 1 MiB message used to be copied into the
        // buffer: half the user-space copies of a file:// write); small
        // ones are gathered.
        if data.len() < GATHER_BELOW && self.buffer.len() + data.len() <= WRITE_BUFFER {
            for chunk in data.chunks() {
                self.buffer.extend_from_slice(chunk);
            }
            Ok(())
        } else {
            self.write_out(data).await
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

/// Starts writing the file's dirty pages to disk without waiting for them
/// (Linux `sync_file_range`); a hint only: durability is still the
/// Persist's `fdatasync`, so a failure here changes nothing.
#[cfg(target_os = "linux")]
fn start_writing_back(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; offset 0 and length 0 mean the
    // whole file; the flag only starts write-back.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writing_back(_file: &File) {}

/// Writes every byte of `slices`, in as few `writev` calls as the kernel
/// takes them (the standard library's `write_all_vectored` is unstable).
fn write_all_vectored(f: &mut &File, mut slices: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    while !slices.is_empty() {
        match f.write_vectored(slices) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
