//! A TCP proxy on loopback whose connections a test can cut, to put real
//! connection failures between a client and a server.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct CutProxy {
    pub addr: SocketAddr,
    live: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// Bytes each ended connection carried towards the server, in the
    /// order they ended.
    upstream_bytes: Arc<Mutex<Vec<u64>>>,
    accept: JoinHandle<()>,
}

impl CutProxy {
    /// Forwards connections on a new loopback port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let live: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let upstream_bytes: Arc<Mutex<Vec<u64>>> = Arc::default();
        let (tasks, counts) = (live.clone(), upstream_bytes.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let counts = counts.clone();
                let task = tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    if let Ok((up, _)) =
                        tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await
                    {
                        counts.lock().unwrap().push(up);
                    }
                });
                tasks.lock().unwrap().push(task);
            }
        });
        CutProxy {
            addr,
            live,
            upstream_bytes,
            accept,
        }
    }

    /// Bytes towards the server of each connection that ended cleanly.
    pub fn ended_connections(&self) -> Vec<u64> {
        self.upstream_bytes.lock().unwrap().clone()
    }

    /// Drops every open connection at once, mid-stream.
    pub fn cut(&self) -> usize {
        let tasks: Vec<_> = std::mem::take(&mut *self.live.lock().unwrap());
        let cut = tasks.iter().filter(|t| !t.is_finished()).count();
        for task in tasks {
            task.abort();
        }
        cut
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// What a [`FaultProxy`] did to the connections it accepted.
#[derive(Debug, Default)]
pub struct FaultCounts {
    pub connections: std::sync::atomic::AtomicUsize,
    /// Closed after reading the request, before any answer.
    pub resets: std::sync::atomic::AtomicUsize,
    /// The answer cut after a few bytes (the request did reach the store).
    pub truncated: std::sync::atomic::AtomicUsize,
    /// The answer held back for the stall time.
    pub stalls: std::sync::atomic::AtomicUsize,
}

/// A TCP proxy that injects faults into a configurable share of its
/// connections: resets, truncated answers and stalls. Healthy connections
/// are closed once idle, so that connection pooling does not let a client
/// dodge the dice.
pub struct FaultProxy {
    pub addr: SocketAddr,
    pub counts: Arc<FaultCounts>,
    accept: JoinHandle<()>,
}

#[derive(Clone, Copy)]
enum Fault {
    None,
    Reset,
    Truncate(usize),
    Stall,
}

impl FaultProxy {
    /// `percent` of the connections get a fault, in equal shares.
    pub async fn start(
        upstream: SocketAddr,
        percent: u64,
        stall: std::time::Duration,
        seed: u64,
    ) -> FaultProxy {
        use std::sync::atomic::Ordering::Relaxed;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts: Arc<FaultCounts> = Arc::default();
        let stats = counts.clone();
        let accept = tokio::spawn(async move {
            let mut rng = seed | 1;
            while let Ok((inbound, _)) = listener.accept().await {
                // xorshift64: deterministic dice for a given seed.
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let roll = rng % 100;
                let fault = if roll >= percent {
                    Fault::None
                } else {
                    match roll % 3 {
                        0 => Fault::Reset,
                        1 => Fault::Truncate(1 + (rng >> 8) as usize % 300),
                        _ => Fault::Stall,
                    }
                };
                stats.connections.fetch_add(1, Relaxed);
                let stats = stats.clone();
                tokio::spawn(async move {
                    let _ = relay(inbound, upstream, fault, stall, &stats).await;
                });
            }
        });
        FaultProxy {
            addr,
            counts,
            accept,
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Carries one connection, doing `fault` to it.
async fn relay(
    mut inbound: TcpStream,
    upstream: SocketAddr,
    fault: Fault,
    stall: std::time::Duration,
    stats: &FaultCounts,
) -> std::io::Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 << 10];
    if let Fault::Reset = fault {
        // Take (part of) the request, then hang up without an answer.
        let _ = tokio::time::timeout(Duration::from_secs(2), inbound.read(&mut buf)).await;
        stats.resets.fetch_add(1, Relaxed);
        return Ok(());
    }
    let outbound = TcpStream::connect(upstream).await?;
    let (mut in_read, mut in_write) = inbound.into_split();
    let (mut out_read, mut out_write) = outbound.into_split();
    let last = Arc::new(Mutex::new(Instant::now()));
    let answered = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let touch = |last: &Arc<Mutex<Instant>>| *last.lock().unwrap() = Instant::now();
    let up = {
        let last = last.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = in_read.read(&mut buf).await?;
                if n == 0 {
                    return out_write.shutdown().await;
                }
                touch(&last);
                out_write.write_all(&buf[..n]).await?;
            }
        })
    };
    let down = {
        let (last, answered) = (last.clone(), answered.clone());
        let mut left = match fault {
            Fault::Truncate(n) => Some(n),
            _ => None,
        };
        let mut stalled = !matches!(fault, Fault::Stall);
        async move {
            loop {
                let n = out_read.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<_, std::io::Error>(());
                }
                if !stalled {
                    stalled = true;
                    stats.stalls.fetch_add(1, Relaxed);
                    tokio::time::sleep(stall).await;
                }
                if let Some(left) = left.as_mut() {
                    let n = n.min(*left);
                    in_write.write_all(&buf[..n]).await?;
                    *left -= n;
                    if *left == 0 {
                        stats.truncated.fetch_add(1, Relaxed);
                        return Ok(());
                    }
                    continue;
                }
                in_write.write_all(&buf[..n]).await?;
                answered.store(true, std::sync::atomic::Ordering::Release);
                touch(&last);
            }
        }
    };
    // Healthy connections end once idle after an answer, as a server's
    // keep-alive timeout would end them.
    let idle = async {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let quiet = last.lock().unwrap().elapsed() > Duration::from_millis(150);
            if quiet && answered.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
        }
    };
    tokio::select! {
        _ = down => {}
        _ = idle => {}
    }
    up.abort();
    Ok(())
}

