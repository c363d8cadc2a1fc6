// sluice-client: write files through sluice exactly once, the way Apache
// Flink's RecoverableWriter does, from Node.
//
//   const writer = new Writer('127.0.0.1:50051');
//   const stream = await writer.open('s3://bucket/out/part-0');
//   stream.write('record\n');                 // a stream.Writable
//   const handle = await stream.persist();   // keep it in the checkpoint
//   const committer = await stream.closeForCommit();
//   await committer.commit();
//
// Writes are gathered into Write calls whose messages carry their offset
// and CRC32C. A call cut by UNAVAILABLE, or refused with DATA_LOSS (a
// message damaged on the way, of which nothing was applied), is sent again
// from the last acknowledged offset, and the server skips what it already
// has: a retried chunk is never duplicated. Unary calls are retried on
// UNAVAILABLE. The file's CRC32C that persist, closeForCommit and commit
// answer is checked against the bytes written. Write calls run on a
// connection of their own, so bytes in flight never hold back a Persist or
// a Commit. Failures are typed errors named after their status codes.

import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { crc32c } from '@node-rs/crc32';

import { make, fromGateway, fromServiceError, SluiceError } from './errors.js';
import type { ProtoGrpcType } from './generated/gateway.js';
import type { CapabilitiesResponse__Output } from './generated/sluice/v1/CapabilitiesResponse.js';
import type { AbortResponse__Output } from './generated/sluice/v1/AbortResponse.js';
import type { CleanupResponse__Output } from './generated/sluice/v1/CleanupResponse.js';
import type { CloseForCommitResponse__Output } from './generated/sluice/v1/CloseForCommitResponse.js';
import type { CommitResponse__Output } from './generated/sluice/v1/CommitResponse.js';
import type { DeleteResponse__Output } from './generated/sluice/v1/DeleteResponse.js';
import type { ExistsResponse__Output } from './generated/sluice/v1/ExistsResponse.js';
import type { ListResponse__Output } from './generated/sluice/v1/ListResponse.js';
import type { MkdirsResponse__Output } from './generated/sluice/v1/MkdirsResponse.js';
import type { OpenResponse__Output } from './generated/sluice/v1/OpenResponse.js';
import type { PersistResponse__Output } from './generated/sluice/v1/PersistResponse.js';
import type { RecoverResponse__Output } from './generated/sluice/v1/RecoverResponse.js';
import type { RenameResponse__Output } from './generated/sluice/v1/RenameResponse.js';
import type { StatResponse__Output } from './generated/sluice/v1/StatResponse.js';
import type { FileStatus__Output } from './generated/sluice/v1/FileStatus.js';
import type { StorageGatewayClient } from './generated/sluice/v1/StorageGateway.js';
import type { WriteRequest } from './generated/sluice/v1/WriteRequest.js';

export * from './errors.js';
export type { FileStatus__Output as FileStatus } from './generated/sluice/v1/FileStatus.js';
export type { CapabilitiesResponse__Output as Capabilities } from './generated/sluice/v1/CapabilitiesResponse.js';

/** The proto this package was built from (copied from the repository's proto/). */
const PROTO = fileURLToPath(new URL('../proto/sluice/v1/gateway.proto', import.meta.url));

const MiB = 1 << 20;

/** How calls are retried: `attempts` in all, exponential backoff between. */
export interface RetryPolicy {
  attempts: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
}

export interface WriterOptions {
  /** Bytes per Write message (default 1 MiB). */
  chunkSize?: number;
  /** Bytes gathered before they go in one Write call (default 4 MiB). */
  batchSize?: number;
  retry?: RetryPolicy;
  /** Sent as `authorization: Bearer <token>` on every call. */
  token?: string;
  /** TLS: `grpc.credentials.createSsl(ca, key, cert)`; default plaintext. */
  credentials?: grpc.ChannelCredentials;
  /** CRC32C on every message and the file's checked (default true). */
  checksums?: boolean;
  /** Deadline of each call, in ms (default none). */
  deadlineMs?: number;
  /** gRPC client interceptors, on both connections. */
  interceptors?: grpc.Interceptor[];
}

