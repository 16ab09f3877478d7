// The storefront in a real browser against a real deployment: plays the tiny demo into a
// data dir (anvil, Ocean v4, the lineage contract, real train/infer/evaluate jobs), serves
// that data dir again with `posthuman-server --static-dir web/dist`, and drives Debian's
// headless Chromium with playwright-core:
// - the catalogue, a model's lineage and a consumer's jobs render;
// - the receipt view of Charlie's train job (M2 → M3) verifies every check in the browser,
//   lineage included; the evaluation's receipt too, and the report pasted by its buyer;
// - after the stored receipt is edited on the operator's disk, the same view shows the
//   precise failures (signature, committed receipt hash); an edited report fails too.
//
// Usage: node web/tests/browser.mjs (after web/build.sh and a debug build of posthuman,
// posthuman-worker and posthuman-server in $CARGO_TARGET_DIR/debug). Exits non-zero on the
// first failed expectation.

import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, readdirSync, statSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const cache = process.env.POSTHUMAN_CACHE ?? join(process.env.HOME, '.cache/posthuman');
const bin = join(process.env.CARGO_TARGET_DIR ?? join(cache, 'target'), 'debug');
const dist = join(root, 'web/dist');
const t0 = Date.now();
const log = (m) => console.log(`[browser ${((Date.now() - t0) / 1000).toFixed(1)}s] ${m}`);

function files(dir, name, out = []) {
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) files(p, name, out);
    else if (e === name) out.push(p);
  }
  return out;
}

/// The stored public file `name` of job `id` in the operator's store.
function stored(store, name, id) {
  const hit = files(store, name).find((p) => {
    const r = files(dirname(p), 'receipt.json')[0];
    return r && JSON.parse(readFileSync(r, 'utf8')).body?.job_id === id;
  });
  assert.ok(hit, `no stored ${name} for job ${id} under ${store}`);
  return hit;
}

// 1. A real deployment with finished jobs: the tiny demo, kept in a data dir.
const tmp = mkdtempSync(join(tmpdir(), 'posthuman-web-'));
const demoDir = join(tmp, 'demo');
log(`tiny demo into ${demoDir}`);
const demo = spawnSync(
  join(bin, 'posthuman'),
  ['--json', 'demo', '--size', 'tiny', '--data-dir', demoDir, '--wikitext', join(root, 'data/wikitext-2')],
  { cwd: root, encoding: 'utf8', maxBuffer: 64 << 20 },
);
if (demo.status !== 0) {
  console.error(demo.stdout, demo.stderr);
  throw new Error(`the demo failed (exit ${demo.status})`);
}
const summary = JSON.parse(demo.stdout);
const trains = summary.jobs.filter((j) => j.kind === 'train');
const evals = summary.jobs.filter((j) => j.kind === 'evaluate');
assert.ok(trains.length >= 2 && evals.length >= 1, 'the demo ran two train jobs and evaluations');
const train = trains[trains.length - 1]; // Charlie's: M2 → M3
const evaluation = evals[evals.length - 1]; // Elena's evaluation of M3
const [m1, m2, m3] = summary.lineage;
log(`demo done: train ${train.job_id}, evaluate ${evaluation.job_id}`);

