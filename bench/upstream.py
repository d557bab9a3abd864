"""Run the fake Azure OpenAI server in its own process, for benchmarks.

    python -m bench.upstream --port 8100 [--rate-limited 0.01] [--failing 0.02]
"""

import argparse

import uvicorn

from tests.fakes.azure_openai import FakeAzureOpenAI

BENCH_KEY = "bench-upstream-key"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate-limited", type=float, default=0.0, help="share of requests answered 429")
    parser.add_argument("--failing", type=float, default=0.0, help="share of requests answered 500")
    options = parser.parse_args()
    fake = FakeAzureOpenAI(keys={"bench": BENCH_KEY})
    fake.fault_rates["bench"] = (options.rate_limited, options.failing)
    uvicorn.run(fake.app, host="127.0.0.1", port=options.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