/** Where a commit landed, and the CRC32C of the published file. */
export interface Committed {
  path: string;
  size: number;
  crc32c: number;
}

const DEFAULT_RETRY: RetryPolicy = { attempts: 8, initialBackoffMs: 50, maxBackoffMs: 2000 };

function backoff(retry: RetryPolicy, attempt: number): Promise<void> {
  const ms = Math.min(retry.maxBackoffMs, retry.initialBackoffMs * 2 ** attempt);
  return new Promise((resolve) => setTimeout(resolve, ms * (0.5 + Math.random() / 2)));
}

let definition: ProtoGrpcType | undefined;

function service(): ProtoGrpcType {
  definition ??= grpc.loadPackageDefinition(
    protoLoader.loadSync(PROTO, { keepCase: true, longs: Number, defaults: true, oneofs: true }),
  ) as unknown as ProtoGrpcType;
  return definition;
}

/** One attempt of a unary call, given the metadata, options and callback to use. */
type Attempt<Res> = (
  attempt: number,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: grpc.requestCallback<Res>,
) => unknown;

/** Connections to sluice (Flink's RecoverableWriter): one for Write calls, one for the rest. */
export class Writer {
  readonly chunkSize: number;
  readonly batchSize: number;
  readonly retry: RetryPolicy;
  readonly checksums: boolean;
  private readonly deadlineMs?: number;
  private readonly metadata: grpc.Metadata;
  /** @internal */
  readonly rpc: StorageGatewayClient;
  /** @internal */
  readonly data: StorageGatewayClient;

  constructor(address: string, options: WriterOptions = {}) {
    this.chunkSize = options.chunkSize ?? MiB;
    this.batchSize = Math.max(options.batchSize ?? 4 * MiB, this.chunkSize);
    this.retry = options.retry ?? DEFAULT_RETRY;
    this.checksums = options.checksums ?? true;
    this.deadlineMs = options.deadlineMs;
    this.metadata = new grpc.Metadata();
    if (options.token) this.metadata.set('authorization', `Bearer ${options.token}`);
    const credentials = options.credentials ?? grpc.credentials.createInsecure();
    const channel: grpc.ChannelOptions = {
      'grpc.max_send_message_length': this.chunkSize + 64 * 1024,
      'grpc.max_receive_message_length': 64 * MiB,
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1000,
      interceptors: options.interceptors ?? [],
    };
    const { StorageGateway } = service().sluice.v1;
    this.rpc = new StorageGateway(address, credentials, channel);
    // A local subchannel pool keeps grpc-js from sharing the connection.
    this.data = new StorageGateway(address, credentials, { ...channel, 'grpc.use_local_subchannel_pool': 1 });
  }

  /** Closes both connections. */
  close(): void {
    this.rpc.close();
    this.data.close();
  }

  /** @internal Call options (the deadline) for one call. */
  callOptions(): grpc.CallOptions {
    return this.deadlineMs === undefined ? {} : { deadline: Date.now() + this.deadlineMs };
  }

  /** @internal The metadata every call carries (the bearer token). */
  callMetadata(): grpc.Metadata {
    return this.metadata.clone();
  }

