"""Drives AIMA's MCP server with the reference MCP Python SDK (PyPI `mcp`) and prints what
it saw as one JSON object, for the Rust test to check.

Usage: mcp_client.py stdio AIMA_BINARY   (`aima mcp`; AIMA_ADDR and AIMA_HOME in the environment)
       mcp_client.py http URL            (the daemon's /mcp, Streamable HTTP)

Two sessions: one with the initialize handshake (protocol before 2026-07-28, as most
agents speak today: resources/subscribe), and one with the SDK's high-level Client, which
discovers the 2026-07-28 protocol and listens with subscriptions/listen.
"""

import asyncio
import json
import os
import sys
import warnings

from mcp import Client, ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

warnings.simplefilter("ignore")  # resources/subscribe is deprecated in 2026-07-28, on purpose

TRANSPORT = sys.argv[1]
MODEL, SVC, BROKEN = (f"agent-{what}-{TRANSPORT}" for what in ("model", "svc", "broken"))


def dump(result):
    return result.model_dump(mode="json", by_alias=True, exclude_none=True)


def server():
    if TRANSPORT == "stdio":
        return StdioServerParameters(
            command=sys.argv[2],
            args=["mcp"],
            env={key: os.environ[key] for key in ("AIMA_ADDR", "AIMA_HOME", "PATH")},
        )
    return sys.argv[2]


def transport():
    target = server()
    if TRANSPORT == "stdio":
        return stdio_client(target)
    return streamable_http_client(target)


async def until(predicate, seconds=15):
    for _ in range(int(seconds * 20)):
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return False


async def handshake_session(seen):
    updates = []

    async def on_message(message):
        note = getattr(message, "root", message)
        if getattr(note, "method", None) == "notifications/resources/updated":
            updates.append(note.params.uri)

    async with transport() as streams:
        async with ClientSession(streams[0], streams[1], message_handler=on_message) as session:
            init = await session.initialize()
            seen["server"] = dump(init)["serverInfo"]
            seen["protocol"] = init.protocol_version
            seen["capabilities"] = dump(init)["capabilities"]
            tools = await session.list_tools()
            seen["tools"] = {t["name"]: t for t in (dump(x) for x in tools.tools)}

            async def call(name, arguments=None, **options):
                return dump(await session.call_tool(name, arguments or {}, **options))

            seen["create_model"] = await call(
                "create_model", {"name": MODEL, "source": "ollama", "repo": "tinyllama", "size_bytes": 1_000_000_000}
            )
            seen["model_on_llamacpp"] = await call("get_model", {"id": MODEL, "engine": "llamacpp", "context_length": 2048})
            seen["create_service"] = await call(
                "create_service", {"model_id": MODEL, "engine_type": "vllm", "name": SVC}
            )
            seen["create_broken"] = await call(
                "create_service",
                {"model_id": MODEL, "engine_type": "vllm", "name": BROKEN, "env": ["STUB_FAIL=oom"], "restart": "no"},
            )
            seen["create_invalid"] = await call("create_service", {"model_id": MODEL, "engine_type": "nope"})
            seen["start_mistyped"] = await call("start_service", {"id": 5})

            await session.subscribe_resource(f"aima://services/{SVC}")
            progress = []

            async def on_progress(value, total, message):
                progress.append({"progress": value, "message": message})

            seen["start"] = await call("start_service", {"id": SVC}, progress_callback=on_progress)
            seen["progress"] = progress
            await until(lambda: f"aima://services/{SVC}" in updates)
            seen["updates"] = list(updates)

            seen["resources"] = [r["uri"] for r in (dump(x) for x in (await session.list_resources()).resources)]
            templates = await session.list_resource_templates()
            seen["templates"] = [dump(t)["uriTemplate"] for t in templates.resource_templates]
            seen["read_service"] = dump(await session.read_resource(f"aima://services/{SVC}"))
            seen["read_logs"] = dump(await session.read_resource(f"aima://services/{SVC}/logs"))

            seen["logs"] = await call("service_logs", {"id": SVC, "tail": 50})
            seen["events"] = await call("service_events", {"id": SVC})
            seen["chat"] = await call("chat", {"model": SVC, "message": "hello"})
            seen["stop_unforced"] = await call("stop_service", {"id": SVC})
            seen["stop"] = await call("stop_service", {"id": SVC, "force": True})
            seen["start_broken"] = await call("start_service", {"id": BROKEN})
            seen["get_missing"] = await call("get_service", {"id": "no-such-service"})

            prompts = await session.list_prompts()
            seen["prompts"] = [p.name for p in prompts.prompts]
            diagnosis = await session.get_prompt("diagnose_service", {"service": BROKEN})
            seen["diagnose"] = dump(diagnosis)
            placement = await session.get_prompt("place_model", {"model": MODEL})
            seen["place"] = dump(placement)


async def discovered_session(seen):
    """The 2026-07-28 protocol: discover, then subscriptions/listen."""
    uri = f"aima://services/{SVC}"
    async with Client(server()) as client:
        seen["modern_protocol"] = client.protocol_version
        async with client.listen(resource_subscriptions=[uri]) as subscription:
            seen["listen_honored"] = dump(subscription.honored)
            seen["modern_start"] = dump(await client.call_tool("start_service", {"id": SVC}))
            event = await asyncio.wait_for(subscription.__anext__(), 15)
            seen["listen_event"] = {"kind": type(event).__name__, "uri": getattr(event, "uri", None)}
        seen["modern_stop"] = dump(await client.call_tool("stop_service", {"id": SVC, "force": True}))


async def main():
    seen = {}
    await handshake_session(seen)
    await discovered_session(seen)
    print(json.dumps(seen))


asyncio.run(main())
