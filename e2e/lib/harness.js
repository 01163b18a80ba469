// Starts the release binary on a free port with a fresh data directory, and Debian's Chromium.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const artifacts = join(here, '..', 'artifacts');
mkdirSync(artifacts, { recursive: true });

export async function startServer() {
  const bin = process.env.SANTONG_BIN ?? join(here, '..', '..', 'target', 'release', 'santong');
  const data = mkdtempSync(join(tmpdir(), 'santong-e2e-'));
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('SANTONG_') && k !== 'SANTONG_BIN') delete env[k];
  const child = spawn(bin, ['serve', '--demo', '--bind', '127.0.0.1:0', '--data', data, '--log', 'warn'], {
    env,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: child.stdout });
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('santong did not start within 60 s')), 60_000);
    child.once('exit', (code) => reject(new Error(`santong exited early with ${code}`)));
    lines.on('line', (line) => {
      const m = line.match(/^Santong is running at (http:\/\/\S+?)\/?$/);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
  });
  return {
    url,
    data,
    async stop() {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
      rmSync(data, { recursive: true, force: true });
    },
  };
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
}

// Runs `santong ARGS --data DIR` to completion (for provisioning before or beside `serve`).
import { spawnSync } from 'node:child_process';
export function santongCli(data, args) {
  const bin = process.env.SANTONG_BIN ?? join(here, '..', '..', 'target', 'release', 'santong');
  const r = spawnSync(bin, [...args, '--data', data, '--log', 'warn'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`santong ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

// RFC 6238 TOTP (HMAC-SHA1, 30 s, 6 digits) for signing in like an authenticator app would.
import { createHmac } from 'node:crypto';
function base32Decode(s) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0, value = 0;
  const out = [];
  for (const c of s.replace(/[\s=]/g, '').toUpperCase()) {
    value = (value << 5) | alphabet.indexOf(c);
    bits += 5;
    if (bits >= 8) { out.push((value >>> (bits - 8)) & 0xff); bits -= 8; }
  }
  return Buffer.from(out);
}
const lastStep = new Map();
// A code the server accepts next: a step never used before (codes work once).
export function totp(secret) {
  const now = Math.floor(Date.now() / 1000 / 30);
  const step = Math.max(now, (lastStep.get(secret) ?? -1) + 1);
  lastStep.set(secret, step);
  const msg = Buffer.alloc(8);
  msg.writeBigUInt64BE(BigInt(step));
  const h = createHmac('sha1', base32Decode(secret)).update(msg).digest();
  const off = h[19] & 0xf;
  const bin = ((h[off] & 0x7f) << 24) | (h[off + 1] << 16) | (h[off + 2] << 8) | h[off + 3];
  return String(bin % 1000000).padStart(6, '0');
}
