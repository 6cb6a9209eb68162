"""A loopback server speaking OpenAI chat-completions, for the judge tests (127.0.0.1 only)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable
from contextlib import contextmanager

# request payload -> reply text, or (status, body), or (status, body, extra response headers)
Reply = Callable[[dict], "str | tuple[int, dict] | tuple[int, dict, dict]"]


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length", 0))
        payload = json.loads(self.rfile.read(length))
        server = self.server
        server.requests.append(payload)
        server.paths.append(self.path)
        server.headers.append({k.lower(): v for k, v in self.headers.items()})
        result = server.reply(payload)
        extra = {"Retry-After": "0"} if isinstance(result, tuple) and result[0] == 429 else {}
        if isinstance(result, tuple):
            status, body = result[:2]
            extra = result[2] if len(result) > 2 else extra
        else:
            status = 200
            body = {
                "id": f"cmpl-{len(server.requests)}",
                "object": "chat.completion",
                "model": server.reported_model,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": result}, "finish_reason": "stop"}
                ],
            }
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)


def prompt_text(payload: dict) -> str:
    return "".join(p.get("text", "") for p in payload["messages"][0]["content"] if p["type"] == "text")


def image_count(payload: dict) -> int:
    return sum(p["type"] == "image_url" for p in payload["messages"][0]["content"])


@contextmanager
def chat_server(reply: Reply, reported_model: str = "judge-model-2025-01-01"):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.requests, httpd.paths, httpd.headers = [], [], []
    httpd.reply = reply
    httpd.reported_model = reported_model
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()
