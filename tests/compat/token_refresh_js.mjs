#!/usr/bin/env node
// centrifuge-js with getToken callbacks over several short token lifetimes: the
// connection and a token-protected subscription refresh in place, without a reconnect,
// a resubscribe or a 3005/3006 close.
//
// Environment: COMPAT_WS_URL, COMPAT_SECRET (HS256 key of the node), COMPAT_PROTOCOL,
// COMPAT_CHANNEL (a channel needing a subscription token), COMPAT_TTL (token lifetime,
// seconds), COMPAT_RUN (how long to run, seconds).

import WebSocket from 'ws';
import { createHmac } from 'node:crypto';

const PROTOBUF = process.env.COMPAT_PROTOCOL === 'protobuf';
const { Centrifuge } = await import(PROTOBUF ? 'centrifuge/build/protobuf' : 'centrifuge');
const secret = process.env.COMPAT_SECRET;
const channel = process.env.COMPAT_CHANNEL;
const ttl = Number(process.env.COMPAT_TTL || 2);
const run = Number(process.env.COMPAT_RUN || 8);

const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
function sign(claims) {
  const head = b64({ alg: 'HS256', typ: 'JWT' });
  const body = b64({ ...claims, exp: Math.floor(Date.now() / 1000) + ttl });
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

const counts = { connectTokens: 0, subTokens: 0, connected: 0, disconnected: 0, subscribed: 0, unsubscribed: 0 };
const c = new Centrifuge(process.env.COMPAT_WS_URL, {
  websocket: WebSocket,
  getToken: async () => { counts.connectTokens++; return sign({ sub: 'refresher' }); },
  timeout: 5000,
});
c.on('connected', () => counts.connected++);
c.on('disconnected', (ctx) => { counts.disconnected++; console.log(`disconnected ${JSON.stringify(ctx)}`); });
const sub = c.newSubscription(channel, {
  getToken: async () => { counts.subTokens++; return sign({ sub: 'refresher', channel }); },
});
sub.on('subscribed', () => counts.subscribed++);
sub.on('unsubscribed', (ctx) => { counts.unsubscribed++; console.log(`unsubscribed ${JSON.stringify(ctx)}`); });
sub.on('subscribing', (ctx) => { if (counts.subscribed > 0) console.log(`resubscribing ${JSON.stringify(ctx)}`); });
c.on('connecting', (ctx) => { if (counts.connected > 0) console.log(`reconnecting ${JSON.stringify(ctx)}`); });
sub.subscribe();
c.connect();
await new Promise((r) => setTimeout(r, run * 1000));
console.log(JSON.stringify(counts));
const lifetimes = Math.floor(run / ttl) - 1;
const ok = counts.connected === 1 && counts.disconnected === 0 && counts.subscribed === 1
  && counts.unsubscribed === 0 && counts.connectTokens >= lifetimes && counts.subTokens >= lifetimes;
console.log(ok ? `PASS refreshed ${counts.connectTokens - 1} times, ${counts.subTokens - 1} subscription refreshes, no reconnect` : 'FAIL');
c.disconnect();
process.exit(ok ? 0 : 1);
