"""Closing the gateway when the Azure Functions Python worker is stopped.

The Python worker offers no shutdown hook (worker extensions get function-load
and invocation hooks only), and it does not declare the capability for which
the host would send it `WorkerTerminate`: a worker the host disposes of is
killed (`Process.Kill`, SIGKILL), which nothing can handle. What can reach
the worker when its instance is stopped is SIGTERM. So `close_on_termination`, called while the worker's event loop
imports `function_app`, adds a SIGTERM handler to that loop: it runs `close`
(which writes the queued usage records) within a grace period, then lets
SIGTERM take its default course, so the worker still exits as the host
expects. Records that cannot be written in time are logged in full by `close`.
A SIGTERM repeated meanwhile does not cut the writing short.

With HTTP streams the worker then starts its own uvicorn on the same loop,
which replaces the process's Python-level SIGTERM handler with its own
(`uvicorn.Server.capture_signals`, through `signal.signal`). The loop's
handler still runs: asyncio learns of signals from the wakeup fd it set
(`signal.set_wakeup_fd`), which uvicorn leaves alone, so both run, and the
records are written at once, not after uvicorn's graceful shutdown (which
waits for every response in flight, a long stream too). A handler installed
with `signal.signal` would not run until then. tests/test_worker_shutdown.py
starts the worker's uvicorn the way the worker does and holds that to it.

The local host (uvicorn) needs none of this: its lifespan closes the gateway.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)
#: The closing task: referenced so it cannot be garbage-collected while it runs, and found by a second SIGTERM.
_closing: set[asyncio.Task[None]] = set()


def close_on_termination(close: Callable[[float], Awaitable[None]], grace_seconds: float) -> bool:
    """On SIGTERM, await `close(grace_seconds)`, then terminate; True when the
    handler was installed (only on an event loop running in the main thread)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return False
    if threading.current_thread() is not threading.main_thread():
        return False

    def terminate() -> None:
        if _closing:
            logger.info("SIGTERM again: the queued usage records are still being written")
            return
        logger.info("SIGTERM: writing queued usage records (at most %.0f s) before the worker exits", grace_seconds)
        task = loop.create_task(_close_then_exit(close, grace_seconds))
        _closing.add(task)

    loop.add_signal_handler(signal.SIGTERM, terminate)
    return True


async def _close_then_exit(close: Callable[[float], Awaitable[None]], grace_seconds: float) -> None:
    try:
        await close(grace_seconds)
    except Exception:
        logger.exception("closing the gateway at SIGTERM failed")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