/// A proxy that damages `Write` data on its way to the server: it follows
/// the HTTP/2 frames of each connection towards the server and flips one
/// byte in the middle of every `every`-th large DATA frame (at least 1 KiB,
/// so the byte is message data rather than a field's tag).
pub struct CorruptProxy {
    pub addr: SocketAddr,
    /// Bytes flipped so far.
    pub flipped: Arc<std::sync::atomic::AtomicUsize>,
    accept: JoinHandle<()>,
}

impl CorruptProxy {
    pub async fn start(upstream: SocketAddr, every: usize) -> CorruptProxy {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let flipped = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(AtomicUsize::new(0));
        let counts = flipped.clone();
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (counts, seen) = (counts.clone(), seen.clone());
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = inbound.into_split();
                    let (mut server_read, mut server_write) = outbound.into_split();
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                    });
                    // The client's preface, then frames: a 9-byte header
                    // (length, type, flags, stream) and the payload.
                    let mut preface = [0u8; 24];
                    if client_read.read_exact(&mut preface).await.is_err()
                        || server_write.write_all(&preface).await.is_err()
                    {
                        return;
                    }
                    loop {
                        let mut header = [0u8; 9];
                        if client_read.read_exact(&mut header).await.is_err() {
                            return;
                        }
                        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
                        let mut payload = vec![0u8; len];
                        if client_read.read_exact(&mut payload).await.is_err() {
                            return;
                        }
                        let data = header[3] == 0;
                        if data
                            && len >= 1024
                            && (seen.fetch_add(1, Ordering::Relaxed) + 1) % every == 0
                        {
                            payload[len / 2] ^= 0x40;
                            counts.fetch_add(1, Ordering::Relaxed);
                        }
                        if server_write.write_all(&header).await.is_err()
                            || server_write.write_all(&payload).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        CorruptProxy {
            addr,
            flipped,
            accept,
        }
    }
}

impl Drop for CorruptProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
