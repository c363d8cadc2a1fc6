//! A forward HTTP proxy that stands in for OSS's front door in the tests.
//!
//! OSS serves every bucket at its own host name (`<bucket>.<endpoint>`) and
//! refuses path-style requests (`SecondLevelDomainForbidden`). Those host
//! names do not resolve here, so sluice's OSS backend is pointed at this
//! proxy (`fs.oss.proxy.host/port`): it refuses path-style requests as OSS
//! does, counts virtual-hosted ones, and forwards those to the S3 emulator
//! with their `Host` header intact (moto takes the bucket from it). One
//! request per connection: every forwarded request is sent `Connection: close`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct OssProxy {
    pub addr: SocketAddr,
    pub virtual_hosted: Arc<AtomicUsize>,
    pub path_style_refused: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OssProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OssProxy {
    /// Proxies requests for `*.{endpoint_host}` to `upstream`.
    pub async fn start(upstream: SocketAddr, endpoint_host: &str) -> OssProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let virtual_hosted = Arc::new(AtomicUsize::new(0));
        let path_style_refused = Arc::new(AtomicUsize::new(0));
        let (vh, ps) = (virtual_hosted.clone(), path_style_refused.clone());
        let endpoint_host = endpoint_host.to_string();
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                let (vh, ps, host) = (vh.clone(), ps.clone(), endpoint_host.clone());
                tokio::spawn(async move {
                    let _ = forward(conn, upstream, &host, &vh, &ps).await;
                });
            }
        });
        OssProxy {
            addr,
            virtual_hosted,
            path_style_refused,
            task,
        }
    }
}

async fn forward(
    mut client: TcpStream,
    upstream: SocketAddr,
    endpoint_host: &str,
    virtual_hosted: &AtomicUsize,
    path_style_refused: &AtomicUsize,
) -> std::io::Result<()> {
    // Read the request head.
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 8192];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Ok(());
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.splitn(3, ' ');
    let (method, uri, version) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let host = lines
        .clone()
        .find_map(|l| {
            l.strip_prefix("host: ")
                .or_else(|| l.strip_prefix("Host: "))
        })
        .unwrap_or_default()
        .split(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let suffix = format!(".{endpoint_host}");
    if !host.ends_with(&suffix) {
        path_style_refused.fetch_add(1, Ordering::SeqCst);
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SecondLevelDomainForbidden</Code><Message>Please use virtual hosted style to access.</Message></Error>";
        let response = format!(
            "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        client.write_all(response.as_bytes()).await?;
        return Ok(());
    }
    virtual_hosted.fetch_add(1, Ordering::SeqCst);
    // Absolute form to origin form: http://host:port/path?q -> /path?q
    let origin = uri
        .strip_prefix("http://")
        .map(|rest| rest.find('/').map_or("/", |i| &rest[i..]))
        .unwrap_or(uri);
    let mut out = format!("{method} {origin} {version}\r\n");
    for line in lines.filter(|l| !l.is_empty()) {
        let name = line
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if name != "connection" && name != "proxy-connection" {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut server = TcpStream::connect(upstream).await?;
    server.write_all(out.as_bytes()).await?;
    server.write_all(&buf[head_end..]).await?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}
