#!/usr/bin/env node
// centrifuge-js and close codes that meet a flood of in-flight commands:
//   A. a flood over the node's command rate limit: the SDK sees 3013 (a reconnecting
//      code), reconnects and resubscribes;
//   B. commands still in flight when the server API disconnects the user with 3503
//      (force disconnect, terminal): the SDK sees 3503 and does not reconnect.
//
// Environment: COMPAT_WS_URL, COMPAT_API_URL, COMPAT_API_KEY, COMPAT_SECRET (HS256 key of
// the node), COMPAT_PROTOCOL (json | protobuf), COMPAT_CHANNEL (a channel the subscriber
// may publish to), COMPAT_USER.

import WebSocket from 'ws';
import { createHmac } from 'node:crypto';

const PROTOBUF = process.env.COMPAT_PROTOCOL === 'protobuf';
const { Centrifuge } = await import(PROTOBUF ? 'centrifuge/build/protobuf' : 'centrifuge');
const env = (k) => { const v = process.env[k]; if (!v) throw new Error(`${k} not set`); return v; };
const [secret, channel, user] = [env('COMPAT_SECRET'), env('COMPAT_CHANNEL'), env('COMPAT_USER')];
const [apiUrl, apiKey] = [env('COMPAT_API_URL'), env('COMPAT_API_KEY')];

const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
function sign(claims) {
  const head = b64({ alg: 'HS256', typ: 'JWT' });
  const body = b64(claims);
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(what, cond, ms = 10000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

const events = [];
const c = new Centrifuge(env('COMPAT_WS_URL'), {
  websocket: WebSocket, token: sign({ sub: user }), timeout: 5000,
  minReconnectDelay: 100, maxReconnectDelay: 500,
});
for (const e of ['connecting', 'connected', 'disconnected']) {
  c.on(e, (ctx) => events.push({ e, code: ctx.code, reason: ctx.reason }));
}
const sub = c.newSubscription(channel);
let subscribed = 0;
sub.on('subscribed', () => subscribed++);
sub.subscribe();
c.connect();
await until('connected', () => c.state === 'connected' && subscribed === 1);

function flood(n) {
  for (let i = 0; i < n; i++) sub.publish({ n: i }).catch(() => {});
}
const closedWith = (e) => events.filter((x) => x.e === e && x.code >= 3000).map((x) => x.code);

// A: over the rate limit (burst 500, disconnect after 100 refused commands in a row).
flood(2000);
await until('a close during the flood', () => closedWith('connecting').length + closedWith('disconnected').length > 0);
const a = closedWith('connecting');
await until('the reconnect after 3013', () => c.state === 'connected' && subscribed === 2);
console.log(`A: closed with ${JSON.stringify(a)}, reconnected and resubscribed`);
if (a[0] !== 3013 || closedWith('disconnected').length) throw new Error(`A: events ${JSON.stringify(events)}`);

// B: commands in flight (within the burst) when the API disconnects the user.
await sleep(1500); // the rate limiter refills (100/s)
const before = events.length;
flood(150);
const res = await fetch(`${apiUrl}/disconnect`, {
  method: 'POST',
  headers: { 'X-API-Key': apiKey, 'Content-Type': 'application/json' },
  body: JSON.stringify({ user, disconnect: { code: 3503, reason: 'force disconnect' } }),
});
if (!res.ok) throw new Error(`API disconnect: HTTP ${res.status}`);
await until('disconnected', () => c.state === 'disconnected');
await sleep(1500); // a reconnect would show within the 100-500 ms delay
const b = events.slice(before);
console.log(`B: events after the API disconnect: ${JSON.stringify(b)}; state ${c.state}`);
const ok = b.length === 1 && b[0].e === 'disconnected' && b[0].code === 3503 && c.state === 'disconnected';
console.log(ok ? 'PASS 3013 reconnects, 3503 is terminal, both codes arrived during a flood' : 'FAIL');
process.exit(ok ? 0 : 1);
