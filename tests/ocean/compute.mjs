// Ocean's own client against Posthuman: ocean.js (@oceanprotocol/lib, pinned in
// package-lock.json) plays Derek's and Elena's part of the story against the embedded default,
// with no Posthuman code and no Posthuman route — only Ocean's contracts (through ocean.js's
// classes) and the Ocean Provider API (`ProviderInstance`) found in the assets' DDOs.
//
// 1. The tiny demo into a temp data dir (`posthuman-demo`): M1 published, M2 and M3 derived
//    by train jobs, each with its DDO set on chain. Its server is gone afterwards, so the data
//    dir is served again by `posthuman-server` on the port the DDOs name (their
//    `serviceEndpoint`, read from the chain first).
// 2. Discovery: every `MetadataCreated` event on chain, each DDO checked against its
//    `metaDataHash` and `getMetaData` (active); ocean.js's ConfigHelper reads the deployment
//    from the served Ocean-format address.json (ADDRESS_FILE).
// 3. Derek (infer on M1): `initializeCompute`, `orderAsset` (which buys the datatoken on M1's
//    fixed-rate exchange and starts the order with the provider fee), `computeStart`,
//    `computeStatus` until finished, `getComputeResult` (the completions).
// 4. Elena (evaluate on M3, a derived model): Charlie, M3's trainer, puts two of the
//    datatokens his training earned on sale on Ocean's own fixed-rate exchange (the CLI's
//    `models sell`); ocean.js finds that exchange from the datatoken, and Elena buys and
//    orders with `orderAsset` and the quoted fee, starts the job, follows it and reads the
//    report. Charlie then edits M3's card (`models edit`): ocean.js reads the DDO again as an
//    indexer does, from M3's `MetadataUpdated` event (hash-checked, `getMetaData` active),
//    and Ocean's validator (ddo-js) accepts it. The licence: every DDO names the one Alice
//    published M1 under (M2 and M3 inherit it); Charlie may not change M3's, Alice changes
//    M1's (`models edit --license`) and M1's DDO follows.
// 5. Refusals, each a paid order the API must not run: the same order again, a fee signed by
//    someone other than the operator, a fee quoted for another job kind, and one quoted for
//    another model.
//
// Usage: node tests/ocean/compute.mjs, after a debug build of posthuman, posthuman-worker and
// posthuman-server in $CARGO_TARGET_DIR/debug. Prints the wall time of the ocean.js part and
// exits non-zero on the first failed expectation.

import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHash, randomBytes } from 'node:crypto';
import assert from 'node:assert/strict';
import { ethers } from 'ethers';
import {
  ConfigHelper, Datatoken, FixedRateExchange, LogLevel, LoggerInstance, Nft, ProviderInstance, approveWei, orderAsset,
} from '@oceanprotocol/lib';
import { validateDDO } from '@oceanprotocol/ddo-js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const cache = process.env.POSTHUMAN_CACHE ?? join(process.env.HOME, '.cache/posthuman');
// POSTHUMAN_BIN_DIR: binaries elsewhere than the debug build (a copy that a build sharing the
// target dir cannot replace mid-run).
const bin = process.env.POSTHUMAN_BIN_DIR ?? join(process.env.CARGO_TARGET_DIR ?? join(cache, 'target'), 'debug');
const t0 = Date.now();
const log = (m) => console.log(`[ocean.js ${((Date.now() - t0) / 1000).toFixed(1)}s] ${m}`);

// ocean.js logs every refused request (and each class built without a network config) before
// it throws; the refusals are expected here and reported by this script's own lines.
LoggerInstance.setLevel(LogLevel.None);

// The demo's people: their keys are derived from their names (posthuman_chain::story::dev_wallet).
const devKey = (name) => ethers.keccak256(ethers.toUtf8Bytes(`posthuman dev wallet ${name}`));

// 1. The demo, then its data dir served again where the DDOs point.
const tmp = mkdtempSync(join(tmpdir(), 'posthuman-ocean-'));
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
const [m1, , m3] = summary.lineage;
log(`demo done: M1 ${m1.nft}, M3 ${m3.nft}`);