// 2. Serve the same data dir again (anvil reloads its saved state), with the storefront.
const opDir = join(demoDir, 'operator');
const store = join(opDir, 'store');
const server = spawn(
  join(bin, 'posthuman-server'),
  ['--data-dir', opDir, '--listen', '127.0.0.1:0', '--static-dir', dist, '--worker', join(bin, 'posthuman-worker')],
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
log(`server at ${base}`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
let failed = false;
try {
  const page = await (await browser.newContext()).newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  // Where the facts come from: JSON-RPC the page sends to the chain's node itself.
  const rpcUrl = (await (await fetch(`${base}/api/chain`)).json()).rpc_url;
  const rpcMethods = new Set();
  page.on('request', (r) => {
    if (r.url().startsWith(rpcUrl) && r.method() === 'POST') rpcMethods.add(JSON.parse(r.postData()).method);
  });

  // Waits for the receipt view's verdict; returns {verdict, rows: [{check, status, reason, group}]}.
  async function receiptView(id) {
    await page.goto(`${base}/jobs/${id}/receipt`);
    await page.waitForSelector('#checks[data-state="done"], #checks[data-state="error"]', { timeout: 120_000 });
    return page.evaluate(() => ({
      verdict: document.querySelector('#checks').dataset.verdict,
      error: document.querySelector('#checks .error')?.textContent,
      rows: [...document.querySelectorAll('tr.check')].map((tr) => ({
        check: tr.dataset.check,
        status: tr.dataset.status,
        reason: tr.querySelector('.reason').textContent,
        group: tr.closest('.group').dataset.group,
      })),
    }));
  }
  const row = (v, check) => v.rows.find((r) => r.check === check);

  // Catalogue, model page (lineage M1 → M2 → M3), a consumer's jobs.
  await page.goto(`${base}/`);
  await page.waitForSelector('#catalogue tr.model');
  assert.equal(await page.locator('#catalogue tr.model').count(), 3, 'three models in the catalogue');
  if (process.env.SCREENSHOTS) await page.screenshot({ path: join(process.env.SCREENSHOTS, 'catalogue.png'), fullPage: true });
  await page.click(`#catalogue tr.model[data-nft="${m3.nft}"] td a`);
  await page.waitForSelector('#model #lineage');
  const lineage = await page.locator('#model #lineage').textContent();
  assert.equal(lineage.split('→').length, 3, `lineage M1 → M2 → M3, got ${lineage}`);
  await page.waitForFunction(() => document.querySelectorAll('tr.quote .loading').length === 0);
  assert.equal(await page.locator('tr.quote').count(), 3, 'a quote per job kind');
  if (process.env.SCREENSHOTS) await page.screenshot({ path: join(process.env.SCREENSHOTS, 'model.png'), fullPage: true });
  const elena = (await (await fetch(`${base}/api/jobs/${evaluation.job_id}`)).json()).consumer;
  await page.goto(`${base}/jobs?consumer=${elena}`);
  await page.waitForSelector('#jobs tr.job');
  assert.equal(await page.locator(`#jobs tr.job[data-job="${evaluation.job_id}"]`).count(), 1);
  await page.click(`#jobs tr.job[data-job="${evaluation.job_id}"] td a`);
  await page.waitForSelector('#job');
  assert.equal(await page.locator('#job').getAttribute('data-state'), 'done');
  await page.click('#job a[href$="/receipt"]');
  await page.waitForSelector('#checks[data-state="done"]', { timeout: 120_000 });
  assert.equal(new URL(page.url()).pathname, `/jobs/${evaluation.job_id}/receipt`);
  log('catalogue, model, jobs and job pages render; links navigate in place');

  // The train job's receipt: every check passes, in the browser, lineage included.
  let v = await receiptView(train.job_id);
  assert.equal(v.verdict, 'pass', JSON.stringify(v, null, 1));
  assert.deepEqual(v.rows.filter((r) => r.status === 'FAIL'), []);
  for (const c of ['chain_id', 'operator', 'signature', 'commitment', 'commitment_receipt_hash',
    'commitment_output_weights', 'output_weights', 'input_weights', 'lineage_link', 'order',
    'order_datatoken', 'order_consumer', 'order_fee']) {
    assert.equal(row(v, c)?.status, 'pass', `${c} passes`);
  }
  assert.equal(v.rows.filter((r) => r.check === 'lineage_link').length, 2, 'M3 ← M2 and M2 ← M1');
  for (const m of ['eth_chainId', 'eth_call', 'eth_getTransactionReceipt']) {
    assert.ok(rpcMethods.has(m), `the browser asked the node (${rpcUrl}) itself: ${m}`);
  }
  if (process.env.SCREENSHOTS) await page.screenshot({ path: join(process.env.SCREENSHOTS, 'receipt-pass.png'), fullPage: true });
  const fields = await page.locator('#fields tr[data-field]').count();
  assert.ok(fields >= 20, `every receipt field shown (${fields})`);
  log(`train receipt: ${v.rows.length} checks pass`);

  // The evaluation's receipt, then the report its buyer received, pasted byte for byte.
  v = await receiptView(evaluation.job_id);
  assert.equal(v.verdict, 'pass', JSON.stringify(v, null, 1));
  const reportFile = stored(store, 'report.json', evaluation.job_id);
  const report = readFileSync(reportFile, 'utf8');
  await page.fill('#report', report);
  await page.click('#report-form button');
  await page.waitForFunction(
    () => document.querySelector('#checks')?.dataset.state === 'done'
      && document.querySelectorAll('.group[data-group="Evaluation"] tr.check').length === 4,
    null, { timeout: 60_000 });
  const evalRows = await page.$$eval('.group[data-group="Evaluation"] tr.check', (trs) => trs.map((t) => [t.dataset.check, t.dataset.status]));
  assert.deepEqual(evalRows.map((r) => r[1]), ['pass', 'pass', 'pass', 'pass'], JSON.stringify(evalRows));
  // A report edited after the fact no longer matches the receipt.
  await page.fill('#report', report.replace(/"perplexity":\s*([0-9.]+)/, (_, p) => `"perplexity":${(Number(p) / 2).toFixed(3)}`));
  await page.click('#report-form button');
  await page.waitForSelector('.group[data-group="Evaluation"] tr.check[data-check="eval_output"][data-status="FAIL"]', { timeout: 60_000 });
  const why = await page.locator('tr.check[data-check="eval_output"] .reason').textContent();
  assert.match(why, /^the report hashes to 0x[0-9a-f]{64}, the receipt commits to 0x[0-9a-f]{64}$/);
  log('evaluation receipt and report verified; an edited report is refused');

  // Tamper with the stored receipt on the operator's disk: the view must say precisely why.
  const receiptFile = stored(store, 'receipt.json', train.job_id);
  const original = readFileSync(receiptFile, 'utf8');
  const edited = JSON.parse(original);
  edited.body.seed += 1;
  writeFileSync(receiptFile, JSON.stringify(edited));
  try {
    v = await receiptView(train.job_id);
    assert.equal(v.verdict, 'fail');
    const bad = v.rows.filter((r) => r.status === 'FAIL');
    assert.deepEqual(bad.map((r) => r.check).sort(), ['commitment_receipt_hash', 'signature'], JSON.stringify(bad, null, 1));
    assert.match(row(v, 'signature').reason, /^signature does not match the content \(it recovers to 0x[0-9a-fA-F]{40}, not 0x[0-9a-fA-F]{40}\): a field was changed after signing$/);
    assert.match(row(v, 'commitment_receipt_hash').reason, /^the chain committed receipt hash 0x[0-9a-f]{64}, this receipt hashes to 0x[0-9a-f]{64}$/);
    if (process.env.SCREENSHOTS) await page.screenshot({ path: join(process.env.SCREENSHOTS, 'receipt-tampered.png'), fullPage: true });
    log(`tampered receipt: ${bad.map((r) => `${r.check}: ${r.reason}`).join(' | ')}`);
    // A receipt claiming another consumer: the signature, the commitment's trainer and the
    // order's consumer all disagree.
    const other = JSON.parse(original);
    other.body.consumer = '0x000000000000000000000000000000000000dEaD';
    writeFileSync(receiptFile, JSON.stringify(other));
    v = await receiptView(train.job_id);
    assert.equal(row(v, 'order_consumer').status, 'FAIL');
    assert.match(row(v, 'order_consumer').reason, /^the order's consumer is 0x[0-9a-fA-F]{40}, the receipt's is 0x000000000000000000000000000000000000dEaD$/);
    assert.equal(row(v, 'commitment_trainer').status, 'FAIL');
  } finally {
    writeFileSync(receiptFile, original);
  }
  v = await receiptView(train.job_id);
  assert.equal(v.verdict, 'pass', 'the restored receipt verifies again');
  assert.deepEqual(errors, [], 'no uncaught page errors');
  log('all browser checks passed');
} catch (e) {
  failed = true;
  console.error(e);
} finally {
  await browser.close();
  server.kill('SIGINT');
  await new Promise((ok) => server.on('exit', ok));
  if (!failed) rmSync(tmp, { recursive: true, force: true });
  else console.error(`kept ${tmp} for inspection`);
}
process.exit(failed ? 1 : 0);
