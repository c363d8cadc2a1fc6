// A real sluice gateway (the binary SLUICE_BIN names) on a free loopback
// port, and proxies in front of it: one whose connections a test can cut,
// one that flips a byte in large HTTP/2 DATA frames towards the gateway.

import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export class Gateway {
  readonly dir: string;
  readonly files: string;
  address = '';
  private proc?: ChildProcess;

  private constructor(dir: string) {
    this.dir = dir;
    this.files = join(dir, 'files');
  }

  /** `config` makes the YAML configuration from the gateway's data dir. */
  static async start(config?: (dir: string) => string): Promise<Gateway> {
    const bin = process.env.SLUICE_BIN;
    if (!bin || !existsSync(bin)) {
      throw new Error(
        `SLUICE_BIN must name the sluice binary (cargo build, then SLUICE_BIN=$PWD/target/debug/sluice); it is ${bin}`,
      );
    }
    const g = new Gateway(mkdtempSync(join(tmpdir(), 'sluice-node-')));
    const args = ['serve', '--listen', '127.0.0.1:0', '--data-dir', g.dir, '--admin-listen', 'off'];
    if (config) {
      writeFileSync(join(g.dir, 'sluice.yaml'), config(g.dir));
      args.push('--config', join(g.dir, 'sluice.yaml'));
    }
    const proc = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    g.proc = proc;
    g.address = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('sluice did not log its address within 30 s')), 30_000);
      let text = '';
      proc.stderr!.on('data', (chunk: Buffer) => {
        text += chunk.toString();
        const found = /address=(\S+)/.exec(text);
        if (found) {
          clearTimeout(timer);
          resolve(found[1]);
        }
      });
      proc.on('exit', (code) => reject(new Error(`sluice exited (${code}): ${text}`)));
    });
    return g;
  }

  uri(name: string): string {
    return `file://${this.files}/${name}`;
  }

  /** Kills the gateway, waits for it to exit, and removes its data dir. */
  async stop(): Promise<void> {
    const proc = this.proc;
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise((resolve) => proc.once('exit', resolve));
      proc.kill('SIGKILL');
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Deterministic bytes, different for every seed. */
export function pattern(size: number, seed: number): Buffer {
  const parts: Buffer[] = [];
  let length = 0;
  for (let block = 0; length < size; block++) {
    const digest = createHash('sha256').update(`${seed}:${block}`).digest();
    parts.push(digest);
    length += digest.length;
  }
  return Buffer.concat(parts).subarray(0, size);
}

/** Forwards a loopback port to the gateway; see the file's comment. */
export class Proxy {
  address = '';
  flipped = 0;
  private seen = 0;
  private server?: Server;
  private sockets = new Set<Socket>();
  /** Bytes each connection carried towards the gateway. */
  readonly upstream: number[] = [];

  private constructor(
    private readonly target: string,
    private readonly flipEvery: number,
  ) {}

  static async start(target: string, flipEvery = 0): Promise<Proxy> {
    const p = new Proxy(target, flipEvery);
    p.server = createServer((inbound) => p.accept(inbound));
    await new Promise<void>((resolve) => p.server!.listen(0, '127.0.0.1', resolve));
    const { port } = p.server.address() as { port: number };
    p.address = `127.0.0.1:${port}`;
    return p;
  }

  private accept(inbound: Socket): void {
    const [host, port] = this.target.split(':');
    const outbound = createConnection(Number(port), host);
    const index = this.upstream.push(0) - 1;
    for (const s of [inbound, outbound]) {
      this.sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        this.sockets.delete(s);
        inbound.destroy();
        outbound.destroy();
      });
    }
    outbound.on('data', (data: Buffer) => inbound.write(data));
    let buffered = Buffer.alloc(0);
    let prefaceSeen = this.flipEvery === 0;
    inbound.on('data', (data: Buffer) => {
      this.upstream[index] += data.length;
      if (this.flipEvery === 0) {
        outbound.write(data);
        return;
      }
      buffered = Buffer.concat([buffered, data]);
      if (!prefaceSeen) {
        if (buffered.length < 24) return;
        outbound.write(buffered.subarray(0, 24));
        buffered = buffered.subarray(24);
        prefaceSeen = true;
      }
      // Whole frames: a 9-byte header (length, type, flags, stream) and the payload.
      while (buffered.length >= 9) {
        const length = buffered.readUIntBE(0, 3);
        if (buffered.length < 9 + length) break;
        const frame = Buffer.from(buffered.subarray(0, 9 + length));
        buffered = buffered.subarray(9 + length);
        if (frame[3] === 0 && length >= 1024 && ++this.seen % this.flipEvery === 0) {
          frame[9 + Math.floor(length / 2)] ^= 0x40;
          this.flipped++;
        }
        outbound.write(frame);
      }
    });
  }

  /** Drops every open connection at once; returns how many. */
  cut(): number {
    const n = this.sockets.size / 2;
    for (const s of this.sockets) s.destroy();
    return Math.floor(n);
  }

  close(): void {
    this.server?.close();
    this.cut();
  }
}
