// Compiles our Solidity with solc-js (standard JSON) and extracts the Ocean v4 artifacts the
// Rust crate binds, keeping only abi + bytecode, into out/*.json (committed, so `cargo build`
// needs no npm). `node build.mjs --check` regenerates in memory and fails if out/ differs:
// CI runs it to catch artifacts that drifted from the sources.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
const outDir = path.join(here, 'out');
const check = process.argv.includes('--check');

const OCEAN = path.join(here, 'node_modules/@oceanprotocol/contracts/artifacts/contracts');
const oceanArtifacts = {
  ERC721Factory: 'ERC721Factory.sol/ERC721Factory.json',
  ERC721Template: 'templates/ERC721Template.sol/ERC721Template.json',
  ERC20Template: 'templates/ERC20Template.sol/ERC20Template.json',
  FactoryRouter: 'pools/FactoryRouter.sol/FactoryRouter.json',
  FixedRateExchange: 'pools/fixedRate/FixedRateExchange.sol/FixedRateExchange.json',
  Dispenser: 'pools/dispenser/Dispenser.sol/Dispenser.json',
  OceanToken: 'utils/OceanToken.sol/OceanToken.json',
  OPFCommunityFeeCollector: 'communityFee/OPFCommunityFeeCollector.sol/OPFCommunityFeeCollector.json',
};
// Our contracts: source file → contract names to emit.
// test/: fixtures for the Rust tests only (never deployed by deploy_stack).
const ours = {
  'ModelLineage.sol': ['ModelLineage', 'RoyaltyVault'],
  'PeerMarket.sol': ['PeerMarket'],
  'test/ReentrantToken.sol': ['ReentrantToken'],
};

function render(abi, bytecode) {
  return JSON.stringify({ abi, bytecode }) + '\n';
}

function compileOurs() {
  const solc = require('solc');
  const sources = {};
  for (const file of Object.keys(ours)) {
    sources[file] = { content: fs.readFileSync(path.join(here, 'src', file), 'utf8') };
  }
  const input = {
    language: 'Solidity',
    sources,
    settings: {
      optimizer: { enabled: true, runs: 200 },
      evmVersion: 'cancun',
      viaIR: true,
      metadata: { bytecodeHash: 'none' },
      outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object'] } },
    },
  };
  const findImports = (p) => {
    try {
      return { contents: fs.readFileSync(require.resolve(p), 'utf8') };
    } catch {
      return { error: `not found: ${p}` };
    }
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
  const errors = (output.errors || []).filter((e) => e.severity === 'error');
  for (const e of output.errors || []) console.error(e.formattedMessage);
  if (errors.length) process.exit(1);
  const files = {};
  for (const [file, names] of Object.entries(ours)) {
    for (const name of names) {
      const c = output.contracts[file][name];
      files[`${name}.json`] = render(c.abi, '0x' + c.evm.bytecode.object);
    }
  }
  return files;
}

function extractOcean() {
  const files = {};
  for (const [name, rel] of Object.entries(oceanArtifacts)) {
    const a = JSON.parse(fs.readFileSync(path.join(OCEAN, rel), 'utf8'));
    if (!a.bytecode || a.bytecode === '0x') throw new Error(`${name}: no bytecode`);
    files[`${name}.json`] = render(a.abi, a.bytecode);
  }
  return files;
}

const files = { ...compileOurs(), ...extractOcean() };
if (check) {
  let bad = 0;
  const present = fs.existsSync(outDir) ? fs.readdirSync(outDir) : [];
  for (const [name, text] of Object.entries(files)) {
    const p = path.join(outDir, name);
    if (!fs.existsSync(p) || fs.readFileSync(p, 'utf8') !== text) {
      console.error(`out/${name} is stale: run \`node contracts/build.mjs\` and commit`);
      bad++;
    }
  }
  for (const name of present) {
    if (!(name in files)) {
      console.error(`out/${name} is not produced by build.mjs`);
      bad++;
    }
  }
  if (bad) process.exit(1);
  console.log(`contracts: ${Object.keys(files).length} artifacts up to date`);
} else {
  fs.mkdirSync(outDir, { recursive: true });
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(outDir, name), text);
  console.log(`contracts: wrote ${Object.keys(files).length} artifacts to out/`);
}
