"""Serve an ASGI app on a real loopback socket from a background thread."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn

#: Azure's load balancers close idle connections after 4 minutes.
KEEP_ALIVE_SECONDS = 240


@dataclass
class RecordedRequest:
    """One request a fake server received, as it arrived on the wire."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    json: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerThread:
    """Run `app` with uvicorn on 127.0.0.1 in a daemon thread.

    Pass `ssl_certfile`/`ssl_keyfile` to serve HTTPS. Idle keep-alive
    connections stay open for KEEP_ALIVE_SECONDS, as long as Azure's and
    Google's front ends keep them (uvicorn's own default is 5 s, which a client
    pool can race when a test pauses for about that long).
    """

    def __init__(self, app: Any, port: int | None = None, **uvicorn_options: Any) -> None:
        self.port = port or free_port()
        scheme = "https" if uvicorn_options.get("ssl_certfile") else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            **({"timeout_keep_alive": KEEP_ALIVE_SECONDS, "lifespan": "off"} | uvicorn_options),
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self._server.serve())

    def start(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"fake server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


async def record(request: Any) -> RecordedRequest:
    """Capture a Starlette request (body read once) for a fake's request log."""
    body = await request.body()
    parsed = None
    if body and request.headers.get("content-type", "").startswith("application/json"):
        parsed = json.loads(body)
    return RecordedRequest(
        method=request.method,
        path=request.url.path,
        query=dict(request.query_params),
        headers={k.lower(): v for k, v in request.headers.items()},
        body=body,
        json=parsed,
    )
