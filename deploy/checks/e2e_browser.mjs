#!/usr/bin/env node
// Part of e2e_local.sh: the demo page (deploy/compose/demo/index.html) in headless Chromium,
// served by HAProxy like in docker-compose.yml. Two tabs connect through the load balancer
// (round robin: two nodes), one publishes from the browser, the other must show it; a backend
// XADD must show up in both. centrifuge.js is served from the local npm package in place of
// unpkg.com (no internet here); everything else is the page as shipped.
//
// Environment: E2E_BROWSER_MODULES (dir with puppeteer-core), E2E_NODE_MODULES (centrifuge),
// E2E_CHROMIUM, E2E_PAGE_URL, E2E_SECRET, E2E_REDIS_PORT, E2E_SCREENSHOT (optional PNG path).

import { createRequire } from 'node:module';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

const req = (dir) => createRequire(dir.replace(/\/?$/, '/'));
const puppeteer = req(process.env.E2E_BROWSER_MODULES)('puppeteer-core');
const CENTRIFUGE_JS = readFileSync(`${process.env.E2E_NODE_MODULES}/centrifuge/dist/centrifuge.js`, 'utf8');
const URL = process.env.E2E_PAGE_URL;
const T0 = Date.now();
const log = (m) => process.stdout.write(`[browser ${((Date.now() - T0) / 1000).toFixed(1)}s] ${m}\n`);
setTimeout(() => { log('FAIL: overall timeout (60 s)'); process.exit(1); }, 60_000).unref();

const browser = await puppeteer.launch({
  executablePath: process.env.E2E_CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
let failed = false;
try {
  async function openTab(name) {
    const page = await browser.newPage();
    await page.setViewport({ width: 1000, height: 900 });
    await page.setRequestInterception(true);
    page.on('request', (r) => {
      if (r.url().startsWith('https://unpkg.com/centrifuge@5')) {
        r.respond({ status: 200, contentType: 'application/javascript', body: CENTRIFUGE_JS });
      } else if (r.url().startsWith(URL) || r.url().startsWith('ws')) {
        r.continue();
      } else {
        r.abort();
      }
    });
    page.on('pageerror', (e) => log(`${name}: page error: ${e.message}`));
    await page.goto(URL, { waitUntil: 'load' });
    await page.$eval('#secret', (el, v) => { el.value = v; }, process.env.E2E_SECRET);
    await page.$eval('#user', (el, v) => { el.value = v; }, name);
    await page.click('#connect');
    return page;
  }
  const logText = (page) => page.$eval('#log', (el) => el.innerText);
  async function waitLog(page, needle, what) {
    try {
      await page.waitForFunction((n) => document.getElementById('log').innerText.includes(n),
        { timeout: 10_000, polling: 250 }, needle);
    } catch {
      throw new Error(`${what}: "${needle}" not in the page log:\n${await logText(page)}`);
    }
  }

  const a = await openTab('alice');
  await waitLog(a, 'subscribed to chat:lobby', 'alice subscribes');
  const b = await openTab('bob');
  await waitLog(b, 'subscribed to chat:lobby', 'bob subscribes');
  log('two tabs connected through the load balancer (token minted in the page with WebCrypto)');
  await waitLog(a, 'bob joined', 'alice sees bob join');

  await a.bringToFront();
  await a.type('#text', 'hello from alice');
  await a.keyboard.press('Enter');
  await waitLog(b, '{"text":"hello from alice","user":"alice"}', 'bob receives alice');
  log('a publication from one tab reached the other');

  const payload = JSON.stringify({ channel: 'chat:lobby', data: { text: 'hi from the backend' } });
  execFileSync('redis-cli', ['-p', process.env.E2E_REDIS_PORT, 'XADD', 'ferrocast:api', '*', 'method', 'publish', 'payload', payload]);
  await waitLog(a, 'hi from the backend', 'alice receives the backend publish');
  await waitLog(b, 'hi from the backend', 'bob receives the backend publish');
  log('the backend XADD publish shows in both tabs');
  if (process.env.E2E_SCREENSHOT) {
    await b.screenshot({ path: process.env.E2E_SCREENSHOT, fullPage: true });
    log(`screenshot: ${process.env.E2E_SCREENSHOT}`);
  }
  // DOM clicks: puppeteer's mouse clicks wait for a frame, which background tabs never draw.
  await a.$eval('#disconnect', (el) => el.click());
  await b.$eval('#disconnect', (el) => el.click());
  log('PASS');
} catch (e) {
  failed = true;
  log(`FAIL: ${e.message}`);
} finally {
  await Promise.race([browser.close(), new Promise((r) => setTimeout(r, 5000))]);
}
process.exit(failed ? 1 : 0);
