// The storefront in a real browser against a real deployment: plays the tiny demo into a
// data dir (anvil, Ocean v4, the lineage contract, real train/infer/evaluate jobs), serves
// that data dir again with `posthuman-server --static-dir web/dist`, and drives Debian's
// headless Chromium with playwright-core:
// - the catalogue, a model's lineage and a consumer's jobs render;
// - the receipt view of Charlie's train job (M2 → M3) verifies every check in the browser,
//   lineage included; the evaluation's receipt too, and the report pasted by its buyer;
// - after the stored receipt is edited on the operator's disk, the same view shows the
//   precise failures (signature, committed receipt hash); an edited report fails too;
// - a wallet (an injected EIP-1193 provider forwarding to anvil): connect, "My account" with
//   balances read through the wallet and the account's jobs, live account change, EIP-6963
//   choice, wrong network → switch / add chain, a rejected request in words;
// - ordering with the buyer's own wallet (anvil's unlocked dev account #5): an over-bound
//   form refused before any quote, the quote line by line, insufficient balance and a
//   rejected transaction in words, then buy + approve + startOrder + signed submit, the job
//   followed live and its generated text read with a signed request; evaluations without and
//   with a baseline (perplexity bars), and a train order whose loss curve is the job's own;
// - a LoRA train order from the same form (method, rank, alpha, dropout, the GPT-2 family's
//   modules; an out-of-bounds rank refused before any quote; the model named in the form):
//   its derived model's page says "LoRA r 4 (c_attn, c_proj) over M1", and its trainer puts
//   datatokens on sale on Ocean's exchange from that page, and edits its card there
//   (keyboard only; a bad tag refused in words before the wallet is asked; the DDO re-set on
//   chain);
// - publishing (an allowed publisher's wallet): files refused in the page (unsupported
//   model_type, unreadable safetensors header, a folder lacking files, a config over the
//   API's cap), a declined signature, weights altered on their way refused by the API
//   (upload_mismatch) in words, then the model's folder signed (eth_signTypedData_v4: the
//   request and the upload) and sent by direct upload (POST /api/uploads, a PUT per file, a
//   JSON publish; no multipart) with a progress bar, the model's page and the catalogue
//   listing it; datasets of the orders go by direct upload too;
// - the lineage tree (M1 → M2 → M3, each node a link, the current one marked), a model's
//   evaluations, page titles per route, a finished train job's loss drawn on its page;
// - every page at desktop width and at 390 px (tests/pages.mjs): an axe-core scan with no
//   serious or critical violation, a screenshot of each (into $SCREENSHOTS/web-shots, else
//   $POSTHUMAN_CACHE/web-shots, printed at the end), nothing wider than the phone's screen;
//   then the catalogue with 1,000 more models (written into the API's SQLite catalogue): its
//   first render timed (target ≤ 1 s) and every model reachable, a page at a time.
//
// Usage: node web/tests/browser.mjs (after web/build.sh and a debug build of posthuman-demo,
// posthuman-worker and posthuman-server in $CARGO_TARGET_DIR/debug). Exits non-zero on the
// first failed expectation.

import { spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, copyFileSync, readFileSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, basename } from 'node:path';
import assert from 'node:assert/strict';
import { sweepPages, catalogueAtScale } from './pages.mjs';
import {
  root, cache, bin, logger, files, stored, injectWallet, balanceOf, rpc, mined, watchTransfers,
  assertDirectUpload, ANVIL_DEV0, startServer, launchBrowser, finish,
} from './lib.mjs';

const log = logger('browser');