  /** @internal A unary call, again on UNAVAILABLE while attempts remain. */
  async unary<Res>(call: Attempt<Res>): Promise<Res> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await new Promise<Res>((resolve, reject) => {
          call(attempt, this.callMetadata(), this.callOptions(), (error, response) =>
            error ? reject(error) : resolve(response as Res),
          );
        });
      } catch (error) {
        const e = error as grpc.ServiceError;
        if (e.code !== grpc.status.UNAVAILABLE || attempt + 1 >= this.retry.attempts) throw fromServiceError(e);
        await backoff(this.retry, attempt);
      }
    }
  }

  /** Starts a new file at `path`; nothing is visible there before the commit. */
  async open(path: string, options: { injectEntropy?: boolean } = {}): Promise<RecoverableStream> {
    const opened = await this.unary<OpenResponse__Output>((_, m, o, cb) =>
      this.rpc.Open({ path, inject_entropy: options.injectEntropy ?? false }, m, o, cb),
    );
    return new RecoverableStream(this, opened.session_id, opened.path, 0, 0);
  }

  /** Continues the file of a resume handle at exactly its position. */
  async recover(handle: Uint8Array): Promise<RecoverableStream> {
    const r = await this.unary<RecoverResponse__Output>((_, m, o, cb) => this.rpc.Recover({ handle }, m, o, cb));
    return new RecoverableStream(this, r.session_id, r.path, r.position, r.crc32c);
  }

  /** A committer for a commit (or resume) handle kept in a checkpoint. */
  recoverForCommit(handle: Uint8Array): Committer {
    return new Committer(this, Buffer.from(handle));
  }

  /** Frees what only this resume handle keeps; never fails because it was done. */
  async cleanup(handle: Uint8Array): Promise<boolean> {
    return (await this.unary<CleanupResponse__Output>((_, m, o, cb) => this.rpc.Cleanup({ handle }, m, o, cb))).cleaned;
  }

  async capabilities(path: string): Promise<CapabilitiesResponse__Output> {
    return this.unary<CapabilitiesResponse__Output>((_, m, o, cb) => this.rpc.Capabilities({ path }, m, o, cb));
  }

  /** Reads `length` bytes (0: to the end) of a committed file from `offset`. */
  read(path: string, offset = 0, length = 0): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const parts: Buffer[] = [];
      const call = this.rpc.Read({ path, offset, length }, this.callMetadata(), this.callOptions());
      call.on('data', (m: { data: Buffer }) => parts.push(m.data));
      call.on('error', (e: grpc.ServiceError) => reject(fromServiceError(e)));
      call.on('end', () => resolve(Buffer.concat(parts)));
    });
  }

  async stat(path: string): Promise<FileStatus__Output | null> {
    return (await this.unary<StatResponse__Output>((_, m, o, cb) => this.rpc.Stat({ path }, m, o, cb))).status;
  }

  /** The entries one level below a directory, every page; staging never shows. */
  async list(path: string): Promise<FileStatus__Output[]> {
    const entries: FileStatus__Output[] = [];
    let page_token = '';
    for (;;) {
      const page = await this.unary<ListResponse__Output>((_, m, o, cb) =>
        this.rpc.List({ path, page_token }, m, o, cb),
      );
      entries.push(...page.entries);
      if (!page.next_page_token) return entries;
      page_token = page.next_page_token;
    }
  }

  async exists(path: string): Promise<boolean> {
    return (await this.unary<ExistsResponse__Output>((_, m, o, cb) => this.rpc.Exists({ path }, m, o, cb))).exists;
  }

  async delete(path: string, recursive = false): Promise<boolean> {
    return (await this.unary<DeleteResponse__Output>((_, m, o, cb) => this.rpc.Delete({ path, recursive }, m, o, cb)))
      .deleted;
  }

  async mkdirs(path: string): Promise<void> {
    await this.unary<MkdirsResponse__Output>((_, m, o, cb) => this.rpc.Mkdirs({ path }, m, o, cb));
  }

  /** Moves a file; never replaces one. */
  async rename(from: string, to: string): Promise<void> {
    await this.unary<RenameResponse__Output>((_, m, o, cb) => this.rpc.Rename({ from, to }, m, o, cb));
  }
}

/** Whether a failed Write call may be sent again from the acknowledged offset. */
function retryableWrite(error: grpc.ServiceError): boolean {
  switch (error.code) {
    case grpc.status.UNAVAILABLE:
    case grpc.status.DATA_LOSS:
      return true;
    case grpc.status.INTERNAL:
    case grpc.status.UNKNOWN:
      // A cut connection may be reported so; the gateway's own carry sluice-cause.
      return !fromGateway(error.metadata);
    default:
      return false;
  }
}

