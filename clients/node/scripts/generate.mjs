// Generates the TypeScript types of sluice's protocol from the repository's
// proto/ (proto-loader-gen-types) into src/generated, and copies the proto
// into dist/proto, where the package loads it at run time: the types and
// the service never drift from the server.
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(dirname(fileURLToPath(import.meta.url)));
const proto = process.env.SLUICE_PROTO_DIR ?? join(here, '..', '..', 'proto');
const generated = join(here, 'src', 'generated');
rmSync(generated, { recursive: true, force: true });
execFileSync(
  process.execPath,
  [
    join(here, 'node_modules', '@grpc', 'proto-loader', 'build', 'bin', 'proto-loader-gen-types.js'),
    '--grpcLib=@grpc/grpc-js',
    '--keepCase',
    '--longs=Number',
    '--defaults',
    `--includeDirs=${proto}`,
    `--outDir=${generated}`,
    'sluice/v1/gateway.proto',
  ],
  { stdio: 'inherit' },
);
// ES modules name the files they import: './x' becomes './x.js'.
for (const entry of readdirSync(generated, { recursive: true })) {
  const file = join(generated, String(entry));
  if (!file.endsWith('.ts')) continue;
  const text = readFileSync(file, 'utf8').replace(/(from '\.{1,2}\/[^']*?)(?<!\.js)'/g, "$1.js'");
  writeFileSync(file, text);
}
mkdirSync(join(here, 'dist', 'proto', 'sluice', 'v1'), { recursive: true });
cpSync(join(proto, 'sluice', 'v1', 'gateway.proto'), join(here, 'dist', 'proto', 'sluice', 'v1', 'gateway.proto'));
