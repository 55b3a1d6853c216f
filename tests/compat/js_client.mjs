#!/usr/bin/env node
// Compatibility check of ferrocast with the real centrifuge-js SDK (npm `centrifuge`, v5) under
// Node.js, with `ws` as the WebSocket implementation. The server API is called with fetch.
//
// Environment:
//   COMPAT_WS_URL       ws://127.0.0.1:PORT/connection/websocket
//   COMPAT_API_URL      http://127.0.0.1:PORT/api
//   COMPAT_WS_URL_2, COMPAT_API_URL_2
//                       optional, a second node of the same cluster: the second client
//                       connects there and the publications made while the first client is
//                       offline go through its API (default: the first node)
//   COMPAT_API_KEY      http_api.key of the node
//   COMPAT_HMAC_SECRET  client.token.hmac_secret_key of the node
//   COMPAT_CHANNEL      optional, default chat:compat-js (the namespace needs presence,
//                       join_leave, history and force_recovery)
//   COMPAT_TRACE=1      optional, print every WebSocket frame as it goes
//   COMPAT_PROTOCOL     optional, `json` (default) or `protobuf`: the SDK's Protobuf build
//                       (`centrifuge/build/protobuf`, subprotocol centrifuge-protobuf, binary
//                       frames); payloads are then bytes, JSON-encoded by this script
//
// Steps: a. connect with a token, b. subscribe, c. publish through the HTTP API (fetch) and
// receive it, c2. publish from the SDK and call rpc, d. presence / presenceStats, e. history,
// f. recovery after a disconnect, g. a second client sees leave/join pushes, g2. server ping /
// SDK pong keep both up, h. clean disconnect.
// Hard limit: 30 s. Exits 0 only if every step passes. On failure it prints the step that failed, why, and the last
// WebSocket frames of both clients.

import { createHmac } from 'node:crypto';
import WebSocket from 'ws';

const PROTOBUF = process.env.COMPAT_PROTOCOL === 'protobuf';
const { Centrifuge, State, SubscriptionState } = await import(
  PROTOBUF ? 'centrifuge/build/protobuf' : 'centrifuge'
);

// Payloads: JSON values in the JSON protocol; in Protobuf the SDK takes and gives bytes, which
// carry JSON text here.
const enc = (v) => (PROTOBUF ? new TextEncoder().encode(JSON.stringify(v)) : v);
const dataOf = (d) => (PROTOBUF ? JSON.parse(new TextDecoder().decode(d)) : d);

const OVERALL_TIMEOUT_MS = 30_000; // hard limit for the whole script
const WAIT_MS = 5_000; // for any single event or reply

const TRACE = process.env.COMPAT_TRACE === '1';
const T0 = Date.now();
const FRAMES = [];
let currentStep = 'startup';

class StepFailed extends Error {}

function log(msg) {
  process.stdout.write(msg + '\n');
}

function recordFrame(label, dir, payload) {
  let text;
  if (PROTOBUF && typeof payload !== 'string') {
    text = `[${Buffer.from(payload).length} bytes] ${Buffer.from(payload).toString('hex').slice(0, 160)}`;
  } else {
    text = Buffer.isBuffer(payload) ? payload.toString('utf8') : String(payload);
  }
  const line = `  ${((Date.now() - T0) / 1000).toFixed(3).padStart(7)}s ${label} ${dir} ${text.trim()}`;
  FRAMES.push(line);
  if (FRAMES.length > 80) FRAMES.shift();
  if (TRACE) log(line);
}

const NOTES = []; // SDK events that explain a failure: disconnects, errors

function note(label, what) {
  NOTES.push(`  ${((Date.now() - T0) / 1000).toFixed(3).padStart(7)}s ${label} ${what}`);
}

function dumpFrames() {
  if (NOTES.length > 0) {
    log('SDK events (disconnects, errors):');
    for (const line of NOTES) log(line);
  }
  if (FRAMES.length === 0) return;
  log(`last ${FRAMES.length} WebSocket frames (client -> server is '>>', server -> client '<<'):`);
  for (const line of FRAMES) log(line);
}

