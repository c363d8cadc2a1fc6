//! A file being written ([`RecoverableStream`]) and published
//! ([`Committer`]).

use super::*;

/// A `Write` call in flight.
pub(crate) struct Call {
    pub(crate) tx: mpsc::Sender<WriteRequest>,
    pub(crate) done: JoinHandle<std::result::Result<WriteResponse, Status>>,
    pub(crate) first: bool,
}

/// A file being written (Flink's `RecoverableFsDataOutputStream`).
pub struct RecoverableStream {
    pub(crate) client: Client,
    pub(crate) session_id: String,
    pub(crate) path: String,
    /// CRC32C of every byte written so far, sent or not.
    pub(crate) crc32c: u32,
    /// Position the server acknowledged.
    pub(crate) acked: u64,
    /// Sent since `acked`, in order; kept for a retry.
    pub(crate) sent: VecDeque<Bytes>,
    pub(crate) sent_len: u64,
    /// Written by the caller, not sent yet.
    pub(crate) pending: BytesMut,
    pub(crate) call: Option<Call>,
}

impl RecoverableStream {
    /// The target, as the server resolved it.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Bytes written so far, sent or not.
    pub fn position(&self) -> u64 {
        self.acked + self.sent_len + self.pending.len() as u64
    }

    /// CRC32C of the bytes written so far (all of them, sent or not).
    pub fn crc32c(&self) -> u32 {
        self.crc32c
    }

