//! `sluice cp`, `cat`, `ls` and `rm`: the gateway for people, through a
//! running gateway (the Rust client).
//!
//! `cp` of a local file to a gateway URI persists as it goes and keeps a
//! resume file beside the source (`.<name>.sluice-cp`) with the last resume
//! handle: after Ctrl-C, a kill or a lost connection, the same command
//! recovers from it and goes on; once the commit handle is in it, the same
//! command only finishes the commit. The file is removed after the commit.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use sluice_client::{Client, ClientError, ClientOptions, CommitHandle, ResumeHandle};
use sluice_proto::{DeleteRequest, ListRequest};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Where the gateway is and how to reach it (flags or `SLUICE_*`).
#[derive(clap::Args, Clone, Debug)]
pub struct Connection {
    /// The gateway's gRPC address.
    #[arg(long, env = "SLUICE_ADDR", default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// Bearer token, for a gateway with principals.
    #[arg(long, env = "SLUICE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of the CA that signed the gateway's certificate (TLS; the
    /// address then starts with https://).
    #[arg(long, env = "SLUICE_CA")]
    pub ca: Option<PathBuf>,
    /// PEM certificate and key of this client, for mutual TLS.
    #[arg(long, env = "SLUICE_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    #[arg(long, env = "SLUICE_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
}

type CliResult<T> = Result<T, String>;

impl Connection {
    async fn connect(&self) -> CliResult<Client> {
        let mut options = ClientOptions {
            bearer_token: self.token.clone(),
            ..ClientOptions::default()
        };
        if let Some(ca) = &self.ca {
            let read = |p: &Path| {
                std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
            };
            let mut tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?));
            if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
                tls = tls.identity(tonic::transport::Identity::from_pem(
                    read(cert)?,
                    read(key)?,
                ));
            }
            options.tls = Some(tls);
        }
        Client::connect_with(self.addr.clone(), options)
            .await
            .map_err(|e| {
                format!(
                    "cannot reach the gateway at {}: {e}; is `sluice serve` running there (--addr or SLUICE_ADDR)?",
                    self.addr
                )
            })
    }
}

fn failed(doing: &str) -> impl Fn(ClientError) -> String + '_ {
    move |e| format!("{doing}: {e}")
}

/// A local path, or a URI the gateway serves (`scheme://...`).
fn is_uri(s: &str) -> bool {
    s.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+')
    })
}

/// `sluice cp SRC DST`: a local file to a URI (resumable), or a URI to a
/// local file.
pub async fn cp(
    conn: &Connection,
    source: &str,
    dest: &str,
    persist_every: u64,
    progress: bool,
) -> CliResult<()> {
    match (is_uri(source), is_uri(dest)) {
        (false, true) => upload(conn, Path::new(source), dest, persist_every, progress).await,
        (true, false) => download(conn, source, Path::new(dest), progress).await,
        (false, false) => Err("one side of cp must be a gateway URI (scheme://...); for two local files use cp(1)".into()),
        (true, true) => Err("copying between two URIs is not supported yet: cp to a local file, then cp that file up".into()),
    }
}

/// What `cp` keeps beside its source between runs.
#[derive(Debug, Default, PartialEq)]
struct ResumeFile {
    target: String,
    source_size: u64,
    source_mtime_ns: u128,
    position: u64,
    resume: Vec<u8>,
    /// Set once CloseForCommit answered: only the commit is left.
    commit: Vec<u8>,
}

const RESUME_HEADER: &str = "sluice-cp-resume 1";

impl ResumeFile {
    fn path_for(source: &Path) -> PathBuf {
        let name = source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        source.with_file_name(format!(".{name}.sluice-cp"))
    }

    fn encode(&self) -> String {
        format!(
            "{RESUME_HEADER}\ntarget {}\nsource-size {}\nsource-mtime-ns {}\nposition {}\nresume {}\ncommit {}\n",
            self.target,
            self.source_size,
            self.source_mtime_ns,
            self.position,
            hex::encode(&self.resume),
            hex::encode(&self.commit)
        )
    }

    fn decode(text: &str) -> Option<ResumeFile> {
        let mut lines = text.lines();
        if lines.next()? != RESUME_HEADER {
            return None;
        }
        let mut file = ResumeFile::default();
        for line in lines {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "target" => file.target = value.to_string(),
                "source-size" => file.source_size = value.parse().ok()?,
                "source-mtime-ns" => file.source_mtime_ns = value.parse().ok()?,
                "position" => file.position = value.parse().ok()?,
                "resume" => file.resume = hex::decode(value).ok()?,
                "commit" => file.commit = hex::decode(value).ok()?,
                _ => {}
            }
        }
        Some(file)
    }

    /// Written whole or not at all (a temp file renamed over it, synced).
    fn save(&self, path: &Path) -> CliResult<()> {
        let temp = path.with_extension("sluice-cp.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&temp)?;
            f.write_all(self.encode().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&temp, path)
        };
        write().map_err(|e| format!("cannot write the resume file {}: {e}", path.display()))
    }
}

