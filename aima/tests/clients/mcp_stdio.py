"""Drives `aima mcp` with the reference MCP Python SDK (PyPI `mcp`) over stdio and prints
what it saw as one JSON object, for the Rust test to check.

Usage: mcp_stdio.py AIMA_BINARY   (AIMA_ADDR and AIMA_HOME in the environment)
"""

import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def dump(result):
    return result.model_dump(mode="json", by_alias=True, exclude_none=True)


async def main():
    params = StdioServerParameters(
        command=sys.argv[1],
        args=["mcp"],
        env={key: os.environ[key] for key in ("AIMA_ADDR", "AIMA_HOME", "PATH")},
    )
    seen = {}
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            seen["server"] = dump(init)["serverInfo"]
            tools = await session.list_tools()
            seen["tools"] = {t["name"]: t for t in (dump(x) for x in tools.tools)}

            async def call(name, arguments=None):
                return dump(await session.call_tool(name, arguments or {}))

            seen["create_model"] = await call(
                "create_model", {"name": "agent-model", "source": "ollama", "repo": "tinyllama"}
            )
            seen["create_service"] = await call(
                "create_service",
                {"model_id": "agent-model", "engine_type": "vllm", "name": "agent-svc"},
            )
            seen["create_broken"] = await call(
                "create_service",
                {
                    "model_id": "agent-model",
                    "engine_type": "vllm",
                    "name": "agent-broken",
                    "env": ["STUB_FAIL=oom"],
                    "restart": "no",
                },
            )
            seen["start"] = await call("start_service", {"id": "agent-svc"})
            seen["logs"] = await call("service_logs", {"id": "agent-svc", "tail": 50})
            seen["events"] = await call("service_events", {"id": "agent-svc"})
            seen["stop_unforced"] = await call("stop_service", {"id": "agent-svc"})
            seen["stop"] = await call("stop_service", {"id": "agent-svc", "force": True})
            seen["start_broken"] = await call("start_service", {"id": "agent-broken"})
            seen["get_missing"] = await call("get_service", {"id": "no-such-service"})
    print(json.dumps(seen))


asyncio.run(main())