function env(name) {
  const v = process.env[name];
  if (!v) {
    log(`js_client: environment variable ${name} is not set`);
    process.exit(2);
  }
  return v;
}

function check(cond, what) {
  if (!cond) throw new StepFailed(what);
}

const fmt = (v) => JSON.stringify(v);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Server pings received and pongs sent, per client label: `{}` lines in JSON, empty records
// (a zero length prefix) in Protobuf.
const PINGS = {};
function countEmpty(data) {
  if (!PROTOBUF) return String(data).split('\n').filter((l) => l.trim() === '{}').length;
  const buf = Buffer.from(data instanceof ArrayBuffer ? new Uint8Array(data) : data);
  let n = 0;
  let i = 0;
  while (i < buf.length) {
    let len = 0;
    let shift = 0;
    for (;;) {
      const b = buf[i++];
      len += (b & 0x7f) * 2 ** shift;
      shift += 7;
      if (b < 0x80 || i >= buf.length) break;
    }
    if (len === 0) n += 1;
    i += len;
  }
  return n;
}

// `ws` WebSocket that records the frames it sends and receives; otherwise the plain ws class.
function tracingWebSocket(label) {
  PINGS[label] = { in: 0, out: 0 };
  return class extends WebSocket {
    constructor(...args) {
      super(...args);
      this.on('message', (data) => {
        recordFrame(label, '<<', data);
        PINGS[label].in += countEmpty(data);
      });
      this.on('close', (code, reason) => recordFrame(label, '<<', `[close ${code} ${reason}]`));
    }
    send(data, ...rest) {
      recordFrame(label, '>>', data);
      PINGS[label].out += countEmpty(data);
      return super.send(data, ...rest);
    }
  };
}

// An unbounded queue of events that steps wait on.
class Queue {
  constructor() {
    this.items = [];
    this.waiters = [];
  }
  push(item) {
    const w = this.waiters.shift();
    if (w) w(item);
    else this.items.push(item);
  }
  // Calls onItem with the next item (now if one is queued); returns a function that cancels.
  take(onItem) {
    if (this.items.length > 0) {
      onItem(this.items.shift());
      return () => {};
    }
    this.waiters.push(onItem);
    return () => {
      const i = this.waiters.indexOf(onItem);
      if (i >= 0) this.waiters.splice(i, 1);
    };
  }
  next(what, timeoutMs = WAIT_MS) {
    return firstEvent(this, null, what, null, timeoutMs);
  }
  drain() {
    return this.items.splice(0);
  }
}

// Next event of `want`; when `instead` is given, fails at once with its event if it gets one
// first. Nothing is consumed from a queue after the wait is over.
function firstEvent(want, instead, what, insteadWhat, timeoutMs = WAIT_MS) {
  return new Promise((resolve, reject) => {
    let over = false;
    let cancelWant = () => {};
    let cancelInstead = () => {};
    const finish = (fn) => {
      over = true;
      clearTimeout(timer);
      cancelWant();
      cancelInstead();
      fn();
    };
    const timer = setTimeout(
      () => finish(() => reject(new StepFailed(`no ${what} within ${timeoutMs / 1000}s`))),
      timeoutMs,
    );
    cancelWant = want.take((item) => finish(() => resolve(item)));
    if (!over && instead) {
      cancelInstead = instead.take((item) =>
        finish(() => reject(new StepFailed(`${insteadWhat}: ${fmt(item)}`))),
      );
    }
  });
}

async function noMoreEvents(queue, what, quietMs = 500) {
  await sleep(quietMs);
  const extra = queue.drain();
  check(extra.length === 0, `unexpected extra ${what}: ${fmt(extra)}`);
}

// Next join/leave info of the given client id; infos of other clients are skipped.
async function eventFor(queue, clientId, what) {
  const deadline = Date.now() + WAIT_MS;
  const seen = [];
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0) break;
    let ctx;
    try {
      ctx = await queue.next(what, left);
    } catch {
      break;
    }
    if (ctx.info.client === clientId) return ctx.info;
    seen.push(ctx.info);
  }
  throw new StepFailed(`no ${what} for client ${clientId} within ${WAIT_MS / 1000}s (saw ${fmt(seen)})`);
}

