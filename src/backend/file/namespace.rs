//! The namespace side of `file://`: read, stat, list, delete, mkdirs and
//! rename, confined to the roots like every write.

use super::*;

#[async_trait]
impl Namespace for FileBackend {
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

    async fn list(
        &self,
        dir: &Location,
        page: &crate::backend::Page,
    ) -> Result<crate::backend::Listing> {
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
        Ok(crate::backend::Listing { entries: out, more })
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
}
