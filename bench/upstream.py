"""Run the fake providers in their own process, for benchmarks.

    python -m bench.upstream --azure-port 8100 [--vertex-port 8101 --oauth-port 8102]
                             [--rate-limited 0.01 --failing 0.02]

The fake Azure OpenAI answers deployment `bench` with key `BENCH_KEY` (a share
of its answers 429 or 500 when asked to); the fake Vertex AI (with its Google
OAuth token endpoint) answers Gemini calls.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import uvicorn

from tests.fakes.azure_openai import FakeAzureOpenAI
from tests.fakes.google_oauth import FakeGoogleOAuth
from tests.fakes.vertex import FakeVertexAI

BENCH_KEY = "bench-upstream-key"


def _server(app: Any, port: int) -> uvicorn.Server:
    # Real providers keep idle connections open for minutes; uvicorn's 5-s default would race
    # the gateway's connection pool between loads.
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=300
    )
    return uvicorn.Server(config)


async def serve(
    azure_port: int, vertex_port: int | None, oauth_port: int | None, fault_rates: tuple[float, float] = (0.0, 0.0)
) -> None:
    azure = FakeAzureOpenAI(keys={"bench": BENCH_KEY})
    azure.fault_rates["bench"] = fault_rates
    servers = [_server(azure.app, azure_port)]
    if vertex_port and oauth_port:
        oauth = FakeGoogleOAuth()
        servers += [_server(oauth, oauth_port), _server(FakeVertexAI(oauth), vertex_port)]
    await asyncio.gather(*(server.serve() for server in servers))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--azure-port", type=int, required=True)
    parser.add_argument("--vertex-port", type=int)
    parser.add_argument("--oauth-port", type=int)
    parser.add_argument("--rate-limited", type=float, default=0.0, help="share of Azure answers that are 429")
    parser.add_argument("--failing", type=float, default=0.0, help="share of Azure answers that are 500")
    options = parser.parse_args()
    fault_rates = (options.rate_limited, options.failing)
    asyncio.run(serve(options.azure_port, options.vertex_port, options.oauth_port, fault_rates))


if __name__ == "__main__":
    main()
