// The whole story through the storefront alone, in a real browser (issue 14, "Tests in a real
// browser"), on a fresh embedded deployment: `posthuman-server` on an empty data dir (anvil,
// Ocean v4, the lineage contract, the local queue running real train/infer/evaluate jobs).
// Five wallets, each one of anvil's unlocked dev accounts behind an injected EIP-1193
// provider (lib.mjs: anvil signs their transactions and typed data):
//   Alice publishes M1, her base model trained on her machine, from its folder (the publish
//   page, direct upload), with the demo's price and reward scheme;
//   Bob buys an M1 datatoken and trains → M2 (named by him), rewarded by M1's scheme;
//   Bob offers M2 datatokens on the peer market; Charlie buys one there and trains → M3;
//   Charlie offers M3; Derek buys one, runs inference and reads the generated text;
//   Elena evaluates M1 (bought on Ocean's exchange by the order), M2 and M3 (bought on the
//   peer market), M1 the baseline, and reads each report;
//   Derek pays out M2's and M3's royalty vaults with "Pay out royalties" on their pages, and
//   Alice finds the royalties on her account page;
//   anyone (a browser with no wallet) opens Charlie's train receipt: every check passes.
// The only steps outside the UI are the setup the CLI demo does too (OCEAN for the five, sent
// by the operator, who holds the test OCEAN) and the model Alice brings (a tiny GPT-2 of the
// demo's --size tiny shape, trained by `posthuman-worker` run locally, as the demo does).
// At the end the datatoken balances on chain (eth_call) equal the demo's ledger
// (crates/demo/src/story.rs): +1 per purchase, -1 per order, the order's datatoken less
// Ocean's community fee to the model's payment collector, and each derivation's reward split
// by M1's scheme (RewardScheme::split); the peer market's OCEAN moves exactly price × amount.
// And every person's OCEAN (gas is paid in ETH, so OCEAN is exact) equals the 1,000 the
// operator sent, less what each paid — M1 on Ocean's exchange (Alice's price plus the
// exchange's fees, by the exchange's own formula), each order's compute fee (the quote the
// page showed and the wallet paid) and, for a derived model, the root's royalty, the peer
// market's prices — plus what each was paid: peer-market sales and the royalties the two
// vaults paid out by RewardScheme::royalty_split.
// Every page visited is saved at desktop width and at 390 px ($SCREENSHOTS/story-shots, else
// $POSTHUMAN_CACHE/story-shots).
//
// Usage: node web/tests/story.mjs (after web/build.sh and a debug build of posthuman-worker
// and posthuman-server; POSTHUMAN_BIN_DIR to use copies). Exits non-zero on the first failed
// expectation, keeping its temp dir.

import { spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, copyFileSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { root, cache, bin, logger, stored, injectWallet, balanceOf, rpc, mined, startServer, launchBrowser, finish } from './lib.mjs';
import { axeViolations } from './pages.mjs';

const log = logger('story');
const t0 = Date.now();
const e18 = 10n ** 18n;
const pad = (h) => h.replace(/^0x/, '').padStart(64, '0');
// The demo's tiny sizes (crates/demo/src/lib.rs, Sizes::of(Tiny)).
// Peer-market prices (OCEAN per datatoken): Bob's M2 offer, Charlie's M3 offer.
const PEER = { M2: 3n, M3: 4n };
const TINY = { vocab: 320, n_layer: 1, n_embd: 32, n_head: 2, context: 32, base_bytes: 40_000, ft_steps: 12, batch: 4, ft_bytes: 12_000, eval_bytes: 20_000, infer_tokens: 12 };

const tmp = mkdtempSync(join(tmpdir(), 'posthuman-story-'));
const shots = join(process.env.SCREENSHOTS ?? cache, 'story-shots');
rmSync(shots, { recursive: true, force: true });
mkdirSync(shots, { recursive: true });

// Alice's model folder, made on her own machine as the demo's step 3 does (demo/base.rs): a
// tokenizer trained on the first 40 KB of WikiText-2's valid split, a GPT-2 of the tiny demo's
// shape initialised, then trained 30 steps on the same text by the worker run locally; the
// trained config.json, model.safetensors and tokenizer.json are the folder she publishes.
const valid = readFileSync(join(root, 'data/wikitext-2/valid.txt'), 'utf8');
const ws = join(tmp, 'alice');
mkdirSync(join(ws, 'base'), { recursive: true });
writeFileSync(join(ws, 'base/corpus.txt'), valid.slice(0, TINY.base_bytes));
const spec = {
  job_id: 'alice-base', model_prefix: 'base/init', dataset_key: 'base/corpus.txt', private_prefix: 'base/trained', public_prefix: 'base/public',
  params: { kind: 'train', steps: 30, learning_rate: 5e-3, warmup_steps: 3, batch_size: TINY.batch, context_len: TINY.context, checkpoint_every: 30, seed: 1 },
};
writeFileSync(join(tmp, 'base-spec.json'), JSON.stringify(spec));
for (const args of [
  ['train-tokenizer', '--corpus', join(ws, 'base/corpus.txt'), '--vocab-size', String(TINY.vocab), '--out', join(tmp, 'tokenizer.json')],
  ['init-model', '--tokenizer', join(tmp, 'tokenizer.json'), '--n-layer', String(TINY.n_layer), '--n-embd', String(TINY.n_embd),
    '--n-head', String(TINY.n_head), '--n-positions', String(TINY.context), '--seed', '1', '--out', join(ws, 'base/init')],
  ['run', '--spec', join(tmp, 'base-spec.json'), '--store', ws],
]) {
  const r = spawnSync(join(bin, 'posthuman-worker'), args, { encoding: 'utf8' });
  assert.equal(r.status, 0, `posthuman-worker ${args[0]}: ${r.stdout}${r.stderr}`);
}
const modelDir = join(tmp, 'alice-model');
mkdirSync(modelDir);
for (const f of ['config.json', 'model.safetensors', 'tokenizer.json']) copyFileSync(join(ws, 'base/trained', f), join(modelDir, f));
log(`Alice trained her base model (30 steps) into ${modelDir}`);

// A fresh deployment. Alice (anvil's dev account #0) is the allowed publisher.
const dataDir = join(tmp, 'operator');
const names = ['alice', 'bob', 'charlie', 'derek', 'elena'];
const { server, base } = await startServer(dataDir, ['--publisher', '0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266']);
const chain = await (await fetch(`${base}/api/chain`)).json();
const { rpc_url: rpcUrl, address_book: book } = chain;
const dev = await rpc(rpcUrl, 'eth_accounts');
const who = Object.fromEntries(names.map((n, i) => [n, dev[i]]));
assert.ok(!Object.values(who).some((a) => a.toLowerCase() === book.operator.toLowerCase()), 'no person is the operator');
log(`server at ${base}, chain ${rpcUrl}; people: ${JSON.stringify(who)}`);

// Setup, as the demo's step 2: the operator sends each person 1,000 test OCEAN.
await rpc(rpcUrl, 'anvil_impersonateAccount', [book.operator]);
for (const a of Object.values(who)) {
  await mined(rpcUrl, await rpc(rpcUrl, 'eth_sendTransaction', [{ from: book.operator, to: book.ocean, data: '0xa9059cbb' + pad(a) + pad((1000n * e18).toString(16)) }]));
}
await rpc(rpcUrl, 'anvil_stopImpersonatingAccount', [book.operator]);
for (const a of Object.values(who)) assert.equal(await balanceOf(rpcUrl, book.ocean, a), (1000n * e18).toString());
log('the operator sent each person 1,000 OCEAN (setup, as the demo)');

const browser = await launchBrowser();
const errors = [];
let failed = false;
let shot = 0;
/// A screenshot of the page as it is, at desktop width and at 390 px.
async function snap(page, name) {
  shot += 1;
  const vp = page.viewportSize();
  const n = `${String(shot).padStart(2, '0')}-${name}`;
  await page.screenshot({ path: join(shots, `${n}-desktop.png`), fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: join(shots, `${n}-phone.png`), fullPage: true });
  await page.setViewportSize(vp);
}
/// A page in its own browser context with `name`'s wallet injected and connected.
async function walletPage(name) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await ctx.addInitScript(injectWallet, { rpcUrl, account: who[name] });
  const page = await ctx.newPage();
  page.on('pageerror', (e) => errors.push(`${name}: ${e}`));
  await page.goto(`${base}/`);
  await page.click('#connect');
  await page.waitForSelector('#wallet-address');
  return page;
}
const api = async (path) => (await fetch(`${base}${path}`)).json();
const text = (page, sel) => page.textContent(sel);
/// "1.25 OCEAN" (the page's exact rendering, every significant decimal) in base units.
const oceanOf = (s) => {
  const m = s.trim().match(/^(\d+)(?:\.(\d{1,18}))? OCEAN$/);
  assert.ok(m, `not an OCEAN amount: ${JSON.stringify(s)}`);
  return BigInt(m[1]) * e18 + BigInt((m[2] ?? '').padEnd(18, '0'));
};
/// The compute fee of each order, by job id: the quote's total as the page showed it before
/// the buyer confirmed (the fee the wallet then paid to the operator inside startOrder).
const feeOf = new Map();
/// Orders a job from the model page already open, the form filled by `fill`; resolves once
/// the result is shown (`done`: its selector), failing with the page's words otherwise.
async function order(page, kind, fill, done) {
  await page.selectOption('#order-kind', kind);
  await fill();
  await page.click('#order-quote');
  await page.waitForSelector('#order-confirm, #order-status.error');
  assert.equal(await page.locator('#order-status.error').count(), 0, await text(page, '#order-status'));
  const fee = oceanOf(await text(page, '#quote-total td:last-child'));
  await page.click('#order-confirm');
  await page.waitForSelector(`${done}, #order-status.error`, { timeout: 300_000 });
  assert.equal(await page.locator('#order-status.error').count(), 0, await text(page, '#order-status'));
  const id = (await text(page, '#order-job a')).trim();
  feeOf.set(id, fee);
  return id;
}
/// A train order; returns [job id, the derived model's NFT].
async function train(page, parent, dataset, name, symbol) {
  await page.goto(`${base}/models/${parent}`);
  await page.waitForSelector('#order-kind');
  const id = await order(page, 'train', async () => {
    await page.setInputFiles('#order-dataset', { name: 'train.txt', mimeType: 'text/plain', buffer: Buffer.from(dataset) });
    await page.fill('#order-context', String(TINY.context));
    await page.fill('#order-steps', String(TINY.ft_steps));
    await page.fill('#order-batch', String(TINY.batch));
    await page.fill('#order-name', name);
    await page.fill('#order-symbol', symbol);
  }, '#loss-curve[data-source="metrics"]');
  const m = (await text(page, '#order-status')).match(/^Job \S+ done: the derived model is (0x[0-9a-f]{40})\.$/);
  assert.ok(m, await text(page, '#order-status'));
  return [id, m[1]];
}
/// The resale form of the model page open: offer `amount` datatokens at `price` OCEAN.
async function offer(page, nft, price, amount) {
  await page.goto(`${base}/models/${nft}`);
  await page.waitForSelector('#resale #no-offers');
  await page.fill('#resale-price', price);
  await page.fill('#resale-amount', amount);
  await page.click('#resale-offer');
  await page.waitForFunction(() => /^(Offered|Stopped)/.test(document.querySelector('#resale-status')?.textContent ?? ''), null, { timeout: 60_000 });
  assert.equal(await page.locator('#resale-status.error').count(), 0, await text(page, '#resale-status'));
  await page.waitForSelector('#offers tr.offer');
}
/// Pays out the royalty vault of derived model `nft` from its page ("Pay out royalties");
/// checks it held exactly `held` and returns the payouts the page lists, [beneficiary,
/// ancestor, amount] each.
async function payOut(page, nft, held) {
  await page.goto(`${base}/models/${nft}`);
  await page.waitForSelector('#royalty-pending');
  assert.equal(BigInt(await page.getAttribute('#royalty-pending', 'data-amount')), held, `${nft}'s vault`);
  await page.click('#royalty-pay');
  await page.waitForFunction(() => /^(Paid out|Not paid out)/.test(document.querySelector('#royalty-status')?.textContent ?? ''), null, { timeout: 60_000 });
  assert.equal(await page.locator('#royalty-status.error').count(), 0, await text(page, '#royalty-status'));
  await page.waitForSelector('#royalty-pending[data-amount="0"]');
  return page.$$eval('#royalty-paid tr.payout', (trs) => trs.map((t) => [t.dataset.beneficiary, t.dataset.ancestor, t.dataset.amount]));
}
/// Buys `amount` datatokens of the model's only offer from its page.
async function buyOffer(page, nft, amount) {
  await page.goto(`${base}/models/${nft}`);
  await page.waitForSelector('#offers tr.offer .buy');
  await page.fill('#resale-buy', amount);
  await page.click('#offers tr.offer .buy');
  await page.waitForFunction(() => /^(Bought|Stopped)/.test(document.querySelector('#resale-status')?.textContent ?? ''), null, { timeout: 60_000 });
  assert.equal(await page.locator('#resale-status.error').count(), 0, await text(page, '#resale-status'));
}

