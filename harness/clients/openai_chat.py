"""One chat, plain and streamed (with usage asked for, then without), through AIMA's
gateway with the official OpenAI client; prints what it saw as one JSON object for the
harness to check.

usage: openai_chat.py BASE_URL MODEL
"""

import json
import sys

import openai


def main() -> None:
    base_url, model = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=300)
    messages = [{"role": "user", "content": "Say hello to AIMA."}]
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=messages, max_tokens=16
    )
    reply = raw.parse()
    seen = {
        "plain": {
            "model": reply.model,
            "finish_reason": reply.choices[0].finish_reason,
            "content_chars": len(reply.choices[0].message.content or ""),
            "prompt_tokens": reply.usage.prompt_tokens,
            "completion_tokens": reply.usage.completion_tokens,
            "service": raw.headers.get("x-aima-service"),
        }
    }
    chunks, usage, finish = 0, None, None
    for chunk in client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    ):
        chunks += 1
        if chunk.usage is not None:
            usage = chunk.usage.completion_tokens
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    seen["stream"] = {"chunks": chunks, "completion_tokens": usage, "finish_reason": finish}
    # A stream that does not ask for usage: the client must see no usage event.
    chunks, usage_events = 0, 0
    for chunk in client.chat.completions.create(
        model=model, messages=messages, max_tokens=16, stream=True
    ):
        chunks += 1
        if chunk.usage is not None:
            usage_events += 1
    seen["unasked"] = {"chunks": chunks, "usage_events": usage_events}
    print(json.dumps(seen))


main()
