// What the storefront's browser tests share (browser.mjs, story.mjs): where the binaries and
// the built SPA are, the injected EIP-1193 wallet over anvil's dev accounts, JSON-RPC to the
// node for setup and on-chain assertions, the direct-upload watcher, and starting
// `posthuman-server` and Debian's headless Chromium.

import { spawn } from 'node:child_process';
import { readFileSync, readdirSync, statSync, rmSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

export const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const cache = process.env.POSTHUMAN_CACHE ?? join(process.env.HOME, '.cache/posthuman');
// POSTHUMAN_BIN_DIR: binaries elsewhere (a copy, when other builds share the target dir).
export const bin = process.env.POSTHUMAN_BIN_DIR ?? join(process.env.CARGO_TARGET_DIR ?? join(cache, 'target'), 'debug');
export const dist = join(root, 'web/dist');

/// A logger stamping each line with the seconds since it was made.
export function logger(tag) {
  const t0 = Date.now();
  return (m) => console.log(`[${tag} ${((Date.now() - t0) / 1000).toFixed(1)}s] ${m}`);
}

export function files(dir, name, out = []) {
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) files(p, name, out);
    else if (e === name) out.push(p);
  }
  return out;
}

/// The stored public file `name` of job `id` in the operator's store.
export function stored(store, name, id) {
  const hit = files(store, name).find((p) => {
    const r = files(dirname(p), 'receipt.json')[0];
    return r && JSON.parse(readFileSync(r, 'utf8')).body?.job_id === id;
  });
  assert.ok(hit, `no stored ${name} for job ${id} under ${store}`);
  return hit;
}

// An EIP-1193 wallet injected before the app loads (RECIPES §9): accounts are the test's,
// every other request goes to the demo's anvil, as a real wallet forwards to its node.
// `chain` starts the wallet on another network (wrong-network case): it then answers 4902 to
// the first switch, until the storefront adds the chain. `announce`: EIP-6963 names instead
// of `window.ethereum`. `authorised`: the site was connected before (a reload reconnects).
export function injectWallet({ rpcUrl, account, chain, announce, authorised: before }) {
  if (before) sessionStorage.setItem('wallet-ok-injected', '1');
  const calls = (window.__walletCalls = []);
  const wallets = (window.__wallets = []);
  const make = (name) => {
    const listeners = {};
    let chainId = chain ?? null; // null: the node's own
    const known = new Set();
    const authorised = () => sessionStorage.getItem(`wallet-ok-${name}`) === '1';
    const w = {
      async request({ method, params = [] }) {
        calls.push({ wallet: name, method, params });
        // The test makes the person decline the next request of this method (4001).
        if (w.reject === method) {
          w.reject = null;
          throw Object.assign(new Error('User rejected the request.'), { code: 4001 });
        }
        if (method === 'eth_requestAccounts') {
          sessionStorage.setItem(`wallet-ok-${name}`, '1');
          return [w.account];
        }
        if (method === 'eth_accounts') return authorised() ? [w.account] : [];
        if (method === 'eth_chainId' && chainId) return chainId;
        if (method === 'wallet_addEthereumChain') { known.add(params[0].chainId); w.added = params[0]; return null; }
        if (method === 'wallet_switchEthereumChain') {
          if (chainId && !known.has(params[0].chainId)) throw Object.assign(new Error('Unrecognized chain'), { code: 4902 });
          chainId = params[0].chainId;
          setTimeout(() => w.emit('chainChanged', chainId), 0);
          return null;
        }
        const r = await fetch(rpcUrl, {
          method: 'POST', headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ jsonrpc: '2.0', id: calls.length, method, params }),
        });
        const j = await r.json();
        if (j.error) throw Object.assign(new Error(j.error.message), { code: j.error.code });
        return j.result;
      },
      on(ev, f) { (listeners[ev] ??= []).push(f); },
      removeListener(ev, f) { listeners[ev] = (listeners[ev] ?? []).filter((g) => g !== f); },
      emit(ev, v) { for (const f of listeners[ev] ?? []) f(v); },
      account,
    };
    wallets.push(w);
    return w;
  };
  if (!announce) {
    window.ethereum = make('injected');
    return;
  }
  const announced = announce.map((name, i) => ({ info: { uuid: `uuid-${i}`, name, icon: '', rdns: `test.${i}` }, provider: make(name) }));
  const fire = () => announced.forEach((d) => window.dispatchEvent(new CustomEvent('eip6963:announceProvider', { detail: Object.freeze(d) })));
  window.addEventListener('eip6963:requestProvider', fire);
  fire();
}