// 1. A real deployment with finished jobs: the tiny demo, kept in a data dir.
const tmp = mkdtempSync(join(tmpdir(), 'posthuman-web-'));
const demoDir = join(tmp, 'demo');
log(`tiny demo into ${demoDir}`);
const demo = spawnSync(
  join(bin, 'posthuman-demo'),
  ['--json', '--size', 'tiny', '--data-dir', demoDir, '--wikitext', join(root, 'data/wikitext-2')],
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
// A 16 KiB dataset cap (the API's, below the worker's): a dataset over it is a refusal only
// the API can give, which the order panel must say in words. The publisher the browser
// publishes as: anvil's dev account #0 (its key is anvil's, so anvil signs its typed data).
const { server, base } = await startServer(opDir, ['--max-dataset-bytes', '16384', '--publisher', ANVIL_DEV0]);
log(`server at ${base}`);

const browser = await launchBrowser();
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
  // The lineage tree: M1 at the root, M2 under it, M3 (this page, highlighted) under M2;
  // every node a link to its model page. M2's page shows M3 below it, as a derived model.
  await page.waitForSelector('#model #lineage');
  const tree = (p) => p.$$eval('#lineage a', (as) => as.map((a) => [new URL(a.href).pathname, a.getAttribute('aria-current'), a.closest('li').className]));
  assert.deepEqual(await tree(page), [
    [`/models/${m1.nft}`, null, 'root'], [`/models/${m2.nft}`, null, 'ancestor'], [`/models/${m3.nft}`, 'page', 'current'],
  ], 'lineage tree M1 → M2 → M3');
  const m3Name = (await (await fetch(`${base}/api/models/${m3.nft}`)).json()).name;
  await page.waitForFunction((n) => document.title.startsWith(`${n} (`), m3Name);
  assert.match(await page.title(), / · Posthuman$/);
  await page.click(`#lineage a[href="/models/${m2.nft}"]`);
  await page.waitForFunction((nft) => document.querySelector('#model')?.dataset.nft === nft, m2.nft);
  await page.waitForFunction(() => document.querySelectorAll('#lineage a').length === 3);
  assert.deepEqual(await tree(page), [
    [`/models/${m1.nft}`, null, 'root'], [`/models/${m2.nft}`, 'page', 'current'], [`/models/${m3.nft}`, null, 'derived'],
  ], 'M2 between its parent M1 and its derived M3');
  // The API names the derived models (its per-parent index), so the page needs no catalogue walk.
  assert.deepEqual((await (await fetch(`${base}/api/models/${m2.nft}`)).json()).children, [m3.nft]);
  assert.deepEqual((await (await fetch(`${base}/api/models/${m3.nft}`)).json()).children, []);
  await page.goto(`${base}/models/${m3.nft}`);
  await page.waitForSelector('#model #lineage');
  // Elena's evaluation of M3 is listed on its page, with who ran it and its receipt.
  await page.waitForSelector(`#evaluations tr.evaluation[data-job="${evaluation.job_id}"]`);
  assert.equal(await page.locator(`#evaluations tr.evaluation[data-job="${evaluation.job_id}"] a[href$="/receipt"]`).count(), 1);
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
  assert.equal(await page.title(), `Job ${evaluation.job_id} · Posthuman`);
  assert.equal(await page.locator('#job-progress[aria-live="polite"]').count(), 1);
  assert.equal(await page.locator('#loss-curve').count(), 0, 'no loss curve for an evaluation');
  await page.click('#job a[href$="/receipt"]');
  await page.waitForSelector('#checks[data-state="done"]', { timeout: 120_000 });
  assert.equal(new URL(page.url()).pathname, `/jobs/${evaluation.job_id}/receipt`);
  assert.equal(await page.title(), `Receipt of job ${evaluation.job_id} · Posthuman`);
  // A finished train job's page: the last loss its progress reported, drawn (only its buyer
  // reads the whole curve), with axes and words for screen readers.
  await page.goto(`${base}/jobs/${train.job_id}`);
  await page.waitForSelector('#job');
  const demoProgress = (await (await fetch(`${base}/api/jobs/${train.job_id}`)).json()).progress;
  assert.equal(typeof demoProgress?.loss, 'number', 'a finished train job keeps its last progress');
  await page.waitForSelector('#loss-curve[role="img"]');
  assert.equal(await page.getAttribute('#loss-curve', 'data-points'), '1');
  assert.match(await page.getAttribute('#loss-curve', 'aria-label'), new RegExp(`^Training loss [0-9.]+ at step ${demoProgress.done}$`));
  assert.equal(await page.locator('#read-curve').count(), 0, 'only the buyer may read the whole curve');
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
  // The wallet: Elena connects (keyboard only), sees her address, network, balances and jobs
  // on "My account"; then her wallet switches account live.
  {
    const book = (await (await fetch(`${base}/api/chain`)).json()).address_book;
    const charlie = (await (await fetch(`${base}/api/jobs/${train.job_id}`)).json()).consumer;
    const ctx = await browser.newContext();
    await ctx.addInitScript(injectWallet, { rpcUrl, account: elena });
    const wp = await ctx.newPage();
    wp.on('pageerror', (e) => errors.push(String(e)));
    await wp.goto(`${base}/account`);
    await wp.waitForSelector('#not-connected');
    await wp.focus('#connect');
    await wp.keyboard.press('Enter');
    await wp.waitForSelector('#wallet-address');
    assert.equal((await wp.getAttribute('#wallet', 'data-account')).toLowerCase(), elena.toLowerCase());
    assert.match(await wp.textContent('#wallet-address'), /^0x[0-9a-fA-F]{4}…[0-9a-fA-F]{4}$/);
    assert.equal(await wp.textContent('#wallet-network'), 'local development chain (8996)');
    assert.equal(await wp.locator('#wrong-network').count(), 0);
    await wp.waitForSelector('#account #jobs tr.job');
    assert.equal(await wp.locator(`#account #jobs tr.job[data-job="${evaluation.job_id}"]`).count(), 1, "Elena's evaluation on her account page");
    await wp.waitForSelector('#balances tr.balance');
    const balances = await wp.$$eval('#balances tr.balance', (trs) => trs.map((t) => [t.dataset.token.toLowerCase(), t.dataset.balance]));
    assert.equal(balances.length, 1 + 3, 'OCEAN and the three models\' datatokens');
    const ocean = balances.find(([t]) => t === book.ocean.toLowerCase());
    assert.ok(ocean, `an OCEAN row: ${JSON.stringify(balances)}`);
    assert.equal(ocean[1], await balanceOf(rpcUrl, book.ocean, elena), 'OCEAN balance as the node states it');
    assert.ok(BigInt(ocean[1]) > 0n, 'Elena holds OCEAN');
    for (const [t, b] of balances) assert.equal(b, await balanceOf(rpcUrl, t, elena), `balance of ${t}`);
    const viaWallet = await wp.evaluate(() => window.__walletCalls.map((c) => c.method));
    assert.ok(viaWallet.includes('eth_call') && viaWallet.includes('eth_requestAccounts'), `through the wallet: ${viaWallet}`);
    // The jobs page shows the connected account's jobs, no address typed; a reload
    // reconnects without a prompt (eth_accounts).
    await wp.click('header nav a[href="/jobs"]');
    await wp.waitForSelector(`#jobs tr.job[data-job="${evaluation.job_id}"]`);
    assert.equal(await wp.textContent('main h1'), 'Your jobs');
    await wp.reload();
    await wp.waitForSelector(`#jobs tr.job[data-job="${evaluation.job_id}"]`);
    // accountsChanged: the wallet moves to Charlie; the account page follows — even when
    // Elena's list, asked first, answers last (it is held back 1.5 s here): the page must
    // never show her jobs as Charlie's.
    const elenasJobs = (u) => u.pathname === '/api/jobs' && u.searchParams.get('consumer')?.toLowerCase() === elena.toLowerCase();
    await wp.route(elenasJobs, async (route) => { await new Promise((ok) => setTimeout(ok, 1500)); await route.continue(); });
    await wp.click('header nav a[href="/account"]');
    await wp.waitForSelector('#account-address');
    await wp.evaluate((a) => { const w = window.__wallets[0]; w.account = a; w.emit('accountsChanged', [a]); }, charlie);
    await wp.waitForFunction((a) => document.querySelector('#account')?.dataset.account?.toLowerCase() === a.toLowerCase(), charlie);
    await wp.waitForSelector(`#account #jobs tr.job[data-job="${train.job_id}"]`);
    await new Promise((ok) => setTimeout(ok, 2000)); // Elena's late answer has arrived by now
    assert.equal(await wp.locator(`#account #jobs tr.job[data-job="${train.job_id}"]`).count(), 1, `Charlie's jobs still shown: ${await wp.locator('#account').innerText()}`);
    assert.equal(await wp.locator(`#account #jobs tr.job[data-job="${evaluation.job_id}"]`).count(), 0, "Elena's late list is not shown as Charlie's");
    await wp.unroute(elenasJobs);
    // Charlie trained M3: his reward is the trainer's share of M1's scheme, in the CLI's words.
    const rewardShares = () => wp.$$eval('#rewards tr.reward', (trs) => trs.map((t) => [t.querySelector('a')?.getAttribute('href'), t.querySelector('.share').textContent]));
    await wp.waitForSelector('#rewards tr.reward');
    assert.deepEqual(await rewardShares(), [[`/models/${m3.nft}`, 'trainer: 50%']], "Charlie's reward and its share");
    await wp.waitForSelector('#no-royalties');
    // Bob trained M2: the trainer of M2, one step up in M3's; and M3's orders paid him, as
    // M2's trainer, a royalty out of M3's vault — the rows are the demo's own distributions.
    const switchTo = async (who) => {
      const a = summary.accounts.find((x) => x.name === who).address;
      await wp.evaluate((a) => { const w = window.__wallets[0]; w.account = a; w.emit('accountsChanged', [a]); }, a);
      await wp.waitForFunction((a) => document.querySelector('#account')?.dataset.account?.toLowerCase() === a.toLowerCase(), a);
      return a;
    };
    const royaltyRows = async (n) => {
      await wp.waitForFunction((n) => document.querySelectorAll('#royalties tr.royalty').length === n, n, { timeout: 30_000 });
      return wp.$$eval('#royalties tr.royalty', (trs) => trs.map((t) => [t.dataset.model.toLowerCase(), t.querySelector('.share').textContent, t.dataset.amount]));
    };
    const nftOf = (label) => ({ M1: m1, M2: m2, M3: m3 })[label].nft.toLowerCase();
    const paidTo = (who) => summary.royalties.filter((r) => r.to === who).map((r) => [nftOf(r.model), BigInt(r.amount).toString()]).sort();
    await switchTo('bob');
    await wp.waitForFunction(() => document.querySelectorAll('#rewards tr.reward').length === 2);
    assert.deepEqual((await rewardShares()).sort(), [[`/models/${m2.nft}`, 'trainer: 50%'], [`/models/${m3.nft}`, 'trainer 1 step(s) up: 25%']].sort(), "Bob's rewards and their shares");
    const bobs = await royaltyRows(paidTo('bob').length);
    assert.ok(bobs.length > 0, 'the demo paid Bob royalties');
    assert.deepEqual(bobs.map(([m, , a]) => [m, a]).sort(), paidTo('bob'), "Bob's royalties as the demo distributed them");
    assert.ok(bobs.every(([m, share]) => m === m3.nft.toLowerCase() && share === "parent's trainer: 50%"), JSON.stringify(bobs));
    // Alice published M1: every vault pays her the remainder.
    await switchTo('alice');
    const alices = await royaltyRows(paidTo('alice').length);
    assert.deepEqual(alices.map(([m, , a]) => [m, a]).sort(), paidTo('alice'), "Alice's royalties as the demo distributed them");
    assert.ok(alices.every(([, share]) => share === 'root owner: remainder'), JSON.stringify(alices));
    if (process.env.SCREENSHOTS) await wp.screenshot({ path: join(process.env.SCREENSHOTS, 'account.png'), fullPage: true });
    await ctx.close();
    log('wallet: connect, address and network, balances as on chain, own jobs, live account change, rewards with shares, royalties');

    // Two wallets announced (EIP-6963), the chosen one on the wrong network: the page says
    // so, offers the switch, adds the chain (4902) with the API's RPC URL, and follows.
    const ctx2 = await browser.newContext();
    await ctx2.addInitScript(injectWallet, { rpcUrl, account: elena, chain: '0x1', announce: ['Wrong-chain wallet', 'Other wallet'] });
    const wp2 = await ctx2.newPage();
    wp2.on('pageerror', (e) => errors.push(String(e)));
    await wp2.goto(`${base}/account`);
    await wp2.waitForSelector('#wallet-pick');
    assert.deepEqual(await wp2.$$eval('#wallet-pick option', (os) => os.map((o) => o.textContent)), ['Wrong-chain wallet', 'Other wallet']);
    await wp2.click('#connect');
    await wp2.waitForSelector('#wrong-network');
    assert.equal(await wp2.textContent('#wallet-network'), 'Ethereum');
    assert.match(await wp2.textContent('#wrong-network'), /Wrong network: this storefront's models are on local development chain \(8996\)\./);
    await wp2.waitForSelector('#account .error');
    assert.equal(await wp2.textContent('#account .error'), 'Your wallet is on Ethereum: switch to local development chain (8996) (top of the page) to read your balances.');
    assert.equal(await wp2.locator('#balances').count(), 0, 'no balances read on the wrong network');
    if (process.env.SCREENSHOTS) await wp2.screenshot({ path: join(process.env.SCREENSHOTS, 'wrong-network.png'), fullPage: true });
    await wp2.focus('#switch-network');
    await wp2.keyboard.press('Enter');
    await wp2.waitForFunction(() => !document.querySelector('#wrong-network') && document.querySelector('#wallet')?.dataset.chain === '8996');
    await wp2.waitForSelector('#balances tr.balance');
    const added = await wp2.evaluate(() => window.__wallets[0].added);
    assert.equal(added.chainId, '0x2324');
    assert.deepEqual(added.rpcUrls, [rpcUrl]);
    const order = await wp2.evaluate(() => window.__walletCalls.map((c) => c.method).filter((m) => m.startsWith('wallet_')));
    assert.deepEqual(order, ['wallet_switchEthereumChain', 'wallet_addEthereumChain', 'wallet_switchEthereumChain'], 'switch, 4902, add, switch');
    assert.match(await wp2.textContent('#wallet-status'), /Switched to local development chain \(8996\)/);
    assert.equal(await wp2.getAttribute('#wallet-status', 'aria-live'), 'polite');
    await ctx2.close();

    // No wallet at all (the main page's browser has none): said where it happened.
    await page.goto(`${base}/account`);
    await page.click('#connect');
    await page.waitForSelector('#wallet-status.error');
    assert.match(await page.textContent('#wallet-status'), /^no wallet found in this browser: install or enable one/);
    assert.equal(await page.textContent('#not-connected'), 'Connect your wallet (the button at the top) to see your balances and your jobs.');

    // A rejected request (4001) is said in words where it happened.
    const ctx3 = await browser.newContext();
    await ctx3.addInitScript(() => {
      window.ethereum = { async request() { throw Object.assign(new Error('User rejected the request.'), { code: 4001 }); }, on() {}, removeListener() {} };
    });
    const wp3 = await ctx3.newPage();
    await wp3.goto(`${base}/`);
    await wp3.click('#connect');
    await wp3.waitForFunction(() => document.querySelector('#wallet-status')?.textContent.length > 0 && document.querySelector('#wallet-status').classList.contains('error'));
    assert.equal(await wp3.textContent('#wallet-status'), 'Not connected: you rejected the request in your wallet.');
    await ctx3.close();
    log('wallet: EIP-6963 choice, wrong network → switch / add chain, no wallet and a rejection in words');
  }

  // Ordering with the buyer's own wallet: an infer job on M1, through the UI alone. The buyer
  // is anvil's dev account #5, which anvil unlocks: anvil holds its key and signs its
  // transactions (eth_sendTransaction) and its EIP-712 typed data (eth_signTypedData_v4)
  // itself, as a key-holding wallet does, so the storefront speaks only the wallet protocol
  // and the typed data is hashed by an implementation that is not ours. (Impersonating a demo
  // person would send transactions but cannot sign typed data: anvil has no key for them.)
  {
    const book = (await (await fetch(`${base}/api/chain`)).json()).address_book;
    const buyer = (await rpc(rpcUrl, 'eth_accounts'))[5];
    assert.ok(buyer && buyer.toLowerCase() !== book.operator.toLowerCase(), 'a dev account that is not the operator');
    const model = await (await fetch(`${base}/api/models/${m1.nft}`)).json();
    assert.ok(model.exchange_id, 'M1 is on sale on the fixed-rate exchange');
    const ctx = await browser.newContext();
    await ctx.addInitScript(injectWallet, { rpcUrl, account: buyer });
    const op = await ctx.newPage();
    op.on('pageerror', (e) => errors.push(String(e)));
    const quotes = [];
    op.on('request', (r) => { if (r.method() === 'POST' && r.url().endsWith('/quote')) quotes.push(r.postData()); });
    // The dataset's way (issue 17): POST /api/uploads, its PUT, then a JSON submit naming it.
    const transfers = watchTransfers(op);
    await op.goto(`${base}/models/${m1.nft}`);
    await op.click('#connect');
    await op.waitForSelector('#wallet-address');
    const sent = () => op.evaluate(() => window.__walletCalls.filter((c) => c.method === 'eth_sendTransaction').length);
    // Over the API's bound: refused in the page, before any quote is asked.
    await op.fill('#order-prompt', 'The history of');
    await op.fill('#order-max-tokens', '5000');
    await op.click('#order-quote');
    await op.waitForSelector('#order-status.error');
    assert.equal(await op.textContent('#order-status'), 'Not quoted: max_new_tokens: 5000 is outside 1..=2048. Nothing was sent.');
    assert.deepEqual(quotes, [], 'no quote asked for an over-bound form');
    assert.equal(await op.locator('#quote').count(), 0);
    // Within the API's general bounds but over this model's context: the API's refusal (a
    // 4xx) is said in words. The dataset comes through the file picker.
    await op.selectOption('#order-kind', 'evaluate');
    // A file that is not UTF-8 text is refused in the page (the API would refuse it only at
    // submit, after the order is paid).
    await op.setInputFiles('#order-dataset', { name: 'eval.bin', mimeType: 'application/octet-stream', buffer: Buffer.from([0x6f, 0x6b, 0xff, 0xfe]) });
    await op.click('#order-quote');
    await op.waitForFunction(() => document.querySelector('#order-status.error')?.textContent.includes('UTF-8'));
    assert.equal(await op.textContent('#order-status'), 'Not quoted: dataset: eval.bin is not UTF-8 text (invalid byte at offset 2): the API takes plain text. Nothing was sent.');
    assert.deepEqual(quotes, [], 'no quote asked for a binary dataset');
    await op.setInputFiles('#order-dataset', { name: 'eval.txt', mimeType: 'text/plain', buffer: Buffer.from('The cat sat on the mat. '.repeat(40)) });
    // Over this model's context (the API's model view names it): refused in the page too.
    await op.fill('#order-context', '8192');
    await op.fill('#order-stride', '64');
    await op.click('#order-quote');
    await op.waitForFunction(() => document.querySelector('#order-status.error')?.textContent.includes('context_len'));
    assert.match(await op.textContent('#order-status'), /^Not quoted: context_len: 8192 exceeds the model's maximum context of \d+\. Nothing was sent\.$/);
    assert.deepEqual(quotes, [], 'no quote asked over the model\'s context');
    // A dataset over the operator's cap, which only the API knows: its refusal (a 4xx) is
    // said in words.
    await op.setInputFiles('#order-dataset', { name: 'big.txt', mimeType: 'text/plain', buffer: Buffer.from('The cat sat on the mat. '.repeat(1000)) });
    await op.fill('#order-context', '32');
    await op.fill('#order-stride', '16');
    await op.click('#order-quote');
    await op.waitForFunction(() => document.querySelector('#order-status.error')?.textContent.startsWith('The API refused'));
    assert.match(await op.textContent('#order-status'), /^The API refused the quote: \/api\/models\/0x[0-9a-f]{40}\/quote: .*dataset_bytes.*at most 16384 bytes/);
    assert.equal(quotes.length, 1);
    quotes.length = 0;
    await op.selectOption('#order-kind', 'infer');
    // Within bounds: the quote, line by line, with its formulas and the fee in OCEAN.
    await op.fill('#order-max-tokens', '16');
    await op.fill('#order-temperature', '1'); // sampled: greedy decoding of the tiny model is spaces
    await op.click('#order-quote');
    await op.waitForSelector('#quote');
    assert.equal(quotes.length, 1);
    assert.deepEqual(JSON.parse(quotes[0]).params.max_new_tokens, 16);
    const lines = await op.$$eval('#quote tr.quote-line', (trs) => trs.map((t) => [...t.cells].map((c) => c.textContent)));
    assert.ok(lines.length >= 1 && lines.every(([l, f, a]) => l && f && / OCEAN$/.test(a)), JSON.stringify(lines));
    assert.match(await op.textContent('#quote-total'), /compute fee \(total\).* OCEAN$/);
    assert.ok(await op.locator('#order-plan li').count() >= 4, 'every wallet request described before confirming');
    assert.equal(await sent(), 0, 'nothing sent by quoting');
    if (process.env.SCREENSHOTS) await op.screenshot({ path: join(process.env.SCREENSHOTS, 'order-quote.png'), fullPage: true });
    // The wallet moves to another network: ordering stops there, in words.
    await op.evaluate(() => window.__wallets[0].emit('chainChanged', '0x1'));
    await op.waitForSelector('#wrong-network');
    await op.click('#order-confirm');
    await op.waitForFunction(() => document.querySelector('#order-status.error')?.textContent.startsWith('Wrong network'));
    assert.equal(await op.textContent('#order-status'), 'Wrong network: your wallet is on Ethereum; switch to local development chain (8996) (top of the page) to order. Nothing was sent.');
    await op.evaluate(() => window.__wallets[0].emit('chainChanged', '0x2324'));
    await op.waitForFunction(() => !document.querySelector('#wrong-network'));
    // No OCEAN yet: said before any transaction.
    assert.equal(await balanceOf(rpcUrl, book.ocean, buyer), '0');
    await op.click('#order-confirm');
    await op.waitForFunction(() => document.querySelector('#order-status.error')?.textContent.startsWith('Insufficient'));
    assert.match(await op.textContent('#order-status'), /^Insufficient balance: this order needs [0-9.]+ OCEAN and your wallet holds 0 OCEAN\.$/);
    assert.equal(await sent(), 0, 'no transaction without the balance');
    // The test funds the buyer with 40% of Elena's OCEAN (setup only: an ERC-20 transfer the
    // node sends as Elena).
    const gift = BigInt(await balanceOf(rpcUrl, book.ocean, elena)) * 2n / 5n;
    await rpc(rpcUrl, 'anvil_impersonateAccount', [elena]);
    const pad = (h) => h.replace(/^0x/, '').padStart(64, '0');
    await mined(rpcUrl, await rpc(rpcUrl, 'eth_sendTransaction', [{ from: elena, to: book.ocean, data: '0xa9059cbb' + pad(buyer) + pad(gift.toString(16)) }]));
    await rpc(rpcUrl, 'anvil_stopImpersonatingAccount', [elena]);
    // The person declines the first transaction: said, nothing sent, nothing spent.
    await op.evaluate(() => { window.__wallets[0].reject = 'eth_sendTransaction'; });
    await op.click('#order-confirm');
    await op.waitForFunction(() => document.querySelector('#order-status.error')?.textContent.startsWith('Stopped'));
    assert.match(await op.textContent('#order-status'), /^Stopped at step 1 of 4: you rejected the request in your wallet; nothing was sent\.$/);
    assert.equal(await balanceOf(rpcUrl, book.ocean, buyer), gift.toString());
    // Confirmed: buy a datatoken (approve + buyDT), approve the fee, startOrder, the signed
    // submit, the job followed live, the result read with a signed request.
    const t1 = Date.now();
    await op.click('#order-confirm');
    await op.waitForSelector('#order-result[data-state="done"], #order-status.error', { timeout: 300_000 });
    assert.equal(await op.locator('#order-status.error').count(), 0, await op.textContent('#order-status'));
    const texts = await op.$$eval('#order-result .completion', (ps) => ps.map((p) => [p.querySelector('strong').textContent, p.querySelector('.text').textContent]));
    assert.equal(texts.length, 1);
    assert.equal(texts[0][0], 'The history of');
    const jobId = (await op.textContent('#order-job a')).trim();
    const written = JSON.parse(readFileSync(stored(store, 'completions.json', jobId), 'utf8'));
    assert.ok(written[0].completion_tokens > 0 && written[0].text.length > 0, JSON.stringify(written));
    assert.equal(texts[0][1], written[0].text, 'the text the worker generated, as it wrote it');
    const methods = await op.evaluate(() => window.__walletCalls.map((c) => c.method));
    assert.equal(methods.filter((m) => m === 'eth_sendTransaction').length, 1 + 4, 'the declined one, then approve, buyDT, approve, startOrder');
    assert.equal(methods.filter((m) => m === 'eth_signTypedData_v4').length, 2, 'the submit and the result read');
    const job = await (await fetch(`${base}/api/jobs/${jobId}`)).json();
    assert.equal(job.consumer.toLowerCase(), buyer.toLowerCase());
    assert.equal(job.kind, 'infer');
    assert.equal(job.state, 'succeeded');
    // On chain: the datatoken bought was spent by the order; OCEAN paid the exchange and the fee.
    assert.equal(await balanceOf(rpcUrl, model.datatoken, buyer), '0');
    assert.ok(BigInt(await balanceOf(rpcUrl, book.ocean, buyer)) < gift, 'OCEAN spent');
    if (process.env.SCREENSHOTS) await op.screenshot({ path: join(process.env.SCREENSHOTS, 'order-done.png'), fullPage: true });
    // The result is the buyer's alone: the API refuses the same read unsigned.
    assert.equal((await fetch(`${base}/api/jobs/${jobId}/result`)).status, 401);
    // A second order from the same page: an evaluation with a dataset from the file picker
    // (sent by direct upload before anything is paid), its perplexity read with a signed request.
    await op.selectOption('#order-kind', 'evaluate');
    // The API's dataset cap (GET /api/uploads: the server's --max-dataset-bytes), beside the input.
    await op.waitForFunction(() => document.querySelector('#order-dataset-cap')?.textContent !== '');
    assert.equal(await op.textContent('#order-dataset-cap'), "at most 16 KiB (the API's limit)");
    transfers.length = 0;
    const evalText = readFileSync(join(root, 'data/wikitext-2/valid.txt'), 'utf8').slice(0, 4000);
    await op.setInputFiles('#order-dataset', { name: 'valid.txt', mimeType: 'text/plain', buffer: Buffer.from(evalText) });
    await op.fill('#order-context', '32');
    await op.fill('#order-stride', '16');
    await op.click('#order-quote');
    await op.waitForSelector('#order-confirm');
    assert.equal(JSON.parse(quotes.at(-1)).dataset_bytes, Buffer.byteLength(evalText));
    await op.click('#order-confirm');
    await op.waitForSelector('#order-result[data-state="done"] .perplexity, #order-status.error', { timeout: 300_000 });
    assert.equal(await op.locator('#order-status.error').count(), 0, await op.textContent('#order-status'));
    const evalId = (await op.textContent('#order-job a')).trim();
    assert.notEqual(evalId, jobId);
    assertDirectUpload(transfers, ['dataset'], '/api/jobs');
    assert.equal(await op.locator('#order-plan-upload').count(), 1, 'the dataset upload described before confirming');
    const evalReport = JSON.parse(readFileSync(stored(store, 'report.json', evalId), 'utf8'));
    assert.equal(await op.textContent('#order-result .perplexity'), `Perplexity ${evalReport.perplexity.toFixed(3)}`);
    assert.equal(evalReport.tokens_scored > 0, true);
    // Without a baseline the chart is one bar; the report's numbers say the same.
    assert.equal(await op.getAttribute('#order-result #perplexity-chart', 'data-bars'), '1');
    assert.equal(await op.getAttribute('#order-result #perplexity-chart', 'aria-label'), `Perplexity ${evalReport.perplexity.toFixed(3)} (no baseline given)`);
    // With the buyer's baseline: its label and perplexity go in the request, the report
    // carries them, and the page draws both bars with the ratio in words.
    await op.fill('#order-baseline-label', 'parent M0');
    await op.fill('#order-baseline-ppl', '1.5');
    await op.click('#order-quote');
    await op.waitForSelector('#order-confirm');
    await op.click('#order-confirm');
    await op.waitForFunction((id) => { const a = document.querySelector('#order-job a'); return a && a.textContent.trim() !== id; }, evalId, { timeout: 300_000 });
    await op.waitForSelector('#order-result[data-state="done"] .evaluation, #order-status.error', { timeout: 300_000 });
    assert.equal(await op.locator('#order-status.error').count(), 0, await op.textContent('#order-status'));
    const baseId = (await op.textContent('#order-job a')).trim();
    const baseReport = JSON.parse(readFileSync(stored(store, 'report.json', baseId), 'utf8'));
    assert.deepEqual([baseReport.baseline_label, baseReport.baseline_perplexity], ['parent M0', 1.5]);
    assert.equal(await op.getAttribute('#order-result #perplexity-chart', 'data-bars'), '2');
    assert.equal(await op.getAttribute('#order-result #perplexity-chart', 'aria-label'),
      `Perplexity ${baseReport.perplexity.toFixed(3)} against 1.500 for the baseline parent M0 (ratio ${(baseReport.perplexity / 1.5).toFixed(3)}; lower is better)`);
    assert.equal(await op.textContent('#order-result .baseline'), 'Baseline parent M0: 1.500');
    // A train order: the loss curve is drawn while it trains, then replaced by the job's own
    // curve (metrics.json, read with the buyer's signature): one point per logged step.
    await op.selectOption('#order-kind', 'train');
    await op.setInputFiles('#order-dataset', { name: 'train.txt', mimeType: 'text/plain', buffer: Buffer.from(evalText) });
    await op.fill('#order-context', '32');
    await op.fill('#order-steps', '12');
    await op.fill('#order-batch', '2');
    await op.click('#order-quote');
    await op.waitForSelector('#order-confirm');
    transfers.length = 0;
    await op.click('#order-confirm');
    await op.waitForSelector('#loss-curve[data-source="metrics"], #order-status.error', { timeout: 300_000 });
    assert.equal(await op.locator('#order-status.error').count(), 0, await op.textContent('#order-status'));
    assertDirectUpload(transfers, ['dataset'], '/api/jobs');
    const trainId = (await op.textContent('#order-job a')).trim();
    const metrics = JSON.parse(readFileSync(stored(store, 'metrics.json', trainId), 'utf8'));
    assert.ok(metrics.loss_curve.length >= 2, 'the worker logged a curve');
    assert.equal(Number(await op.getAttribute('#loss-curve', 'data-points')), metrics.loss_curve.length);
    const [first, last] = [metrics.loss_curve[0], metrics.loss_curve.at(-1)];
    const fmt = (l) => (Math.abs(l) >= 10 ? l.toFixed(1) : l.toFixed(2));
    assert.equal(await op.getAttribute('#loss-curve', 'aria-label'),
      `Training loss from ${fmt(first[1])} at step ${first[0]} to ${fmt(last[1])} at step ${last[0]} (${metrics.loss_curve.length} points)`);
    assert.equal((await op.$$eval('#loss-curve polyline', (ps) => ps[0].getAttribute('points').split(' ').length)), metrics.loss_curve.length);
    assert.match(await op.textContent('#order-status'), /^Job \S+ done: the derived model is 0x[0-9a-f]{40}\.$/);
    if (process.env.SCREENSHOTS) await op.screenshot({ path: join(process.env.SCREENSHOTS, 'order-train.png'), fullPage: true });
    // The job's own page: the last loss polled, and to its buyer (this wallet) the whole curve
    // after a signed read.
    await op.click('#order-job a');
    await op.waitForSelector('#job #loss-curve[data-source="live"]');
    assert.equal(await op.getAttribute('#loss-curve', 'data-points'), '1');
    await op.click('#read-curve');
    await op.waitForSelector('#loss-curve[data-source="metrics"], #read-curve-status.error');
    assert.equal(await op.textContent('#read-curve-status'), `The job's own loss curve: ${metrics.loss_curve.length} points.`);
    assert.equal(Number(await op.getAttribute('#loss-curve', 'data-points')), metrics.loss_curve.length);
    if (process.env.SCREENSHOTS) await op.screenshot({ path: join(process.env.SCREENSHOTS, 'job-train.png'), fullPage: true });
    // A LoRA fine-tune from the same form: the method, rank, alpha (2r when left empty),
    // dropout and the family's modules (GPT-2: c_attn ticked) go into TrainParams.lora; an
    // out-of-bounds rank is refused before any quote; the quote is the API's for exactly
    // these params; the derived model's page says how it was made.
    await op.goto(`${base}/models/${model.nft}`);
    await op.selectOption('#order-kind', 'train');
    await op.check('#order-method-lora');
    assert.deepEqual(await op.$$eval('#order-lora-targets input', (is) => is.map((i) => [i.value, i.checked])),
      [['c_attn', true], ['c_proj', false], ['c_fc', false]], 'the GPT-2 family\'s modules, attention ticked');
    await op.setInputFiles('#order-dataset', { name: 'train.txt', mimeType: 'text/plain', buffer: Buffer.from(evalText) });
    await op.fill('#order-context', '32');
    await op.fill('#order-steps', '12');
    await op.fill('#order-batch', '2');
    await op.fill('#order-lora-r', '0');
    const asked = quotes.length;
    await op.click('#order-quote');
    await op.waitForFunction(() => document.querySelector('#order-status.error')?.textContent.includes('lora.r'));
    assert.match(await op.textContent('#order-status'), /^Not quoted: lora\.r: 0 is outside 1\.\.=\d+\. Nothing was sent\.$/);
    assert.equal(quotes.length, asked, 'no quote asked for an out-of-bounds rank');
    await op.fill('#order-lora-r', '4');
    await op.check('#order-lora-target-c_proj');
    await op.fill('#order-lora-dropout', '0.05');
    // The trainer names the model he orders (issue 14).
    await op.fill('#order-name', 'Browser LoRA');
    await op.fill('#order-symbol', 'BLORA');
    await op.click('#order-quote');
    await op.waitForSelector('#order-confirm');
    assert.deepEqual(JSON.parse(quotes.at(-1)).params.lora, { r: 4, lora_alpha: 8, lora_dropout: 0.05, target_modules: ['c_attn', 'c_proj'] });
    assert.equal(await op.textContent('#quote-method'), ': LoRA r 4, alpha 8, dropout 0.05, on c_attn, c_proj');
    // The quote shown is the API's for these exact params.
    const apiQuote = await (await fetch(`${base}/api/models/${model.nft}/quote`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: quotes.at(-1) })).json();
    assert.deepEqual(await op.$$eval('#quote tr.quote-line', (trs) => trs.map((t) => t.cells[1].textContent)), apiQuote.breakdown.lines.map((l) => l.formula));
    await op.click('#order-confirm');
    await op.waitForSelector('#loss-curve[data-source="metrics"], #order-status.error', { timeout: 300_000 });
    assert.equal(await op.locator('#order-status.error').count(), 0, await op.textContent('#order-status'));
    const loraId = (await op.textContent('#order-job a')).trim();
    const loraJob = await (await fetch(`${base}/api/jobs/${loraId}`)).json();
    assert.equal(loraJob.state, 'succeeded');
    const derived = loraJob.derived_model.nft;
    assert.match(await op.textContent('#order-status'), new RegExp(`^Job ${loraId} done: the derived model is ${derived}\\.$`));
    await op.goto(`${base}/models/${derived}`);
    await op.waitForSelector('#model #derivation');
    assert.equal(await op.textContent('#model #derivation'), `LoRA r 4 (c_attn, c_proj) over ${model.nft}`);
    // The card names the licence the DDO declares: the demo's M1's, which a derived model
    // keeps (its trainer's Edit card form has no licence box).
    assert.equal(await op.textContent('#model #licence'), 'Apache-2.0, its root\'s (use through paid jobs; the weights are never downloaded)');
    assert.equal(await op.locator('#card-license').count(), 0, 'no licence box on a derived model\'s form');
    const named = await (await fetch(`${base}/api/models/${derived}`)).json();
    assert.deepEqual([named.name, named.symbol, named.price], ['Browser LoRA', 'BLORA', null]);
    // Its trainer (this wallet) puts 3 of his reward datatokens on sale at 2 OCEAN from the
    // page, on Ocean's exchange: the approvals and openSale through the wallet, then the card.
    await op.fill('#sale-price', '2');
    await op.fill('#sale-amount', '3');
    await op.click('#sale-open');
    await op.waitForFunction(() => /^(On sale|Not put on sale)/.test(document.querySelector('#sale-status')?.textContent ?? ''), null, { timeout: 60_000 });
    assert.equal(await op.locator('#sale-status.error').count(), 0, await op.textContent('#sale-status'));
    const onSale = await (await fetch(`${base}/api/models/${derived}`)).json();
    assert.equal(onSale.price, (2n * 10n ** 18n).toString());
    assert.match(onSale.exchange_id, /^0x[0-9a-f]{64}$/);
    // And edits its card, by keyboard: a tag the API would refuse is refused in the page
    // first (nothing signed), then the description and tags are saved and the model's DDO on
    // chain carries them (a MetadataUpdated log of its NFT holding the new text).
    const signs = () => op.evaluate(() => window.__walletCalls.filter((c) => c.method === 'eth_signTypedData_v4').length);
    const signedBefore = await signs();
    await op.focus('#card-tags');
    await op.keyboard.press('Control+A');
    await op.keyboard.type('Not_a_tag');
    await op.keyboard.press('Enter');
    await op.waitForSelector('#card-status.error');
    assert.match(await op.textContent('#card-status'), /^Not saved: the tags "Not_a_tag": 1\.\.=32 of lowercase a-z, 0-9 and inner hyphens\.$/);
    assert.equal(await signs(), signedBefore, 'nothing signed for a refused edit');
    const described = 'A LoRA of M1, trained from the storefront.\nSecond line.';
    await op.focus('#card-description');
    await op.keyboard.press('Control+A');
    await op.keyboard.type(described);
    await op.focus('#card-tags');
    await op.keyboard.press('Control+A');
    await op.keyboard.type('browser, lora-test');
    await op.keyboard.press('Enter');
    await op.waitForFunction(() => /^Saved|^Not saved/.test(document.querySelector('#card-status')?.textContent ?? ''), null, { timeout: 60_000 });
    assert.equal(await op.locator('#card-status.error').count(), 0, await op.textContent('#card-status'));
    const edited = await (await fetch(`${base}/api/models/${derived}`)).json();
    assert.deepEqual([edited.description, edited.tags, edited.name], [described, ['browser', 'lora-test'], 'Browser LoRA']);
    const ddoLogs = await rpc(rpcUrl, 'eth_getLogs', [{ address: derived, fromBlock: '0x0' }]);
    const textHex = Buffer.from(JSON.stringify(described).slice(1, -1)).toString('hex');
    assert.equal(ddoLogs.filter((l) => l.data.includes(textHex)).length, 1, 'one DDO on chain with the new description');
    await op.reload();
    await op.waitForSelector('#model #tags');
    assert.equal(await op.textContent('#model #tags'), 'browser, lora-test');
    assert.equal(await op.inputValue('#card-description'), described, 'the form shows the card as it is now');
    log('the trainer edited his model\'s card by keyboard (a bad tag refused before signing); the API card and the DDO on chain carry it');
    if (process.env.SCREENSHOTS) await op.screenshot({ path: join(process.env.SCREENSHOTS, 'model-lora.png'), fullPage: true });
    // His account page lists the reward this training earned: the lineage contract's
    // RewardPaid event naming him, read through the wallet, with the model it minted.
    await op.goto(`${base}/account`);
    const rewardRow = (nft) => [...document.querySelectorAll('#rewards tr.reward')]
      .find((r) => r.querySelector('a')?.getAttribute('href')?.toLowerCase() === `/models/${nft}`.toLowerCase());
    await op.waitForFunction(rewardRow, derived, { timeout: 30_000 });
    const [rewardText, rewardAmount] = await op.evaluate((nft) => {
      const r = [...document.querySelectorAll('#rewards tr.reward')]
        .find((x) => x.querySelector('a')?.getAttribute('href')?.toLowerCase() === `/models/${nft}`.toLowerCase());
      return [r.innerText, r.dataset.amount];
    }, derived);
    assert.match(rewardText, /BLORA \(Browser LoRA\)/);
    assert.ok(BigInt(rewardAmount) > 0n, `a reward minted: ${rewardAmount}`);
    log(`LoRA train ${loraId} ordered through the form: derived ${derived} "Browser LoRA" (BLORA), "LoRA r 4 (c_attn, c_proj)", put on sale by its trainer at 2 OCEAN; his account page lists the reward (${rewardAmount} base units)`);
    // Resale by holders (the peer market), through the UI alone: the trainer offers 5 of his
    // reward tokens at 1.5 OCEAN; another wallet buys 2 of them; the trainer withdraws the rest.
    {
      const e18 = 10n ** 18n;
      await op.goto(`${base}/models/${derived}`);
      await op.waitForSelector('#resale #no-offers');
      const before = await sent();
      await op.fill('#resale-price', '1.5');
      await op.fill('#resale-amount', '1000');
      await op.click('#resale-offer');
      await op.waitForFunction(() => document.querySelector('#resale-status.error'));
      assert.match(await op.textContent('#resale-status'), /^Stopped: Insufficient balance: this needs 1,?000(\.0+)? datatokens and your wallet holds [0-9.,]+\.$/);
      assert.equal(await sent(), before, 'nothing sent for an offer over the balance');
      await op.fill('#resale-amount', '5');
      await op.click('#resale-offer');
      await op.waitForFunction(() => !document.querySelector('#resale-status').textContent.includes('1,000'));
      await op.waitForFunction(() => /^(Offered|Stopped)/.test(document.querySelector('#resale-status')?.textContent ?? ''), null, { timeout: 60_000 });
      assert.equal(await op.locator('#resale-status.error').count(), 0, await op.textContent('#resale-status'));
      await op.waitForSelector('#offers tr.offer .withdraw');
      const offerRow = () => op.$$eval('#offers tr.offer', (trs) => trs.map((t) => [t.dataset.seller.toLowerCase(), t.dataset.remaining]));
      assert.deepEqual(await offerRow(), [[buyer.toLowerCase(), (5n * e18).toString()]]);
      // Another wallet (anvil's account 6, funded with OCEAN by Elena for the test) buys 2.
      const second = (await rpc(rpcUrl, 'eth_accounts'))[6];
      await rpc(rpcUrl, 'anvil_impersonateAccount', [elena]);
      const pad = (h) => h.replace(/^0x/, '').padStart(64, '0');
      await mined(rpcUrl, await rpc(rpcUrl, 'eth_sendTransaction', [{ from: elena, to: book.ocean, data: '0xa9059cbb' + pad(second) + pad((10n * e18).toString(16)) }]));
      await rpc(rpcUrl, 'anvil_stopImpersonatingAccount', [elena]);
      const sellerOcean = BigInt(await balanceOf(rpcUrl, book.ocean, buyer));
      const bctx = await browser.newContext();
      await bctx.addInitScript(injectWallet, { rpcUrl, account: second, authorised: true });
      const bp = await bctx.newPage();
      bp.on('pageerror', (e) => errors.push(String(e)));
      await bp.goto(`${base}/models/${derived}`);
      await bp.waitForSelector('#offers tr.offer .buy');
      await bp.fill('#resale-buy', '2');
      await bp.click('#offers tr.offer .buy');
      await bp.waitForFunction(() => /^(Bought|Stopped)/.test(document.querySelector('#resale-status')?.textContent ?? ''), null, { timeout: 60_000 });
      assert.equal(await bp.locator('#resale-status.error').count(), 0, await bp.textContent('#resale-status'));
      assert.equal(await balanceOf(rpcUrl, named.datatoken, second), (2n * e18).toString(), 'the buyer holds the 2 datatokens');
      assert.equal(BigInt(await balanceOf(rpcUrl, book.ocean, buyer)) - sellerOcean, 3n * e18, 'the seller got 2 × 1.5 OCEAN');
      await bp.waitForFunction(() => document.querySelector('#offers tr.offer')?.dataset.remaining === (3n * 10n ** 18n).toString());
      await bctx.close();
      // The seller withdraws what is left.
      await op.reload();
      await op.waitForSelector('#offers tr.offer .withdraw');
      await op.click('#offers tr.offer .withdraw');
      await op.waitForSelector('#resale #no-offers', { timeout: 60_000 });
      assert.equal(await op.textContent('#resale-status'), 'Withdrawn.');
      log('resale: an offer over the balance refused before sending; 5 BLORA offered at 1.5 OCEAN, 2 bought by another wallet (3 OCEAN to the seller), the rest withdrawn — all from the model page');
    }
    await ctx.close();
    log(`order: over-bound, over-context and non-UTF-8 refused before a quote, the API's refusal of a quote (a dataset over the operator's cap), quote shown, wrong network, insufficient balance and a rejection said, infer job ${jobId} ordered, run and read in ${((Date.now() - t1) / 1000).toFixed(1)} s: ${JSON.stringify(texts[0][1]).slice(0, 60)}; then evaluate job ${evalId}, evaluate ${baseId} against a baseline (two bars), train ${trainId} (loss curve of ${metrics.loss_curve.length} points), their datasets by direct upload`);
  }
  // Publishing in the browser (the owner's view): an allowed publisher (anvil's dev account
  // #0, `--publisher` of the server) picks the folder of Alice's untrained init model
  // (another weights hash than M1), sees its files checked in the page, signs the request
  // and the files' upload with eth_signTypedData_v4 (anvil signs, as for the buyer), and the
  // files go by direct upload (POST /api/uploads, a PUT each) with a progress bar; the
  // model's page opens and the catalogue lists it. Refused before anything is signed: a
  // folder lacking files, a file over the API's cap; refused by the API, in words: a file
  // altered on its way (upload_mismatch).
  {
    const [publisher] = await rpc(rpcUrl, 'eth_accounts');
    assert.equal(publisher.toLowerCase(), ANVIL_DEV0.toLowerCase(), 'the publisher the server allows');
    const ctx = await browser.newContext();
    await ctx.addInitScript(injectWallet, { rpcUrl, account: publisher });
    const pp = await ctx.newPage();
    pp.on('pageerror', (e) => errors.push(String(e)));
    const posts = [];
    pp.on('request', (r) => { if (r.method() === 'POST' && new URL(r.url()).pathname === '/api/models') posts.push(r.url()); });
    const transfers = watchTransfers(pp);
    const signatures = () => pp.evaluate(() => window.__walletCalls.filter((c) => c.method === 'eth_signTypedData_v4').length);
    await pp.goto(`${base}/`);
    await pp.click('header nav a[href="/publish"]');
    await pp.waitForSelector('#publish-form');
    assert.equal(await pp.title(), 'Publish a model · Posthuman');
    await pp.click('#connect');
    await pp.waitForSelector('#wallet-address');
    const weights = files(join(demoDir, 'alice'), 'model.safetensors').find((p) => dirname(p).endsWith('init'));
    assert.ok(weights, `Alice's init model under ${demoDir}/alice`);
    const dir = dirname(weights);
    // Files the API would refuse are refused in the page, in words, before any upload.
    await pp.setInputFiles('#publish-config', { name: 'config.json', mimeType: 'application/json', buffer: Buffer.from('{"model_type":"bert"}') });
    await pp.waitForSelector('#publish-config-check[data-ok="false"]');
    assert.equal(await pp.textContent('#publish-config-check'), 'config: model_type `bert` is not supported (supported: gpt2, llama, mistral, qwen2, qwen3)');
    await pp.setInputFiles('#publish-weights', { name: 'model.safetensors', mimeType: 'application/octet-stream', buffer: Buffer.from('not a safetensors file at all') });
    await pp.waitForSelector('#publish-weights-check[data-ok="false"]');
    assert.match(await pp.textContent('#publish-weights-check'), /^weights: model\.safetensors is not safetensors \(a header of \d+ bytes in a 29-byte file\)$/);
    await pp.fill('#publish-name', 'Tiny init');
    await pp.fill('#publish-symbol', 'TINY0');
    await pp.fill('#publish-description', 'Alice\'s untrained initialisation, published from the browser.');
    await pp.fill('#publish-price', '2.5');
    // A licence the API would refuse is refused first, in words; then one in any case.
    await pp.fill('#publish-license', 'GPL-2.0');
    await pp.click('#publish-submit');
    await pp.waitForSelector('#publish-status.error');
    assert.match(await pp.textContent('#publish-status'), /^Not published: license: "GPL-2\.0" is not one of the SPDX identifiers accepted \(Apache-2\.0, MIT, .*\)\. Nothing was signed or uploaded\.$/);
    await pp.fill('#publish-license', 'cc-by-4.0');
    await pp.click('#publish-submit');
    await pp.waitForFunction(() => document.querySelector('#publish-status.error')?.textContent.includes('bert'));
    assert.match(await pp.textContent('#publish-status'), /^Not published: config: model_type `bert` is not supported .*Nothing was uploaded\.$/);
    // A folder without the weights (a sharded checkpoint's index instead) nor a tokenizer:
    // what it lacks is said as it is picked, and nothing is signed.
    const partial = join(tmp, 'partial-model');
    mkdirSync(partial);
    copyFileSync(join(dir, 'config.json'), join(partial, 'config.json'));
    writeFileSync(join(partial, 'model.safetensors.index.json'), '{"weight_map":{}}');
    writeFileSync(join(partial, 'README.md'), 'not sent');
    await pp.setInputFiles('#publish-folder', partial);
    await pp.waitForSelector('#publish-folder-status.error');
    assert.equal(await pp.textContent('#publish-folder-status'),
      'From partial-model: config.json. Missing: model.safetensors, tokenizer.json (the folder holds a sharded checkpoint (model.safetensors.index.json): ' +
      'the API takes one model.safetensors; merge the shards first (`posthuman models publish` does)). Nothing is signed or uploaded without them.');
    await pp.waitForSelector('#publish-config-check[data-ok="true"]');
    await pp.click('#publish-submit');
    await pp.waitForFunction(() => document.querySelector('#publish-status.error')?.textContent.startsWith('Pick'));
    assert.equal(await pp.textContent('#publish-status'), 'Pick the model\'s model.safetensors.');
    // The API's caps (GET /api/uploads) are shown beside the inputs, and a file over one is
    // refused as it is picked, and again before anything is signed.
    const caps = await (await fetch(`${base}/api/uploads`)).json();
    assert.deepEqual(caps.model.slice(0, 3).map((c) => c.name), ['config', 'weights', 'tokenizer']);
    assert.equal(await pp.textContent('#publish-config-cap'), 'at most 64 KiB');
    assert.equal(await pp.textContent('#publish-weights-cap'), 'at most 1 GiB');
    assert.match(await pp.textContent('#publish-limits'), /^The API's upload limits: config\.json ≤ 64 KiB, model\.safetensors ≤ 1 GiB, tokenizer\.json ≤ 32 MiB, /);
    const bigConfig = JSON.stringify({ model_type: 'gpt2', padding: 'x'.repeat(70_000) });
    await pp.setInputFiles('#publish-config', { name: 'config.json', mimeType: 'application/json', buffer: Buffer.from(bigConfig) });
    await pp.waitForSelector('#publish-config-check[data-ok="false"]');
    assert.equal(await pp.textContent('#publish-config-check'), `config: config.json is ${bigConfig.length} bytes, over the API's limit of 65536`);
    await pp.setInputFiles('#publish-weights', weights);
    await pp.setInputFiles('#publish-tokenizer', join(dir, 'tokenizer.json'));
    for (const f of ['weights', 'tokenizer']) await pp.waitForSelector(`#publish-${f}-check[data-ok="true"]`);
    await pp.click('#publish-submit');
    await pp.waitForFunction(() => document.querySelector('#publish-status.error')?.textContent.includes('over the API'));
    assert.equal(await pp.textContent('#publish-status'), `Not published: config: config.json is ${bigConfig.length} bytes, over the API's limit of 65536. Nothing was uploaded.`);
    assert.equal(await signatures(), 0, 'nothing signed for files the API would refuse');
    assert.deepEqual(transfers, [], 'nothing declared or uploaded');
    // The model's folder: its files taken by name, each checked.
    await pp.setInputFiles('#publish-folder', dir);
    await pp.waitForSelector('#publish-folder-status:not(.error)');
    assert.match(await pp.textContent('#publish-folder-status'), new RegExp(`^From ${basename(dir)}: config\\.json, model\\.safetensors, tokenizer\\.json[,.]`));
    for (const f of ['config', 'weights', 'tokenizer']) await pp.waitForSelector(`#publish-${f}-check[data-ok="true"]`);
    assert.match(await pp.textContent('#publish-config-check'), /^✓ config\.json: model_type gpt2, \d+ bytes$/);
    assert.match(await pp.textContent('#publish-weights-check'), /^✓ model\.safetensors: \d+ tensors, \d+ parameters, \d+ bytes$/);
    if (process.env.SCREENSHOTS) await pp.screenshot({ path: join(process.env.SCREENSHOTS, 'publish.png'), fullPage: true });
    // A declined signature: said, nothing uploaded.
    await pp.evaluate(() => { window.__wallets[0].reject = 'eth_signTypedData_v4'; });
    await pp.click('#publish-submit');
    await pp.waitForSelector('#publish-status.error');
    assert.equal(await pp.textContent('#publish-status'), 'Not published: you rejected the request in your wallet; nothing was uploaded.');
    assert.deepEqual(posts, [], 'nothing uploaded without a signature');
    assert.deepEqual(transfers, [], 'nothing declared without a signature');
    // The weights altered on their way to the store (same length, other bytes): the store
    // refuses the PUT (upload_mismatch), and the page says so in words; nothing is published.
    const weightsPut = (url) => /^\/api\/uploads\/u-[0-9a-f]{32}\/weights$/.test(url.pathname);
    // (Chromium hands the test no body for a file picked from disk: the body sent instead
    // is the file's own bytes, its last one flipped.)
    let tampered = 0;
    await pp.route(weightsPut, async (route) => {
      const body = readFileSync(weights);
      body[body.length - 1] ^= 0xff;
      tampered += 1;
      await route.continue({ postData: body });
    });
    await pp.click('#publish-submit');
    await pp.waitForSelector('#publish-status.error', { timeout: 60_000 });
    assert.match(await pp.textContent('#publish-status'),
      /^Not published: Uploading weights was refused: a file that arrived is not the one declared \(was it changed while uploading\?\): pick it again\. The API said: .*SHA-256.* \(upload_mismatch\)$/);
    await pp.unroute(weightsPut);
    assert.equal(tampered, 1, 'the weights\' PUT was altered once');
    assert.deepEqual(posts, [], 'no publish after a refused upload');
    assert.equal(await signatures(), 1 + 2, 'the declined one, then the request and the upload');
    transfers.length = 0;
    // The upload's progress, as the bar showed it (the page navigates away once published).
    await pp.evaluate(() => {
      window.__progress = [];
      new MutationObserver(() => {
        const p = document.querySelector('#publish-progress');
        if (p) window.__progress.push([Number(p.dataset.sent), Number(p.dataset.total)]);
      }).observe(document.body, { subtree: true, childList: true, attributes: true });
    });
    await pp.click('#publish-submit');
    await pp.waitForFunction(() => location.pathname.startsWith('/models/') || document.querySelector('#publish-status.error'), null, { timeout: 120_000 });
    // The message is read even on success, when the page has left the form: at most 1 s (the
    // default 30 s wait for a #publish-status that is gone was most of a publish's time).
    assert.match(new URL(pp.url()).pathname, /^\/models\/0x[0-9a-f]{40}$/, await pp.locator('#publish-status').textContent({ timeout: 1000 }).catch(() => ''));
    const nft = new URL(pp.url()).pathname.split('/')[2];
    await pp.waitForSelector(`#model[data-nft="${nft}"]`);
    const card = await (await fetch(`${base}/api/models/${nft}`)).json();
    assert.deepEqual([card.name, card.symbol, card.price, card.owner, card.parent ?? null],
      ['Tiny init', 'TINY0', '2500000000000000000', publisher.toLowerCase(), null]);
    assert.deepEqual(card.reward_scheme.shares_bps, [5000, 2500, 1250, 625]);
    const seen = await pp.evaluate(() => window.__progress);
    const size = statSync(weights).size;
    assert.ok(seen.some(([sent, total]) => sent === total && total > size), `the bar reached the whole upload: ${JSON.stringify(seen.slice(-3))}`);
    assert.equal(posts.length, 1, 'one publish');
    const sent = transfers.filter((t) => t.method === 'PUT').map((t) => t.path.split('/').at(-1));
    assert.ok(['config', 'weights', 'tokenizer'].every((f) => sent.includes(f)), JSON.stringify(sent));
    assertDirectUpload(transfers, sent, '/api/models');
    const methods = await pp.evaluate(() => window.__walletCalls.map((c) => c.method));
    assert.equal(methods.filter((m) => m === 'eth_signTypedData_v4').length, 1 + 2 + 2, 'the declined signature, the refused upload\'s two, then the request and the upload');
    assert.equal(methods.filter((m) => m === 'eth_sendTransaction').length, 0, 'publishing sends no transaction from the wallet');
    // Under the licence chosen, in SPDX's spelling; its publisher changes it from Edit card.
    assert.equal(card.license, 'CC-BY-4.0');
    assert.equal(await pp.textContent('#model #licence'), 'CC-BY-4.0 (use through paid jobs; the weights are never downloaded)');
    assert.equal(await pp.inputValue('#card-license'), 'CC-BY-4.0');
    await pp.fill('#card-license', 'LicenseRef-tiny-init-1.0');
    await pp.click('#card-save');
    await pp.waitForFunction(() => /^(Saved|Not saved)/.test(document.querySelector('#card-status')?.textContent ?? ''), null, { timeout: 60_000 });
    assert.equal(await pp.locator('#card-status.error').count(), 0, await pp.textContent('#card-status'));
    assert.equal((await (await fetch(`${base}/api/models/${nft}`)).json()).license, 'LicenseRef-tiny-init-1.0');
    await pp.click('header nav a[href="/"]');
    await pp.waitForSelector(`#catalogue tr.model[data-nft="${nft}"]`);
    if (process.env.SCREENSHOTS) await pp.screenshot({ path: join(process.env.SCREENSHOTS, 'published.png'), fullPage: true });
    await ctx.close();
    log(`publish: bad config and weights, a folder lacking files and a config over the API's cap refused in the page before signing, a declined signature said, altered weights refused by the API (upload_mismatch) in words, then ${nft} published from the model's folder by direct upload (${sent.length} PUTs, ${size} bytes of weights, a JSON publish, no multipart) and listed`);
  }
  // Every page at desktop and phone width (axe-core, a screenshot each, nothing wider than
  // 390 px), with Elena's wallet connected; then the catalogue with 1,000 more models.
  const shots = join(process.env.SCREENSHOTS ?? cache, 'web-shots');
  {
    const elena = (await (await fetch(`${base}/api/jobs/${evaluation.job_id}`)).json()).consumer;
    await sweepPages({ browser, base, shots, log, init: { script: injectWallet, arg: { rpcUrl, account: elena, authorised: true } } });
  }
  await catalogueAtScale({ browser, base, dataDir: opDir, log });
  // "My account" at that scale: one eth_getLogs finds the tokens Elena ever received, and
  // only their balances are read — not one wallet call per catalogue model (1,000 more).
  {
    const elena = (await (await fetch(`${base}/api/jobs/${evaluation.job_id}`)).json()).consumer;
    const ctx = await browser.newContext();
    await ctx.addInitScript(injectWallet, { rpcUrl, account: elena, authorised: true });
    const ap = await ctx.newPage();
    ap.on('pageerror', (e) => errors.push(String(e)));
    const t1 = Date.now();
    await ap.goto(`${base}/account`);
    await ap.waitForSelector('#balances tr.balance', { timeout: 60_000 });
    const ms = Date.now() - t1;
    const rows = await ap.$$eval('#balances tr.balance', (trs) => trs.map((t) => [t.dataset.token, t.dataset.balance]));
    for (const [t, b] of rows) assert.equal(b, await balanceOf(rpcUrl, t, elena), `balance of ${t}`);
    const calls = await ap.evaluate(() => window.__walletCalls.map((c) => c.method));
    const balanceCalls = calls.filter((m) => m === 'eth_call').length;
    assert.equal(rows.length, 1 + 3, "OCEAN and the demo's three datatokens, none of the 1,000 she never received");
    assert.ok(balanceCalls <= rows.length + 2, `${balanceCalls} eth_call for ${rows.length} balances`);
    assert.equal(calls.filter((m) => m === 'eth_getLogs').length, 3, 'tokens received, rewards, royalties: one log query each');
    await ctx.close();
    log(`account page with the 1,000 scale models in the catalogue: ${rows.length} balances from ${balanceCalls} eth_call + 1 eth_getLogs through the wallet, in ${ms} ms`);
  }
  assert.deepEqual(errors, [], 'no uncaught page errors');
  log(`all browser checks passed; screenshots of every page in ${shots}`);
} catch (e) {
  failed = true;
  console.error(e);
}
await finish({ browser, server, tmp, failed });
