#!/usr/bin/env python3
"""Compatibility check of ferrocast with the real centrifuge-python SDK and the `cent` HTTP API client.

Neither library was written for ferrocast: they are the upstream Centrifugo SDKs, pinned in
requirements.txt. The script drives one scenario against a running node and exits 0 only if
every step passes: a. connect with a token, b. subscribe, c. publish through the HTTP API (cent)
and receive it, d. presence / presence_stats, e. history, f. recovery after a disconnect,
g. a second client sees leave/join pushes, g2. server ping / SDK pong keep both up, h. clean
disconnect. Hard limit: 30 s.

Environment:
  COMPAT_WS_URL       ws://127.0.0.1:PORT/connection/websocket
  COMPAT_API_URL      http://127.0.0.1:PORT/api
  COMPAT_WS_URL_2, COMPAT_API_URL_2
                      optional, a second node of the same cluster: the second client connects
                      there and the publications made while the first client is offline go
                      through its API (default: the first node)
  COMPAT_API_KEY      http_api.key of the node
  COMPAT_HMAC_SECRET  client.token.hmac_secret_key of the node
  COMPAT_CHANNEL      optional, default chat:compat-py (the namespace needs presence, join_leave,
                      history and force_recovery)
  COMPAT_TRACE=1      optional, print every WebSocket frame as it goes

On failure the step that failed, why, and the last WebSocket frames of both clients are printed.
"""

import asyncio
import collections
import json
import os
import signal
import sys
import time
import traceback
import warnings

import jwt
from cent import (
    AsyncClient as CentClient,
    BatchRequest,
    BroadcastRequest,
    PresenceStatsRequest,
    PublishRequest,
)
from centrifuge import (
    Client,
    ReplyError,
    ClientEventHandler,
    ClientState,
    ConnectedContext,
    DisconnectedContext,
    JoinContext,
    LeaveContext,
    PublicationContext,
    StreamPosition,
    SubscribedContext,
    SubscriptionEventHandler,
    SubscriptionState,
    UnsubscribedContext,
)

OVERALL_TIMEOUT = 30.0  # seconds, hard limit for the whole script
WAIT = 5.0  # seconds, for any single event or reply

TRACE = os.environ.get("COMPAT_TRACE") == "1"
# COMPAT_PROTOCOL=protobuf: the SDK's Protobuf protocol (use_protobuf=True, binary frames);
# payloads are then bytes, JSON-encoded by this script.
PROTOBUF = os.environ.get("COMPAT_PROTOCOL") == "protobuf"


def enc(value):
    return json.dumps(value).encode() if PROTOBUF else value


def data_of(data):
    return json.loads(data) if PROTOBUF else data


def empty_records(message):
    """Zero-length records in a Protobuf message (server pings)."""
    n, i = 0, 0
    while i < len(message):
        length, shift = 0, 0
        while True:
            b = message[i]
            i += 1
            length |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80 or i >= len(message):
                break
        n += length == 0
        i += length
    return n
FRAMES = collections.deque(maxlen=80)
T0 = time.monotonic()
CURRENT_STEP = ["startup"]


class StepFailed(Exception):
    pass


def log(msg):
    print(msg, flush=True)


def record_frame(label, direction, payload):
    if PROTOBUF and isinstance(payload, (bytes, bytearray)):
        payload = f"[{len(payload)} bytes] {bytes(payload).hex()[:160]}"
    elif isinstance(payload, (bytes, bytearray)):
        payload = payload.decode("utf-8", "replace")
    elif not isinstance(payload, str):
        payload = json.dumps(payload, separators=(",", ":"), default=repr)
    line = f"  {time.monotonic() - T0:7.3f}s {label} {direction} {payload.strip()}"
    FRAMES.append(line)
    if TRACE:
        log(line)


NOTES = []  # SDK events that explain a failure: disconnects, errors


def note(label, what):
    NOTES.append(f"  {time.monotonic() - T0:7.3f}s {label} {what}")


def dump_frames():
    if NOTES:
        log("SDK events (disconnects, errors):")
        for line in NOTES:
            log(line)
    if not FRAMES:
        return
    log(f"last {len(FRAMES)} WebSocket frames (client -> server is '>>', server -> client '<<'):")
    for line in FRAMES:
        log(line)


