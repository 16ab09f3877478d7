// Validates Posthuman's DDOs with Ocean's own validator (@oceanprotocol/ddo-js, the SHACL
// schemas Ocean Node's indexer applies): every *.json under the directories given (default:
// fixtures/ next to this file). To show the validator is really judging, each DDO is also
// checked broken in ways an indexer must refuse (no services, a service without its
// datatoken, no author, a chain id that is not an integer) and each of those must fail.
// ddo-js 0.2.0's validateDDO computes the did check but returns "valid" whenever the SHACL
// shapes conform, so the id is checked here separately with ddo-js's own makeDid.
// Usage: node validate-ddo.mjs [DIR...]
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { V4DDO, validateDDO } from '@oceanprotocol/ddo-js';

const here = path.dirname(fileURLToPath(import.meta.url));
const dirs = process.argv.length > 2 ? process.argv.slice(2) : [path.join(here, 'fixtures')];

const broken = {
  'chainId not an integer': (d) => ({ ...d, chainId: String(d.chainId) }),
  'no services': (d) => { const c = structuredClone(d); delete c.services; return c; },
  'service without datatoken': (d) => {
    const c = structuredClone(d);
    delete c.services[0].datatokenAddress;
    return c;
  },
  'metadata without author': (d) => {
    const c = structuredClone(d);
    delete c.metadata.author;
    return c;
  },
};

let failures = 0;
let checked = 0;
for (const dir of dirs) {
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
  if (files.length === 0) {
    console.error(`no DDO (*.json) in ${dir}`);
    failures++;
  }
  for (const f of files) {
    const file = path.join(dir, f);
    const ddo = JSON.parse(fs.readFileSync(file, 'utf8'));
    const [ok, errors] = await validateDDO(ddo);
    checked++;
    const did = V4DDO.prototype.makeDid(ddo.nftAddress, ddo.chainId.toString(10));
    if (ddo.id !== did) {
      console.error(`BAD ID  ${file}: ${ddo.id}, Ocean derives ${did}`);
      failures++;
    }
    if (ok) {
      console.log(`valid   ${file} (${ddo.id}, DDO ${ddo.version}, ${ddo.services.length} services)`);
    } else {
      delete errors.fullReport;
      console.error(`INVALID ${file}: ${JSON.stringify(errors)}`);
      failures++;
    }
    for (const [what, breakIt] of Object.entries(broken)) {
      const [bad] = await validateDDO(breakIt(ddo));
      if (bad) {
        console.error(`ACCEPTED ${file} with ${what}: the validator is not judging`);
        failures++;
      }
    }
  }
}
console.log(`${checked} DDO(s) checked with @oceanprotocol/ddo-js, ${failures} failure(s)`);
process.exit(failures === 0 ? 0 : 1);
