//! Publishing and checking temp files: the commit's link-and-unlink
//! within an opened directory, and the checks that a name still holds the
//! file sluice staged.

use super::*;

pub(super) fn entry(location: Location, meta: &std::fs::Metadata) -> Entry {
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

/// A temp file and the roots its directory must lie under.
pub(super) struct Staged<'a> {
    pub(super) temp: &'a Path,
    pub(super) roots: &'a [PathBuf],
}

/// The temp file's directory, opened once and checked: with symlinks
/// resolved it lies under a root, and the target's directory, as its path
/// reads now, is that same directory. Publishing then goes through this
/// handle (`linkat`), so a symlink swapped on the way cannot send the
/// file anywhere else.
pub(super) fn publishing_dir(staged: &Staged, target: &Path, shown: &str) -> Result<File> {
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
pub(super) fn c_file_name(path: &Path) -> std::io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.file_name().expect("a file name").as_bytes())
        .map_err(|_| std::io::Error::from(ErrorKind::InvalidInput))
}

/// `linkat` within one directory: never replaces an existing name.
pub(super) fn link_within(dir: &File, from: &Path, to: &Path) -> std::io::Result<()> {
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
pub(super) fn unlink_within(dir: &File, name: &Path) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let name = c_file_name(name)?;
    // SAFETY: the name is a NUL-terminated C string that outlives the call.
    match unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

pub(super) fn commit_blocking(
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
pub(super) fn other_file_in_the_way(target: &Path, position: u64, shown: &str) -> Error {
    match fs::metadata(target) {
        Ok(meta) if meta.len() != position => Error::FailedPrecondition(format!(
            "cannot commit {shown}: the target exists with {} bytes, not the handle's {position}, and is not this file",
            meta.len()
        )),
        _ => already_exists(shown),
    }
}

pub(super) fn already_exists(shown: &str) -> Error {
    Error::AlreadyExists(format!(
        "{shown} already exists; sluice never replaces a file (commit with after_recovery=true if this is a retry of your own commit)"
    ))
}

#[cfg(unix)]
pub(super) fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
pub(super) fn same_file(_: &Path, _: &Path) -> bool {
    false
}

/// A file's device and inode.
pub(super) fn identity_of(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// The staged file is no longer at its name.
pub(super) fn gone(name: &Path) -> Error {
    Error::FailedPrecondition(format!(
        "the staged file {} was deleted, renamed or replaced while this session wrote it; its bytes are not where a handle could find them: recover from a handle taken before, or restart the file",
        name.display()
    ))
}

/// Whether `file` is still the file at `name`.
pub(super) fn still_named(file: &File, name: &Path) -> Result<()> {
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
pub(super) fn still_at(name: &Path, identity: Option<(u64, u64)>) -> Result<()> {
    match fs::metadata(name) {
        Ok(named) if Some(identity_of(&named)) == identity => Ok(()),
        Ok(_) => Err(gone(name)),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(gone(name)),
        Err(e) => Err(io_error(e, &format!("checking {}", name.display()))),
    }
}

pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(e, &format!("syncing directory {}", dir.display())))
}

pub(super) fn crc_of_prefix(file: &mut File, len: u64) -> std::io::Result<u32> {
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
pub(super) fn io_error(e: std::io::Error, doing: &str) -> Error {
    match e.kind() {
        ErrorKind::PermissionDenied => Error::PermissionDenied(format!("{doing}: {e}")),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => Error::ResourceExhausted(format!(
            "{doing}: {e}; free space, then recover from your last handle"
        )),
        _ => Error::StoreUnavailable {
            message: format!("{doing}: {e}"),
            source: Some(Box::new(e)),
        },
    }
}
