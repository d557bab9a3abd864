"""Run the fake providers in their own process, for benchmarks.

    python -m bench.upstream --azure-port 8100 [--vertex-port 8101 --oauth-port 8102]

The fake Azure OpenAI answers deployment `bench` with key `BENCH_KEY`; the
fake Vertex AI (with its Google OAuth token endpoint) answers Gemini calls.
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


async def serve(azure_port: int, vertex_port: int | None, oauth_port: int | None) -> None:
    servers = [_server(FakeAzureOpenAI(keys={"bench": BENCH_KEY}).app, azure_port)]
    if vertex_port and oauth_port:
        oauth = FakeGoogleOAuth()
        servers += [_server(oauth, oauth_port), _server(FakeVertexAI(oauth), vertex_port)]
    await asyncio.gather(*(server.serve() for server in servers))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--azure-port", type=int, required=True)
    parser.add_argument("--vertex-port", type=int)
    parser.add_argument("--oauth-port", type=int)
    options = parser.parse_args()
    asyncio.run(serve(options.azure_port, options.vertex_port, options.oauth_port))


if __name__ == "__main__":
    main()