def env(name):
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"python_client: environment variable {name} is not set")
    return value


def check(cond, what):
    if not cond:
        raise StepFailed(what)


class TracingClient(Client):
    """The SDK's Client, recording the JSON frames it sends and receives (for failure reports).

    Only observes: each override calls the SDK's own method with the same arguments."""

    def __init__(self, label, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.label = label
        self.pings_in = 0  # server pings received: empty replies ({})
        self.pongs_out = 0  # pongs sent: empty commands ({})

    async def _send_commands(self, commands):
        record_frame(self.label, ">>", commands)
        self.pongs_out += sum(1 for c in commands if c == {})
        return await super()._send_commands(commands)

    async def _process_incoming_data(self, message, attempt):
        record_frame(self.label, "<<", message)
        if PROTOBUF:
            self.pings_in += empty_records(message)
        else:
            text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
            self.pings_in += sum(1 for line in text.split("\n") if line.strip() == "{}")
        return await super()._process_incoming_data(message, attempt)

    async def _disconnect(self, code, reason, reconnect):
        if self.state != ClientState.DISCONNECTED:
            record_frame(self.label, "--", f"[connection closed: {code} {reason}]")
        return await super()._disconnect(code, reason, reconnect)


class Events:
    """Client and subscription events of one client, as queues the steps wait on."""

    def __init__(self, label):
        self.label = label
        self.connected = asyncio.Queue()
        self.disconnected = asyncio.Queue()
        self.subscribed = asyncio.Queue()
        self.unsubscribed = asyncio.Queue()
        self.publications = asyncio.Queue()
        self.joins = asyncio.Queue()
        self.leaves = asyncio.Queue()
        self.errors = []


class ClientEvents(ClientEventHandler):
    def __init__(self, ev):
        self.ev = ev

    async def on_connected(self, ctx: ConnectedContext):
        self.ev.connected.put_nowait(ctx)

    async def on_connecting(self, ctx):
        note(self.ev.label, f"connecting: {ctx.code} {ctx.reason}")

    async def on_disconnected(self, ctx: DisconnectedContext):
        note(self.ev.label, f"disconnected: {ctx.code} {ctx.reason}")
        self.ev.disconnected.put_nowait(ctx)

    async def on_error(self, ctx):
        note(self.ev.label, f"client error {ctx.code}: {ctx.error!r}")
        self.ev.errors.append(f"client error {ctx.code}: {ctx.error!r}")


class SubEvents(SubscriptionEventHandler):
    def __init__(self, ev):
        self.ev = ev

    async def on_subscribed(self, ctx: SubscribedContext):
        self.ev.subscribed.put_nowait(ctx)

    async def on_subscribing(self, ctx):
        note(self.ev.label, f"subscribing: {ctx.code} {ctx.reason}")

    async def on_unsubscribed(self, ctx: UnsubscribedContext):
        note(self.ev.label, f"unsubscribed: {ctx.code} {ctx.reason}")
        self.ev.unsubscribed.put_nowait(ctx)

    async def on_publication(self, ctx: PublicationContext):
        self.ev.publications.put_nowait(ctx.pub)

    async def on_join(self, ctx: JoinContext):
        self.ev.joins.put_nowait(ctx.info)

    async def on_leave(self, ctx: LeaveContext):
        self.ev.leaves.put_nowait(ctx.info)

    async def on_error(self, ctx):
        note(self.ev.label, f"subscription error {ctx.code}: {ctx.error!r}")
        self.ev.errors.append(f"subscription error {ctx.code}: {ctx.error!r}")


async def next_event(queue, what, timeout=WAIT):
    try:
        return await asyncio.wait_for(queue.get(), timeout)
    except asyncio.TimeoutError:
        raise StepFailed(f"no {what} within {timeout:.0f}s") from None


async def first_event(want, instead, what, instead_what, timeout=WAIT):
    """Next event of `want`; fails at once with the event if `instead` gets one first."""
    tw = asyncio.ensure_future(want.get())
    ti = asyncio.ensure_future(instead.get())
    done, pending = await asyncio.wait({tw, ti}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for t in pending:
        t.cancel()
    if tw in done:
        if ti in done:
            instead.put_nowait(ti.result())
        return tw.result()
    if ti in done:
        raise StepFailed(f"{instead_what}: {ti.result()}")
    raise StepFailed(f"no {what} within {timeout:.0f}s")


async def no_more_events(queue, what, quiet=0.5):
    """Asserts that nothing more arrives on the queue during `quiet` seconds."""
    await asyncio.sleep(quiet)
    extra = []
    while not queue.empty():
        extra.append(queue.get_nowait())
    check(not extra, f"unexpected extra {what}: {extra}")


async def event_for(queue, client_id, what, timeout=WAIT):
    """Next join/leave info of the given client id; infos of other clients are skipped."""
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise StepFailed(f"no {what} for client {client_id} within {timeout:.0f}s (saw {seen})")
        try:
            info = await asyncio.wait_for(queue.get(), left)
        except asyncio.TimeoutError:
            continue
        if info.client == client_id:
            return info
        seen.append(info)


class Step:
    def __init__(self, name):
        self.name = name

    async def __aenter__(self):
        CURRENT_STEP[0] = self.name
        self.t = time.monotonic()
        return self

    async def __aexit__(self, exc_type, exc, tb):
        ms = (time.monotonic() - self.t) * 1000
        if exc is None:
            log(f"PASS {self.name} ({ms:.0f} ms)")
        return False


def token(secret, user):
    # The test secret is short on purpose (it is the node's test config): PyJWT's key-length
    # warning is noise here.
    warnings.filterwarnings("ignore", message=".*HMAC key.*")
    return jwt.encode({"sub": user, "exp": int(time.time()) + 3600}, secret, algorithm="HS256")


def new_client(label, ws_url, secret, user):
    ev = Events(label)
    client = TracingClient(
        label,
        ws_url,
        events=ClientEvents(ev),
        token=token(secret, user),
        timeout=WAIT,
        proxy=None,  # never a proxy from the environment: the node is on this machine
        use_protobuf=PROTOBUF,
    )
    return client, ev


async def scenario():
    ws_url = env("COMPAT_WS_URL")
    api_url = env("COMPAT_API_URL")
    api_key = env("COMPAT_API_KEY")
    secret = env("COMPAT_HMAC_SECRET")
    ws_url_2 = os.environ.get("COMPAT_WS_URL_2") or ws_url
    api_url_2 = os.environ.get("COMPAT_API_URL_2") or api_url
    channel = os.environ.get("COMPAT_CHANNEL") or "chat:compat-py"
    log(
        f"python_client ({'protobuf' if PROTOBUF else 'json'}): {ws_url} (second client {ws_url_2}) api {api_url}"
        f" (offline publishes {api_url_2}) channel {channel}"
    )

    api = CentClient(api_url, api_key, timeout=WAIT)
    api_2 = CentClient(api_url_2, api_key, timeout=WAIT)
    a, a_ev = new_client("py-1", ws_url, secret, "py-1")
    b, b_ev = new_client("py-2", ws_url_2, secret, "py-2")
    try:
        # a. connect
        async with Step("a. connect with a connection token (user py-1)"):
            await a.connect()
            ctx = await first_event(
                a_ev.connected, a_ev.disconnected, "connected event", "disconnected instead"
            )
            check(a.state == ClientState.CONNECTED, f"client state is {a.state}, want CONNECTED")
            check(bool(ctx.client), f"connected context has no client id: {ctx}")
            a_id = ctx.client

        # b. subscribe
        async with Step(f"b. subscribe to {channel}"):
            sub = a.new_subscription(channel, events=SubEvents(a_ev))
            await sub.subscribe()
            sctx = await next_event(a_ev.subscribed, "subscribed event")
            check(sub.state == SubscriptionState.SUBSCRIBED, f"subscription state is {sub.state}")
            check(sctx.channel == channel, f"subscribed context channel {sctx.channel!r}")
            # force_recovery is on for the namespace: the server makes the subscription recoverable.
            check(sctx.recoverable, f"subscription is not recoverable (force_recovery): {sctx}")
            check(sctx.stream_position is not None, f"no stream position: {sctx}")
            check(not sctx.was_recovering, f"first subscribe reports was_recovering: {sctx}")
            epoch = sctx.stream_position.epoch
            check(bool(epoch), f"empty epoch in subscribe reply: {sctx}")

        # c. publish through the HTTP API with cent
        async with Step("c. publish {'n': 1} with cent, the subscription receives it"):
            res = await api.publish(PublishRequest(channel=channel, data={"n": 1}))
            check(res.offset >= 1, f"publish result has no offset: {res}")
            check(res.epoch == epoch, f"publish epoch {res.epoch!r} != subscribe epoch {epoch!r}")
            pub = await next_event(a_ev.publications, "publication")
            check(data_of(pub.data) == {"n": 1}, f"publication data {data_of(pub.data)!r}, want {{'n': 1}}")
            check(pub.offset == res.offset, f"publication offset {pub.offset}, API said {res.offset}")
            await no_more_events(a_ev.publications, "publications", quiet=0.2)
            last_offset = pub.offset

        # c2. cent's batch and broadcast: the results parse and the publications arrive
        async with Step("c2. cent batch (two publishes) and broadcast, the subscription receives them"):
            batch = await api.batch(BatchRequest(requests=[
                PublishRequest(channel=channel, data={"n": "b1"}),
                PublishRequest(channel=channel, data={"n": "b2"}),
            ]))
            offs = [r.offset for r in batch.replies]
            check(offs == [last_offset + 1, last_offset + 2], f"batch offsets {offs}")
            other = channel + "-other"
            bc = await api.broadcast(BroadcastRequest(channels=[channel, other], data={"n": "bc"}))
            check(len(bc.responses) == 2, f"broadcast responses {bc.responses}")
            check(all(r.error is None for r in bc.responses), f"broadcast errors {bc.responses}")
            check(bc.responses[0].result.offset == last_offset + 3, f"broadcast {bc.responses}")
            got = []
            for _ in range(3):
                p = await next_event(a_ev.publications, f"publication #{len(got) + 1} of batch/broadcast")
                got.append((p.offset, data_of(p.data)))
            want = [(last_offset + 1, {"n": "b1"}), (last_offset + 2, {"n": "b2"}), (last_offset + 3, {"n": "bc"})]
            check(got == want, f"batch/broadcast publications {got}, want {want}")
            await no_more_events(a_ev.publications, "publications", quiet=0.2)
            last_offset += 3

        # c3. publish from the SDK and call rpc
        async with Step("c3. publish {'n': 'c'} from the SDK, received with publisher info; rpc answers 104"):
            await sub.publish(enc({"n": "c"}))
            pub = await next_event(a_ev.publications, "publication from the SDK")
            check(data_of(pub.data) == {"n": "c"}, f"publication data {data_of(pub.data)!r}")
            check(pub.offset == last_offset + 1, f"publication offset {pub.offset}, want {last_offset + 1}")
            check(
                pub.info is not None and pub.info.client == a_id and pub.info.user == "py-1",
                f"publisher info {pub.info}",
            )
            last_offset = pub.offset
            try:
                await a.rpc("echo", enc({"x": 1}))
                rpc_error = None
            except ReplyError as e:
                rpc_error = e
            check(rpc_error is not None and rpc_error.code == 104, f"rpc without a handler: {rpc_error!r}")

        # d. presence and presence stats through the SDK
        async with Step("d. presence / presence_stats from the SDK"):
            pres = await sub.presence()
            check(a_id in pres.clients, f"own client id {a_id} not in presence {pres.clients}")
            check(len(pres.clients) == 1, f"presence has {len(pres.clients)} clients: {pres.clients}")
            info = pres.clients[a_id]
            check(info.client == a_id and info.user == "py-1", f"presence entry {info}")
            stats = await sub.presence_stats()
            check(stats.num_clients == 1, f"num_clients {stats.num_clients}, want 1")
            check(stats.num_users == 1, f"num_users {stats.num_users}, want 1")

        # e. history through the SDK
        async with Step("e. history from the SDK contains the publication with its offset"):
            # limit -1: the whole stream (Centrifugo semantics; 0 would return the position only)
            hist = await sub.history(limit=-1)
            check(hist.epoch == epoch, f"history epoch {hist.epoch!r}, want {epoch!r}")
            check(hist.offset == last_offset, f"history top offset {hist.offset}, want {last_offset}")
            got = [(p.offset, data_of(p.data)) for p in hist.publications]
            # (the channel holds older publications when the script runs twice on one node)
            check(
                got[-5:] == [(last_offset - 4, {"n": 1}), (last_offset - 3, {"n": "b1"}),
                             (last_offset - 2, {"n": "b2"}), (last_offset - 1, {"n": "bc"}),
                             (last_offset, {"n": "c"})],
                f"history publications {got}, want the last five (n=1, b1, b2, bc, c)",
            )
            offs = [o for o, _ in got]
            check(offs == sorted(offs), f"history not in offset order: {got}")
            # since the position before it: exactly that publication
            since = await sub.history(
                limit=10, since=StreamPosition(offset=last_offset - 1, epoch=epoch)
            )
            got = [(p.offset, data_of(p.data)) for p in since.publications]
            check(got == [(last_offset, {"n": "c"})], f"history since offset {last_offset - 1}: {got}")

        # f. recovery after a disconnect
        async with Step("f. recovery: disconnect, publish n=2,3 offline, reconnect, recovered"):
            await a.disconnect()
            dctx = await next_event(a_ev.disconnected, "disconnected event")
            check(a.state == ClientState.DISCONNECTED, f"client state {a.state}")
            check(
                sub.state == SubscriptionState.SUBSCRIBING,
                f"subscription state after client disconnect is {sub.state}, want SUBSCRIBING",
            )
            offsets = []
            for n in (2, 3):
                r = await api_2.publish(PublishRequest(channel=channel, data={"n": n}))
                check(r.epoch == epoch, f"epoch changed while offline: {r.epoch!r} != {epoch!r}")
                offsets.append(r.offset)
            check(
                offsets == [last_offset + 1, last_offset + 2],
                f"offline publish offsets {offsets}, want {[last_offset + 1, last_offset + 2]}",
            )
            await a.connect()
            ctx = await next_event(a_ev.connected, "connected event after reconnect")
            a_id = ctx.client
            sctx = await next_event(a_ev.subscribed, "subscribed event after reconnect")
            check(sctx.was_recovering, f"subscribed context was_recovering is false: {sctx}")
            check(sctx.recovered, f"subscribed context recovered is false: {sctx}")
            check(
                sctx.stream_position is not None and sctx.stream_position.epoch == epoch,
                f"stream position after recovery {sctx.stream_position}, epoch {epoch!r}",
            )
            got = []
            for _ in range(2):
                p = await next_event(a_ev.publications, f"recovered publication #{len(got) + 1}")
                got.append((p.offset, data_of(p.data)))
            want = [(offsets[0], {"n": 2}), (offsets[1], {"n": 3})]
            check(got == want, f"recovered publications {got}, want {want}")
            await no_more_events(a_ev.publications, "publications after recovery")
            last_offset = offsets[1]
            log(f"     recovered from offset {last_offset - 2} epoch {epoch}: {got} (was disconnected with {dctx.code} {dctx.reason!r})")

        # g. a second client on the same channel sees join (and leave) pushes of the first one
        async with Step("g. second client (py-2) sees leave/join pushes of py-1"):
            await b.connect()
            bctx = await next_event(b_ev.connected, "connected event of py-2")
            b_sub = b.new_subscription(channel, events=SubEvents(b_ev))
            await b_sub.subscribe()
            await next_event(b_ev.subscribed, "subscribed event of py-2")
            stats = await b_sub.presence_stats()
            check(
                (stats.num_clients, stats.num_users) == (2, 2),
                f"presence_stats with two clients: {stats}, want 2 clients / 2 users",
            )
            # py-1 leaves and joins again: py-2 must see both pushes.
            await sub.unsubscribe()
            await next_event(a_ev.unsubscribed, "unsubscribed event of py-1")
            leave = await event_for(b_ev.leaves, a_id, "leave push")
            check(leave.user == "py-1", f"leave info {leave}")
            await sub.subscribe()
            await next_event(a_ev.subscribed, "subscribed event of py-1 (resubscribe)")
            join = await event_for(b_ev.joins, a_id, "join push")
            check(join.user == "py-1", f"join info user {join.user!r}, want 'py-1'")
            # and a publication reaches both
            await api.publish(PublishRequest(channel=channel, data={"n": 4}))
            pa = await next_event(a_ev.publications, "publication n=4 at py-1")
            pb = await next_event(b_ev.publications, "publication n=4 at py-2")
            check(data_of(pa.data) == {"n": 4} and data_of(pb.data) == {"n": 4}, f"n=4 data {data_of(pa.data)} / {data_of(pb.data)}")
            log(f"     py-2 ({bctx.client}) saw leave+join of py-1 ({a_id})")

        # g2. (extra) keepalive with the node's short ping interval
        async with Step("g2. keepalive: idle 4.5 s, server pings (3 s), SDK pongs, nothing drops"):
            before = [(c.pings_in, c.pongs_out) for c in (a, b)]
            await asyncio.sleep(4.5)
            for c, ev, s, (pings, pongs) in ((a, a_ev, sub, before[0]), (b, b_ev, b_sub, before[1])):
                check(c.pings_in > pings, f"{c.label}: no server ping in 4.5 s (ping_interval 3 s)")
                check(c.pongs_out > pongs, f"{c.label}: the SDK sent no pong")
                check(c.state == ClientState.CONNECTED, f"{c.label}: state {c.state}")
                check(s.state == SubscriptionState.SUBSCRIBED, f"{c.label}: subscription {s.state}")
                check(ev.connected.empty() and ev.disconnected.empty(), f"{c.label} reconnected")
            await api.publish(PublishRequest(channel=channel, data={"n": 5}))
            pa = await next_event(a_ev.publications, "publication n=5 at py-1")
            pb = await next_event(b_ev.publications, "publication n=5 at py-2")
            check(data_of(pa.data) == {"n": 5} and data_of(pb.data) == {"n": 5}, f"n=5 data {data_of(pa.data)} / {data_of(pb.data)}")

        # h. clean disconnect
        async with Step("h. clean disconnect of both clients"):
            await a.disconnect()
            dctx = await next_event(a_ev.disconnected, "disconnected event of py-1")
            check(a.state == ClientState.DISCONNECTED, f"py-1 state {a.state}")
            leave = await event_for(b_ev.leaves, a_id, "leave push after py-1 disconnected")
            await b.disconnect()
            await next_event(b_ev.disconnected, "disconnected event of py-2")
            check(b.state == ClientState.DISCONNECTED, f"py-2 state {b.state}")
            # the server forgets both: presence becomes empty
            deadline = time.monotonic() + WAIT
            while True:
                st = await api.presence_stats(PresenceStatsRequest(channel=channel))
                if st.num_clients == 0:
                    break
                check(time.monotonic() < deadline, f"presence_stats after disconnect: {st}")
                await asyncio.sleep(0.1)

        errors = a_ev.errors + b_ev.errors
        check(not errors, f"SDK reported errors: {errors}")
    finally:
        for c in (a, b):
            try:
                await asyncio.wait_for(c.disconnect(), 2)
            except Exception:
                pass
        try:
            await api.close()
            await api_2.close()
        except Exception:
            pass


async def main():
    try:
        await asyncio.wait_for(scenario(), OVERALL_TIMEOUT - 1)
    except asyncio.TimeoutError:
        log(f"FAIL {CURRENT_STEP[0]}: overall timeout of {OVERALL_TIMEOUT:.0f}s reached")
        dump_frames()
        return 1
    except StepFailed as e:
        log(f"FAIL {CURRENT_STEP[0]}: {e}")
        dump_frames()
        return 1
    except Exception as e:  # an SDK call raised
        log(f"FAIL {CURRENT_STEP[0]}: {type(e).__name__}: {e!r}")
        traceback.print_exc()
        dump_frames()
        return 1
    log("python_client: all steps passed")
    return 0


def hard_timeout(signum, frame):
    log(f"FAIL {CURRENT_STEP[0]}: hard timeout of {OVERALL_TIMEOUT:.0f}s (event loop stuck)")
    dump_frames()
    os._exit(1)


if __name__ == "__main__":
    signal.signal(signal.SIGALRM, hard_timeout)
    signal.alarm(int(OVERALL_TIMEOUT))
    sys.exit(asyncio.run(main()))