async function step(name, fn) {
  currentStep = name;
  const t = Date.now();
  await fn();
  log(`PASS ${name} (${Date.now() - t} ms)`);
}

function b64url(buf) {
  return Buffer.from(buf).toString('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
}

function token(secret, user) {
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = b64url(JSON.stringify({ sub: user, exp: Math.floor(Date.now() / 1000) + 3600 }));
  const sig = b64url(createHmac('sha256', secret).update(`${header}.${claims}`).digest());
  return `${header}.${claims}.${sig}`;
}

function newClient(label, wsUrl, secret) {
  const ev = {
    connected: new Queue(),
    disconnected: new Queue(),
    subscribed: new Queue(),
    unsubscribed: new Queue(),
    publications: new Queue(),
    joins: new Queue(),
    leaves: new Queue(),
    errors: [],
  };
  const client = new Centrifuge(wsUrl, {
    token: token(secret, label),
    websocket: tracingWebSocket(label),
    timeout: WAIT_MS,
  });
  client.label = label;
  client.on('connected', (ctx) => ev.connected.push(ctx));
  client.on('connecting', (ctx) => note(label, `connecting: ${ctx.code} ${ctx.reason}`));
  client.on('disconnected', (ctx) => {
    note(label, `disconnected: ${ctx.code} ${ctx.reason}`);
    ev.disconnected.push(ctx);
  });
  client.on('error', (ctx) => {
    const e = `client error: ${fmt(ctx)} ${ctx.error?.message ?? ''}`;
    note(label, e);
    ev.errors.push(e);
  });
  return { client, ev };
}

function newSubscription(client, ev, channel) {
  const sub = client.newSubscription(channel);
  sub.on('subscribed', (ctx) => ev.subscribed.push(ctx));
  sub.on('subscribing', (ctx) => note(client.label, `subscribing: ${ctx.code} ${ctx.reason}`));
  sub.on('unsubscribed', (ctx) => {
    note(client.label, `unsubscribed: ${ctx.code} ${ctx.reason}`);
    ev.unsubscribed.push(ctx);
  });
  sub.on('publication', (ctx) => ev.publications.push(ctx));
  sub.on('join', (ctx) => ev.joins.push(ctx));
  sub.on('leave', (ctx) => ev.leaves.push(ctx));
  sub.on('error', (ctx) => {
    const e = `subscription error: ${fmt(ctx)} ${ctx.error?.message ?? ''}`;
    note(client.label, e);
    ev.errors.push(e);
  });
  return sub;
}

async function api(apiUrl, apiKey, method, body) {
  const resp = await fetch(`${apiUrl}/${method}`, {
    method: 'POST',
    headers: { 'X-API-Key': apiKey, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(WAIT_MS),
  });
  const text = await resp.text();
  check(resp.status === 200, `API ${method}: HTTP ${resp.status}: ${text}`);
  const json = JSON.parse(text);
  check(!json.error, `API ${method} answered an error: ${text}`);
  check(json.result !== undefined, `API ${method} answered no result: ${text}`);
  return json.result;
}

async function scenario() {
  const wsUrl = env('COMPAT_WS_URL');
  const apiUrl = env('COMPAT_API_URL');
  const apiKey = env('COMPAT_API_KEY');
  const secret = env('COMPAT_HMAC_SECRET');
  const wsUrl2 = process.env.COMPAT_WS_URL_2 || wsUrl;
  const apiUrl2 = process.env.COMPAT_API_URL_2 || apiUrl;
  const channel = process.env.COMPAT_CHANNEL || 'chat:compat-js';
  log(`js_client (${PROTOBUF ? 'protobuf' : 'json'}): ${wsUrl} (second client ${wsUrl2}) api ${apiUrl} (offline publishes ${apiUrl2}) channel ${channel}`);

  const A = newClient('js-1', wsUrl, secret);
  const B = newClient('js-2', wsUrl2, secret);
  const a = A.client;
  const b = B.client;
  let aId, sub, bSub, epoch, lastOffset;
  try {
    // a. connect
    await step('a. connect with a connection token (user js-1)', async () => {
      a.connect();
      const ctx = await firstEvent(A.ev.connected, A.ev.disconnected, 'connected event', 'disconnected instead');
      check(a.state === State.Connected, `client state is ${a.state}, want connected`);
      check(!!ctx.client, `connected context has no client id: ${fmt(ctx)}`);
      check(ctx.transport === 'websocket', `transport ${ctx.transport}`);
      aId = ctx.client;
    });

    // b. subscribe
    await step(`b. subscribe to ${channel}`, async () => {
      sub = newSubscription(a, A.ev, channel);
      sub.subscribe();
      const ctx = await A.ev.subscribed.next('subscribed event');
      check(sub.state === SubscriptionState.Subscribed, `subscription state is ${sub.state}`);
      check(ctx.channel === channel, `subscribed context channel ${ctx.channel}`);
      // force_recovery is on for the namespace: the server makes the subscription recoverable.
      check(ctx.recoverable, `subscription is not recoverable (force_recovery): ${fmt(ctx)}`);
      check(ctx.streamPosition && ctx.streamPosition.epoch, `no stream position/epoch: ${fmt(ctx)}`);
      check(!ctx.wasRecovering, `first subscribe reports wasRecovering: ${fmt(ctx)}`);
      epoch = ctx.streamPosition.epoch;
    });

    // c. publish through the HTTP API
    await step('c. publish {"n": 1} with the HTTP API, the subscription receives it', async () => {
      const res = await api(apiUrl, apiKey, 'publish', { channel, data: { n: 1 } });
      check(res.offset >= 1, `publish result has no offset: ${fmt(res)}`);
      check(res.epoch === epoch, `publish epoch ${res.epoch} != subscribe epoch ${epoch}`);
      const pub = await A.ev.publications.next('publication');
      check(fmt(dataOf(pub.data)) === fmt({ n: 1 }), `publication data ${fmt(dataOf(pub.data))}, want {"n":1}`);
      check(pub.channel === channel, `publication channel ${pub.channel}`);
      check(pub.offset === res.offset, `publication offset ${pub.offset}, API said ${res.offset}`);
      await noMoreEvents(A.ev.publications, 'publications', 200);
      lastOffset = pub.offset;
    });

    // c2. publish from the SDK and call rpc
    await step('c2. publish {"n": "c"} from the SDK, received with publisher info; rpc answers 104', async () => {
      await sub.publish(enc({ n: 'c' }));
      const pub = await A.ev.publications.next('publication from the SDK');
      check(fmt(dataOf(pub.data)) === fmt({ n: 'c' }), `publication data ${fmt(dataOf(pub.data))}`);
      check(pub.offset === lastOffset + 1, `publication offset ${pub.offset}, want ${lastOffset + 1}`);
      check(pub.info && pub.info.client === aId && pub.info.user === 'js-1', `publisher info ${fmt(pub.info)}`);
      lastOffset = pub.offset;
      let rpcError;
      try {
        await a.rpc('echo', enc({ x: 1 }));
      } catch (e) {
        rpcError = e;
      }
      check(rpcError && rpcError.code === 104, `rpc without a handler: ${fmt(rpcError)}, want error 104`);
    });

    // d. presence and presence stats through the SDK
    await step('d. presence / presenceStats from the SDK', async () => {
      const pres = await sub.presence();
      const ids = Object.keys(pres.clients);
      check(ids.includes(aId), `own client id ${aId} not in presence ${fmt(pres)}`);
      check(ids.length === 1, `presence has ${ids.length} clients: ${fmt(pres)}`);
      const info = pres.clients[aId];
      check(info.client === aId && info.user === 'js-1', `presence entry ${fmt(info)}`);
      const stats = await sub.presenceStats();
      check(stats.numClients === 1, `numClients ${stats.numClients}, want 1`);
      check(stats.numUsers === 1, `numUsers ${stats.numUsers}, want 1`);
    });

    // e. history through the SDK
    await step('e. history from the SDK contains the publication with its offset', async () => {
      // limit -1: the whole stream (Centrifugo semantics; 0 would return the position only)
      const hist = await sub.history({ limit: -1 });
      check(hist.epoch === epoch, `history epoch ${hist.epoch}, want ${epoch}`);
      check(hist.offset === lastOffset, `history top offset ${hist.offset}, want ${lastOffset}`);
      const got = hist.publications.map((p) => [p.offset, dataOf(p.data)]);
      // (the channel holds older publications when the script runs twice on one node)
      const last = got[got.length - 1];
      check(last && fmt(last) === fmt([lastOffset, { n: 'c' }]), `history publications ${fmt(got)}, want last [${lastOffset},{"n":"c"}]`);
      const offs = got.map((g) => g[0]);
      check(fmt(offs) === fmt([...offs].sort((x, y) => x - y)), `history not in offset order: ${fmt(got)}`);
      // since the position before it: exactly that publication
      const since = await sub.history({ limit: 10, since: { offset: lastOffset - 1, epoch } });
      const gotSince = since.publications.map((p) => [p.offset, dataOf(p.data)]);
      check(fmt(gotSince) === fmt([[lastOffset, { n: 'c' }]]), `history since offset ${lastOffset - 1}: ${fmt(gotSince)}`);
    });

    // f. recovery after a disconnect
    await step('f. recovery: disconnect, publish n=2,3 offline, reconnect, recovered', async () => {
      a.disconnect();
      const dctx = await A.ev.disconnected.next('disconnected event');
      check(a.state === State.Disconnected, `client state ${a.state}`);
      check(
        sub.state === SubscriptionState.Subscribing,
        `subscription state after client disconnect is ${sub.state}, want subscribing`,
      );
      const offsets = [];
      for (const n of [2, 3]) {
        const r = await api(apiUrl2, apiKey, 'publish', { channel, data: { n } });
        check(r.epoch === epoch, `epoch changed while offline: ${r.epoch} != ${epoch}`);
        offsets.push(r.offset);
      }
      check(
        fmt(offsets) === fmt([lastOffset + 1, lastOffset + 2]),
        `offline publish offsets ${fmt(offsets)}, want ${fmt([lastOffset + 1, lastOffset + 2])}`,
      );
      a.connect();
      const cctx = await A.ev.connected.next('connected event after reconnect');
      aId = cctx.client;
      const sctx = await A.ev.subscribed.next('subscribed event after reconnect');
      check(sctx.wasRecovering, `subscribed context wasRecovering is false: ${fmt(sctx)}`);
      check(sctx.recovered, `subscribed context recovered is false: ${fmt(sctx)}`);
      check(
        sctx.streamPosition && sctx.streamPosition.epoch === epoch,
        `stream position after recovery ${fmt(sctx.streamPosition)}, epoch ${epoch}`,
      );
      const got = [];
      for (let i = 0; i < 2; i++) {
        const p = await A.ev.publications.next(`recovered publication #${i + 1}`);
        got.push([p.offset, dataOf(p.data)]);
      }
      const want = [[offsets[0], { n: 2 }], [offsets[1], { n: 3 }]];
      check(fmt(got) === fmt(want), `recovered publications ${fmt(got)}, want ${fmt(want)}`);
      await noMoreEvents(A.ev.publications, 'publications after recovery');
      lastOffset = offsets[1];
      log(`     recovered from offset ${lastOffset - 2} epoch ${epoch}: ${fmt(got)} (was disconnected with ${dctx.code} ${dctx.reason})`);
    });

    // g. a second client on the same channel sees join (and leave) pushes of the first one
    await step('g. second client (js-2) sees leave/join pushes of js-1', async () => {
      b.connect();
      const bctx = await B.ev.connected.next('connected event of js-2');
      bSub = newSubscription(b, B.ev, channel);
      bSub.subscribe();
      await B.ev.subscribed.next('subscribed event of js-2');
      const stats = await bSub.presenceStats();
      check(
        stats.numClients === 2 && stats.numUsers === 2,
        `presenceStats with two clients: ${fmt(stats)}, want 2 clients / 2 users`,
      );
      // js-1 leaves and joins again: js-2 must see both pushes.
      sub.unsubscribe();
      await A.ev.unsubscribed.next('unsubscribed event of js-1');
      const leave = await eventFor(B.ev.leaves, aId, 'leave push');
      check(leave.user === 'js-1', `leave info ${fmt(leave)}`);
      sub.subscribe();
      await A.ev.subscribed.next('subscribed event of js-1 (resubscribe)');
      const join = await eventFor(B.ev.joins, aId, 'join push');
      check(join.user === 'js-1', `join info user ${join.user}, want js-1`);
      // and a publication reaches both
      await api(apiUrl, apiKey, 'publish', { channel, data: { n: 4 } });
      const pa = await A.ev.publications.next('publication n=4 at js-1');
      const pb = await B.ev.publications.next('publication n=4 at js-2');
      check(fmt(dataOf(pa.data)) === fmt({ n: 4 }) && fmt(dataOf(pb.data)) === fmt({ n: 4 }), `n=4 data ${fmt(dataOf(pa.data))} / ${fmt(dataOf(pb.data))}`);
      log(`     js-2 (${bctx.client}) saw leave+join of js-1 (${aId})`);
    });

    // g2. (extra) keepalive with the node's short ping interval
    await step('g2. keepalive: idle 4.5 s, server pings (3 s), SDK pongs, nothing drops', async () => {
      const before = { 'js-1': { ...PINGS['js-1'] }, 'js-2': { ...PINGS['js-2'] } };
      await sleep(4500);
      for (const [label, c, ev, s] of [['js-1', a, A.ev, sub], ['js-2', b, B.ev, bSub]]) {
        check(PINGS[label].in > before[label].in, `${label}: no server ping in 4.5 s (ping_interval 3 s)`);
        check(PINGS[label].out > before[label].out, `${label}: the SDK sent no pong`);
        check(c.state === State.Connected, `${label}: state ${c.state}`);
        check(s.state === SubscriptionState.Subscribed, `${label}: subscription ${s.state}`);
        check(ev.connected.items.length === 0 && ev.disconnected.items.length === 0, `${label} reconnected`);
      }
      await api(apiUrl, apiKey, 'publish', { channel, data: { n: 5 } });
      const pa = await A.ev.publications.next('publication n=5 at js-1');
      const pb = await B.ev.publications.next('publication n=5 at js-2');
      check(fmt(dataOf(pa.data)) === fmt({ n: 5 }) && fmt(dataOf(pb.data)) === fmt({ n: 5 }), `n=5 data ${fmt(dataOf(pa.data))} / ${fmt(dataOf(pb.data))}`);
    });

    // h. clean disconnect
    await step('h. clean disconnect of both clients', async () => {
      a.disconnect();
      await A.ev.disconnected.next('disconnected event of js-1');
      check(a.state === State.Disconnected, `js-1 state ${a.state}`);
      await eventFor(B.ev.leaves, aId, 'leave push after js-1 disconnected');
      b.disconnect();
      await B.ev.disconnected.next('disconnected event of js-2');
      check(b.state === State.Disconnected, `js-2 state ${b.state}`);
      // the server forgets both: presence becomes empty
      const deadline = Date.now() + WAIT_MS;
      for (;;) {
        const st = await api(apiUrl, apiKey, 'presence_stats', { channel });
        if (st.num_clients === 0) break;
        check(Date.now() < deadline, `presence_stats after disconnect: ${fmt(st)}`);
        await sleep(100);
      }
    });

    const errors = [...A.ev.errors, ...B.ev.errors];
    check(errors.length === 0, `SDK reported errors: ${fmt(errors)}`);
  } finally {
    a.disconnect();
    b.disconnect();
  }
}

const hardTimer = setTimeout(() => {
  log(`FAIL ${currentStep}: overall timeout of ${OVERALL_TIMEOUT_MS / 1000}s reached`);
  dumpFrames();
  process.exit(1);
}, OVERALL_TIMEOUT_MS);

try {
  await scenario();
  log('js_client: all steps passed');
  clearTimeout(hardTimer);
  process.exit(0);
} catch (e) {
  if (e instanceof StepFailed) log(`FAIL ${currentStep}: ${e.message}`);
  else log(`FAIL ${currentStep}: ${e && e.stack ? e.stack : e}`);
  dumpFrames();
  process.exit(1);
}
