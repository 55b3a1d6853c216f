#!/usr/bin/env node
// centrifuge-js subscribes to wildcard patterns and receives the publications of the
// channels they match, made elsewhere (another node's HTTP API, the Redis command stream)
// once it printed READY.
//
// Environment: COMPAT_WS_URL, COMPAT_TOKEN (connection token), COMPAT_PROTOCOL (json or
// protobuf), COMPAT_EXPECT (JSON: pattern -> the data it must receive, in any order).
// Prints READY when subscribed, PASS when every pattern got exactly its data.

import WebSocket from 'ws';

const PROTOBUF = process.env.COMPAT_PROTOCOL === 'protobuf';
const { Centrifuge } = await import(PROTOBUF ? 'centrifuge/build/protobuf' : 'centrifuge');
const dataOf = (d) => (PROTOBUF ? JSON.parse(new TextDecoder().decode(d)) : d);
const expect = JSON.parse(process.env.COMPAT_EXPECT);
const key = (v) => JSON.stringify(v);

const c = new Centrifuge(process.env.COMPAT_WS_URL, {
  websocket: WebSocket,
  token: process.env.COMPAT_TOKEN,
  timeout: 5000,
});
const got = {};
const subscribed = [];
for (const pattern of Object.keys(expect)) {
  got[pattern] = [];
  const sub = c.newSubscription(pattern);
  sub.on('publication', (ctx) => got[pattern].push(dataOf(ctx.data)));
  subscribed.push(new Promise((resolve, reject) => {
    sub.once('subscribed', resolve);
    sub.once('error', (e) => reject(new Error(`subscribe ${pattern}: ${JSON.stringify(e)}`)));
  }));
  sub.subscribe();
}
c.connect();
const deadline = setTimeout(() => {
  console.log(`FAIL within 10 s: got ${JSON.stringify(got)}, expected ${JSON.stringify(expect)}`);
  process.exit(1);
}, 10000);
await Promise.all(subscribed);
console.log('READY');
const done = () => Object.keys(expect).every((p) => got[p].length >= expect[p].length);
while (!done()) await new Promise((r) => setTimeout(r, 20));
await new Promise((r) => setTimeout(r, 300)); // nothing more may arrive
for (const p of Object.keys(expect)) {
  const a = got[p].map(key).sort();
  const b = expect[p].map(key).sort();
  if (JSON.stringify(a) !== JSON.stringify(b)) {
    console.log(`FAIL ${p}: got ${a}, expected ${b}`);
    process.exit(1);
  }
  console.log(`PASS ${p}: ${a.length} publications`);
}
clearTimeout(deadline);
c.disconnect();
process.exit(0);