    /// Appends `data`; it is sent once a message's worth has gathered.
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        if self.client.options.checksums {
            self.crc32c = crc32c::crc32c_append(self.crc32c, data);
        }
        self.buffer(data).await
    }

    async fn buffer(&mut self, data: &[u8]) -> Result<()> {
        let chunk = self.client.options.chunk_size;
        let mut data = data;
        while !data.is_empty() {
            let take = (chunk - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == chunk {
                let full = self.pending.split().freeze();
                self.send(full).await?;
            }
        }
        Ok(())
    }

    /// Appends `data` without copying it when nothing is buffered.
    pub async fn write_bytes(&mut self, mut data: Bytes) -> Result<()> {
        if self.client.options.checksums {
            self.crc32c = crc32c::crc32c_append(self.crc32c, &data);
        }
        if !self.pending.is_empty() {
            let fill = (self.client.options.chunk_size - self.pending.len()).min(data.len());
            self.buffer(&data.split_to(fill)).await?;
        }
        let chunk = self.client.options.chunk_size;
        while data.len() >= chunk {
            self.send(data.split_to(chunk)).await?;
        }
        self.buffer(&data).await
    }

    /// Sends everything written and waits until the server has it.
    pub async fn flush(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            let rest = self.pending.split().freeze();
            self.send(rest).await?;
        }
        self.finish_call().await
    }

    /// Makes every byte written so far durable; returns the handle to keep
    /// in the checkpoint.
    pub async fn persist(&mut self) -> Result<ResumeHandle> {
        self.flush().await?;
        let session_id = self.session_id.clone();
        let persisted = self
            .client
            .retrying(|mut grpc, _| {
                let session_id = session_id.clone();
                async move { grpc.persist(PersistRequest { session_id }).await }
            })
            .await?;
        self.check_position(persisted.position)?;
        self.check_crc32c(persisted.crc32c, "Persist")?;
        Ok(ResumeHandle(persisted.handle))
    }

    /// Makes everything durable and closes the stream; the committer
    /// publishes the file.
    pub async fn close_for_commit(mut self) -> Result<Committer> {
        self.flush().await?;
        let session_id = self.session_id.clone();
        let closed = self
            .client
            .retrying(|mut grpc, _| {
                let session_id = session_id.clone();
                async move {
                    grpc.close_for_commit(CloseForCommitRequest { session_id })
                        .await
                }
            })
            .await?;
        self.check_position(closed.size)?;
        self.check_crc32c(closed.crc32c, "CloseForCommit")?;
        let mut committer = self.client.committer(CommitHandle(closed.handle));
        if self.client.options.checksums {
            committer.crc32c = Some(closed.crc32c);
        }
        Ok(committer)
    }

    /// Disposes of the stream with no durability promise (Flink's
    /// `close()`).
    pub async fn abort(mut self) -> Result<()> {
        if let Some(call) = self.call.take() {
            call.done.abort();
        }
        let session_id = self.session_id.clone();
        self.client
            .retrying(|mut grpc, _| {
                let session_id = session_id.clone();
                async move { grpc.abort(AbortRequest { session_id }).await }
            })
            .await?;
        Ok(())
    }

    fn check_position(&self, server: u64) -> Result<()> {
        if server == self.acked {
            return Ok(());
        }
        Err(Status::internal(format!(
            "session {}: the server is at byte {server}, this client at {}",
            self.session_id, self.acked
        ))
        .into())
    }

    /// The server's CRC32C of the file must be the bytes this client wrote.
    fn check_crc32c(&self, server: u32, call: &str) -> Result<()> {
        if !self.client.options.checksums || server == self.crc32c {
            return Ok(());
        }
        Err(Status::data_loss(format!(
            "session {}: {call} answered CRC32C {server:#010x} for the file's {} bytes, but the bytes this client wrote have {:#010x}",
            self.session_id, self.acked, self.crc32c
        ))
        .into())
    }

    fn message(&self, session_id: String, offset: u64, data: Bytes) -> WriteRequest {
        WriteRequest {
            session_id,
            offset,
            crc32c: self.client.options.checksums.then(|| crc32c::crc32c(&data)),
            data,
        }
    }

    fn start_call(&mut self) -> &mut Call {
        let (tx, rx) = mpsc::channel(4);
        let done = self.spawn_write(rx);
        self.call.insert(Call {
            tx,
            done,
            first: true,
        })
    }

    /// A `Write` call fed by `rx`, running on its own task.
    fn spawn_write(
        &self,
        rx: mpsc::Receiver<WriteRequest>,
    ) -> JoinHandle<std::result::Result<WriteResponse, Status>> {
        let mut grpc = self.client.data.clone();
        tokio::spawn(async move {
            grpc.write(ReceiverStream::new(rx))
                .await
                .map(|r| r.into_inner())
        })
    }

    /// Streams one chunk on the current call (starting one if needed).
    async fn send(&mut self, data: Bytes) -> Result<()> {
        let offset = self.acked + self.sent_len;
        self.sent_len += data.len() as u64;
        self.sent.push_back(data.clone());
        let first = self.call.as_ref().is_none_or(|call| call.first);
        let session_id = if first {
            self.session_id.clone()
        } else {
            String::new()
        };
        let message = self.message(session_id, offset, data);
        let call = match self.call {
            Some(ref mut call) => call,
            None => self.start_call(),
        };
        call.first = false;
        if call.tx.send(message).await.is_err() {
            // The call ended early; its outcome says what happened, and a
            // retry sends this chunk along with the rest.
            return self.finish_call().await;
        }
        if self.sent_len >= self.client.options.max_unacked as u64 {
            self.finish_call().await?;
        }
        Ok(())
    }

    /// Ends the call in flight and settles what it acknowledged; sends the
    /// unacknowledged bytes again while `UNAVAILABLE` allows a retry.
    async fn finish_call(&mut self) -> Result<()> {
        let retry = self.client.options.retry.clone();
        let mut attempt = 0;
        loop {
            let Some(call) = self.call.take() else {
                if self.sent.is_empty() {
                    return Ok(());
                }
                self.resend();
                continue;
            };
            drop(call.tx);
            let outcome = match call.done.await {
                Ok(outcome) => outcome,
                Err(join) => Err(Status::internal(format!("write task failed: {join}"))),
            };
            match outcome {
                Ok(response) => {
                    self.settle(response.position)?;
                    if self.sent.is_empty() {
                        return Ok(());
                    }
                }
                // DATA_LOSS: a message was damaged on the way and nothing
                // of it applied; the unacknowledged bytes go again.
                Err(status)
                    if (retryable(&status) || status.code() == Code::DataLoss)
                        && attempt + 1 < retry.attempts =>
                {
                    tokio::time::sleep(retry.backoff(attempt)).await;
                    attempt += 1;
                }
                Err(status) => return Err(status.into()),
            }
            self.resend();
        }
    }

    /// Drops what the server acknowledged up to `position`.
    fn settle(&mut self, position: u64) -> Result<()> {
        let end = self.acked + self.sent_len;
        if position < self.acked || position > end {
            return Err(Status::internal(format!(
                "session {}: the server acknowledged byte {position}, this client sent {}..{end}",
                self.session_id, self.acked
            ))
            .into());
        }
        let mut drop_bytes = position - self.acked;
        while drop_bytes > 0 {
            let front = self.sent.front_mut().expect("sent covers the range");
            if front.len() as u64 <= drop_bytes {
                drop_bytes -= front.len() as u64;
                self.sent.pop_front();
            } else {
                let _ = front.split_to(drop_bytes as usize);
                drop_bytes = 0;
            }
        }
        self.sent_len = end - position;
        self.acked = position;
        Ok(())
    }

    /// Starts a new call carrying every unacknowledged chunk. The channel
    /// holds them all, so nothing here waits.
    fn resend(&mut self) {
        let (tx, rx) = mpsc::channel(self.sent.len().max(1));
        let mut offset = self.acked;
        for (i, data) in self.sent.iter().enumerate() {
            let session_id = if i == 0 {
                self.session_id.clone()
            } else {
                String::new()
            };
            let message = self.message(session_id, offset, data.clone());
            offset += data.len() as u64;
            tx.try_send(message)
                .expect("the channel has room for every chunk");
        }
        let done = self.spawn_write(rx);
        self.call = Some(Call {
            tx,
            done,
            first: false,
        });
    }
}