fn source_identity(meta: &std::fs::Metadata) -> (u64, u128) {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    (meta.len(), mtime)
}

fn bar(progress: bool, len: u64, position: u64, what: &str) -> indicatif::ProgressBar {
    if !progress {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len).with_position(position);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

async fn upload(
    conn: &Connection,
    source: &Path,
    target: &str,
    persist_every: u64,
    progress: bool,
) -> CliResult<()> {
    let meta =
        std::fs::metadata(source).map_err(|e| format!("cannot read {}: {e}", source.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", source.display()));
    }
    let (size, mtime) = source_identity(&meta);
    let resume_path = ResumeFile::path_for(source);
    let client = conn.connect().await?;
    let earlier = match std::fs::read_to_string(&resume_path) {
        Ok(text) => Some(ResumeFile::decode(&text).ok_or_else(|| {
            format!(
                "{} is not a resume file of this sluice; delete it to copy from the start",
                resume_path.display()
            )
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot read {}: {e}", resume_path.display())),
    };
    let mut state = match earlier {
        Some(earlier) => {
            if earlier.target != target {
                return Err(format!(
                    "{} belongs to an interrupted copy to {}, not {target}: finish that one, or delete the file",
                    resume_path.display(),
                    earlier.target
                ));
            }
            if (earlier.source_size, earlier.source_mtime_ns) != (size, mtime) {
                return Err(format!(
                    "{} changed since the interrupted copy; delete {} to copy it from the start",
                    source.display(),
                    resume_path.display()
                ));
            }
            earlier
        }
        None => ResumeFile {
            target: target.to_string(),
            source_size: size,
            source_mtime_ns: mtime,
            ..ResumeFile::default()
        },
    };
    if !state.commit.is_empty() {
        eprintln!("sluice: the copy to {target} was closed; committing it");
        return finish(&client, &state, &resume_path, true).await;
    }
    let mut stream = if state.resume.is_empty() {
        let mut stream = client.open(target).await.map_err(failed("Open"))?;
        // A handle at 0 at once: an interrupt before the first persist
        // resumes this very staging rather than leaving it behind.
        state.resume = stream.persist().await.map_err(failed("Persist"))?.0;
        state.position = 0;
        state.save(&resume_path)?;
        stream
    } else {
        let stream = client
            .recover(&ResumeHandle(state.resume.clone()))
            .await
            .map_err(failed("Recover from the resume file"))?;
        eprintln!(
            "sluice: resuming the copy to {target} at byte {} of {size}",
            stream.position()
        );
        stream
    };
    let mut file = tokio::fs::File::open(source)
        .await
        .map_err(|e| format!("cannot open {}: {e}", source.display()))?;
    file.seek(std::io::SeekFrom::Start(stream.position()))
        .await
        .map_err(|e| format!("cannot seek in {}: {e}", source.display()))?;
    let bar = bar(progress, size, stream.position(), "uploading");
    let mut buf = vec![0u8; 1 << 20];
    let mut since_persist = 0u64;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let n = tokio::select! {
            read = file.read(&mut buf) => read.map_err(|e| format!("cannot read {}: {e}", source.display()))?,
            _ = &mut interrupted => {
                // Keep what was sent: one persist, then stop.
                bar.abandon();
                state.resume = stream.persist().await.map_err(failed("Persist"))?.0;
                state.position = stream.position();
                state.save(&resume_path)?;
                return Err(format!(
                    "interrupted at byte {} of {size}; run the same command again to go on",
                    state.position
                ));
            }
        };
        if n == 0 {
            break;
        }
        stream.write(&buf[..n]).await.map_err(failed("Write"))?;
        since_persist += n as u64;
        bar.set_position(stream.position());
        if since_persist >= persist_every {
            state.resume = stream.persist().await.map_err(failed("Persist"))?.0;
            state.position = stream.position();
            state.save(&resume_path)?;
            since_persist = 0;
        }
    }
    if stream.position() != size {
        return Err(format!(
            "{} holds {} bytes, not the {size} it had at the start: was it written meanwhile?",
            source.display(),
            stream.position()
        ));
    }
    let committer = stream
        .close_for_commit()
        .await
        .map_err(failed("CloseForCommit"))?;
    state.commit = committer.handle().0.clone();
    state.position = size;
    state.save(&resume_path)?;
    bar.finish_and_clear();
    finish(&client, &state, &resume_path, false).await
}

/// Commits the copy in `state` (once more after an interrupt: the commit
/// may have happened before it) and removes the resume file.
async fn finish(
    client: &Client,
    state: &ResumeFile,
    resume_path: &Path,
    after_interrupt: bool,
) -> CliResult<()> {
    let committer = client.committer(CommitHandle(state.commit.clone()));
    let committed = if after_interrupt {
        committer.commit_after_recovery().await
    } else {
        committer.commit().await
    }
    .map_err(failed("Commit"))?;
    let _ = std::fs::remove_file(resume_path);
    eprintln!(
        "sluice: copied {} bytes to {}",
        committed.size, committed.path
    );
    Ok(())
}

async fn download(conn: &Connection, source: &str, dest: &Path, progress: bool) -> CliResult<()> {
    let client = conn.connect().await?;
    let mut grpc = client.grpc();
    let size = grpc
        .stat(sluice_proto::StatRequest {
            path: source.to_string(),
        })
        .await
        .map_err(|s| format!("Stat {source}: {}", s.message()))?
        .into_inner()
        .status
        .map_or(0, |s| s.size);
    let temp = dest.with_file_name(format!(
        ".{}.sluice-cp.part",
        dest.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let mut out = std::fs::File::create(&temp)
        .map_err(|e| format!("cannot create {}: {e}", temp.display()))?;
    let bar = bar(progress, size, 0, "downloading");
    let mut stream = grpc
        .read(sluice_proto::ReadRequest {
            path: source.to_string(),
            offset: 0,
            length: 0,
        })
        .await
        .map_err(|s| format!("Read {source}: {}", s.message()))?
        .into_inner();
    let mut written = 0u64;
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|s| format!("Read {source}: {}", s.message()))?
    {
        out.write_all(&chunk.data)
            .map_err(|e| format!("cannot write {}: {e}", temp.display()))?;
        written += chunk.data.len() as u64;
        bar.set_position(written);
    }
    out.sync_all()
        .map_err(|e| format!("cannot sync {}: {e}", temp.display()))?;
    std::fs::rename(&temp, dest)
        .map_err(|e| format!("cannot rename to {}: {e}", dest.display()))?;
    bar.finish_and_clear();
    eprintln!("sluice: copied {written} bytes to {}", dest.display());
    Ok(())
}

/// `sluice cat URI`: the file's bytes on stdout.
pub async fn cat(conn: &Connection, path: &str) -> CliResult<()> {
    let client = conn.connect().await?;
    let mut stream = client
        .grpc()
        .read(sluice_proto::ReadRequest {
            path: path.to_string(),
            offset: 0,
            length: 0,
        })
        .await
        .map_err(|s| format!("Read {path}: {}", s.message()))?
        .into_inner();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|s| format!("Read {path}: {}", s.message()))?
    {
        if let Err(e) = out.write_all(&chunk.data) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(format!("cannot write to stdout: {e}"));
        }
    }
    out.flush()
        .map_err(|e| format!("cannot write to stdout: {e}"))
}

/// `sluice ls URI`: one line per entry (size, modified time, name; a
/// directory ends in `/`), every page.
pub async fn ls(conn: &Connection, path: &str) -> CliResult<()> {
    let client = conn.connect().await?;
    let mut grpc = client.grpc();
    let mut token = String::new();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    loop {
        let page = grpc
            .list(ListRequest {
                path: path.to_string(),
                page_size: 0,
                page_token: token.clone(),
            })
            .await
            .map_err(|s| format!("List {path}: {}", s.message()))?
            .into_inner();
        for e in &page.entries {
            let modified = if e.modified_ms == 0 {
                "-".to_string()
            } else {
                format!("{}", e.modified_ms / 1000)
            };
            let slash = if e.is_dir { "/" } else { "" };
            let line = format!("{:>14} {:>11} {}{slash}\n", e.size, modified, e.name);
            if out.write_all(line.as_bytes()).is_err() {
                return Ok(());
            }
        }
        if page.next_page_token.is_empty() {
            return Ok(());
        }
        token = page.next_page_token;
    }
}

/// `sluice rm [-r] URI`.
pub async fn rm(conn: &Connection, path: &str, recursive: bool) -> CliResult<()> {
    let client = conn.connect().await?;
    let deleted = client
        .grpc()
        .delete(DeleteRequest {
            path: path.to_string(),
            recursive,
        })
        .await
        .map_err(|s| format!("Delete {path}: {}", s.message()))?
        .into_inner()
        .deleted;
    if !deleted {
        return Err(format!("{path} does not exist"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_files_round_trip_and_refuse_strangers() {
        let file = ResumeFile {
            target: "s3://b/big.bin".into(),
            source_size: 10,
            source_mtime_ns: 1_700_000_000_123_456_789,
            position: 4,
            resume: vec![1, 2, 255],
            commit: Vec::new(),
        };
        assert_eq!(ResumeFile::decode(&file.encode()), Some(file));
        assert_eq!(ResumeFile::decode("something else\n"), None);
        assert_eq!(
            ResumeFile::path_for(Path::new("/tmp/x/big.bin")),
            Path::new("/tmp/x/.big.bin.sluice-cp")
        );
    }

    #[test]
    fn uris_and_local_paths() {
        assert!(is_uri("s3://b/k"));
        assert!(is_uri("file:///tmp/x"));
        assert!(!is_uri("./big.bin"));
        assert!(!is_uri("/tmp/a://b"));
    }
}
