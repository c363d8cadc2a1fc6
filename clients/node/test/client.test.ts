// sluice-client against a real gateway: the protocol, typed errors, cut
// and damaged connections, separate Write connections, tokens, TLS, and
// the README's example as written.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

import * as grpc from '@grpc/grpc-js';
import { crc32c } from '@node-rs/crc32';

import {
  AlreadyExists,
  InvalidArgument,
  NotFound,
  PermissionDenied,
  SluiceError,
  Unauthenticated,
  Unimplemented,
  Writer,
} from '../src/index.js';
import { Gateway, Proxy, pattern } from './fixtures.js';

const FAST_RETRY = { attempts: 50, initialBackoffMs: 1, maxBackoffMs: 20 };
const PACKAGE = dirname(dirname(dirname(fileURLToPath(import.meta.url))));

describe('sluice-client', () => {
  let gateway: Gateway;
  before(async () => {
    gateway = await Gateway.start();
  });
  after(() => gateway.stop());

  it('writes, persists, recovers and commits', async () => {
    const data = pattern(300_000, 1);
    const target = gateway.uri('out/part-0');
    const writer = new Writer(gateway.address, { chunkSize: 4096, batchSize: 16384 });
    try {
      const stream = await writer.open(target);
      assert.equal(stream.path, target);
      for (let i = 0; i < 100_000; i += 77) stream.write(data.subarray(i, Math.min(i + 77, 100_000)));
      const handle = await stream.persist();
      assert.equal(stream.position, 100_000);
      stream.write(data.subarray(100_000, 150_000)); // lost in the crash
      await stream.abort();

      const resumed = await writer.recover(handle);
      assert.equal(resumed.position, 100_000);
      assert.equal(resumed.crc32c, crc32c(data.subarray(0, 100_000)));
      // A Writable: a pipeline ends it, and closeForCommit waits for that.
      await pipeline(Readable.from([data.subarray(100_000, 200_000), data.subarray(200_000)]), resumed);
      const committer = await resumed.closeForCommit();
      assert.equal(existsSync(join(gateway.files, 'out/part-0')), false, 'visible before the commit');
      const committed = await committer.commit();
      assert.deepEqual(committed, { path: target, size: data.length, crc32c: crc32c(data) });
      assert.ok(readFileSync(join(gateway.files, 'out/part-0')).equals(data));
      assert.ok((await writer.read(target)).equals(data));

      await assert.rejects(committer.commit(), AlreadyExists);
      const again = await writer.recoverForCommit(committer.handle).commitAfterRecovery();
      assert.equal(again.size, data.length);
      assert.deepEqual(
        (await writer.list(gateway.uri('out'))).map((e) => e.name),
        ['part-0'],
      );
      assert.equal(await writer.exists(target), true);
      await writer.rename(target, gateway.uri('out/part-1'));
      assert.equal(await writer.delete(gateway.uri('out'), true), true);
    } finally {
      writer.close();
    }
  });

  it('types errors by status code, with the gateway message', async () => {
    const writer = new Writer(gateway.address, { retry: { attempts: 1, initialBackoffMs: 1, maxBackoffMs: 1 } });
    try {
      const unknown = await writer.open('nope://bucket/x').catch((e: unknown) => e);
      assert.ok(unknown instanceof Unimplemented && unknown instanceof SluiceError);
      assert.equal(unknown.code, grpc.status.UNIMPLEMENTED);
      assert.match(unknown.details, /file/);
      await assert.rejects(writer.recover(Buffer.from('not a handle')), InvalidArgument);
      await assert.rejects(writer.stat(gateway.uri('missing')), NotFound);
      const stream = await writer.open(gateway.uri('typed/a'));
      stream.write('abc');
      const committer = await stream.closeForCommit();
      // Closed for commit: the Writable has ended, as Node streams do.
      const failed = new Promise<Error>((resolve) => stream.once('error', resolve));
      stream.write('more');
      assert.equal(((await failed) as NodeJS.ErrnoException).code, 'ERR_STREAM_WRITE_AFTER_END');
      await committer.commit();
    } finally {
      writer.close();
    }
  });

  it('sends a cut Write call again without duplicating bytes', async () => {
    const proxy = await Proxy.start(gateway.address);
    const writer = new Writer(proxy.address, { chunkSize: 64 << 10, batchSize: 512 << 10, retry: FAST_RETRY });
    try {
      const data = pattern(12 << 20, 2);
      const stream = await writer.open(gateway.uri('cut/part-0'));
      let cuts = 0;
      for (let i = 0; i < data.length; i += 256 << 10) {
        await new Promise<void>((resolve, reject) =>
          stream.write(data.subarray(i, i + (256 << 10)), (e) => (e ? reject(e) : resolve())),
        );
        if (i % (1 << 20) === 0) {
          await new Promise((r) => setTimeout(r, 5));
          cuts += proxy.cut();
        }
        if (i % (4 << 20) === 0) await stream.persist();
      }
      const committer = await stream.closeForCommit();
      proxy.cut();
      await committer.commit();
      assert.ok(cuts >= 5, `only ${cuts} connections were cut`);
      assert.ok(readFileSync(join(gateway.files, 'cut/part-0')).equals(data));
    } finally {
      writer.close();
      proxy.close();
    }
  });

  it('catches damaged writes and sends them again', async () => {
    const proxy = await Proxy.start(gateway.address, 100);
    const data = pattern(8 << 20, 5);
    try {
      for (const checksums of [true, false]) {
        const name = checksums ? 'checked' : 'unchecked';
        const writer = new Writer(proxy.address, {
          chunkSize: 256 << 10,
          batchSize: 1 << 20,
          retry: FAST_RETRY,
          checksums,
        });
        const before = proxy.flipped;
        const stream = await writer.open(gateway.uri(`crc/${name}`));
        await pipeline(Readable.from([data]), stream);
        const committed = await (await stream.closeForCommit()).commit();
        writer.close();
        assert.ok(proxy.flipped - before >= 3, `the proxy flipped only ${proxy.flipped - before} bytes`);
        const stored = readFileSync(join(gateway.files, 'crc', name));
        if (checksums) {
          assert.ok(stored.equals(data), 'a damaged message was applied');
          assert.equal(committed.crc32c, crc32c(data));
        } else {
          assert.equal(stored.length, data.length);
          assert.ok(!stored.equals(data), 'without checksums the damage should have been published');
        }
      }
    } finally {
      proxy.close();
    }
  });

  it('carries Write calls on a connection of their own', async () => {
    const proxy = await Proxy.start(gateway.address);
    const writer = new Writer(proxy.address);
    try {
      const data = pattern(6 << 20, 4);
      const stream = await writer.open(gateway.uri('separate/part-0'));
      stream.write(data.subarray(0, 3 << 20));
      await stream.persist();
      stream.write(data.subarray(3 << 20));
      await (await stream.closeForCommit()).commit();
      const carried = [...proxy.upstream].sort((a, b) => a - b);
      assert.equal(carried.length, 2, `bytes per connection: ${carried}`);
      assert.ok(carried[0] < 64 << 10 && carried[1] >= 6 << 20, `bytes per connection: ${carried}`);
    } finally {
      writer.close();
      proxy.close();
    }
  });

  it("runs the README's example as written", () => {
    const readme = readFileSync(join(PACKAGE, '..', '..', 'README.md'), 'utf8');
    const block = readme.split('```js\n')[1]?.split('```')[0];
    assert.ok(block, 'the README has no ```js block');
    // Inside the package, its own name resolves to it.
    const file = join(PACKAGE, '_readme.mjs');
    writeFileSync(file, block.replaceAll('127.0.0.1:50051', gateway.address));
    try {
      const out = execFileSync(process.execPath, [file], { encoding: 'utf8' });
      assert.equal(out, 'first record\nsecond record\n');
    } finally {
      rmSync(file, { force: true });
    }
  });
});

