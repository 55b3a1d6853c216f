#!/usr/bin/env node
// End-to-end check of the compose topology on this machine (driven by e2e_local.sh): real
// centrifuge-js clients connect through HAProxy (deploy/compose/haproxy.cfg) to three ferrocast
// nodes sharing one Redis; a backend publishes with XADD; one node is drained with SIGTERM.
//
// Environment: E2E_NODE_MODULES (dir with centrifuge + ws), E2E_WS_URL, E2E_SECRET,
// E2E_REDIS_PORT, E2E_METRICS_URLS (comma-separated per-node /metrics URLs), E2E_DRAIN_PID
// (pid of the node to SIGTERM), E2E_DRAIN_METRICS_URL (its /metrics URL).
// Exits 0 only if every step passes.

import { createRequire } from 'node:module';
import { createHmac } from 'node:crypto';
import { execFileSync } from 'node:child_process';

const require = createRequire(process.env.E2E_NODE_MODULES.replace(/\/?$/, '/'));
const { Centrifuge } = require('centrifuge');
const WebSocket = require('ws');

const WS_URL = process.env.E2E_WS_URL;
const SECRET = process.env.E2E_SECRET;
const REDIS_PORT = process.env.E2E_REDIS_PORT;
const METRICS = process.env.E2E_METRICS_URLS.split(',');
const DRAIN_PID = Number(process.env.E2E_DRAIN_PID);
const DRAIN_METRICS = process.env.E2E_DRAIN_METRICS_URL;
const CHANNEL = 'chat:lobby';

const T0 = Date.now();
const log = (m) => process.stdout.write(`[e2e ${((Date.now() - T0) / 1000).toFixed(1)}s] ${m}\n`);
setTimeout(() => { log('FAIL: overall timeout (60 s)'); process.exit(1); }, 60_000).unref();

function b64url(x) {
  return Buffer.from(x).toString('base64').replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}
function token(user) {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const now = Math.floor(Date.now() / 1000);
  const body = b64url(JSON.stringify({ sub: user, exp: now + 600 }));
  const sig = b64url(createHmac('sha256', SECRET).update(`${head}.${body}`).digest());
  return `${head}.${body}.${sig}`;
}

async function until(what, fn, ms = 10_000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for: ${what}`);
}

async function connections(url) {
  const text = await (await fetch(url)).text();
  const m = text.match(/^ferrocast_connections(?:\{[^}]*\})? (\S+)$/m);
  return m ? Number(m[1]) : 0;
}

function xadd(text) {
  const payload = JSON.stringify({ channel: CHANNEL, data: { text } });
  execFileSync('redis-cli', ['-p', REDIS_PORT, 'XADD', 'ferrocast:api', '*', 'method', 'publish', 'payload', payload]);
}

const clients = [];
for (let i = 0; i < 3; i++) {
  const c = {
    name: `user${i}`, got: [], disconnects: [],
    client: new Centrifuge(WS_URL, { token: token(`user${i}`), websocket: WebSocket, minReconnectDelay: 200, maxReconnectDelay: 1000 }),
  };
  c.client.on('connecting', (ctx) => { if (ctx.code !== 0) c.disconnects.push(ctx.code); });
  c.sub = c.client.newSubscription(CHANNEL);
  c.sub.on('publication', (ctx) => c.got.push(ctx.data.text));
  c.sub.subscribe();
  c.client.connect();
  clients.push(c);
  // One at a time, so round robin puts each on its own node.
  await until(`${c.name} subscribed`, () => c.sub.state === 'subscribed');
}
log('3 clients connected through the load balancer and subscribed to chat:lobby');

await until('one connection on every node (round robin, no stickiness)', async () => {
  const n = await Promise.all(METRICS.map(connections));
  return n.every((x) => x === 1);
});
log('round robin: each node holds exactly one connection');

xadd('first');
await until('every client got "first"', () => clients.every((c) => c.got.includes('first')));
log('backend XADD publish reached the subscribers on all three nodes');

// Drain: SIGTERM the node; its client must get 3001 and come back through the LB elsewhere.
for (const c of clients) c.mark = c.disconnects.length;
process.kill(DRAIN_PID, 'SIGTERM');
log(`SIGTERM sent to node pid ${DRAIN_PID}`);
await until('a client was closed with 3001 (shutdown)', () => clients.some((c) => c.disconnects.slice(c.mark).includes(3001)), 15_000);
const moved = clients.find((c) => c.disconnects.slice(c.mark).includes(3001));
log(`${moved.name} got close code 3001 and is reconnecting`);
await until(`${moved.name} resubscribed on another node`, () => moved.client.state === 'connected' && moved.sub.state === 'subscribed', 20_000);
await until('the drained node exited', async () => {
  try { process.kill(DRAIN_PID, 0); return false; } catch { return true; }
}, 20_000);
try { await fetch(DRAIN_METRICS); throw new Error('drained node still answers'); } catch (e) {
  if (e.message === 'drained node still answers') throw e;
}
log('drained node exited; its client reconnected through the load balancer');

xadd('second');
await until('every client got "second"', () => clients.every((c) => c.got.includes('second')));
for (const c of clients) {
  const n = c.got.filter((t) => t === 'first').length;
  if (n !== 1) throw new Error(`${c.name} got "first" ${n} times`);
}
log('after the drain every client still receives backend publications, none twice');

for (const c of clients) c.client.disconnect();
log('PASS');
process.exit(0);
