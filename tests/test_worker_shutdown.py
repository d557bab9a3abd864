"""The usage queue is written when the Functions worker is stopped (SIGTERM), HTTP streams' uvicorn running or not."""

import json
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.support import PROJECT_DIR

#: Imports function_app the way the Python worker indexes it (in a task on the event loop of its main
#: thread), then, with HTTP streams, starts the worker's web server as azure_functions_worker/http_v2.py's
#: `initialize_http_server` does: the extension's WebApp with one catch-all route, its WebServer
#: (`uvicorn.Server(...).serve()`, which installs uvicorn's own SIGTERM handler) as a task on the same
#: loop. A request is left in flight, as a stream would be (uvicorn's graceful shutdown waits for it).
#: Then it queues usage records behind a slow store and waits like the worker's dispatch loop.
WORKER = textwrap.dedent("""
    import asyncio, logging, os, signal, socket, sys

    class SlowStore:
        def __init__(self, store):
            self.store, self.description = store, store.description

        async def write(self, records):
            print("writing", *[record["id"] for record in records], flush=True)
            await asyncio.sleep(0.3)
            await self.store.write(records)

    async def start_http_streams():
        from azurefunctions.extensions.http.fastapi import Request, WebApp, WebServer

        app = WebApp()

        @app.route
        async def catch_all(request: Request):
            await asyncio.Event().wait()  # the worker's awaits the invocation's response

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        asyncio.get_event_loop().create_task(WebServer("127.0.0.1", port, app).serve())
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                await asyncio.sleep(0.05)
        writer.write(b"GET /api/chat HTTP/1.1\\r\\nHost: worker\\r\\n\\r\\n")
        await writer.drain()
        return writer

    async def worker(http_streams):
        import function_app
        gateway = function_app.app.service.gateway
        in_flight = await start_http_streams() if http_streams else None
        gateway.recorder.store = SlowStore(gateway.recorder.store)
        gateway.recorder.batch_size = 1
        for number in range(3):
            gateway.recorder.record({"id": f"r{number}", "project": "p"})
        print("queued", flush=True)
        await asyncio.Event().wait()

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stdout)
    asyncio.run(worker(sys.argv[1] == "http-streams"))
""")


def _read_until(worker: subprocess.Popen, start: bytes, timeout: float = 30) -> None:
    """Read the worker's output (unbuffered) until a line starting with `start`, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        ready, _, _ = select.select([worker.stdout], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no line starting with {start!r} within {timeout} s"
        line = worker.stdout.readline()
        assert line, "the worker ended first"
        if line.startswith(start):
            return


@pytest.mark.parametrize("sigterms", [1, 2])
@pytest.mark.parametrize("server", ["no-http-streams", "http-streams"])
def test_sigterm_writes_the_queued_usage_records_before_the_worker_exits(tmp_path, server, sigterms):
    usage = tmp_path / "usage.jsonl"
    env = {"USAGE_FILE": str(usage), "MODELS_FILE": str(tmp_path / "models.json"), "PATH": "/usr/bin:/bin"}
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, server],
        cwd=PROJECT_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        bufsize=0,
    )
    try:
        _read_until(worker, b"queued")
        worker.send_signal(signal.SIGTERM)
        if sigterms == 2:  # once the first has been handled, a second SIGTERM must not cut the writing short
            _read_until(worker, b"shared.lifecycle: SIGTERM: writing queued usage records")
            _read_until(worker, b"writing ")  # printed by a later loop callback than the SIGTERM handler
            worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == -signal.SIGTERM  # it still ends the way SIGTERM ends a process
    finally:
        worker.kill()
        worker.wait()
    assert [json.loads(line)["id"] for line in usage.read_text().splitlines()] == ["r0", "r1", "r2"]