describe('sluice-client with a token and TLS', () => {
  it('sends its bearer token', async () => {
    const token = 'node-job-token';
    const digest = createHash('sha256').update(token).digest('hex');
    const gateway = await Gateway.start(
      (dir) =>
        `auth.principals.nodejob.token-sha256: ${digest}\nauth.principals.nodejob.prefixes: file://${dir}/files/jobs\n`,
    );
    const once = { attempts: 1, initialBackoffMs: 1, maxBackoffMs: 1 };
    const anonymous = new Writer(gateway.address, { retry: once });
    const writer = new Writer(gateway.address, { token, retry: once });
    try {
      await assert.rejects(anonymous.open(gateway.uri('jobs/part-0')), Unauthenticated);
      await assert.rejects(writer.open(gateway.uri('elsewhere')), PermissionDenied);
      const stream = await writer.open(gateway.uri('jobs/part-0'));
      stream.write('with a token');
      await (await stream.closeForCommit()).commit();
      assert.equal(readFileSync(join(gateway.files, 'jobs/part-0'), 'utf8'), 'with a token');
    } finally {
      anonymous.close();
      writer.close();
      await gateway.stop();
    }
  });

  it('talks TLS to a gateway that serves it', async () => {
    const dir = join(PACKAGE, '..', '..', 'target');
    const key = join(dir, `node-tls-${process.pid}.key`);
    const cert = join(dir, `node-tls-${process.pid}.pem`);
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-days',
        '1',
        '-keyout',
        key,
        '-out',
        cert,
        '-subj',
        '/CN=sluice test',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
      ],
      { stdio: 'ignore' },
    );
    const gateway = await Gateway.start(() => `rpc.tls.cert-file: ${cert}\nrpc.tls.key-file: ${key}\n`);
    try {
      const writer = new Writer(gateway.address, { credentials: grpc.credentials.createSsl(readFileSync(cert)) });
      const stream = await writer.open(gateway.uri('tls/part-0'));
      stream.write('over TLS');
      await (await stream.closeForCommit()).commit();
      writer.close();
      assert.equal(readFileSync(join(gateway.files, 'tls/part-0'), 'utf8'), 'over TLS');
    } finally {
      await gateway.stop();
      rmSync(key, { force: true });
      rmSync(cert, { force: true });
    }
  });
});
