"""A local webhook for on-call tests: an HTTP server on 127.0.0.1 that records every POSTed JSON
body, its path and content type."""

from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer


@dataclass
class Webhook:
    url: str  # http://127.0.0.1:<port>, no path: the sender picks it
    posts: list = field(default_factory=list)  # (path, content type, JSON body), in arrival order

    @property
    def bodies(self) -> list:
        return [body for _, _, body in self.posts]


@contextlib.contextmanager
def webhook_server():
    hook = Webhook(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            hook.posts.append((self.path, self.headers["Content-Type"], json.loads(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    hook.url = f"http://127.0.0.1:{srv.server_port}"
    try:
        yield hook
    finally:
        srv.shutdown()
        srv.server_close()
