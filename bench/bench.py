"""Latency and throughput of chat completions: through the gateway vs direct.

Starts the fake Azure OpenAI upstream and the gateway (local host) as separate
processes, then drives both with the same non-streaming chat request at
concurrency 1 and 32 and prints p50/p99 latency, requests per second and the
gateway's overhead (gateway minus direct).

    make bench            # or: .venv/bin/python bench/bench.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.upstream import BENCH_KEY  # noqa: E402
from tests.fakes.server import free_port  # noqa: E402
from tests.support import PROJECT_DIR, GatewayProcess, wait_for, write_catalog  # noqa: E402

API_VERSION = "2024-10-21"
BODY = {"model": "bench", "messages": [{"role": "user", "content": "benchmark this request please"}]}


async def _one(session: aiohttp.ClientSession, url: str, headers: dict[str, str], body: bytes) -> float:
    started = time.perf_counter()
    async with session.post(url, data=body, headers=headers) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}: {await response.text()}")
    return time.perf_counter() - started


async def measure(url: str, headers: dict[str, str], concurrency: int, total: int) -> dict[str, float]:
    body = json.dumps(BODY).encode()
    headers = {"content-type": "application/json"} | headers
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(min(50, total)):
            await _one(session, url, headers, body)
        latencies: list[float] = []
        remaining = iter(range(total))

        async def worker() -> None:
            for _ in remaining:
                latencies.append(await _one(session, url, headers, body))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "rps": total / elapsed,
    }


def start_upstream(port: int, *options: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.upstream", "--port", str(port), *options], cwd=PROJECT_DIR
    )
    import socket

    def accepting() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    wait_for(accepting, "the fake upstream", process)
    return process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per run")
    options = parser.parse_args()

    upstream_port = free_port()
    upstream = start_upstream(upstream_port)
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    catalog = write_catalog(workdir / "models.json", [{
        "id": "bench", "name": "bench", "provider": "Azure", "model_type": "AzureOpenAI",
        "code": "bench", "operations": ["ChatCompletion"],
        "parameters": {"endpoint": f"http://127.0.0.1:{upstream_port}", "api_version": API_VERSION,
                       "api_key": "$BENCH_UPSTREAM_KEY"},
    }])  # fmt: skip
    gateway = GatewayProcess(
        {"ALLOW_ANONYMOUS": "true", "MODELS_FILE": str(catalog), "BENCH_UPSTREAM_KEY": BENCH_KEY},
        workdir / "gateway.log",
    ).start()
    targets = {
        "direct": (
            f"http://127.0.0.1:{upstream_port}/openai/deployments/bench/chat/completions"
            f"?api-version={API_VERSION}",
            {"api-key": BENCH_KEY},
        ),
        "gateway": (f"{gateway.url}/v1/chat/completions", {}),
    }
    try:
        print(f"{'target':<8} {'conc':>4} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}")
        for concurrency in (1, 32):
            results = {}
            for name, (url, headers) in targets.items():
                results[name] = asyncio.run(measure(url, headers, concurrency, options.requests))
                r = results[name]
                print(f"{name:<8} {concurrency:>4} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['rps']:>8.0f}")
            overhead = results["gateway"]["p50_ms"] - results["direct"]["p50_ms"]
            print(f"overhead at concurrency {concurrency}: {overhead:+.2f} ms p50")
    finally:
        gateway.stop()
        upstream.terminate()
        upstream.wait()


if __name__ == "__main__":
    main()
