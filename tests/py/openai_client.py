"""Drives a cachet gateway with the official `openai` SDK for the Rust end-to-end tests.

Protocol: one JSON object per line on stdin, one JSON answer per line on stdout; the first
line written is {"ready": true, "openai": "<sdk version>"}. Requests:

  {"op": "chat" | "completion", "base_url": ..., "api_key": ..., "model": ...,
   "messages": [{"role": ..., "content": ...}], "stream": bool,
   "headers": {...}, "params": {...}}
  {"op": "models", "base_url": ..., "api_key": ...}
  {"op": "embeddings", "base_url": ..., "api_key": ..., "model": ..., "input": [...]}

Answers carry "ok", "status", "headers" (lowercase names) and, depending on the call,
"content", "id", "chunk_ids", "created", "model", "finish_reason", "chunks", "usage",
"data"; a failed call carries "exception", "message" and, for API errors, "error" (the
parsed error object) and "body_text". The SDK never retries (max_retries=0), so every
request the tests make reaches the gateway exactly once. Diagnostics go to stderr.
"""

import json
import sys
import traceback

import openai

_clients = {}


def client_for(base_url, api_key):
    key = (base_url, api_key)
    if key not in _clients:
        _clients[key] = openai.OpenAI(
            base_url=base_url, api_key=api_key, max_retries=0, timeout=60.0
        )
    return _clients[key]


def lower_headers(headers):
    return {name.lower(): value for name, value in headers.items()}


def create_kwargs(request):
    kwargs = dict(request.get("params") or {})
    kwargs["model"] = request["model"]
    if request["op"] == "chat":
        kwargs["messages"] = request["messages"]
    else:
        kwargs["prompt"] = request["messages"][-1]["content"]
    if request.get("headers"):
        kwargs["extra_headers"] = request["headers"]
    return kwargs


def resource(client, op):
    return client.chat.completions if op == "chat" else client.completions


def choice_text(choice, op, streamed):
    if op == "completion":
        return choice.text
    message = choice.delta if streamed else choice.message
    return message.content


def call_plain(request, client, out):
    raw = resource(client, request["op"]).with_raw_response.create(**create_kwargs(request))
    out["status"] = raw.status_code
    out["headers"] = lower_headers(raw.headers)
    completion = raw.parse()
    choice = completion.choices[0]
    out.update(
        id=completion.id,
        created=completion.created,
        model=completion.model,
        content=choice_text(choice, request["op"], False),
        finish_reason=choice.finish_reason,
        usage=completion.usage.model_dump() if completion.usage else None,
    )


def call_streamed(request, client, out):
    kwargs = create_kwargs(request)
    kwargs["stream"] = True
    with resource(client, request["op"]).with_streaming_response.create(**kwargs) as raw:
        out["status"] = raw.status_code
        out["headers"] = lower_headers(raw.headers)
        out["content"] = ""
        out["chunks"] = 0
        out["chunk_ids"] = []
        for chunk in raw.parse():
            out["chunks"] += 1
            if out.get("id") is None:
                out.update(id=chunk.id, created=chunk.created, model=chunk.model)
            if chunk.id not in out["chunk_ids"]:
                out["chunk_ids"].append(chunk.id)
            if chunk.usage:
                out["usage"] = chunk.usage.model_dump()
            for choice in chunk.choices:
                out["content"] += choice_text(choice, request["op"], True) or ""
                if choice.finish_reason:
                    out["finish_reason"] = choice.finish_reason


def call(request):
    client = client_for(request["base_url"], request["api_key"])
    op = request["op"]
    out = {"ok": False}
    try:
        if op in ("chat", "completion"):
            if request.get("stream"):
                call_streamed(request, client, out)
            else:
                call_plain(request, client, out)
        elif op == "models":
            raw = client.models.with_raw_response.list()
            out["status"] = raw.status_code
            out["headers"] = lower_headers(raw.headers)
            out["data"] = [model.id for model in raw.parse().data]
        elif op == "embeddings":
            raw = client.embeddings.with_raw_response.create(
                model=request["model"], input=request["input"]
            )
            out["status"] = raw.status_code
            out["headers"] = lower_headers(raw.headers)
            out["data"] = [list(item.embedding) for item in raw.parse().data]
        else:
            raise ValueError(f"unknown op {op!r}")
        out["ok"] = True
    except openai.APIStatusError as err:
        out.update(
            status=err.status_code,
            headers=lower_headers(err.response.headers),
            error=err.body,
            body_text=safe_text(err.response),
            exception=type(err).__name__,
            message=str(err),
        )
    except Exception as err:  # noqa: BLE001 - every failure is reported to the test
        out.update(exception=type(err).__name__, message=str(err))
        traceback.print_exc(file=sys.stderr)
    return out


def safe_text(response):
    try:
        return response.text
    except Exception:  # noqa: BLE001 - a streamed body may be unreadable after the error
        return None


def main():
    print(json.dumps({"ready": True, "openai": openai.__version__}), flush=True)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            answer = call(json.loads(line))
        except Exception as err:  # noqa: BLE001 - a malformed request must not kill the driver
            answer = {"ok": False, "exception": type(err).__name__, "message": str(err)}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
