"""The usage queue is written when the Functions worker is stopped (SIGTERM)."""

import json
import signal
import subprocess
import sys
import textwrap

from tests.support import PROJECT_DIR

#: Imports function_app the way the Python worker indexes it (in a task on the event loop of its main
#: thread), queues usage records behind a slow store, and waits for SIGTERM like the worker's dispatch loop.
WORKER = textwrap.dedent("""
    import asyncio, os, signal, sys

    class SlowStore:
        def __init__(self, store):
            self.store, self.description = store, store.description

        async def write(self, records):
            await asyncio.sleep(0.3)
            await self.store.write(records)

    async def worker():
        import function_app
        from shared.service import gateway
        gateway.recorder.store = SlowStore(gateway.recorder.store)
        gateway.recorder.batch_size = 1
        for number in range(3):
            gateway.recorder.record({"id": f"r{number}", "project": "p"})
        print("queued", flush=True)
        await asyncio.Event().wait()

    asyncio.run(worker())
""")


def test_sigterm_writes_the_queued_usage_records_before_the_worker_exits(tmp_path):
    usage = tmp_path / "usage.jsonl"
    env = {"USAGE_FILE": str(usage), "MODELS_FILE": str(tmp_path / "models.json"), "PATH": "/usr/bin:/bin"}
    worker = subprocess.Popen([sys.executable, "-c", WORKER], cwd=PROJECT_DIR, env=env, stdout=subprocess.PIPE)
    assert worker.stdout.readline() == b"queued\n"
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == -signal.SIGTERM  # it still ends the way SIGTERM ends a process
    assert [json.loads(line)["id"] for line in usage.read_text().splitlines()] == ["r0", "r1", "r2"]
