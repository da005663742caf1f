#!/usr/bin/env python3
"""The model behind the gateway in the agent-CLI tests: answers every completion request with a
model-shaped reply whose text is --text (Anthropic messages, OpenAI chat completions or
Responses, chosen by path; SSE when the JSON body asks for "stream": true, else JSON), and
appends one JSON line per request to --log, so a test can tell whether a request reached it.

    llm_upstream.py --text UPSTREAM-OK --log requests.jsonl --port-file port.txt
"""
import argparse
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def api_kind(path):
    p = path.split("?")[0]
    if p.endswith("/messages") or "/messages/" in p:
        return "anthropic"
    if p.endswith("/responses") or "/responses/" in p:
        return "responses"
    return "chat"


def sse(event, data):
    s = "" if event is None else f"event: {event}\n"
    return (s + "data: " + (data if isinstance(data, str) else json.dumps(data)) + "\n\n").encode()


# ---------------------------------------------------------------- success payloads
def anthropic_json(model, text):
    return {"id": "msg_stub01", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
            "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 20}}


def anthropic_sse(model, text):
    msg = anthropic_json(model, "")
    msg["content"] = []
    msg["stop_reason"] = None
    msg["usage"] = {"input_tokens": 10, "output_tokens": 1}
    yield sse("message_start", {"type": "message_start", "message": msg})
    yield sse("content_block_start", {"type": "content_block_start", "index": 0,
                                      "content_block": {"type": "text", "text": ""}})
    yield sse("ping", {"type": "ping"})
    yield sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                      "delta": {"type": "text_delta", "text": text}})
    yield sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    yield sse("message_delta", {"type": "message_delta",
                                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                "usage": {"output_tokens": 20}})
    yield sse("message_stop", {"type": "message_stop"})


def chat_json(model, text):
    return {"id": "chatcmpl-stub01", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}}


def chat_sse(model, text):
    base = {"id": "chatcmpl-stub01", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model}
    yield sse(None, dict(base, choices=[{"index": 0, "delta": {"role": "assistant",
                                                                "content": ""},
                                         "finish_reason": None}]))
    yield sse(None, dict(base, choices=[{"index": 0, "delta": {"content": text},
                                         "finish_reason": None}]))
    yield sse(None, dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    yield sse(None, dict(base, choices=[], usage={"prompt_tokens": 10, "completion_tokens": 20,
                                                  "total_tokens": 30}))
    yield sse(None, "[DONE]")


def responses_json(model, text, status="completed"):
    return {"id": "resp_stub01", "object": "response", "created_at": int(time.time()),
            "status": status, "model": model, "error": None, "incomplete_details": None,
            "output": [] if status != "completed" else [{
                "type": "message", "id": "msg_stub01", "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}]}],
            "usage": {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": 30},
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": []}


def responses_sse(model, text):
    seq = iter(range(1000))
    item = {"type": "message", "id": "msg_stub01", "status": "in_progress", "role": "assistant",
            "content": []}
    part = {"type": "output_text", "text": "", "annotations": []}
    ids = {"item_id": "msg_stub01", "output_index": 0}
    yield sse("response.created", {"type": "response.created", "sequence_number": next(seq),
                                   "response": responses_json(model, text, "in_progress")})
    yield sse("response.in_progress", {"type": "response.in_progress",
                                       "sequence_number": next(seq),
                                       "response": responses_json(model, text, "in_progress")})
    yield sse("response.output_item.added", {"type": "response.output_item.added",
                                             "sequence_number": next(seq), "output_index": 0,
                                             "item": item})
    yield sse("response.content_part.added", dict(ids, type="response.content_part.added",
                                                  sequence_number=next(seq), content_index=0,
                                                  part=part))
    yield sse("response.output_text.delta", dict(ids, type="response.output_text.delta",
                                                 sequence_number=next(seq), content_index=0,
                                                 delta=text))
    yield sse("response.output_text.done", dict(ids, type="response.output_text.done",
                                                sequence_number=next(seq), content_index=0,
                                                text=text))
    yield sse("response.content_part.done", dict(ids, type="response.content_part.done",
                                                 sequence_number=next(seq), content_index=0,
                                                 part=dict(part, text=text)))
    done_item = dict(item, status="completed",
                     content=[{"type": "output_text", "text": text, "annotations": []}])
    yield sse("response.output_item.done", {"type": "response.output_item.done",
                                            "sequence_number": next(seq), "output_index": 0,
                                            "item": done_item})
    yield sse("response.completed", {"type": "response.completed",
                                     "sequence_number": next(seq),
                                     "response": responses_json(model, text)})


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    cfg = None
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def _handle(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        stream = isinstance(body, dict) and body.get("stream") is True
        model = (body.get("model") if isinstance(body, dict) else None) or "upstream-model"
        with self.lock, open(self.cfg.log, "a") as f:
            f.write(json.dumps({"t": time.time(), "method": self.command, "path": self.path,
                                "body_size": len(raw), "stream": stream}) + "\n")
        kind = api_kind(self.path)
        if self.command == "GET":
            data = {"object": "list", "data": [{"id": model, "object": "model", "created": 0,
                                                "owned_by": "upstream"}]}
            return self._send(200, "application/json", json.dumps(data).encode())
        if not stream:
            reply = {"anthropic": anthropic_json, "chat": chat_json,
                     "responses": responses_json}[kind](model, self.cfg.text)
            return self._send(200, "application/json", json.dumps(reply).encode())
        events = {"anthropic": anthropic_sse, "chat": chat_sse,
                  "responses": responses_sse}[kind](model, self.cfg.text)
        data = b"".join(events)
        self._send(200, "text/event-stream", data)

    def _send(self, status, content_type, data):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    do_GET = do_POST = _handle


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--text", default="UPSTREAM-OK")
    parser.add_argument("--log", required=True)
    parser.add_argument("--port-file", required=True)
    Handler.cfg = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with open(Handler.cfg.port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(Handler.cfg.port_file + ".tmp", Handler.cfg.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
