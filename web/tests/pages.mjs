// Every page of the storefront as a visitor meets it, and the catalogue at a model hub's
// scale. Called by browser.mjs against its served demo; runs alone against any server too:
//   node web/tests/pages.mjs http://127.0.0.1:PORT [operator-data-dir]
// (the data dir, when given, is where the 1,000-model catalogue is written: its
// catalogue.sqlite; without it only the page sweep runs).
//
// - sweepPages: each page at desktop width and at 390 px (a phone): an axe-core scan with no
//   serious or critical violation, a full-page screenshot of each (artefacts, outside the
//   repository), and nothing wider than the phone's screen (document scrollWidth ≤ 390).
// - catalogueAtScale: 1,000 models written straight into the API's SQLite catalogue (copies
//   of a demo model's record under new NFTs: the API lists what its catalogue holds; no
//   chain publication is needed to measure a page), then the time from navigation to the
//   catalogue's first rows, measured by the page's own clock, and every model reachable.

import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import assert from 'node:assert/strict';

const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

export const VIEWPORTS = [
  { name: 'desktop', width: 1280, height: 800 },
  { name: 'phone', width: 390, height: 844 },
];

async function json(base, path) {
  const r = await fetch(`${base}${path}`);
  assert.ok(r.ok, `${path}: HTTP ${r.status}`);
  return r.json();
}

/// The storefront's pages, found from what the API serves: the catalogue, the model with the
/// longest lineage, its training job and receipt, an evaluator's jobs, the account and publish
/// pages, and a path that is no page.
export async function pagesOf(base) {
  const models = await json(base, '/api/models?limit=200');
  assert.ok(models.length > 0, 'a catalogue to look at');
  const deepest = models.reduce((a, b) => (b.lineage.length > a.lineage.length ? b : a));
  const evaluation = models.flatMap((m) => m.evaluations)[0];
  const pages = [
    { name: 'catalogue', path: '/', ready: '#catalogue tr.model' },
    { name: 'model', path: `/models/${deepest.nft}`, ready: '#model #lineage' },
    { name: 'account', path: '/account', ready: '#wallet-address, #not-connected' },
    { name: 'publish', path: '/publish', ready: 'main h1' },
    { name: 'not-found', path: '/no-such-page', ready: 'main h1' },
  ];
  if (deepest.source_job) {
    pages.push({ name: 'job', path: `/jobs/${deepest.source_job}`, ready: '#job' });
    pages.push({
      name: 'receipt',
      path: `/jobs/${deepest.source_job}/receipt`,
      ready: '#checks[data-state="done"], #checks[data-state="error"]',
    });
  }
  if (evaluation) {
    pages.push({ name: 'jobs', path: `/jobs?consumer=${evaluation.evaluator}`, ready: '#jobs tr.job' });
  }
  return pages;
}

/// Serious and critical axe-core violations on the page as it is now.
export async function axeViolations(page) {
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.addScriptTag({ content: axeSource });
  const r = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  return r.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => ({ id: v.id, impact: v.impact, help: v.help, targets: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) }));
}