/** A file being written (Flink's RecoverableFsDataOutputStream), as a Writable. */
export class RecoverableStream extends Writable {
  readonly sessionId: string;
  /** The target as the gateway resolved it. */
  readonly path: string;
  private readonly writer: Writer;
  private acked: number;
  private crc: number;
  private pending: Buffer[] = [];
  private pendingLength = 0;
  private sessionClosed = false;
  /** The error that ended the stream, which persist and the rest then report. */
  private failure?: Error;

  /** @internal */
  constructor(writer: Writer, sessionId: string, path: string, position: number, crc: number) {
    super({ decodeStrings: true });
    this.writer = writer;
    this.sessionId = sessionId;
    this.path = path;
    this.acked = position;
    this.crc = crc;
    // A failed write ends the stream; its error is kept for the next
    // flush, persist or closeForCommit to report (typed), rather than left
    // to crash a process that listens to none.
    this.on('error', (error: Error) => {
      this.failure ??= error;
    });
  }

  /** Bytes written so far and processed by the stream, sent or not. */
  get position(): number {
    return this.acked + this.pendingLength;
  }

  /** CRC32C of those bytes (with checksums on). */
  get crc32c(): number {
    return this.crc;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.sessionClosed) {
      callback(make(grpc.status.FAILED_PRECONDITION, `session ${this.sessionId} is closed; open or recover a new one`));
      return;
    }
    if (this.writer.checksums) this.crc = crc32c(chunk, this.crc);
    this.pending.push(chunk);
    this.pendingLength += chunk.length;
    if (this.pendingLength < this.writer.batchSize) {
      callback();
      return;
    }
    this.sendPending().then(() => callback(), callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.sendPending().then(() => callback(), callback);
  }

  /** Sends everything written and waits until the gateway has it. */
  async flush(): Promise<void> {
    if (this.failure) throw this.failure;
    if (!this.writableEnded) {
      // An empty write's callback runs once every earlier write is processed.
      await new Promise<void>((resolve, reject) => {
        this.write(Buffer.alloc(0), (error) => (error ? reject(this.failure ?? error) : resolve()));
      });
    } else if (!this.writableFinished) {
      // end() was called (by pipeline(), say): _final sends the rest.
      await new Promise<void>((resolve, reject) => {
        this.once('finish', resolve);
        this.once('error', reject);
      });
    }
    await this.sendPending();
  }

  /** Makes every byte written so far durable; returns the resume handle for the checkpoint. */
  async persist(): Promise<Buffer> {
    await this.flush();
    const r = await this.writer.unary<PersistResponse__Output>((_, m, o, cb) =>
      this.writer.rpc.Persist({ session_id: this.sessionId }, m, o, cb),
    );
    this.check(r.position, r.crc32c, 'Persist');
    return r.handle;
  }

  /** Makes everything durable and closes the stream; the committer publishes the file. */
  async closeForCommit(): Promise<Committer> {
    await this.flush();
    const r = await this.writer.unary<CloseForCommitResponse__Output>((_, m, o, cb) =>
      this.writer.rpc.CloseForCommit({ session_id: this.sessionId }, m, o, cb),
    );
    this.check(r.size, r.crc32c, 'CloseForCommit');
    this.sessionClosed = true;
    if (!this.writableEnded) this.end();
    return new Committer(this.writer, r.handle, this.writer.checksums ? r.crc32c : undefined);
  }

  /** Disposes of the stream with no durability promise (Flink's close()). */
  async abort(): Promise<void> {
    this.sessionClosed = true;
    this.pending = [];
    this.pendingLength = 0;
    this.destroy();
    await this.writer.unary<AbortResponse__Output>((_, m, o, cb) =>
      this.writer.rpc.Abort({ session_id: this.sessionId }, m, o, cb),
    );
  }

