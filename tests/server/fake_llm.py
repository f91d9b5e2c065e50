"""A fake OpenAI-compatible model server on 127.0.0.1 for the LiteLLM tests: POST
``/NAME/v1/chat/completions`` answers a valid chat completion saying ``answered by NAME`` with
fixed token usage; ``NAME`` ``ratelimited`` answers 429, ``broken`` 500, and ``hung`` waits until
the server closes."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROMPT_TOKENS = 11
COMPLETION_TOKENS = 7
_FAILURES = {"ratelimited": (429, "rate_limit_exceeded"), "broken": (500, "server_error")}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
        name = self.path.strip("/").split("/")[0]
        self.server.seen.append(name)
        if name == "hung":
            self.server.closing.wait()
            return
        if name in _FAILURES:
            status, kind = _FAILURES[name]
            self._send(status, {"error": {"message": f"fake {kind}", "type": kind}})
            return
        self._send(
            200,
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": body.get("model", name),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": f"answered by {name}"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": PROMPT_TOKENS,
                    "completion_tokens": COMPLETION_TOKENS,
                    "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
                },
            },
        )

    def _send(self, status: int, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests read ``seen`` instead."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[str] = []
        self.closing = threading.Event()


@contextmanager
def fake_llm() -> Iterator[tuple[str, list[str]]]:
    """Serve the fake model server; yields its base URL and the list of names it was asked."""
    server = _Server()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.seen
    finally:
        server.closing.set()
        server.shutdown()
        server.server_close()
        thread.join(30.0)
