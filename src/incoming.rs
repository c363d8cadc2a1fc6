//! Accepting connections with bounds: at most `rpc.max-connections` held
//! (and never more than half the open-file limit), a connection that has
//! not sent its first bytes (the HTTP/2 preface, or a TLS ClientHello)
//! within `rpc.handshake-timeout` is closed, and an accept that fails for
//! want of file descriptors backs off instead of spinning.
//!
//! Past the bound a new connection is accepted and closed at once, so its
//! client sees a refusal rather than a hang in the listen backlog, and the
//! connections already held (health probes' included) keep being served.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Bytes a connection must send within the handshake timeout: the length
/// of the HTTP/2 client preface (a TLS ClientHello is longer).
const FIRST_BYTES: usize = 24;

/// How often a refusal or an accept failure is logged at most.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The soft open-file limit, raised to the hard one first (as servers
/// commonly do at start-up); `None` where it cannot be read.
pub fn open_file_limit() -> Option<u64> {
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
        Some(limit.rlim_cur)
    }
}

/// The connection bound in force: the configured one, at most half the
/// open-file limit (the rest is for sessions' files, sled and the stores).
pub fn connection_bound(configured: usize) -> usize {
    match open_file_limit() {
        Some(files) => configured.min((files / 2).max(1) as usize),
        None => configured,
    }
}

struct Acceptor {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    bound: usize,
    handshake: Duration,
    last_log: Option<Instant>,
    refused: u64,
}

impl Acceptor {
    fn log_due(&mut self) -> bool {
        let due = self.last_log.is_none_or(|at| at.elapsed() >= LOG_EVERY);
        if due {
            self.last_log = Some(Instant::now());
        }
        due
    }
}

/// The connections `listener` accepts, bounded as the module doc says, with
/// TCP_NODELAY set. The stream never yields an error.
pub fn bounded(
    listener: TcpListener,
    bound: usize,
    handshake: Duration,
) -> impl Stream<Item = io::Result<Guarded>> + Send + 'static {
    let acceptor = Acceptor {
        listener,
        permits: Arc::new(Semaphore::new(bound)),
        bound,
        handshake,
        last_log: None,
        refused: 0,
    };
    futures::stream::unfold(acceptor, |mut a| async move {
        loop {
            match a.listener.accept().await {
                Ok((stream, peer)) => {
                    let Ok(permit) = a.permits.clone().try_acquire_owned() else {
                        a.refused += 1;
                        if a.log_due() {
                            tracing::warn!(peer = %peer, bound = a.bound, refused = a.refused, "connection refused: the gateway holds rpc.max-connections connections");
                        }
                        drop(stream);
                        continue;
                    };
                    // Without it, Nagle held back the end of small answers
                    // until the client's delayed ACK: 40 ms per Persist.
                    let _ = stream.set_nodelay(true);
                    let guarded = Guarded {
                        inner: stream,
                        first: Some((0, Box::pin(tokio::time::sleep(a.handshake)))),
                        _permit: permit,
                    };
                    return Some((Ok(guarded), a));
                }
                Err(e) => {
                    let out_of_files = matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    );
                    if a.log_due() {
                        tracing::warn!(error = %e, "accepting a connection failed; backing off");
                    }
                    let pause = if out_of_files { 100 } else { 5 };
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            }
        }
    })
}

/// An accepted connection: its place under the bound, and until it has
/// sent its first bytes, the deadline for them.
pub struct Guarded {
    inner: TcpStream,
    /// Bytes read so far and the deadline, until `FIRST_BYTES` arrived.
    first: Option<(usize, Pin<Box<Sleep>>)>,
    _permit: OwnedSemaphorePermit,
}

impl Connected for Guarded {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Some((seen, deadline)) = &mut this.first {
            match &polled {
                Poll::Ready(Ok(())) => {
                    *seen += buf.filled().len() - before;
                    if *seen >= FIRST_BYTES {
                        this.first = None;
                    }
                }
                Poll::Ready(Err(_)) => {}
                Poll::Pending => {
                    if deadline.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the client sent no HTTP/2 preface within rpc.handshake-timeout",
                        )));
                    }
                }
            }
        }
        polled
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