/// Every page at every viewport: axe, a screenshot into `shots`, and the phone's width held.
/// `init` (optional) is an init script for each context (an injected wallet, say).
export async function sweepPages({ browser, base, shots, log, init, pages }) {
  pages ??= await pagesOf(base);
  rmSync(shots, { recursive: true, force: true });
  mkdirSync(shots, { recursive: true });
  const problems = [];
  for (const vp of VIEWPORTS) {
    const ctx = await browser.newContext({ viewport: { width: vp.width, height: vp.height } });
    if (init) await ctx.addInitScript(init.script, init.arg);
    const page = await ctx.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    for (const p of pages) {
      await page.goto(`${base}${p.path}`);
      await page.waitForSelector(p.ready, { timeout: 120_000 });
      // Whatever else loads with the page (quotes, balances) settles first.
      await page.waitForFunction(() => document.querySelectorAll('.loading').length === 0, null, { timeout: 60_000 })
        .catch(() => {});
      for (const v of await axeViolations(page)) problems.push(`${p.name} @${vp.name}: axe ${v.impact} ${v.id} (${v.help}) at ${v.targets.join(' | ')}`);
      if (vp.width <= 390) {
        const wide = await page.evaluate(() => ({
          scroll: document.documentElement.scrollWidth,
          // The widest elements, to say what overflows.
          culprits: [...document.querySelectorAll('body *')]
            .filter((e) => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
            .slice(0, 4)
            .map((e) => `${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''}${e.className && typeof e.className === 'string' ? '.' + e.className.split(' ').join('.') : ''}`),
        }));
        if (wide.scroll > vp.width) problems.push(`${p.name} @${vp.name}: ${wide.scroll} px wide (> ${vp.width}): ${wide.culprits.join(', ')}`);
      }
      await page.screenshot({ path: join(shots, `${p.name}-${vp.name}.png`), fullPage: true });
    }
    problems.push(...errors.map((e) => `page error @${vp.name}: ${e}`));
    await ctx.close();
  }
  assert.deepEqual(problems, [], `pages: ${problems.length} problems`);
  log(`${pages.length} pages × ${VIEWPORTS.length} widths: no serious or critical axe violation, nothing wider than 390 px; screenshots in ${shots}`);
  return pages.length * VIEWPORTS.length;
}

/// Writes `n` catalogue entries (copies of the oldest model's record under new NFTs, created
/// after every model there) into `<dataDir>/catalogue.sqlite`, which the API reads live.
export function fillCatalogue(dataDir, n) {
  const db = join(dataDir, 'catalogue.sqlite');
  const sqlite = (sql) => {
    const r = spawnSync('sqlite3', ['-cmd', '.timeout 10000', db], { input: sql, encoding: 'utf8', maxBuffer: 64 << 20 });
    if (r.error) throw new Error(`sqlite3 could not run (${r.error.message}): scripts/setup.sh installs it`);
    assert.equal(r.status, 0, `sqlite3: ${r.stderr}`);
    return r.stdout;
  };
  const [first, newest] = sqlite(
    "SELECT record FROM models ORDER BY seq LIMIT 1; SELECT max(json_extract(record, '$.created_at')) FROM models;",
  ).trim().split('\n');
  const model = JSON.parse(first);
  const hex = (prefix, i) => `0x${prefix}${i.toString(16).padStart(40 - prefix.length, '0')}`;
  const rows = [];
  for (let i = 1; i <= n; i++) {
    const m = structuredClone(model);
    m.card.nft = hex('5ca1e', i);
    m.card.datatoken = hex('d7', i);
    m.card.name = `Scale model ${i}`;
    m.card.symbol = `SC${i}`;
    m.card.parent = null;
    m.created_at = Number(newest) + i;
    m.source_job = null;
    m.receipt_hash = null;
    m.featured = [];
    rows.push(`('${m.card.nft}', '${JSON.stringify(m).replaceAll("'", "''")}')`);
  }
  sqlite(`BEGIN; INSERT INTO models (nft, record) VALUES ${rows.join(',\n')}; COMMIT;`);
}

/// The catalogue with `n` more models: time from navigation to its first rows (the page's
/// own clock: `performance.now()` when the first row appears), over `runs` loads; then every
/// model reachable from the page. Returns the figures.
export async function catalogueAtScale({ browser, base, dataDir, log, n = 1000, runs = 5, targetMs = 1000 }) {
  const before = (await json(base, '/api/models?limit=200')).length;
  assert.ok(before < 200, 'the demo catalogue fits one page');
  fillCatalogue(dataDir, n);
  const total = before + n;
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await ctx.addInitScript(() => {
    // The first moment the catalogue has a row (and how many), by the page's clock.
    new MutationObserver((_, obs) => {
      const rows = document.querySelectorAll('#catalogue tr.model').length;
      if (rows > 0) {
        window.__firstRows = { at: performance.now(), rows };
        obs.disconnect();
      }
    }).observe(document, { subtree: true, childList: true });
  });
  const page = await ctx.newPage();
  const times = [];
  let shown = 0;
  for (let i = 0; i < runs; i++) {
    await page.goto(`${base}/`);
    await page.waitForFunction(() => window.__firstRows, null, { timeout: 30_000 });
    const r = await page.evaluate(() => window.__firstRows);
    times.push(r.at);
    shown = r.rows;
  }
  times.sort((a, b) => a - b);
  const median = times[Math.floor(times.length / 2)];
  // Every model can be reached: the page's own "More models" until the last page.
  let pages = 1;
  while (await page.locator('#more-models').count()) {
    const rows = await page.locator('#catalogue tr.model').count();
    await page.click('#more-models');
    await page.waitForFunction((r) => document.querySelectorAll('#catalogue tr.model').length > r, rows);
    pages += 1;
    assert.ok(pages <= total, 'the catalogue ends');
  }
  const listed = await page.locator('#catalogue tr.model').count();
  await ctx.close();
  const table = [
    ['figure', 'measured', 'target', 'ratio'],
    [`catalogue first render, ${total} models (median of ${runs})`, `${median.toFixed(0)} ms`, `≤ ${targetMs} ms`, (median / targetMs).toFixed(2)],
    ['slowest load', `${times[times.length - 1].toFixed(0)} ms`, `≤ ${targetMs} ms`, (times[times.length - 1] / targetMs).toFixed(2)],
    ['rows in the first render', `${shown}`, '', ''],
    ['models reachable from the page', `${listed} in ${pages} pages`, `${total}`, (listed / total).toFixed(2)],
  ];
  const w = table[0].map((_, c) => Math.max(...table.map((r) => r[c].length)));
  for (const r of table) log(r.map((x, c) => x.padEnd(w[c])).join(' | '));
  assert.ok(median <= targetMs, `the catalogue of ${total} models first rendered in ${median.toFixed(0)} ms (target ${targetMs} ms)`);
  assert.equal(listed, total, 'every model reachable from the catalogue');
  return { median, times, shown, listed, total };
}

// Alone: node web/tests/pages.mjs BASE [DATA_DIR]
if (import.meta.url === `file://${process.argv[1]}`) {
  const { chromium } = await import('playwright-core');
  const [base, dataDir] = process.argv.slice(2);
  const t0 = Date.now();
  const log = (m) => console.log(`[pages ${((Date.now() - t0) / 1000).toFixed(1)}s] ${m}`);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'],
  });
  let code = 0;
  try {
    const cache = process.env.POSTHUMAN_CACHE ?? join(process.env.HOME, '.cache/posthuman');
    await sweepPages({ browser, base, shots: process.env.SHOTS ?? join(cache, 'web-shots'), log });
    if (dataDir) await catalogueAtScale({ browser, base, dataDir, log });
  } catch (e) {
    console.error(e);
    code = 1;
  } finally {
    await browser.close();
  }
  process.exit(code);
}