/// `balanceOf(owner)` of an ERC-20, asked of the node directly (not through the page).
export async function balanceOf(rpcUrl, token, owner) {
  const data = '0x70a08231' + owner.slice(2).toLowerCase().padStart(64, '0');
  const r = await fetch(rpcUrl, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'eth_call', params: [{ to: token, data }, 'latest'] }),
  });
  return BigInt((await r.json()).result).toString();
}

/// A JSON-RPC call to the node, from the test itself (setup and on-chain assertions).
export async function rpc(rpcUrl, method, params = []) {
  const r = await fetch(rpcUrl, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
  });
  const j = await r.json();
  if (j.error) throw new Error(`${method}: ${j.error.message}`);
  return j.result;
}

export async function mined(rpcUrl, hash) {
  for (let i = 0; i < 100; i++) {
    const r = await rpc(rpcUrl, 'eth_getTransactionReceipt', [hash]);
    if (r) { assert.equal(r.status, '0x1', `${hash} reverted`); return r; }
    await new Promise((ok) => setTimeout(ok, 100));
  }
  throw new Error(`${hash} not mined`);
}

/// Records a page's file transfers: `POST /api/uploads`, the PUTs, and the publishes and
/// submits (method, path, content type), in order (not the reads, `GET /api/uploads` among
/// them).
export function watchTransfers(page) {
  const seen = [];
  page.on('request', (r) => {
    const path = new URL(r.url()).pathname;
    if (r.method() !== 'GET' && (path.startsWith('/api/uploads') || path === '/api/models' || path === '/api/jobs')) {
      seen.push({ method: r.method(), path, type: r.headers()['content-type'] ?? '' });
    }
  });
  return seen;
}

/// The transfers seen are one direct upload of `files` then its use by `route`: the signed
/// declaration, a PUT per file to the URL it answered, a JSON publish or submit; nothing
/// multipart anywhere (behind API Gateway a request body is at most 6 MB).
export function assertDirectUpload(seen, files, route) {
  const what = JSON.stringify(seen);
  assert.deepEqual(seen.filter((s) => s.method === 'POST' && s.path === '/api/uploads').length, 1, `one declaration: ${what}`);
  const puts = seen.filter((s) => s.method === 'PUT').map((s) => s.path.match(/^\/api\/uploads\/u-[0-9a-f]{32}\/([a-z_]+)$/)?.[1]);
  assert.deepEqual(puts.sort(), [...files].sort(), `a PUT per file: ${what}`);
  const used = seen.filter((s) => s.path === route);
  assert.equal(used.length, 1, `one ${route}: ${what}`);
  assert.match(used[0].type, /^application\/json/, `${route} as JSON naming the upload: ${what}`);
  assert.ok(!seen.some((s) => s.type.startsWith('multipart/')), `no multipart request: ${what}`);
  assert.ok(seen.indexOf(used[0]) > seen.findLastIndex((s) => s.method === 'PUT'), `the files before the ${route}: ${what}`);
}

/// anvil's dev account #0 (its default mnemonic), the publisher of the browser's publish.
export const ANVIL_DEV0 = '0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266';

/// `posthuman-server` on `dataDir` (a fresh one deploys anvil, Ocean v4 and the lineage
/// contract), serving the built SPA; resolves to {server, base} once it listens.
export async function startServer(dataDir, extra = []) {
  const server = spawn(
    join(bin, 'posthuman-server'),
    ['--data-dir', dataDir, '--listen', '127.0.0.1:0', '--static-dir', dist, '--worker', join(bin, 'posthuman-worker'), ...extra],
    { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const base = await new Promise((ok, fail) => {
    let out = '';
    server.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/\S+)/);
      if (m) ok(m[1]);
    });
    server.on('exit', (c) => fail(new Error(`posthuman-server exited (${c}) before listening`)));
  });
  return { server, base };
}

/// Stops a server started by `startServer` (SIGINT: anvil's state is saved) and waits for it.
export async function stopServer(server) {
  if (server.exitCode !== null) return;
  server.kill('SIGINT');
  await new Promise((ok) => server.on('exit', ok));
}

/// A browser test's end: closes the browser, stops the server, removes the scratch dir when the
/// test passed (keeps it for inspection when it failed) and exits with the test's status.
export async function finish({ browser, server, tmp, failed }) {
  await browser.close();
  await stopServer(server);
  if (!failed) rmSync(tmp, { recursive: true, force: true });
  else console.error(`kept ${tmp} for inspection`);
  process.exit(failed ? 1 : 0);
}

/// Debian's headless Chromium (RECIPES §4: never a downloaded browser).
export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
}
