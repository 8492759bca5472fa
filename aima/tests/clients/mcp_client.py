"""Drives AIMA's MCP server with the reference MCP Python SDK (PyPI `mcp`) and prints what
it saw as one JSON object, for the Rust test to check.

Usage: mcp_client.py stdio AIMA_BINARY   (`aima mcp`; AIMA_ADDR and AIMA_HOME in the environment)
       mcp_client.py http URL            (the daemon's /mcp, Streamable HTTP)
"""

import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client


def dump(result):
    return result.model_dump(mode="json", by_alias=True, exclude_none=True)


def transport():
    if sys.argv[1] == "stdio":
        params = StdioServerParameters(
            command=sys.argv[2],
            args=["mcp"],
            env={key: os.environ[key] for key in ("AIMA_ADDR", "AIMA_HOME", "PATH")},
        )
        return stdio_client(params)
    return streamable_http_client(sys.argv[2])


async def main():
    seen = {}
    async with transport() as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            seen["server"] = dump(init)["serverInfo"]
            tools = await session.list_tools()
            seen["tools"] = {t["name"]: t for t in (dump(x) for x in tools.tools)}

            async def call(name, arguments=None):
                return dump(await session.call_tool(name, arguments or {}))

            seen["create_model"] = await call(
                "create_model", {"name": f"agent-model-{sys.argv[1]}", "source": "ollama", "repo": "tinyllama"}
            )
            seen["create_service"] = await call(
                "create_service",
                {"model_id": f"agent-model-{sys.argv[1]}", "engine_type": "vllm", "name": f"agent-svc-{sys.argv[1]}"},
            )
            seen["create_broken"] = await call(
                "create_service",
                {
                    "model_id": f"agent-model-{sys.argv[1]}",
                    "engine_type": "vllm",
                    "name": f"agent-broken-{sys.argv[1]}",
                    "env": ["STUB_FAIL=oom"],
                    "restart": "no",
                },
            )
            svc, broken = f"agent-svc-{sys.argv[1]}", f"agent-broken-{sys.argv[1]}"
            seen["start"] = await call("start_service", {"id": svc})
            seen["logs"] = await call("service_logs", {"id": svc, "tail": 50})
            seen["events"] = await call("service_events", {"id": svc})
            seen["stop_unforced"] = await call("stop_service", {"id": svc})
            seen["stop"] = await call("stop_service", {"id": svc, "force": True})
            seen["start_broken"] = await call("start_service", {"id": broken})
            seen["get_missing"] = await call("get_service", {"id": "no-such-service"})
    print(json.dumps(seen))


asyncio.run(main())
