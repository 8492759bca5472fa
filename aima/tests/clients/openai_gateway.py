"""Drives AIMA's gateway with the official OpenAI Python client (a client AIMA did not
write) and prints what it saw as one JSON object; the Rust test asserts on it.

usage: openai_gateway.py BASE_URL MODEL
"""

import json
import sys

import openai


def main() -> None:
    base_url, model = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=base_url, api_key="not-needed", max_retries=0, timeout=120)
    seen = {}

    seen["models"] = [m.id for m in client.models.list().data]

    # Non-streaming chat: the first request also starts the cold engine.
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hello there"}]
    )
    chat = raw.parse()
    seen["chat"] = {
        "content": chat.choices[0].message.content,
        "finish_reason": chat.choices[0].finish_reason,
        "total_tokens": chat.usage.total_tokens,
        "service_header": raw.headers.get("x-aima-service"),
        "overhead_header": raw.headers.get("x-aima-overhead-ms"),
    }

    # Streaming chat, with usage in the last chunk.
    pieces, usage = [], None
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage.total_tokens
    seen["stream"] = {"text": "".join(pieces), "chunks": len(pieces), "total_tokens": usage}

    completion = client.completions.create(model=model, prompt="once upon a time", max_tokens=3)
    seen["completion"] = {
        "text": completion.choices[0].text,
        "finish_reason": completion.choices[0].finish_reason,
    }

    embeddings = client.embeddings.create(model=model, input=["one", "two words"])
    seen["embeddings"] = [len(item.embedding) for item in embeddings.data]

    try:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
        seen["unknown"] = "answered"
    except openai.NotFoundError as error:
        seen["unknown"] = {"status": error.status_code, "code": error.code, "message": error.message}

    print(json.dumps(seen))


if __name__ == "__main__":
    main()
