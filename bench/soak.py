"""Soak: a one-deployment model whose upstream fails now and then, for minutes.

Starts the fake Azure OpenAI upstream (answering 1 % of requests 429 and 2 %
500 by default) and the gateway as separate processes on 127.0.0.1, drives
one model with a single deployment at a fixed concurrency for a bounded time,
and counts the answers: 200s, the provider's 429s passed on, local 429s (the
gateway refusing on its own), 502s and anything else.

    .venv/bin/python bench/soak.py [--seconds 300] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.upstream import BENCH_KEY
from tests.fakes.server import free_port
from tests.support import GatewayProcess, start_fake_upstream, write_catalog

API_VERSION = "2024-10-21"
BODY = {"model": "bench", "messages": [{"role": "user", "content": "soak this request please"}]}

#: Words of the fake upstream's own 429 message: a 429 without them was made up by the gateway.
UPSTREAM_429_MARK = "exceeded token rate limit"


async def drive(url: str, seconds: float, concurrency: int) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    deadline = time.monotonic() + seconds
    body = json.dumps(BODY).encode()

    async def worker(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline:
            async with session.post(url, data=body, headers={"content-type": "application/json"}) as response:
                text = await response.text()
                if response.status == 429:
                    counts["429 from the provider" if UPSTREAM_429_MARK in text else "429 local"] += 1
                else:
                    counts[str(response.status)] += 1

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate-limited", type=float, default=0.01)
    parser.add_argument("--failing", type=float, default=0.02)
    options = parser.parse_args()
    upstream_port = free_port()
    upstream = start_fake_upstream(
        upstream_port, "--rate-limited", str(options.rate_limited), "--failing", str(options.failing)
    )
    with tempfile.TemporaryDirectory() as directory:
        catalog = write_catalog(
            Path(directory) / "models.json",
            [
                {
                    "id": "bench",
                    "name": "Bench",
                    "provider": "Azure",
                    "model_type": "AzureOpenAI",
                    "code": "bench",
                    "parameters": {
                        "endpoint": f"http://127.0.0.1:{upstream_port}",
                        "api_version": API_VERSION,
                        "api_key": "$BENCH_KEY",
                    },
                    "operations": ["ChatCompletion"],
                }
            ],
        )
        env = {"ALLOW_ANONYMOUS": "true", "MODELS_FILE": str(catalog), "BENCH_KEY": BENCH_KEY}
        gateway = GatewayProcess(env, Path(directory) / "gateway.log").start()
        gateway.wait_until_answering("bench")
        try:
            started = time.monotonic()
            counts = asyncio.run(drive(f"{gateway.url}/v1/chat/completions", options.seconds, options.concurrency))
            elapsed = time.monotonic() - started
        finally:
            gateway.stop()
            upstream.terminate()
            upstream.wait()
    total = sum(counts.values())
    print(f"{total} requests in {elapsed:.0f} s ({total / elapsed:.0f}/s), concurrency {options.concurrency}")
    for outcome, count in sorted(counts.items()):
        print(f"  {outcome:>24}: {count:6d} ({100 * count / total:.2f} %)")


if __name__ == "__main__":
    main()
