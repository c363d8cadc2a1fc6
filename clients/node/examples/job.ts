// examples/exactly_once/job.py in TypeScript, for the crash harness
// (harness.py --job ts): a streaming job shaped like a Flink job with a
// two-phase-commit file sink. It reads a replayable source, writes rolling
// part files through sluice, checkpoints (persist, then an atomic local
// file with the source offset, the resume handle and the commit handles of
// the parts closed since), commits those parts once the checkpoint is
// durable, and on start restores: commit after recovery for every pending
// part, recover for the part in progress, the source from the offset.
//
// --crash METHOD:N:VICTIM:WHEN kills the job, the gateway or both at the
// N-th call of METHOD, before it is sent, in flight, or after its answer.
// Exit codes: 0 done; 75 the gateway went away (restart the job); 1 error.

import { createHash } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';

import * as grpc from '@grpc/grpc-js';

import { Aborted, NotFound, type RecoverableStream, SluiceError, Unavailable, Writer } from '../src/index.js';

const GATEWAY_LOST = 75;

function sourceRecord(i: number): string {
  return `${i} ${createHash('sha256').update(`record-${i}`).digest('hex').slice(0, 24)}`;
}

/** The job's transformation: one output line per record, as job.py's. */
function transform(record: string): string {
  const space = record.indexOf(' ');
  const offset = Number(record.slice(0, space));
  const payload = record.slice(space + 1);
  return `${String(offset).padStart(9, '0')}|${payload.toUpperCase()}|${payload.length}\n`;
}

interface State {
  offset: number;
  part: number;
  part_records: number;
  in_progress: string | null;
  pending: string[];
}

function load(path: string): State {
  if (!existsSync(path)) return { offset: 0, part: 0, part_records: 0, in_progress: null, pending: [] };
  return JSON.parse(readFileSync(path, 'utf8')) as State;
}

function fsyncWrite(path: string, text: string, flags: string): void {
  const fd = openSync(path, flags);
  writeSync(fd, text);
  fsyncSync(fd);
  closeSync(fd);
}

function store(path: string, state: State): void {
  fsyncWrite(`${path}.tmp`, JSON.stringify(state), 'w');
  renameSync(`${path}.tmp`, path);
  const dir = openSync(dirname(path), 'r');
  fsyncSync(dir);
  closeSync(dir);
}

/** Kills the job and/or the gateway at the N-th call of one method, as job.py's CrashHook. */
function crashHook(spec: string, gatewayPid: number, log: string | undefined): grpc.Interceptor {
  const [method, n, victim, when] = spec.split(':');
  let calls = 0;
  let fired = false;
  const fire = () => {
    if (fired) return;
    fired = true;
    if (log) fsyncWrite(log, `${spec}\n`, 'a');
    if (victim === 'gateway' || victim === 'both') {
      try {
        process.kill(gatewayPid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    if (victim === 'job' || victim === 'both') process.kill(process.pid, 'SIGKILL');
  };
  const fireSoon = () => setTimeout(fire, Math.random() * 4);
  return (options, nextCall) => {
    const name = options.method_definition.path.split('/').pop();
    if (fired || name !== method || ++calls !== Number(n)) return new grpc.InterceptingCall(nextCall(options));
    const streaming = options.method_definition.requestStream;
    let sent = 0;
    const requester = new grpc.RequesterBuilder()
      .withStart((metadata, listener, next) => {
        if (when === 'before') fire();
        const answered = new grpc.ListenerBuilder()
          .withOnReceiveStatus((status, nextStatus) => {
            if (when === 'after') fire();
            nextStatus(status);
          })
          .build();
        next(metadata, { ...listener, ...answered });
        if (when === 'during' && !streaming) fireSoon();
      })
      .withSendMessage((message, next) => {
        // Mid-stream: the first message goes out, then the crash.
        if (when === 'during' && streaming && sent++ === 1) fire();
        next(message);
      })
      .withHalfClose((next) => {
        if (when === 'during' && streaming) fireSoon();
        next();
      })
      .build();
    return new grpc.InterceptingCall(nextCall(options), requester);
  };
}

function partName(out: string, i: number): string {
  return `${out}/part-${String(i).padStart(5, '0')}`;
}

async function run(writer: Writer, out: string, checkpoint: string, records: number, perPart: number, every: number) {
  const state = load(checkpoint);
  // Restore: finish the commits the last checkpoint promised...
  for (const handle of state.pending) {
    await writer.recoverForCommit(Buffer.from(handle, 'base64')).commitAfterRecovery();
  }
  // ...and continue the part in progress where it left off.
  let stream: RecoverableStream | null = state.in_progress
    ? await writer.recover(Buffer.from(state.in_progress, 'base64'))
    : null;
  let lastHandle = state.in_progress;
  process.stdout.write('restored\n');
  let { offset, part, part_records: partRecords } = state;
  let closed: string[] = [];
  const closePart = async () => {
    closed.push((await stream!.closeForCommit()).handle.toString('base64'));
    stream = null;
    part += 1;
    partRecords = 0;
  };
  for (;;) {
    if (offset < records) {
      stream ??= await writer.open(partName(out, part));
      if (!stream.write(transform(sourceRecord(offset)))) await stream.flush();
      offset += 1;
      partRecords += 1;
      if (partRecords === perPart) await closePart();
    }
    if (offset % every === 0 || offset === records) {
      const done = offset === records;
      if (done && stream) await closePart();
      const handle = stream ? (await stream.persist()).toString('base64') : null;
      store(checkpoint, { offset, part, part_records: partRecords, in_progress: handle, pending: closed });
      // The checkpoint is durable: commit what it covers.
      for (const pending of closed) await writer.recoverForCommit(Buffer.from(pending, 'base64')).commit();
      closed = [];
      if (lastHandle !== null && lastHandle !== handle) await writer.cleanup(Buffer.from(lastHandle, 'base64'));
      lastHandle = handle;
      if (done) return;
    }
  }
}

async function main(): Promise<number> {
  const { values: a } = parseArgs({
    options: {
      gateway: { type: 'string' },
      out: { type: 'string' },
      checkpoint: { type: 'string' },
      records: { type: 'string', default: '20000' },
      'records-per-part': { type: 'string', default: '250' },
      'checkpoint-every': { type: 'string', default: '50' },
      'chunk-size': { type: 'string', default: '1024' },
      'batch-size': { type: 'string', default: '4096' },
      crash: { type: 'string' },
      'crash-log': { type: 'string' },
      'gateway-pid': { type: 'string', default: '0' },
    },
  });
  const interceptors = a.crash ? [crashHook(a.crash, Number(a['gateway-pid']), a['crash-log'])] : [];
  const writer = new Writer(a.gateway!, {
    chunkSize: Number(a['chunk-size']),
    batchSize: Number(a['batch-size']),
    retry: { attempts: 10, initialBackoffMs: 50, maxBackoffMs: 500 },
    deadlineMs: 30_000,
    interceptors,
  });
  try {
    const every = Number(a['checkpoint-every']);
    await run(writer, a.out!, a.checkpoint!, Number(a.records), Number(a['records-per-part']), every);
    return 0;
  } catch (error) {
    if (error instanceof NotFound || error instanceof Unavailable || error instanceof Aborted) {
      process.stderr.write(`job: gateway lost (${error.message}); restart me to resume from the checkpoint\n`);
      return GATEWAY_LOST;
    }
    process.stderr.write(`job: failed: ${error instanceof SluiceError ? error.name : ''} ${String(error)}\n`);
    return 1;
  } finally {
    writer.close();
  }
}

process.exitCode = await main();
