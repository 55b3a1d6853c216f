#!/usr/bin/env node
// centrifuge-js against ferrocast nodes whose proxy hooks go to proxy_backend.py.
//
// Steps: a. connect without a token, the backend chooses the user (connect data), b. a client
// the backend refuses is disconnected with its error 1000, c. one it kicks is disconnected
// with 4501, d. subscribe through the subscribe proxy (its data arrives), e. publish through
// the publish proxy: a second client on another node receives the backend's data instead of
// the client's, f. rpc returns the backend's data, g. an rpc error of the backend arrives as
// the SDK's error.
//
// Environment: COMPAT_WS_URL, COMPAT_WS_URL_2 (second node, default the first),
// COMPAT_PROTOCOL (json or protobuf). Exits 0 only when every step passes.

import WebSocket from 'ws';

const PROTOBUF = process.env.COMPAT_PROTOCOL === 'protobuf';
const { Centrifuge } = await import(PROTOBUF ? 'centrifuge/build/protobuf' : 'centrifuge');
const enc = (v) => (PROTOBUF ? new TextEncoder().encode(JSON.stringify(v)) : v);
const dataOf = (d) => (PROTOBUF ? JSON.parse(new TextDecoder().decode(d)) : d);
const WAIT_MS = 5000;
const fmt = (v) => JSON.stringify(v);
let current = 'startup';

class Failed extends Error {}
function check(cond, what) {
  if (!cond) throw new Failed(what);
}

function once(emitter, event) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Failed(`no ${event} within ${WAIT_MS / 1000}s`)), WAIT_MS);
    emitter.once(event, (ctx) => {
      clearTimeout(t);
      resolve(ctx);
    });
  });
}

function client(url, data) {
  return new Centrifuge(url, { websocket: WebSocket, data: enc(data), timeout: WAIT_MS });
}

async function step(name, fn) {
  current = name;
  const t = Date.now();
  await fn();
  console.log(`PASS ${name} (${Date.now() - t} ms)`);
}

async function scenario() {
  const url = process.env.COMPAT_WS_URL;
  const url2 = process.env.COMPAT_WS_URL_2 || url;
  console.log(`proxy_js (${PROTOBUF ? 'protobuf' : 'json'}): ${url} and ${url2}`);
  const a = client(url, { user: 'js-a' });
  const b = client(url2, { user: 'js-b' });
  const all = [a, b];
  try {
    await step('a. connect without a token: the backend chose user js-a', async () => {
      const connected = once(a, 'connected');
      a.connect();
      const ctx = await connected;
      check(fmt(dataOf(ctx.data)) === fmt({ welcome: 'js-a' }), `connect data ${fmt(ctx.data)}`);
    });
    await step('b. a client the backend refuses is disconnected with its error 1000', async () => {
      const r = client(url, { refuse: true });
      all.push(r);
      const disconnected = once(r, 'disconnected');
      r.connect();
      const ctx = await disconnected;
      check(ctx.code === 1000, `refused with ${ctx.code} ${ctx.reason}, want 1000`);
    });
    await step('c. a client the backend kicks is disconnected with 4501', async () => {
      const k = client(url, { kick: true });
      all.push(k);
      const disconnected = once(k, 'disconnected');
      k.connect();
      const ctx = await disconnected;
      check(ctx.code === 4501, `kicked with ${ctx.code} ${ctx.reason}, want 4501`);
    });
    const channel = `proxied:room-js-${PROTOBUF ? 'pb' : 'json'}`;
    const aSub = a.newSubscription(channel);
    await step('d. subscribe through the subscribe proxy, its data arrives', async () => {
      const subscribed = once(aSub, 'subscribed');
      aSub.subscribe();
      const ctx = await subscribed;
      check(fmt(dataOf(ctx.data)) === fmt({ hello: channel }), `subscribe data ${fmt(ctx.data)}`);
    });
    await step("e. publish through the publish proxy: the other node's client gets the backend's data", async () => {
      const bConnected = once(b, 'connected');
      b.connect();
      await bConnected;
      const bSub = b.newSubscription(channel);
      const bSubscribed = once(bSub, 'subscribed');
      bSub.subscribe();
      await bSubscribed;
      const bPub = once(bSub, 'publication');
      const aPub = once(aSub, 'publication');
      await aSub.publish(enc({ text: 'hi' }));
      const want = fmt({ published_by: 'js-a', original: { text: 'hi' } });
      const got = await bPub;
      check(fmt(dataOf(got.data)) === want, `js-b got ${fmt(dataOf(got.data))}, want ${want}`);
      const own = await aPub;
      check(fmt(dataOf(own.data)) === want, `js-a got ${fmt(dataOf(own.data))}`);
    });
    await step("f. rpc returns the backend's data", async () => {
      const r = await a.rpc('echo', enc({ q: 42 }));
      const got = dataOf(r.data);
      check(fmt(got.echo) === fmt({ q: 42 }) && got.user === 'js-a', `rpc echo ${fmt(got)}`);
    });
    await step("g. an rpc error of the backend arrives as the SDK's error", async () => {
      let err;
      try {
        await a.rpc('fail', enc({}));
      } catch (e) {
        err = e;
      }
      check(err && err.code === 1003 && err.message === 'nope', `rpc error ${fmt(err)}`);
    });
  } finally {
    for (const c of all) c.disconnect();
  }
}

const timer = setTimeout(() => {
  console.log(`FAIL ${current}: overall timeout`);
  process.exit(1);
}, 30000);
try {
  await scenario();
  console.log('proxy_js: all steps passed');
  clearTimeout(timer);
  process.exit(0);
} catch (e) {
  console.log(`FAIL ${current}: ${e instanceof Failed ? e.message : e && e.stack ? e.stack : e}`);
  process.exit(1);
}