/// The data dir served by `posthuman-server` on `listen`; resolves once it listens.
async function serve(listen) {
  const s = spawn(
    join(bin, 'posthuman-server'),
    ['--data-dir', join(demoDir, 'operator'), '--listen', listen, '--worker', join(bin, 'posthuman-worker')],
    { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const base = await new Promise((ok, fail) => {
    let out = '';
    s.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/\S+)/);
      if (m) ok(m[1]);
    });
    s.on('exit', (c) => fail(new Error(`posthuman-server exited (${c}) before listening`)));
  });
  return { s, base };
}

async function stop(s) {
  if (s.exitCode !== null) return;
  const gone = new Promise((ok) => s.once('exit', ok));
  s.kill('SIGINT');
  await gone;
}

/// Every DDO set on chain: the `MetadataCreated` events, each checked against its hash.
async function ddosOnChain(provider) {
  // The ERC721Template ABI ocean.js itself uses.
  const iface = new ethers.Interface(new Nft(null, 'development').getDefaultAbi());
  const topic = iface.getEvent('MetadataCreated').topicHash;
  const logs = await provider.getLogs({ topics: [topic], fromBlock: 0 });
  return logs.map((l) => {
    const ev = iface.parseLog(l);
    const bytes = ethers.getBytes(ev.args.data);
    assert.equal(ev.args.flags, '0x00', 'a plain JSON DDO');
    assert.equal('0x' + createHash('sha256').update(bytes).digest('hex'), ev.args.metaDataHash, 'metaDataHash');
    return { nft: l.address, ddo: JSON.parse(Buffer.from(bytes).toString('utf8')) };
  });
}

/// The DDO `address` carries now, as an indexer follows it: its `MetadataCreated` event, then
/// each `MetadataUpdated`, the last one winning, each checked against its hash.
async function latestDdo(provider, address) {
  const iface = new ethers.Interface(new Nft(null, 'development').getDefaultAbi());
  const topics = [[iface.getEvent('MetadataCreated').topicHash, iface.getEvent('MetadataUpdated').topicHash]];
  const logs = await provider.getLogs({ address, topics, fromBlock: 0 });
  const versions = logs.map((l) => {
    const ev = iface.parseLog(l);
    const bytes = ethers.getBytes(ev.args.data);
    assert.equal('0x' + createHash('sha256').update(bytes).digest('hex'), ev.args.metaDataHash, 'metaDataHash');
    return { event: ev.name, ddo: JSON.parse(Buffer.from(bytes).toString('utf8')) };
  });
  assert.equal(versions[0]?.event, 'MetadataCreated', 'created first');
  return { versions, ddo: versions[versions.length - 1].ddo };
}

/// The receipt's transaction hash of an ocean.js call that sent one.
async function sent(tx) {
  const r = await tx.wait();
  assert.equal(r.status, 1, `${tx.hash} reverted`);
  return tx.hash;
}

/// A refusal from the provider: ocean.js throws the API's JSON error as its message (`code`
/// is its `error`), or, for a result download, the HTTP status.
async function refused(what, p, code, words) {
  let msg;
  try {
    await p;
  } catch (e) {
    msg = e.message;
  }
  if (msg === undefined) throw new Error(`${what}: accepted`);
  const brace = msg.indexOf('{');
  const got = brace >= 0 ? JSON.parse(msg.slice(brace)).error : msg.match(/(\d{3})$/)?.[1];
  assert.equal(got, code, `${what}: ${msg}`);
  if (words) assert.match(msg, words, what);
  log(`refused, as it must be: ${what} (${msg.slice(0, 200)})`);
}