try {
  // 1. Alice publishes M1 from her folder, with the demo's listing and scheme.
  const alice = await walletPage('alice');
  await alice.click('header nav a[href="/publish"]');
  await alice.waitForSelector('#publish-form');
  await alice.setInputFiles('#publish-folder', modelDir);
  for (const f of ['config', 'weights', 'tokenizer']) await alice.waitForSelector(`#publish-${f}-check[data-ok="true"]`);
  await alice.fill('#publish-name', 'Posthuman base');
  await alice.fill('#publish-symbol', 'M1');
  await alice.fill('#publish-description', 'GPT-2 base model (tiny), published from the browser');
  await alice.fill('#publish-price', '2');
  await alice.fill('#publish-reward-total', '100');
  await alice.fill('#publish-reward-first', '5000');
  await alice.fill('#publish-reward-depth', '4');
  await alice.fill('#publish-royalty', '0.5');
  await alice.fill('#publish-license', 'MIT');
  await snap(alice, 'publish');
  await alice.click('#publish-submit');
  await alice.waitForFunction(() => location.pathname.startsWith('/models/') || document.querySelector('#publish-status.error'), null, { timeout: 120_000 });
  // The message is read even on success, when the page has left the form: at most 1 s (the
  // default 30 s wait for a #publish-status that is gone was most of a publish's time).
  assert.match(new URL(alice.url()).pathname, /^\/models\/0x[0-9a-f]{40}$/, await alice.locator('#publish-status').textContent({ timeout: 1000 }).catch(() => ''));
  const m1 = new URL(alice.url()).pathname.split('/')[2];
  await alice.waitForSelector(`#model[data-nft="${m1}"]`);
  const card1 = await api(`/api/models/${m1}`);
  assert.deepEqual([card1.name, card1.symbol, card1.price, card1.owner, card1.license], ['Posthuman base', 'M1', (2n * e18).toString(), who.alice.toLowerCase(), 'MIT']);
  await snap(alice, 'model-m1');
  log(`Alice published M1 ${m1}`);

  // 2. Bob buys an M1 datatoken (the order does: approve + buyDT) and trains → M2.
  const bob = await walletPage('bob');
  const [bobJob, m2] = await train(bob, m1, valid.slice(TINY.base_bytes, TINY.base_bytes + TINY.ft_bytes), 'M1 · fine-tune by Bob', 'M2');
  await snap(bob, 'order-train-m2');
  assert.equal((await api(`/api/models/${m2}`)).parent?.toLowerCase(), m1, 'M2 derives from M1');
  assert.equal((await api(`/api/models/${m2}`)).license, 'MIT', 'M2 keeps M1\'s licence');
  // His account page lists the reward M2's derivation minted him.
  await bob.click('header nav a[href="/account"]');
  await bob.waitForFunction((nft) => [...document.querySelectorAll('#rewards tr.reward a')].some((a) => a.getAttribute('href')?.toLowerCase() === `/models/${nft}`), m2, { timeout: 30_000 });
  await snap(bob, 'account-bob');
  log(`Bob trained ${bobJob} → M2 ${m2}; his reward is on his account page`);

  // 3. Bob offers 5 M2 at 3 OCEAN on the peer market; Charlie buys one and trains → M3.
  await offer(bob, m2, String(PEER.M2), '5');
  await snap(bob, 'resale-offer-m2');
  const charlie = await walletPage('charlie');
  const bobOcean = BigInt(await balanceOf(rpcUrl, book.ocean, who.bob));
  await buyOffer(charlie, m2, '1');
  assert.equal(BigInt(await balanceOf(rpcUrl, book.ocean, who.bob)) - bobOcean, PEER.M2 * e18, 'the seller got exactly 1 × 3 OCEAN');
  await snap(charlie, 'resale-bought-m2');
  const off = TINY.base_bytes + TINY.ft_bytes;
  const [charlieJob, m3] = await train(charlie, m2, valid.slice(off, off + TINY.ft_bytes), 'M1 · fine-tune 2 by Charlie', 'M3');
  await snap(charlie, 'order-train-m3');
  log(`Charlie bought an M2 from Bob's offer (3 OCEAN to Bob) and trained ${charlieJob} → M3 ${m3}`);

  // 4. Charlie offers 5 M3 at 4 OCEAN; Derek buys one and runs inference, reading the text.
  await offer(charlie, m3, String(PEER.M3), '5');
  const derek = await walletPage('derek');
  const charlieOcean = BigInt(await balanceOf(rpcUrl, book.ocean, who.charlie));
  await buyOffer(derek, m3, '1');
  assert.equal(BigInt(await balanceOf(rpcUrl, book.ocean, who.charlie)) - charlieOcean, PEER.M3 * e18, 'Charlie got exactly 4 OCEAN');
  const inferId = await order(derek, 'infer', async () => {
    await derek.fill('#order-prompt', 'The history of the');
    await derek.fill('#order-max-tokens', String(TINY.infer_tokens));
    await derek.fill('#order-temperature', '1');
  }, '#order-result[data-state="done"]');
  const [prompt, generated] = await derek.$eval('#order-result .completion', (p) => [p.querySelector('strong').textContent, p.querySelector('.text').textContent]);
  assert.equal(prompt, 'The history of the');
  const written = JSON.parse(readFileSync(stored(join(dataDir, 'store'), 'completions.json', inferId), 'utf8'));
  assert.ok(written[0].completion_tokens > 0, JSON.stringify(written));
  assert.equal(generated, written[0].text, 'Derek reads the text the worker wrote');
  await snap(derek, 'order-infer-m3');
  log(`Derek bought an M3 from Charlie (4 OCEAN) and ran ${inferId}: ${JSON.stringify(generated).slice(0, 60)}`);

  // 5. Elena evaluates M1, M2 and M3 on WikiText-2 test text, M1's perplexity the baseline of
  //    the other two, as the demo does: M1's datatoken bought by the order itself (the
  //    exchange), M2's and M3's on the peer market from Bob's and Charlie's offers.
  const elena = await walletPage('elena');
  const test = readFileSync(join(root, 'data/wikitext-2/test.txt'), 'utf8').slice(0, TINY.eval_bytes);
  const evals = [];
  let baseline = null;
  for (const [label, nft] of [['M1', m1], ['M2', m2], ['M3', m3]]) {
    if (label !== 'M1') {
      const seller = label === 'M2' ? who.bob : who.charlie;
      const before = BigInt(await balanceOf(rpcUrl, book.ocean, seller));
      await buyOffer(elena, nft, '1');
      assert.equal(BigInt(await balanceOf(rpcUrl, book.ocean, seller)) - before, PEER[label] * e18, `${label}'s seller got its price exactly`);
    } else {
      await elena.goto(`${base}/models/${nft}`);
    }
    await elena.waitForSelector('#order-kind');
    const id = await order(elena, 'evaluate', async () => {
      await elena.setInputFiles('#order-dataset', { name: 'test.txt', mimeType: 'text/plain', buffer: Buffer.from(test) });
      await elena.fill('#order-context', String(TINY.context));
      await elena.fill('#order-stride', String(TINY.context / 2));
      if (baseline) {
        await elena.fill('#order-baseline-label', baseline.label);
        await elena.fill('#order-baseline-ppl', String(baseline.perplexity));
      }
    }, '#order-result[data-state="done"] .perplexity');
    const report = JSON.parse(readFileSync(stored(join(dataDir, 'store'), 'report.json', id), 'utf8'));
    assert.equal(await text(elena, '#order-result .perplexity'), `Perplexity ${report.perplexity.toFixed(3)}`);
    if (baseline) {
      assert.deepEqual([report.baseline_label, report.baseline_perplexity], [baseline.label, baseline.perplexity]);
      assert.equal(await elena.getAttribute('#order-result #perplexity-chart', 'data-bars'), '2');
    } else {
      baseline = { label: 'M1', perplexity: report.perplexity };
    }
    await snap(elena, `order-evaluate-${label.toLowerCase()}`);
    evals.push([label, id, report.perplexity]);
  }
  const evalId = evals[2][1];
  log(`Elena evaluated ${evals.map(([l, id, p]) => `${l} (${id}): ${p.toFixed(3)}`).join(', ')}; M1 the baseline`);

  // 6. Royalties: two orders of M2 (Charlie's training, Elena's evaluation) and two of M3
  //    (Derek's inference, Elena's evaluation) each paid M1's royalty into the model's vault.
  //    Derek (anyone may) pays both vaults out from the models' pages; the page lists who
  //    received what, as RewardScheme::royalty_split says (M2: all to M1's owner, Alice; M3:
  //    50 % to M2's trainer, Bob, the remainder to Alice). Alice sees them on her account.
  const scheme = card1.reward_scheme;
  const royalty = BigInt(scheme.royalty);
  assert.equal(royalty, e18 / 2n, 'the 0.5 OCEAN Alice set');
  const royaltySplit = (depth, amount) => { // RewardScheme::royalty_split (ModelLineage.royaltySplit)
    const paid = scheme.shares_bps.slice(0, depth - 1).map((b) => (amount / 10000n) * BigInt(b) + (amount % 10000n) * BigInt(b) / 10000n);
    return [paid, amount - paid.reduce((a, b) => a + b, 0n)];
  };
  const [[], m2ToAlice] = royaltySplit(1, 2n * royalty);
  const [[m3ToBob], m3ToAlice] = royaltySplit(2, 2n * royalty);
  const lc = (a) => a.toLowerCase();
  assert.deepEqual(await payOut(derek, m2, 2n * royalty), [[lc(who.alice), m1, m2ToAlice.toString()]]);
  await snap(derek, 'royalty-paid-m2');
  assert.deepEqual(await payOut(derek, m3, 2n * royalty), [[lc(who.bob), m2, m3ToBob.toString()], [lc(who.alice), m1, m3ToAlice.toString()]]);
  await snap(derek, 'royalty-paid-m3');
  // The section after a payout (its button, status and table) passes axe as every page does.
  assert.deepEqual(await axeViolations(derek), [], 'no serious or critical axe violation on the paid-out model page');
  await alice.click('header nav a[href="/account"]');
  await alice.waitForSelector('#royalties tr.royalty');
  const received = await alice.$$eval('#royalties tr.royalty', (trs) => trs.map((t) => [t.dataset.model, t.dataset.amount]));
  assert.deepEqual(received, [[m2, m2ToAlice.toString()], [m3, m3ToAlice.toString()]], 'Alice\'s account lists both royalties');
  await snap(alice, 'account-alice-royalties');
  log(`Derek paid out the vaults: M2 ${m2ToAlice} to Alice; M3 ${m3ToBob} to Bob, ${m3ToAlice} to Alice`);

  // 7. Anyone, with no wallet: the receipt of Charlie's training verifies in the browser.
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const anyone = await ctx.newPage();
  anyone.on('pageerror', (e) => errors.push(`anyone: ${e}`));
  await anyone.goto(`${base}/`);
  await anyone.waitForSelector('#catalogue tr.model');
  assert.equal(await anyone.locator('#catalogue tr.model').count(), 3, 'M1, M2 and M3 in the catalogue');
  await snap(anyone, 'catalogue');
  await anyone.goto(`${base}/models/${m3}`);
  await anyone.waitForFunction(() => document.querySelectorAll('#lineage a').length === 3);
  await snap(anyone, 'model-m3-lineage');
  for (const id of [charlieJob, inferId, evalId]) {
    await anyone.goto(`${base}/jobs/${id}/receipt`);
    await anyone.waitForSelector('#checks[data-state="done"], #checks[data-state="error"]', { timeout: 120_000 });
    const rows = await anyone.$$eval('tr.check', (trs) => trs.map((t) => [t.dataset.check, t.dataset.status]));
    assert.equal(await anyone.getAttribute('#checks', 'data-verdict'), 'pass', JSON.stringify(rows));
    assert.deepEqual(rows.filter(([, s]) => s === 'FAIL'), []);
    if (id === charlieJob) assert.equal(rows.filter(([c]) => c === 'lineage_link').length, 2, 'M3 ← M2 and M2 ← M1');
    await snap(anyone, `receipt-${id}`);
  }
  log('the receipts of Charlie\'s train, Derek\'s inference and Elena\'s evaluation pass every check in the browser');

  // 8. On chain, as the demo's ledger says (crates/demo/src/story.rs).
  const opcFee = BigInt(await rpc(rpcUrl, 'eth_call', [{ to: book.router, data: '0x7d28354d' /* getOPCConsumeFee() */ }, 'latest']));
  assert.deepEqual([scheme.total_reward, scheme.shares_bps], [(100n * e18).toString(), [5000, 2500, 1250, 625]]);
  const split = (n) => { // RewardScheme::split
    const total = BigInt(scheme.total_reward);
    const paid = scheme.shares_bps.slice(0, n).map((b) => (total / 10000n) * BigInt(b) + (total % 10000n) * BigInt(b) / 10000n);
    return [paid, total - paid.reduce((a, b) => a + b, 0n)];
  };
  const pay = e18 - opcFee; // an order's datatoken, less Ocean's fee, to the payment collector
  const [[bobM2], aliceM2] = split(1);
  const [[charlieM3, bobM3], aliceM3] = split(2);
  const want = {
    alice: { M1: 2n * pay, M2: aliceM2, M3: aliceM3 }, // Bob's and Elena's orders of M1
    bob: { M1: 0n, M2: bobM2 - 2n * e18 + 2n * pay, M3: bobM3 }, // bought+spent M1; sold 2 M2; Charlie's and Elena's orders
    charlie: { M1: 0n, M2: 0n, M3: charlieM3 - 2n * e18 + 2n * pay }, // sold 2 M3; Derek's and Elena's orders
    derek: { M1: 0n, M2: 0n, M3: 0n },
    elena: { M1: 0n, M2: 0n, M3: 0n },
  };
  const dts = { M1: card1.datatoken, M2: (await api(`/api/models/${m2}`)).datatoken, M3: (await api(`/api/models/${m3}`)).datatoken };
  const got = {};
  for (const n of names) {
    got[n] = {};
    for (const [sym, dt] of Object.entries(dts)) got[n][sym] = BigInt(await balanceOf(rpcUrl, dt, who[n]));
  }
  const show = (o) => JSON.stringify(o, (_, v) => (typeof v === 'bigint' ? v.toString() : v));
  // The peer market escrows nothing (contracts/src/PeerMarket.sol): the offers' unsold rest stays
  // with the sellers, as the demo's ledger has it.
  assert.equal(show(got), show(want), `datatoken balances on chain\n got ${show(got)}\nwant ${show(want)}`);
  log(`balances on chain as the demo's ledger (opc fee ${opcFee}): ${show(got)}`);

  // OCEAN, exactly. M1 on Ocean's exchange costs Alice's price plus the exchange's fees
  // (FixedRateExchange.calcBaseInGivenOutDT: price × fee / 1e18 for Ocean's and the
  // publish market's; getFeesInfo gives both rates).
  const selector = async (sig) => (await rpc(rpcUrl, 'web3_sha3', ['0x' + Buffer.from(sig).toString('hex')])).slice(0, 10);
  const feesInfo = await rpc(rpcUrl, 'eth_call', [{ to: book.fixed_rate, data: (await selector('getFeesInfo(bytes32)')) + pad(card1.exchange_id) }, 'latest']);
  const word = (i) => BigInt('0x' + feesInfo.slice(2 + 64 * i, 2 + 64 * (i + 1)));
  const [marketFee, swapFee] = [word(0), word(2)];
  const price = BigInt(card1.price);
  const m1Cost = price + (price * swapFee) / e18 + (price * marketFee) / e18;
  const fee = (id) => { assert.ok(feeOf.has(id), `no quote seen for ${id}`); return feeOf.get(id); };
  const [e1, e2, e3] = evals.map(([, id]) => id);
  const start = 1000n * e18;
  const wantOcean = {
    alice: start + m2ToAlice + m3ToAlice, // the royalties both vaults paid her
    bob: start - m1Cost - fee(bobJob) + 2n * PEER.M2 * e18 + m3ToBob, // M1 bought, trained; 2 M2 sold; M3's royalty share
    charlie: start - PEER.M2 * e18 - fee(charlieJob) - royalty + 2n * PEER.M3 * e18, // bought M2, trained it; 2 M3 sold
    derek: start - PEER.M3 * e18 - fee(inferId) - royalty, // bought M3, ran inference on it
    elena: start - m1Cost - fee(e1) - PEER.M2 * e18 - fee(e2) - royalty - PEER.M3 * e18 - fee(e3) - royalty,
  };
  const gotOcean = {};
  for (const n of names) gotOcean[n] = BigInt(await balanceOf(rpcUrl, book.ocean, who[n]));
  assert.equal(show(gotOcean), show(wantOcean), `OCEAN balances on chain\n got ${show(gotOcean)}\nwant ${show(wantOcean)}`);
  assert.deepEqual(errors, [], 'no uncaught page errors');
  log(`OCEAN on chain as expected (M1 on the exchange ${m1Cost}, fees ${show(Object.fromEntries(feeOf))}): ${show(gotOcean)}`);
  log(`the whole story through the UI passed in ${((Date.now() - t0) / 1000).toFixed(1)} s; ${shot * 2} screenshots in ${shots}`);
} catch (e) {
  failed = true;
  console.error(e);
}
await finish({ browser, server, tmp, failed });
