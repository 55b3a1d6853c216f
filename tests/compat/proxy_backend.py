#!/usr/bin/env python3
"""An application backend for the proxy hooks, written the way a user of Centrifugo writes
one: an aiohttp app answering POST /centrifugo/<hook> with {"result"|"error"|"disconnect"}.

It listens on 127.0.0.1 (the port given as the first argument, 0 for any), prints
`LISTENING <port>` once ready, and keeps every call it receives so a test can read them
back with GET /calls (and clear them with POST /calls/clear).

What it answers depends on the request, so that one backend serves every test case:

connect      data {"user": U}: result user U, info {"via": "proxy", "user": U}, data
             {"welcome": U}, channels ["proxied:personal-U"], meta {"tenant": "t-U"},
             expire_at now+E when data has "ttl": E; data {"refuse": true}: error 1000;
             data {"kick": true}: disconnect 4501; header Authorization "Bearer U": user U
             (no data needed); otherwise {} (no credentials).
refresh      result expire_at now+60, info {"refreshed": n}; user "expire-me": expired.
subscribe    channel ...:denied-*: error 1001; ...:kick-*: disconnect 4502; otherwise
             result info {"role": "reader"}, data {"hello": channel}, expire_at now+E when
             the channel ends in "-ttlE".
sub_refresh  result expire_at now+60; channel ...-noext*: expired.
publish      channel ...:nopub-*: error 1002; otherwise result data {"published_by": user,
             "original": <data>}, and skip_history when the data has "skip": true.
rpc          method "echo": result data {"echo": data, "user": user, "meta": meta};
             "fail": error 1003 "nope"; "boom": disconnect 4503; "slow": answers after 3 s;
             anything else: error 1004 "unknown method".
faults       /fault/status500, /fault/garbage (not JSON), /fault/huge (10 MB), /fault/hang
             (never answers), /fault/close (closes the connection without an answer).
"""
import asyncio
import json
import sys
import time

from aiohttp import web

CALLS = []
REFRESHES = {"n": 0}


def remember(hook, request, body):
    CALLS.append(
        {
            "hook": hook,
            "body": body,
            "headers": {k.lower(): v for k, v in request.headers.items()},
        }
    )


async def read(request, hook):
    body = await request.json()
    remember(hook, request, body)
    return body


def ok(result):
    return web.json_response({"result": result})


async def connect(request):
    body = await read(request, "connect")
    data = body.get("data") or {}
    auth = request.headers.get("Authorization", "")
    user = data.get("user") if isinstance(data, dict) else None
    if not user and auth.startswith("Bearer "):
        user = auth[len("Bearer "):]
    if isinstance(data, dict) and data.get("refuse"):
        return web.json_response({"error": {"code": 1000, "message": "refused by backend"}})
    if isinstance(data, dict) and data.get("kick"):
        return web.json_response({"disconnect": {"code": 4501, "reason": "go away"}})
    if not user:
        return web.json_response({})
    result = {
        "user": user,
        "info": {"via": "proxy", "user": user},
        "data": {"welcome": user},
        "channels": [f"proxied:personal-{user}"],
        "meta": {"tenant": f"t-{user}"},
    }
    if isinstance(data, dict) and data.get("ttl"):
        result["expire_at"] = int(time.time()) + int(data["ttl"])
    return ok(result)


async def refresh(request):
    body = await read(request, "refresh")
    if body.get("user") == "expire-me":
        return ok({"expired": True})
    REFRESHES["n"] += 1
    return ok({"expire_at": int(time.time()) + 60, "info": {"refreshed": REFRESHES["n"]}})


async def subscribe(request):
    body = await read(request, "subscribe")
    channel = body.get("channel", "")
    name = channel.split(":", 1)[-1]
    if name.startswith("denied-"):
        return web.json_response({"error": {"code": 1001, "message": "not for you"}})
    if name.startswith("kick-"):
        return web.json_response({"disconnect": {"code": 4502, "reason": "kicked"}})
    result = {"info": {"role": "reader"}, "data": {"hello": channel}}
    if "-ttl" in name:
        result["expire_at"] = int(time.time()) + int(name.rsplit("-ttl", 1)[1])
    return ok(result)


async def sub_refresh(request):
    body = await read(request, "sub_refresh")
    if "-noext" in body.get("channel", ""):
        return ok({"expired": True})
    return ok({"expire_at": int(time.time()) + 60})


async def publish(request):
    body = await read(request, "publish")
    channel = body.get("channel", "")
    if channel.split(":", 1)[-1].startswith("nopub-"):
        return web.json_response({"error": {"code": 1002, "message": "publishing refused"}})
    data = body.get("data")
    result = {"data": {"published_by": body.get("user"), "original": data}}
    if isinstance(data, dict) and data.get("skip"):
        result["skip_history"] = True
    return ok(result)


async def rpc(request):
    body = await read(request, "rpc")
    method = body.get("method")
    if method == "echo":
        return ok({"data": {"echo": body.get("data"), "user": body.get("user"), "meta": body.get("meta")}})
    if method == "fail":
        return web.json_response({"error": {"code": 1003, "message": "nope"}})
    if method == "boom":
        return web.json_response({"disconnect": {"code": 4503, "reason": "rpc said bye"}})
    if method == "slow":
        await asyncio.sleep(3)
        return ok({"data": {"late": True}})
    return web.json_response({"error": {"code": 1004, "message": "unknown method"}})


async def fault(request):
    kind = request.match_info["kind"]
    remember("fault:" + kind, request, await request.text())
    if kind == "status500":
        return web.Response(status=500, text="backend exploded")
    if kind == "garbage":
        return web.Response(status=200, text="this is { not json", content_type="application/json")
    if kind == "huge":
        return web.Response(status=200, body=b'{"result": {"data": "' + b"x" * (10 << 20) + b'"}}',
                            content_type="application/json")
    if kind == "hang":
        await asyncio.sleep(3600)
    if kind == "close":
        request.transport.close()
        await asyncio.sleep(1)
    return web.Response(status=404)


async def calls(request):
    return web.json_response(CALLS)


async def clear(request):
    CALLS.clear()
    return web.json_response({})


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    app = web.Application(client_max_size=16 << 20)
    app.add_routes(
        [
            web.post("/centrifugo/connect", connect),
            web.post("/centrifugo/refresh", refresh),
            web.post("/centrifugo/subscribe", subscribe),
            web.post("/centrifugo/sub_refresh", sub_refresh),
            web.post("/centrifugo/publish", publish),
            web.post("/centrifugo/rpc", rpc),
            web.post("/fault/{kind}", fault),
            web.get("/calls", calls),
            web.post("/calls/clear", clear),
        ]
    )

    async def start():
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]
        print(f"LISTENING {bound}", flush=True)
        while True:
            await asyncio.sleep(3600)

    try:
        asyncio.run(start())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