let server = null;
try {
  // Where the DDOs point (the demo's own API, gone now): read from the chain through a first
  // server on any port, then the data dir served there.
  const first = await serve('127.0.0.1:0');
  server = first.s;
  const rpc0 = (await (await fetch(`${first.base}/api/chain`)).json()).rpc_url;
  const endpoint = (await ddosOnChain(new ethers.JsonRpcProvider(rpc0)))[0].ddo.services[0].serviceEndpoint;
  await stop(server);
  const { s, base } = await serve(new URL(endpoint).host);
  server = s;
  assert.equal(endpoint, `${base}/api/ocean`, 'the DDOs name this server\'s Ocean provider');
  const tOcean = Date.now();

  // 2. ocean.js's configuration: Ocean's `development` network from the served address.json.
  const chainInfo = await (await fetch(`${base}/api/chain`)).json();
  const addressFile = join(tmp, 'address.json');
  writeFileSync(addressFile, await (await fetch(`${base}/api/ocean/address.json`)).text());
  process.env.ADDRESS_FILE = addressFile;
  const config = new ConfigHelper().getConfig('development');
  assert.equal(config.chainId, chainInfo.address_book.chain_id, 'ConfigHelper took the chain from address.json');
  config.nodeUri = chainInfo.rpc_url;
  // No request cache: ethers' default (250 ms) answers a second getTransactionCount with the
  // first one's nonce when ocean.js sends two transactions in a row.
  const provider = new ethers.JsonRpcProvider(chainInfo.rpc_url, undefined, { cacheTimeout: -1 });
  const chainId = Number((await provider.getNetwork()).chainId);
  const [derek, elena, charlie] = ['derek', 'elena', 'charlie'].map((n) => new ethers.Wallet(devKey(n), provider));

  // Discovery: the assets from their DDOs alone (no Posthuman route).
  const found = await ddosOnChain(provider);
  assert.equal(found.length, 3, 'three models carry DDOs');
  const nft = new Nft(derek, chainId, config);
  for (const { nft: address, ddo } of found) {
    const md = await nft.getMetadata(address);
    assert.equal(md[0], endpoint, 'getMetaData names the provider');
    assert.equal(Number(md[2]), 0, 'active');
    assert.ok(md[3], 'has metadata');
    assert.deepEqual(ddo.services.map((x) => x.id), ['train', 'infer', 'evaluate']);
    assert.ok(ddo.services.every((x) => x.serviceEndpoint === endpoint));
    // The demo's M1 licence, inherited by M2 and M3.
    assert.equal(ddo.metadata.license, 'Apache-2.0', `the licence of ${address}`);
  }
  const parentOf = (d) => d.ddo.metadata.additionalInformation.parentNft;
  const byNft = (a) => found.find((d) => d.nft.toLowerCase() === a?.toLowerCase());
  const M1 = found.find((d) => !parentOf(d));
  const M3 = found.find((d) => parentOf(d) && parentOf(byNft(parentOf(d))));
  assert.equal(M1.nft.toLowerCase(), m1.nft.toLowerCase(), 'the root is the demo\'s M1');
  assert.equal(M3.nft.toLowerCase(), m3.nft.toLowerCase(), 'the grandchild is the demo\'s M3');
  // What an Ocean indexer (Aquarius / Ocean Node) adds to a DDO to make it an Asset, which
  // orderAsset reads: the services' datatokens with their name and symbol, from the chain.
  const dtInfo = new Datatoken(derek, chainId, config);
  for (const a of [M1, M3]) {
    a.asset = {
      ...a.ddo,
      datatokens: await Promise.all(a.ddo.services.map(async (x) => ({
        address: x.datatokenAddress, serviceId: x.id,
        name: await dtInfo.getName(x.datatokenAddress), symbol: await dtInfo.getSymbol(x.datatokenAddress),
      }))),
    };
  }
  const service = (asset, id) => {
    const i = asset.ddo.services.findIndex((x) => x.id === id);
    return { i, ...asset.ddo.services[i] };
  };
  // The weights commitment as Ocean's tools read an NFT's ERC725Y data: the raw 32 bytes
  // under posthuman.weightsHash are not UTF-8 (getData throws), their hex text is, for a
  // root (its publisher writes it) and a derived model (the lineage contract writes it).
  // (ocean.js hashes a key given as bytes: the ERC725Y key is keccak256 of the name.)
  const key = (name) => ethers.hexlify(ethers.toUtf8Bytes(name));
  await assert.rejects(nft.getData(M1.nft, key('posthuman.weightsHash')), 'the raw commitment is not text');
  const hexHash = await nft.getData(M1.nft, key('posthuman.weightsHashHex'));
  assert.equal(hexHash, M1.ddo.metadata.additionalInformation.weightsHash, 'getData decodes the weights hash');
  assert.equal(hexHash, m1.weights_hash, 'the demo\'s M1 weights');
  const m3Hash = await nft.getData(M3.nft, key('posthuman.weightsHashHex'));
  assert.equal(m3Hash, M3.ddo.metadata.additionalInformation.weightsHash, 'a derived model\'s too');
  assert.equal(m3Hash, m3.weights_hash, 'the demo\'s M3 weights');
  log(`discovered M1 ${M1.ddo.id} and M3 ${M3.ddo.id} from their DDOs; their weights ${hexHash}, ${m3Hash} read with Nft.getData`);

  const env = (await ProviderInstance.getComputeEnvironments(endpoint))[0].id;
  const token = config.oceanTokenAddress;
  const validUntil = () => Math.floor(Date.now() / 1000) + 3600;
  const salt = () => ethers.hexlify(randomBytes(32));
  const init = async (who, asset, serviceId, userdata) => {
    const r = await ProviderInstance.initializeCompute(
      [{ documentId: asset.ddo.id, serviceId, userdata }], {}, env, token, validUntil(), endpoint,
      await who.getAddress(), [], chainId,
    );
    const fee = r.datasets[0].providerFee;
    assert.equal(typeof fee.v, 'number', 'numeric v');
    return fee;
  };
  const start = (who, asset, serviceId, order, userdata) => ProviderInstance.computeStart(
    endpoint, who, env, [{ documentId: asset.ddo.id, serviceId, transferTxId: order, userdata }], {},
    3600, token, [], chainId,
  );
  const finish = async (who, jobId) => {
    for (let i = 0; i < 1200; i++) {
      const [job] = await ProviderInstance.computeStatus(endpoint, who, jobId);
      if (job.status === 70) return job;
      if (job.status === 41) throw new Error(`job ${jobId} failed: ${job.statusText}`);
      await new Promise((ok) => setTimeout(ok, 250));
    }
    throw new Error(`job ${jobId} did not finish`);
  };
  const result = async (who, job, filename) => {
    assert.ok(job.results.every((r) => r.filename.endsWith('.json')), 'public JSON outputs only, never weights');
    const r = job.results.find((x) => x.filename === filename);
    assert.ok(r, `${filename} among ${JSON.stringify(job.results)}`);
    const chunks = [];
    for await (const c of await ProviderInstance.getComputeResult(endpoint, who, job.jobId, r.index)) chunks.push(c);
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  };

  // 3. Derek: inference on M1, bought on its Ocean exchange by orderAsset.
  const infer = { params: { kind: 'infer', prompts: ['The history of the'], max_new_tokens: 8 } };
  const m1dt = new Datatoken(derek, chainId, config);
  assert.ok((await m1dt.getFixedRates(service(M1, 'infer').datatokenAddress)).length > 0, 'M1 has an exchange');
  let fee = await init(derek, M1, 'infer', infer);
  const order = await sent(await orderAsset(M1.asset, derek, config, m1dt, endpoint, undefined, undefined, fee, '0', 0, service(M1, 'infer').i));
  const [started] = await start(derek, M1, 'infer', order, { ...infer, salt: salt() });
  log(`Derek's infer job ${started.jobId} started (order ${order})`);
  const done = await finish(derek, started.jobId);
  const completions = await result(derek, done, 'completions.json');
  assert.equal(completions[0]?.prompt, 'The history of the', JSON.stringify(completions));
  assert.equal(completions[0].completion_tokens, 8, 'the 8 tokens paid for');
  log(`Derek read his completions: ${JSON.stringify(completions).slice(0, 160)}`);

  // Refusals on M1: the same order again; a fee not signed by the operator; a fee quoted
  // for another job kind. Each is a real order on chain that the provider must not run.
  await refused('the same order again', start(derek, M1, 'infer', order, { ...infer, salt: salt() }), 'conflict', /payment/);
  fee = await init(derek, M1, 'infer', infer);
  const digest = ethers.solidityPackedKeccak256(
    ['bytes', 'address', 'address', 'uint256', 'uint256'],
    [fee.providerData, derek.address, fee.providerFeeToken, fee.providerFeeAmount, fee.validUntil],
  );
  const sig = ethers.Signature.from(await derek.signMessage(ethers.getBytes(digest)));
  const forged = { ...fee, providerFeeAddress: derek.address, v: sig.v, r: sig.r, s: sig.s };
  const forgedOrder = await sent(await orderAsset(M1.asset, derek, config, m1dt, endpoint, undefined, undefined, forged, '0', 0, service(M1, 'infer').i));
  await refused('a fee not signed by the operator', start(derek, M1, 'infer', forgedOrder, { ...infer, salt: salt() }), 'payment_invalid', /not signed by our operator/);
  const text = readFileSync(join(root, 'data/wikitext-2/test.txt'), 'utf8').slice(0, 3000);
  const evaluate = { params: { kind: 'evaluate', context_len: 16, stride: 8, max_tokens: 0 }, dataset_bytes: Buffer.byteLength(text) };
  const evalFee = await init(derek, M1, 'evaluate', evaluate);
  const kindOrder = await sent(await orderAsset(M1.asset, derek, config, m1dt, endpoint, undefined, undefined, evalFee, '0', 0, service(M1, 'infer').i));
  await refused('a fee quoted for another job kind', start(derek, M1, 'infer', kindOrder, { ...infer, salt: salt() }), 'payment_invalid', /quoted for another job/);

  // 4. Elena: evaluation of M3, a derived model, bought on its Ocean exchange: Charlie, its
  // trainer, first puts two of the datatokens his training earned on sale there with the CLI
  // (`models sell`: ModelLineage.openSale, the exchange's owner of record being him).
  const m3dtAddr = service(M3, 'evaluate').datatokenAddress;
  const m3dt = new Datatoken(elena, chainId, config);
  const sell = spawnSync(
    join(bin, 'posthuman'),
    ['--api', base, '--key-env', 'POSTHUMAN_OCEAN_TEST_CHARLIE', '--yes', 'models', 'sell', M3.nft, '--price', '1.5', '--amount', '2'],
    { cwd: root, encoding: 'utf8', env: { ...process.env, POSTHUMAN_OCEAN_TEST_CHARLIE: devKey('charlie') } },
  );
  assert.equal(sell.status, 0, `Charlie's models sell: ${sell.stdout} ${sell.stderr}`);
  const exchanges = await m3dt.getFixedRates(m3dtAddr);
  assert.equal(exchanges.length, 1, 'M3 has one Ocean exchange');
  const fre = new FixedRateExchange(config.fixedRateExchangeAddress, elena, chainId, config);
  const ex = await fre.getExchange(exchanges[0].id);
  assert.equal(Number(ex.dtSupply), 2, 'the exchange sells the two datatokens Charlie deposited');
  assert.equal(ex.exchangeOwner.toLowerCase(), charlie.address.toLowerCase(), 'Charlie owns the sale');
  log(`M3 (derived) on sale on Ocean's exchange by its trainer: ${ex.dtSupply} datatokens at ${ex.fixedRate} OCEAN; Elena buys with orderAsset`);
  // Charlie edits M3's card with the CLI; the DDO Ocean's tools read follows.
  const described = 'M1 fine-tuned twice on WikiText-2; sold by its trainer on Ocean\'s exchange';
  const edit = spawnSync(
    join(bin, 'posthuman'),
    ['--api', base, '--key-env', 'POSTHUMAN_OCEAN_TEST_CHARLIE', 'models', 'edit', M3.nft, '--description', described, '--tags', 'wikitext,tiny'],
    { cwd: root, encoding: 'utf8', env: { ...process.env, POSTHUMAN_OCEAN_TEST_CHARLIE: devKey('charlie') } },
  );
  assert.equal(edit.status, 0, `Charlie's models edit: ${edit.stdout} ${edit.stderr}`);
  const m3now = await latestDdo(provider, M3.nft);
  assert.deepEqual(m3now.versions.map((v) => v.event), ['MetadataCreated', 'MetadataUpdated'], 'one update');
  assert.equal(m3now.ddo.metadata.description, described, 'the new description');
  assert.deepEqual(m3now.ddo.metadata.tags, ['posthuman', M3.ddo.metadata.tags[1], 'compute-to-data', 'derived', 'wikitext', 'tiny']);
  assert.equal(m3now.ddo.metadata.created, M3.ddo.metadata.created, 'created unchanged');
  assert.ok(m3now.ddo.metadata.updated >= M3.ddo.metadata.created, 'updated moved on');
  assert.equal(m3now.ddo.id, M3.ddo.id, 'the same asset');
  assert.deepEqual(m3now.ddo.services, M3.ddo.services, 'the same services');
  const md3 = await nft.getMetadata(M3.nft);
  assert.ok(md3[3] && Number(md3[2]) === 0, 'getMetaData: still active');
  const [valid, errors] = await validateDDO(m3now.ddo);
  assert.ok(valid, `ddo-js refuses the updated DDO: ${JSON.stringify(errors).slice(0, 300)}`);
  assert.equal(m3now.ddo.metadata.license, 'Apache-2.0', 'the licence M3 inherited stays');
  log(`Charlie edited M3's card: MetadataUpdated read and hash-checked by ocean.js's ABI, the updated DDO valid for ddo-js (updated ${m3now.ddo.metadata.updated})`);
  // M3 keeps its root's licence: Charlie's change is refused (usage, exit 2) before anything
  // is signed. Alice, M1's owner of record, changes M1's; ocean.js reads it in M1's update.
  const cli = (who, args) => spawnSync(
    join(bin, 'posthuman'),
    ['--api', base, '--key-env', 'POSTHUMAN_OCEAN_TEST_KEY', ...args],
    { cwd: root, encoding: 'utf8', env: { ...process.env, POSTHUMAN_OCEAN_TEST_KEY: devKey(who) } },
  );
  const relicense = cli('charlie', ['models', 'edit', M3.nft, '--license', 'MIT']);
  assert.equal(relicense.status, 2, `Charlie's licence change: ${relicense.stdout} ${relicense.stderr}`);
  assert.match(relicense.stderr, /root's licence \(Apache-2\.0\)/);
  const aliceEdit = cli('alice', ['models', 'edit', M1.nft, '--license', 'LicenseRef-posthuman-demo-1.0']);
  assert.equal(aliceEdit.status, 0, `Alice's licence change: ${aliceEdit.stdout} ${aliceEdit.stderr}`);
  const m1now = await latestDdo(provider, M1.nft);
  assert.deepEqual(m1now.versions.map((v) => v.event), ['MetadataCreated', 'MetadataUpdated'], 'M1 updated once');
  assert.equal(m1now.ddo.metadata.license, 'LicenseRef-posthuman-demo-1.0', 'M1\'s new licence');
  assert.deepEqual(m1now.ddo.services, M1.ddo.services, 'M1\'s services unchanged');
  const [valid1, errors1] = await validateDDO(m1now.ddo);
  assert.ok(valid1, `ddo-js refuses M1's relicensed DDO: ${JSON.stringify(errors1).slice(0, 300)}`);
  log(`M3 keeps its root's licence (Charlie's change refused); Alice relicensed M1 to ${m1now.ddo.metadata.license}, read from its MetadataUpdated`);
  const royalty = BigInt((await m3dt.getPublishingMarketFee(m3dtAddr)).publishMarketFeeAmount);
  // startOrder also pulls the datatoken's royalty (publish-market fee) in OCEAN, which
  // orderAsset's own approval (the provider fee alone) does not cover.
  const approveFee = (f) => approveWei(elena, config, elena.address, token, m3dtAddr, (BigInt(f.providerFeeAmount) + royalty).toString(), true);
  const orderDirect = async (f, serviceIndex) => {
    await approveFee(f);
    return sent(await orderAsset(M3.asset, elena, config, m3dt, endpoint, undefined, undefined, f, '0', 0, serviceIndex));
  };
  const evalM3 = await init(elena, M3, 'evaluate', evaluate);
  const m3order = await orderDirect(evalM3, service(M3, 'evaluate').i);
  const [ej] = await start(elena, M3, 'evaluate', m3order, { ...evaluate, dataset: text, salt: salt() });
  log(`Elena's evaluate job ${ej.jobId} started (order ${m3order})`);
  const edone = await finish(elena, ej.jobId);
  const report = await result(elena, edone, 'report.json');
  assert.ok(report.perplexity > 1, `a perplexity: ${JSON.stringify(report).slice(0, 200)}`);
  log(`Elena read M3's perplexity: ${report.perplexity}`);
  // Derek may not read Elena's results.
  await refused('a result read by someone else', result(derek, edone, 'report.json'), '403');
  // A fee quoted for another model: M1's evaluate quote paying an order of M3.
  const otherModel = await orderDirect(await init(elena, M1, 'evaluate', evaluate), service(M3, 'evaluate').i);
  await refused('a fee quoted for another model', start(elena, M3, 'evaluate', otherModel, { ...evaluate, dataset: text, salt: salt() }), 'payment_invalid', /quoted for another job/);

  const secs = (Date.now() - tOcean) / 1000;
  log(`ocean.js story done in ${secs.toFixed(1)} s (demo and server start excluded; whole script ${((Date.now() - t0) / 1000).toFixed(1)} s)`);
} catch (e) {
  // Printed here: an uncaught error would show a line of ocean.js's minified bundle.
  console.error(`FAILED: ${e.stack ?? e}`);
  process.exitCode = 1;
} finally {
  if (server) await stop(server);
  rmSync(tmp, { recursive: true, force: true });
}