/// Publishes a file (Flink's `Committer`).
pub struct Committer {
    pub(crate) client: Client,
    pub(crate) handle: CommitHandle,
    /// The file's CRC32C as CloseForCommit answered it, which Commit's
    /// answer must repeat.
    pub(crate) crc32c: Option<u32>,
}

/// Where a commit landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub path: String,
    pub size: u64,
    /// CRC32C of the published file.
    pub crc32c: u32,
}

impl Committer {
    /// The handle to keep in the checkpoint until the commit is done.
    pub fn handle(&self) -> &CommitHandle {
        &self.handle
    }

    /// Publishes the file; `ALREADY_EXISTS` when the target exists.
    pub async fn commit(&self) -> Result<Committed> {
        self.commit_request(false).await
    }

    /// Publishes the file from a restored checkpoint: a commit that already
    /// happened is recognised and succeeds.
    pub async fn commit_after_recovery(&self) -> Result<Committed> {
        self.commit_request(true).await
    }

    async fn commit_request(&self, after_recovery: bool) -> Result<Committed> {
        let committed = self
            .client
            .retrying(|mut grpc, attempt| {
                let handle = self.handle.0.clone();
                async move {
                    grpc.commit(CommitRequest {
                        handle,
                        // A retry may follow a commit that landed.
                        after_recovery: after_recovery || attempt > 0,
                    })
                    .await
                }
            })
            .await?;
        if let Some(crc) = self.crc32c
            && crc != committed.crc32c
        {
            return Err(Status::data_loss(format!(
                "Commit of {} answered CRC32C {:#010x}, CloseForCommit {crc:#010x}",
                committed.path, committed.crc32c
            ))
            .into());
        }
        Ok(Committed {
            path: committed.path,
            size: committed.size,
            crc32c: committed.crc32c,
        })
    }
}
