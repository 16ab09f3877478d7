// The browser half of localstack/browser_cors.py: for each case (a page origin, a presigned
// PutTarget, a file), opens a page on that origin in headless Chromium and sends the file the
// way the storefront does (web/src/net.rs `send_blob`: XMLHttpRequest, the target's headers
// but those the browser sets itself, an upload progress listener). Prints one JSON line: per
// case the status (0: no answer the page may read), the ETag as the page reads it, the
// number of progress events, the error event, the response body and the console's errors.
//
// Usage: node localstack/browser_cors.mjs cases.json

import { readFileSync } from 'node:fs';
import { launchBrowser } from '../web/tests/lib.mjs';

const { cases } = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const browser = await launchBrowser();
const out = [];
try {
  for (const c of cases) {
    const context = await browser.newContext();
    const page = await context.newPage();
    const console_ = [];
    page.on('console', (m) => m.type() === 'error' && console_.push(m.text()));
    await page.goto(`${c.origin}/`);
    const body = readFileSync(c.path).toString('base64');
    const r = await page.evaluate(
      ({ target, body }) =>
        new Promise((resolve) => {
          const bytes = Uint8Array.from(atob(body), (ch) => ch.charCodeAt(0));
          const xhr = new XMLHttpRequest();
          xhr.open(target.method, target.url, true);
          for (const [k, v] of Object.entries(target.headers)) {
            const lower = k.toLowerCase();
            if (lower !== 'content-length' && lower !== 'host') xhr.setRequestHeader(k, v);
          }
          let progress = 0;
          let error = null;
          xhr.upload.onprogress = () => progress++;
          xhr.onerror = (e) => (error = e.type);
          xhr.onloadend = () =>
            resolve({
              status: xhr.status,
              etag: xhr.getResponseHeader('ETag'),
              progress_events: progress,
              error,
              body: xhr.responseText.slice(0, 600),
            });
          xhr.send(new Blob([bytes]));
        }),
      { target: c.target, body },
    );
    // Chromium logs the CORS refusal after the request settles.
    await page.waitForTimeout(200);
    out.push({ who: c.who, origin: c.origin, ...r, console: console_ });
    await context.close();
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
