"""A loopback OpenAI-style chat endpoint that misbehaves on cue, for testing judges' failure handling.

Each request to `/v1/chat/completions` takes the next behaviour of a scripted sequence (then "ok"):

- "ok": a chat completion whose content is `reply(messages)`;
- "429" / "500" / "503": that status with an OpenAI-style JSON error body ("429" sends Retry-After: 0);
- "400": a client error (not retried);
- "slow": waits `slow_seconds` (beyond the client's timeout), then answers "ok" to nobody;
- "malformed": 200 with a JSON content type and a body that is not JSON;
- "wrong_shape": 200 with JSON that is not a chat completion;
- "close": reads the request and closes the connection without answering.

Everything is bounded: the script is finite, "slow" sleeps a fixed time, the server binds 127.0.0.1
on a free port and `stop()` (or leaving the `with` block) shuts it down.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BEHAVIOURS = ("ok", "429", "500", "503", "400", "slow", "malformed", "wrong_shape", "close")


def perfect_unless_wrong(messages: list[dict[str, str]]) -> str:
    """Default judge reply: "perfect" unless the judged response contains the word "wrong"."""
    user = messages[-1]["content"]
    response = user.rsplit("### Response:", 1)[-1]
    return "The response is wrong: it states a falsehood." if "wrong" in response else "perfect"


class FaultServer:
    """Serve `script` (behaviour names, consumed in request order) on http://127.0.0.1:PORT/v1."""

    def __init__(self, script: Iterable[str] = (), *, reply: Callable[[list[dict[str, str]]], str] = perfect_unless_wrong,
                 slow_seconds: float = 1.0, model: str = "fault-judge") -> None:
        self.script = list(script)
        unknown = sorted(set(self.script) - set(BEHAVIOURS))
        if unknown:
            raise ValueError(f"unknown behaviours {unknown}; choose from {BEHAVIOURS}")
        self.reply, self.slow_seconds, self.model = reply, slow_seconds, model
        self.log: list[str] = []  # behaviour served to each request, in order
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fault-server", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def next_behaviour(self) -> str:
        with self._lock:
            behaviour = self.script.pop(0) if self.script else "ok"
            self.log.append(behaviour)
            return behaviour

    def completion(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{len(self.log)}", "object": "chat.completion", "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": self.reply(messages)}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    def start(self) -> FaultServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
                body = {"error": {"message": message, "type": "fault_injection", "code": status}}
                self._send(status, json.dumps(body).encode(), headers)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._error(404, f"no route {self.path}")
                    return
                behaviour = server.next_behaviour()
                try:
                    self._serve(behaviour, request)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): fine
                    self.close_connection = True

            def _serve(self, behaviour: str, request: dict[str, Any]) -> None:
                if behaviour == "close":
                    self.close_connection = True
                    return
                if behaviour in ("429", "500", "503", "400"):
                    headers = {"Retry-After": "0"} if behaviour == "429" else None
                    self._error(int(behaviour), f"injected {behaviour}", headers)
                    return
                if behaviour == "malformed":
                    self._send(200, b'{"id": "chatcmpl-x", "choices": [')
                    return
                if behaviour == "wrong_shape":
                    self._send(200, b'{"result": "not a chat completion"}')
                    return
                if behaviour == "slow":
                    time.sleep(server.slow_seconds)
                self._send(200, json.dumps(server.completion(request.get("messages") or [])).encode())

        return Handler
