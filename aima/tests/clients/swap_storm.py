"""A swap storm through the official OpenAI client: N concurrent requests, split between
models that cannot share the GPU, all sent at once. Prints one JSON object with each
request's model, outcome and wait; the Rust test asserts on it.

usage: swap_storm.py BASE_URL REQUESTS MODEL [MODEL ...]
"""

import asyncio
import json
import sys
import time

import openai


async def one(client, model):
    asked = time.monotonic()
    try:
        raw = await client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "swap"}], max_tokens=4
        )
        reply = raw.parse()
        return {
            "model": model,
            "ok": True,
            "service": raw.headers.get("x-aima-service"),
            "tokens": reply.usage.total_tokens,
            "seconds": time.monotonic() - asked,
        }
    except openai.APIError as e:
        return {
            "model": model,
            "ok": False,
            "error": str(e),
            "seconds": time.monotonic() - asked,
        }


async def main() -> None:
    base_url, count, models = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    # The client's own pool allows 1,000 connections: every request goes out at once.
    client = openai.AsyncOpenAI(
        base_url=base_url, api_key="not-needed", max_retries=0, timeout=120
    )
    started = time.monotonic()
    results = await asyncio.gather(*(one(client, models[i % len(models)]) for i in range(count)))
    print(json.dumps({"results": results, "seconds": time.monotonic() - started}))


asyncio.run(main())
