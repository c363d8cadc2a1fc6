// Writes a file through sluice from Node, exactly once, across a simulated
// crash: open, write (every message carries its offset), persist, lose the
// session, recover from the handle, write the rest, close for commit,
// commit, then read the file back and check every byte.
//
//   npm install && node example.js 127.0.0.1:50051 memory://demo/node/part-0
//
// The service definition is loaded from the repository's proto/ at run
// time (@grpc/proto-loader), so it never drifts from the server.

'use strict';

const path = require('path');
const crypto = require('crypto');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO = path.join(__dirname, '..', '..', 'proto', 'sluice', 'v1', 'gateway.proto');

function gatewayClient(address) {
  const definition = protoLoader.loadSync(PROTO, { keepCase: true, longs: Number, defaults: true });
  const { StorageGateway } = grpc.loadPackageDefinition(definition).sluice.v1;
  return new StorageGateway(address, grpc.credentials.createInsecure());
}

// A unary call as a promise.
function call(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, (err, response) => (err ? reject(err) : resolve(response)));
  });
}

// One Write call: `data` in messages of `chunk` bytes, each with its offset.
function write(client, sessionId, offset, data, chunk = 64 * 1024) {
  return new Promise((resolve, reject) => {
    const stream = client.Write((err, response) => (err ? reject(err) : resolve(response.position)));
    for (let at = 0; at < data.length; at += chunk) {
      stream.write({
        session_id: at === 0 ? sessionId : '',
        offset: offset + at,
        data: data.subarray(at, at + chunk),
      });
    }
    stream.end();
  });
}

function read(client, target) {
  return new Promise((resolve, reject) => {
    const parts = [];
    client
      .Read({ path: target, offset: 0, length: 0 })
      .on('data', (message) => parts.push(message.data))
      .on('error', reject)
      .on('end', () => resolve(Buffer.concat(parts)));
  });
}

async function main() {
  const [address = '127.0.0.1:50051', target = 'memory://demo/node/part-0'] = process.argv.slice(2);
  const client = gatewayClient(address);
  const data = crypto.randomBytes(3 * 1024 * 1024 + 12345);
  const half = 2 * 1024 * 1024;

  const opened = await call(client, 'Open', { path: target });
  let position = await write(client, opened.session_id, 0, data.subarray(0, half));
  const persisted = await call(client, 'Persist', { session_id: opened.session_id });
  console.log(`persisted ${persisted.position} bytes; handle of ${persisted.handle.length} bytes`);

  // Bytes after the handle, then a "crash": the session is abandoned.
  await write(client, opened.session_id, position, data.subarray(half, half + 1000));
  await call(client, 'Abort', { session_id: opened.session_id });

  // A retried message below the position is acknowledged, not appended.
  const recovered = await call(client, 'Recover', { handle: persisted.handle });
  if (recovered.position !== half) throw new Error(`recovered at ${recovered.position}, not ${half}`);
  position = await write(client, recovered.session_id, half - 100, data.subarray(half - 100));
  if (position !== data.length) throw new Error(`position ${position}, not ${data.length}`);

  const closed = await call(client, 'CloseForCommit', { session_id: recovered.session_id });
  const committed = await call(client, 'Commit', { handle: closed.handle, after_recovery: false });
  console.log(`committed ${committed.path} (${committed.size} bytes)`);

  try {
    await call(client, 'Commit', { handle: closed.handle, after_recovery: false });
    throw new Error('a second commit was accepted');
  } catch (err) {
    if (err.code !== grpc.status.ALREADY_EXISTS) throw err;
  }
  const again = await call(client, 'Commit', { handle: closed.handle, after_recovery: true });
  if (again.size !== data.length) throw new Error('commit after recovery changed the size');

  const back = await read(client, target);
  if (!back.equals(data)) throw new Error('the committed file differs from the bytes written');
  console.log(`read back ${back.length} bytes: exactly the bytes written, once`);
  client.close();
}

main().catch((err) => {
  console.error(`example failed: ${err.message || err}`);
  process.exit(1);
});