  private check(position: number, crc: number, call: string): void {
    if (position !== this.acked) {
      throw make(
        grpc.status.INTERNAL,
        `session ${this.sessionId}: the gateway is at byte ${position}, this client at ${this.acked}`,
      );
    }
    if (this.writer.checksums && crc !== this.crc) {
      throw make(
        grpc.status.DATA_LOSS,
        `session ${this.sessionId}: ${call} answered CRC32C ${crc} for the file's ${position} bytes, but the bytes this client wrote have ${this.crc}`,
      );
    }
  }

  /** Sends what is pending, in Write calls of at most the batch size. */
  private async sendPending(): Promise<void> {
    if (this.pendingLength === 0) return;
    const data = Buffer.concat(this.pending, this.pendingLength);
    this.pending = [];
    this.pendingLength = 0;
    for (let at = 0; at < data.length; at += this.writer.batchSize) {
      await this.sendBatch(data.subarray(at, at + this.writer.batchSize));
    }
  }

  /** One batch, sent again from the acknowledged offset while the failure allows. */
  private async sendBatch(batch: Buffer): Promise<void> {
    let data = batch;
    let offset = this.acked;
    const end = offset + data.length;
    for (let attempt = 0; ;) {
      let position: number;
      try {
        position = await this.writeCall(data, offset);
      } catch (error) {
        const e = error as grpc.ServiceError;
        if (!retryableWrite(e) || attempt + 1 >= this.writer.retry.attempts) throw fromServiceError(e);
        await backoff(this.writer.retry, attempt++);
        continue;
      }
      if (position === end) {
        this.acked = end;
        return;
      }
      if (position < offset || position > end) {
        throw make(
          grpc.status.INTERNAL,
          `session ${this.sessionId}: the gateway acknowledged byte ${position}, this client sent ${offset}..${end}`,
        );
      }
      // Part of the batch was taken; send the rest.
      data = data.subarray(position - offset);
      offset = position;
    }
  }

  /** One Write call carrying `data` from `offset`, in messages of the chunk size. */
  private writeCall(data: Buffer, offset: number): Promise<number> {
    return new Promise((resolve, reject) => {
      const call = this.writer.data.Write(this.writer.callMetadata(), this.writer.callOptions(), (error, response) =>
        error ? reject(error) : resolve(response!.position),
      );
      call.on('error', () => {}); // the callback reports it
      const chunk = this.writer.chunkSize;
      for (let at = 0; at < data.length; at += chunk) {
        const piece = data.subarray(at, at + chunk);
        const message: WriteRequest = { session_id: at === 0 ? this.sessionId : '', offset: offset + at, data: piece };
        if (this.writer.checksums) message.crc32c = crc32c(piece);
        call.write(message);
      }
      call.end();
    });
  }
}

/** Publishes a file (Flink's Committer); `handle` goes in the checkpoint until the commit is done. */
export class Committer {
  readonly handle: Buffer;
  private readonly writer: Writer;
  private readonly crc?: number;

  /** @internal */
  constructor(writer: Writer, handle: Buffer, crc?: number) {
    this.writer = writer;
    this.handle = handle;
    this.crc = crc;
  }

  /** Publishes the file; AlreadyExists when the target exists. */
  commit(): Promise<Committed> {
    return this.request(false);
  }

  /** Publishes the file from a restored checkpoint: a commit that already happened succeeds. */
  commitAfterRecovery(): Promise<Committed> {
    return this.request(true);
  }

  private async request(afterRecovery: boolean): Promise<Committed> {
    // A retry may follow a commit that landed.
    const r = await this.writer.unary<CommitResponse__Output>((attempt, m, o, cb) =>
      this.writer.rpc.Commit({ handle: this.handle, after_recovery: afterRecovery || attempt > 0 }, m, o, cb),
    );
    if (this.crc !== undefined && r.crc32c !== this.crc) {
      throw make(grpc.status.DATA_LOSS, `Commit of ${r.path} answered CRC32C ${r.crc32c}, CloseForCommit ${this.crc}`);
    }
    return { path: r.path, size: r.size, crc32c: r.crc32c };
  }
}

export { SluiceError };
