//! The namespace side of the object stores: read, stat, list, delete,
//! mkdirs and rename over keys and prefixes, staging objects hidden.

use super::*;

#[async_trait]
impl Namespace for ObjectBackend {
    async fn read(
        &self,
        target: &Location,
        offset: u64,
        length: Option<u64>,
    ) -> Result<ByteStream> {
        use futures::StreamExt;
        let stores = self.resolver.resolve(&target.authority)?;
        let path = object_path(target)?;
        let size = existing_size(&stores, &path, target)
            .await?
            .ok_or_else(|| not_found(target))?;
        let end = read_range(target, size, offset, length)?;
        if end == offset {
            return Ok(futures::stream::empty().boxed());
        }
        let options = object_store::GetOptions::default().with_range(Some(offset..end));
        let shown = target.to_string();
        let result = stores
            .objects
            .get_opts(&path, options)
            .await
            .map_err(|e| store_error(e, &format!("reading {shown}")))?;
        Ok(result
            .into_stream()
            .map(move |chunk| chunk.map_err(|e| store_error(e, &format!("reading {shown}"))))
            .boxed())
    }

    async fn stat(&self, path: &Location) -> Result<Option<Entry>> {
        let stores = self.resolver.resolve(&path.authority)?;
        if !path.path.is_empty()
            && let Ok(key) = object_path(path)
        {
            match stores.objects.head(&key).await {
                Ok(meta) => return Ok(Some(object_entry(path, &meta))),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_error(e, &format!("checking {path}"))),
            }
        }
        // A directory is a prefix that something lies under.
        let listed = self.list_prefix(&stores, path).await?;
        let is_dir = path.path.is_empty()
            || !listed.objects.is_empty()
            || !listed.common_prefixes.is_empty();
        Ok(is_dir.then(|| Entry {
            location: path.clone(),
            size: 0,
            is_dir: true,
            modified_ms: 0,
        }))
    }

    async fn list(
        &self,
        dir: &Location,
        page: &crate::backend::Page,
    ) -> Result<crate::backend::Listing> {
        let stores = self.resolver.resolve(&dir.authority)?;
        let listed = self.list_prefix(&stores, dir).await?;
        if listed.objects.is_empty() && listed.common_prefixes.is_empty() && !dir.path.is_empty() {
            // An object of that name is a file, not a directory.
            return match self.stat(dir).await? {
                Some(e) if !e.is_dir => Err(Error::FailedPrecondition(format!(
                    "{dir} is a file, not a directory"
                ))),
                _ => Err(not_found(dir)),
            };
        }
        let out: Vec<Entry> = listed
            .common_prefixes
            .iter()
            .map(|p| Entry {
                location: dir.with_path(p.to_string()),
                size: 0,
                is_dir: true,
                modified_ms: 0,
            })
            .chain(
                listed
                    .objects
                    .iter()
                    .map(|m| object_entry(&dir.with_path(m.location.to_string()), m)),
            )
            .filter(|e| !is_staging_name(e.location.file_name()))
            .collect();
        Ok(page.of(out))
    }

    async fn delete(&self, path: &Location, recursive: bool) -> Result<bool> {
        let stores = self.resolver.resolve(&path.authority)?;
        match self.stat(path).await? {
            None => Ok(false),
            Some(entry) if !entry.is_dir => {
                match stores.objects.delete(&object_path(path)?).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
                    Err(e) => Err(store_error(e, &format!("deleting {path}"))),
                }
            }
            Some(_) if !recursive => Err(Error::FailedPrecondition(format!(
                "{path} is a directory that is not empty; pass recursive=true to delete it with its contents"
            ))),
            Some(_) => {
                let prefix = (!path.path.is_empty()).then(|| Path::from(path.path.as_str()));
                let keys: Vec<Path> = stores
                    .objects
                    .list(prefix.as_ref())
                    .map_ok(|m| m.location)
                    .try_collect()
                    .await
                    .map_err(|e| store_error(e, &format!("listing {path}")))?;
                for key in keys {
                    match stores.objects.delete(&key).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(store_error(e, &format!("deleting under {path}"))),
                    }
                }
                Ok(true)
            }
        }
    }

    async fn mkdirs(&self, dir: &Location) -> Result<()> {
        // Object stores have no directories: a prefix exists once an object
        // lies under it. Refuse only what would shadow a file.
        match self.stat(dir).await? {
            Some(e) if !e.is_dir => {
                Err(Error::AlreadyExists(format!("{dir} exists and is a file")))
            }
            _ => Ok(()),
        }
    }

    async fn rename(&self, from: &Location, to: &Location) -> Result<()> {
        if from.authority != to.authority {
            return Err(Error::InvalidArgument(format!(
                "cannot rename {from} to {to}: object stores rename within one bucket or container"
            )));
        }
        let stores = self.resolver.resolve(&from.authority)?;
        let (src, dst) = (object_path(from)?, object_path(to)?);
        if existing_size(&stores, &src, from).await?.is_none() {
            return Err(not_found(from));
        }
        if existing_size(&stores, &dst, to).await?.is_some() {
            return Err(Error::AlreadyExists(format!(
                "{to} already exists; rename never replaces"
            )));
        }
        // Checked, then copied: object stores offer no atomic no-replace
        // rename, so a writer racing for the same target can still win.
        stores
            .objects
            .copy(&src, &dst)
            .await
            .map_err(|e| store_error(e, &format!("copying {from} to {to}")))?;
        stores
            .objects
            .delete(&src)
            .await
            .map_err(|e| store_error(e, &format!("deleting {from} after copying it")))
    }
}
