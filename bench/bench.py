"""What the gateway costs, next to the upstream called directly and LiteLLM's proxy server.

Starts the fake providers (Azure OpenAI; Vertex AI with its OAuth endpoint) in
one process, the gateway (local host) in another and, when it is installed
(`make bench` tries), LiteLLM's proxy server in a third, all pointed at the
same fake deployment. For each target it measures, in one table:

- `chat`: non-streaming chat completions at concurrency 1 and 32;
- `sse`: 21-chunk streamed chat completions at concurrency 1 and 32;
- `embed`: embeddings of one 17-word input, 1536 dimensions in base64 (what
  the openai SDK asks for), at concurrency 1 and 32;

with p50/p99 latency, requests per second, the target's CPU time per request
and its RSS after the load. Then, for the gateway and the proxy, round two of
the same loads (RSS growth), the CPU per relayed chunk (121-chunk streams
against 21-chunk ones, at concurrency 1), and the cold start: process start
to the first 200 on an Azure model and, for the gateway, on a Vertex model.
A second gateway with telemetry on, every call traced and exported to a local
stand-in for Application Insights' ingestion endpoint, shows what telemetry
costs (the `gateway+otel` rows); then both, running side by side, take turns
at chat and streams at concurrency 32, twice (the `telemetry off`/`on` rows),
for the CPU and throughput telemetry adds, and the stand-in counts the calls
that arrived traced. Then the translated path, through the fake
Vertex AI: a fresh gateway per model (`gateway/gemini`, Gemini 2.0 Flash;
`gateway/claude`, Claude on Vertex) answers plain and 21-chunk streamed chat
completions at concurrency 1 and 32, with its CPU per call and per chunk and
its RSS after its first call; and the cold start to a first Claude answer.
Then budgets and rate limits: one gateway serves, turn about, a project
without limits (`gateway/plain`) and one with a budget and both rate limits
(`gateway/limits`, never reached), chat at concurrency 1 and 32 and streams at
32, for the CPU and latency the limits add.

    make bench     # or: .venv/bin/python bench/bench.py [--requests 1000] [--proxy PATH]
                   #     [--only vertex|telemetry|limits]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.upstream import BENCH_KEY
from tests.fakes.app_insights import FakeIngestion
from tests.fakes.google_oauth import make_service_account
from tests.fakes.server import ServerThread, free_port
from tests.support import PROJECT_DIR, GatewayProcess, accepting, key_document, wait_for, write_catalog

API_VERSION = "2024-10-21"
#: The proxy refuses to start without a master key; callers present it as their key.
PROXY_MASTER_KEY = "sk-bench-0f6d2c9a4e8b1735"
DEFAULT_PROXY = PROJECT_DIR / ".venv" / "litellm-proxy" / "bin" / "litellm"
#: The fake answers "echo: " and the user's words, one chunk a word, plus the
#: prompt-filter, role and finish chunks: 17 words make a 21-chunk stream.
SHORT_PROMPT = " ".join(f"word{index}" for index in range(17))
LONG_PROMPT = " ".join(f"word{index}" for index in range(117))
CHUNKS = {SHORT_PROMPT: 21, LONG_PROMPT: 121}
PROXY_AUTH = {"authorization": f"Bearer {PROXY_MASTER_KEY}"}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass(frozen=True)
class Target:
    name: str
    #: The URL per operation: `chat` (chat completions) and `embeddings`.
    urls: dict[str, str]
    headers: dict[str, str]
    model: str
    pid: int | None  # None: not measured (the fake upstream shares its process)


@dataclass(frozen=True)
class Load:
    name: str
    concurrency: int
    stream: bool
    prompt: str = SHORT_PROMPT
    operation: str = "chat"


LOADS = (
    Load("chat", 1, False),
    Load("chat", 32, False),
    Load("sse", 1, True),
    Load("sse", 32, True),
    Load("embed", 1, False, operation="embeddings"),
    Load("embed", 32, False, operation="embeddings"),
)
#: What the Vertex models answer (chat completions only).
VERTEX_LOADS = tuple(load for load in LOADS if load.operation == "chat")
#: The translated models: the gateway's target name and the catalog id.
VERTEX_MODELS = (("gateway/gemini", "bench-gemini"), ("gateway/claude", "bench-claude"))
EMBEDDING_DIMENSIONS = 1536
#: The loads telemetry's cost is judged by, each run with it off and on in turn, twice.
TELEMETRY_LOADS = (Load("chat", 32, False), Load("sse", 32, True))
TELEMETRY_ROUNDS = 2
#: The loads the limits' cost is judged by, and the keys of a project without limits and of one with them.
LIMITS_LOADS = (Load("chat", 1, False), Load("chat", 32, False), Load("sse", 32, True))
PLAIN_KEY, LIMITED_KEY = "sk-gw-bench-plain-0001", "sk-gw-bench-limited-0002"
#: A budget and rate limits the bench never reaches: every call is admitted and settled.
BENCH_LIMITS = {"budget_usd": 1e9, "requests_per_minute": 10**9, "tokens_per_minute": 10**12}
#: The request spans of the calls the loads make (GET /health, polled at start-up, is traced too).
LOAD_ROUTES = ("POST /v1/chat/completions", "POST /v1/embeddings")


def openai_urls(base: str) -> dict[str, str]:
    """The operations' URLs on an OpenAI-compatible server (the gateway, LiteLLM's proxy)."""
    return {"chat": f"{base}/v1/chat/completions", "embeddings": f"{base}/v1/embeddings"}


# Process figures from /proc: the whole tree, since a server may fork workers.


def _tree(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending += parents.get(current, [])
    return found


def cpu_seconds(pid: int) -> float:
    total = 0
    for member in _tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    pages = 0
    for member in _tree(pid):
        try:
            pages += int(Path(f"/proc/{member}/statm").read_text().split()[1])
        except OSError:
            continue
    return pages * PAGE_KB / 1024


# Load generation.


def _body(target: Target, load: Load) -> bytes:
    body: dict[str, object] = {"model": target.model}
    if load.operation == "embeddings":
        body |= {"input": load.prompt, "dimensions": EMBEDDING_DIMENSIONS, "encoding_format": "base64"}
    else:
        body["messages"] = [{"role": "user", "content": load.prompt}]
    if load.stream:
        body["stream"] = True
    return json.dumps(body).encode()


async def _one(session: aiohttp.ClientSession, target: Target, url: str, body: bytes, stream: bool) -> float:
    started = time.perf_counter()
    headers = {"content-type": "application/json"} | target.headers
    async with session.post(url, data=body, headers=headers) as response:
        payload = await response.read()
        if response.status != 200:
            raise RuntimeError(f"{target.name} answered {response.status}: {payload[:300]!r}")
    if stream and not payload.rstrip().endswith(b"data: [DONE]"):
        raise RuntimeError(f"{target.name} ended a stream without [DONE]: {payload[-300:]!r}")
    return time.perf_counter() - started


@dataclass(frozen=True)
class Figures:
    p50_ms: float
    p99_ms: float
    rps: float
    cpu_ms: float | None
    rss_mb: float | None


async def _drive(target: Target, load: Load, total: int) -> Figures:
    body, url = _body(target, load), target.urls[load.operation]
    connector = aiohttp.TCPConnector(limit=load.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(min(50, total)):
            await _one(session, target, url, body, load.stream)
        latencies: list[float] = []
        remaining = iter(range(total))

        async def worker() -> None:
            for _ in remaining:
                latencies.append(await _one(session, target, url, body, load.stream))

        cpu_before = cpu_seconds(target.pid) if target.pid else None
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(load.concurrency)))
        elapsed = time.perf_counter() - started
        cpu_after = cpu_seconds(target.pid) if target.pid else None
    latencies.sort()
    cpu_ms = None if cpu_before is None or cpu_after is None else (cpu_after - cpu_before) * 1000 / total
    return Figures(
        p50_ms=statistics.median(latencies) * 1000,
        p99_ms=latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000,
        rps=total / elapsed,
        cpu_ms=cpu_ms,
        rss_mb=rss_mb(target.pid) if target.pid else None,
    )


def measure(target: Target, load: Load, total: int) -> Figures:
    return asyncio.run(_drive(target, load, total))


# Processes under test.


def _answers(url: str, headers: dict[str, str], body: bytes) -> Callable[[], bool]:
    def check() -> bool:
        request = urllib.request.Request(url, data=body, headers={"content-type": "application/json"} | headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    return check


@contextmanager
def running(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=PROJECT_DIR, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_local_host(gateway: GatewayProcess) -> subprocess.Popen[bytes]:
    """The gateway's process, started bare: no readiness wait, nothing logged."""
    command = [sys.executable, "-m", "shared.localhost", "--port", str(gateway.port)]
    return subprocess.Popen(
        command, cwd=PROJECT_DIR, env=gateway.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def time_to_first_answer(start: Callable[[], subprocess.Popen[bytes]], check: Callable[[], bool]) -> float:
    """Seconds from starting a fresh process to its first 200 answer (the process is stopped after)."""
    started = time.perf_counter()
    process = start()
    try:
        wait_for(check, "the cold-started server", process, timeout=120)
        return time.perf_counter() - started
    finally:
        process.terminate()
        process.wait()


@dataclass
class Setup:
    workdir: Path
    upstream_port: int
    vertex_port: int
    oauth_port: int

    @property
    def azure_url(self) -> str:
        return f"http://127.0.0.1:{self.upstream_port}"

    def catalog(self) -> Path:
        return write_catalog(self.workdir / "models.json", [
            {"id": "bench", "name": "bench", "provider": "Azure", "model_type": "AzureOpenAI", "code": "bench",
             "operations": ["ChatCompletion", "embeddings"],
             "parameters": {"endpoint": self.azure_url, "api_version": API_VERSION,
                            "api_key": "$BENCH_UPSTREAM_KEY"}},
            {"id": "bench-gemini", "name": "bench-gemini", "provider": "Google", "model_type": "GoogleVertex",
             "code": "gemini-2.0-flash", "operations": ["ChatCompletion"],
             "parameters": {"gcp_project": "bench", "location": "us-central1", "secret_name": "$BENCH_GOOGLE_SA",
                            "api_base": f"http://127.0.0.1:{self.vertex_port}"}},
            {"id": "bench-claude", "name": "bench-claude", "provider": "Google", "model_type": "GoogleVertexClaude",
             "code": "claude-3-5-sonnet-v2@20241022", "operations": ["ChatCompletion"],
             "parameters": {"gcp_project": "bench", "location": "us-east5", "secret_name": "$BENCH_GOOGLE_SA",
                            "api_base": f"http://127.0.0.1:{self.vertex_port}"}},
        ])  # fmt: skip

    def gateway_env(self) -> dict[str, str]:
        account = make_service_account(f"http://127.0.0.1:{self.oauth_port}/token", "bench@bench.iam", "bench")
        return {
            "ALLOW_ANONYMOUS": "true",
            "MODELS_FILE": str(self.catalog()),
            "BENCH_UPSTREAM_KEY": BENCH_KEY,
            "BENCH_GOOGLE_SA": json.dumps(account),
        }

    def proxy_config(self) -> Path:
        path = self.workdir / "litellm-proxy.yaml"
        path.write_text(
            "model_list:\n"
            "  - model_name: bench\n"
            "    litellm_params:\n"
            "      model: azure/bench\n"
            f"      api_base: {self.azure_url}\n"
            f'      api_version: "{API_VERSION}"\n'
            f"      api_key: {BENCH_KEY}\n",
            encoding="utf-8",
        )
        return path


def telemetry_env(ingestion_url: str) -> dict[str, str]:
    """Telemetry on, every call traced (the worst case), exported to `ingestion_url`."""
    return {
        "APPLICATIONINSIGHTS_CONNECTION_STRING": (
            f"InstrumentationKey={uuid.uuid4()};IngestionEndpoint={ingestion_url}/"
        ),
        "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
        "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
        "OTEL_TRACES_SAMPLER": "always_on",
    }


def _proxy_env() -> dict[str, str]:
    return os.environ | {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_OFFLINE_MODE": "true",
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
        "LITELLM_MASTER_KEY": PROXY_MASTER_KEY,
    }


def proxy_command(executable: Path, config: Path, port: int) -> list[str]:
    return [str(executable), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]


# The report.

ROW = "{:<17} {:<6} {:>4} {:>9} {:>9} {:>8} {:>11} {:>8}"


def _cell(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_row(target: str, load: str, concurrency: int | str, figures: Figures) -> None:
    print(ROW.format(
        target, load, concurrency, _cell(figures.p50_ms), _cell(figures.p99_ms), _cell(figures.rps, 0),
        _cell(figures.cpu_ms), _cell(figures.rss_mb, 0),
    ), flush=True)  # fmt: skip


def print_figure(target: str, what: str, value: str) -> None:
    print(f"{target:<17} {what:<40} {value}", flush=True)


def run_loads(target: Target, requests: int, loads: tuple[Load, ...] = LOADS) -> dict[tuple[str, int], Figures]:
    results = {}
    for load in loads:
        figures = measure(target, load, requests)
        results[(load.name, load.concurrency)] = figures
        print_row(target.name, load.name, load.concurrency, figures)
    return results


def chunk_cpu_ms(target: Target, requests: int) -> float:
    """The target's marginal CPU per relayed chunk: 121-chunk streams against 21-chunk ones."""
    short = measure(target, Load("sse", 1, True, SHORT_PROMPT), requests)
    long = measure(target, Load("sse", 1, True, LONG_PROMPT), requests)
    assert short.cpu_ms is not None and long.cpu_ms is not None
    return (long.cpu_ms - short.cpu_ms) / (CHUNKS[LONG_PROMPT] - CHUNKS[SHORT_PROMPT])


def server_rounds(target: Target, requests: int) -> tuple[dict[tuple[str, int], Figures], dict[str, str]]:
    """Both rounds of loads and the per-chunk CPU for a server; its summary figures."""
    first = run_loads(target, requests)
    rss_first = rss_mb(target.pid) if target.pid else 0.0
    per_chunk = chunk_cpu_ms(target, requests)
    run_loads(Target(f"{target.name} #2", target.urls, target.headers, target.model, target.pid), requests)
    rss_second = rss_mb(target.pid) if target.pid else 0.0
    return first, {
        "RSS after round 1 / round 2": f"{rss_first:.0f} MB / {rss_second:.0f} MB",
        "CPU per relayed chunk (marginal)": f"{per_chunk:.3f} ms",
    }


def vertex_rounds(gateway_env: dict[str, str], workdir: Path, requests: int) -> dict[str, dict[str, str]]:
    """Per translated model, a fresh gateway: its RSS after one call, its loads and its CPU per chunk."""
    summary: dict[str, dict[str, str]] = {}
    for name, model in VERTEX_MODELS:
        gateway = GatewayProcess(gateway_env, workdir / f"{name.replace('/', '-')}.log").start()
        try:
            rss_idle = rss_mb(gateway.pid)
            gateway.wait_until_answering(model, timeout=120)
            rss_one = rss_mb(gateway.pid)
            target = Target(name, openai_urls(gateway.url), {}, model, gateway.pid)
            run_loads(target, requests, VERTEX_LOADS)
            per_chunk = chunk_cpu_ms(target, requests)
            summary[name] = {
                "RSS idle / after one call / after loads": f"{rss_idle:.0f} MB / {rss_one:.0f} MB / "
                f"{rss_mb(gateway.pid):.0f} MB",
                "CPU per streamed chunk (marginal)": f"{per_chunk:.3f} ms",
            }
        finally:
            gateway.stop()
    return summary


def limits_rounds(gateway_env: dict[str, str], workdir: Path, requests: int) -> dict[str, dict[str, str]]:
    """One gateway, a project without limits and one with a budget and both rate limits, turn about."""
    projects = workdir / "bench-projects.json"
    projects.write_text(json.dumps([
        {"id": "plain", "type": "project", "name": "plain"},
        {"id": "limited", "type": "project", "name": "limited", "limits": BENCH_LIMITS},
        key_document(PLAIN_KEY, "plain"), key_document(LIMITED_KEY, "limited"),
    ]))  # fmt: skip
    env = gateway_env | {"ALLOW_ANONYMOUS": "false", "PROJECTS_FILE": str(projects)}
    gateway = GatewayProcess(env, workdir / "limits.log").start()
    try:
        plain, limited = (
            Target(name, openai_urls(gateway.url), {"authorization": f"Bearer {key}"}, "bench", gateway.pid)
            for name, key in (("gateway/plain", PLAIN_KEY), ("gateway/limits", LIMITED_KEY))
        )
        added: dict[tuple[str, int], list[float]] = {}
        for _ in range(2):
            base, limits = run_loads(plain, requests, LIMITS_LOADS), run_loads(limited, requests, LIMITS_LOADS)
            for load, figures in limits.items():
                added.setdefault(load, []).append((figures.cpu_ms or 0.0) - (base[load].cpu_ms or 0.0))
    finally:
        gateway.stop()
    cells = ", ".join(f"{name} c={conc} {statistics.mean(values):+.3f} ms" for (name, conc), values in added.items())
    return {"gateway/limits": {"CPU per call added by limits (2 rounds)": cells}}


def overhead(server: dict[tuple[str, int], Figures], base: dict[tuple[str, int], Figures]) -> str:
    """p50 latency added over `base` at concurrency 1, for each kind of load."""
    loads = dict.fromkeys(load.name for load in LOADS)
    return ", ".join(f"{load} {server[(load, 1)].p50_ms - base[(load, 1)].p50_ms:+.2f} ms" for load in loads)


def calls_made(loads: int, requests: int) -> int:
    """The calls `loads` measured loads make: each is warmed up first (see `_drive`)."""
    return loads * (min(50, requests) + requests)


def telemetry_pairs(plain: Target, traced: Target, requests: int) -> dict[str, str]:
    """Telemetry's cost: the same loads on a gateway without and one with it, in turn."""
    runs: dict[tuple[str, bool], list[Figures]] = {}
    for _ in range(TELEMETRY_ROUNDS):
        for load in TELEMETRY_LOADS:
            for target, traced_on in ((plain, False), (traced, True)):
                figures = measure(target, load, requests)
                runs.setdefault((load.name, traced_on), []).append(figures)
                print_row(f"telemetry {'on' if traced_on else 'off'}", load.name, load.concurrency, figures)
    summary = {}
    for load in TELEMETRY_LOADS:
        off, on = runs[(load.name, False)], runs[(load.name, True)]
        cpu_off = statistics.median(f.cpu_ms or 0.0 for f in off)
        cpu_on = statistics.median(f.cpu_ms or 0.0 for f in on)
        rps_off, rps_on = statistics.median(f.rps for f in off), statistics.median(f.rps for f in on)
        summary[f"telemetry's cost, {load.name} c={load.concurrency} (medians)"] = (
            f"CPU {cpu_off:.2f} -> {cpu_on:.2f} ms/call ({cpu_on - cpu_off:+.2f} ms), "
            f"{rps_off:.0f} -> {rps_on:.0f} req/s ({(rps_on / rps_off - 1) * 100:+.0f} %)"
        )
    return summary


def traced_calls(ingestion: FakeIngestion, made: int, settle_seconds: float = 15.0) -> str:
    """How many of the `made` calls arrived at the ingestion stand-in as a request and a
    dependency, once the exporter has sent what it batched."""

    def counts() -> tuple[int, int]:
        requests = [e for e in ingestion.of_type("RequestData") if e["data"]["baseData"]["name"] in LOAD_ROUTES]
        dependencies = [
            e
            for e in ingestion.of_type("RemoteDependencyData")
            if "gen_ai.operation.name" in e["data"]["baseData"].get("properties", {})
        ]
        return len(requests), len(dependencies)

    seen, since = counts(), time.monotonic()
    while seen != (made, made) and time.monotonic() - since < settle_seconds:
        time.sleep(0.5)
        if (now := counts()) != seen:
            seen, since = now, time.monotonic()
    return f"{seen[0]} requests and {seen[1]} dependencies of {made} calls"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per measured load")
    parser.add_argument("--proxy", type=Path, default=DEFAULT_PROXY, help="LiteLLM proxy server executable")
    parser.add_argument(
        "--only",
        choices=("vertex", "telemetry", "limits"),
        help="only the translated path (the Vertex models' rows and cold starts), the telemetry off/on rows,"
        " or the limits rows",
    )
    options = parser.parse_args()
    everything = options.only is None

    setup = Setup(Path(tempfile.mkdtemp(prefix="bench-")), free_port(), free_port(), free_port())
    upstream_command = [
        sys.executable, "-m", "bench.upstream", "--azure-port", str(setup.upstream_port),
        "--vertex-port", str(setup.vertex_port), "--oauth-port", str(setup.oauth_port),
    ]  # fmt: skip
    gateway_env = setup.gateway_env()
    summary: dict[str, dict[str, str]] = {}

    cpu_model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor(),
    )  # fmt: skip
    print(f"machine: {os.cpu_count()} cores, {cpu_model}; Python {platform.python_version()}; "
          f"{options.requests} requests per load")  # fmt: skip
    if not options.proxy.exists():
        print(f"LiteLLM's proxy server is not installed at {options.proxy}: its rows are left out.")
    print(ROW.format("target", "load", "conc", "p50 ms", "p99 ms", "req/s", "CPU ms/req", "RSS MB"))

    with running(upstream_command, dict(os.environ), setup.workdir / "upstream.log") as upstream:
        wait_for(accepting(setup.upstream_port), "the fake upstream", upstream)
        wait_for(accepting(setup.vertex_port), "the fake Vertex AI", upstream)
        deployment = f"{setup.azure_url}/openai/deployments/bench"
        direct_urls = {
            operation: f"{deployment}/{path}?api-version={API_VERSION}"
            for operation, path in (("chat", "chat/completions"), ("embeddings", "embeddings"))
        }
        if options.only == "telemetry":
            summary["gateway"] = telemetry_rounds(setup, gateway_env, options.requests)
        elif options.only == "limits":
            summary |= limits_rounds(gateway_env, setup.workdir, options.requests)
        else:
            if everything:
                azure_rounds(setup, gateway_env, direct_urls, options, summary)
            summary |= vertex_rounds(gateway_env, setup.workdir, options.requests)
            if everything:
                summary |= limits_rounds(gateway_env, setup.workdir, options.requests)
            cold_starts(setup, gateway_env, options, summary)

    for server, figures in summary.items():
        for what, value in figures.items():
            print_figure(server, what, value)


def cold_starts(
    setup: Setup, gateway_env: dict[str, str], options: argparse.Namespace, summary: dict[str, dict[str, str]]
) -> None:
    """Process start to the first 200: the gateway on each kind of model, LiteLLM's proxy on Azure."""
    chat = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "hi"}]}).encode()
    summary.setdefault("gateway", {})
    for name, model in (("Azure", "bench"), ("Vertex", "bench-gemini"), ("Claude", "bench-claude")):
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()
        cold = GatewayProcess(gateway_env, setup.workdir / f"cold-{name}.log")
        seconds = time_to_first_answer(
            functools.partial(start_local_host, cold), _answers(f"{cold.url}/v1/chat/completions", {}, body)
        )
        summary["gateway"][f"cold start to first {name} answer"] = f"{seconds:.2f} s"
    if options.only is None and options.proxy.exists():
        port = free_port()
        command = proxy_command(options.proxy, setup.proxy_config(), port)
        seconds = time_to_first_answer(
            lambda: subprocess.Popen(command, env=_proxy_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
            _answers(f"http://127.0.0.1:{port}/v1/chat/completions", PROXY_AUTH, chat),
        )
        summary["litellm-proxy"]["cold start to first Azure answer"] = f"{seconds:.2f} s"


@contextmanager
def traced_gateway(setup: Setup, gateway_env: dict[str, str], ingestion: FakeIngestion) -> Iterator[Target]:
    """A gateway with telemetry on, exporting to `ingestion` served on a thread here."""
    with ServerThread(ingestion.app) as ingestion_server:
        traced = GatewayProcess(gateway_env | telemetry_env(ingestion_server.url), setup.workdir / "otel.log").start()
        try:
            yield Target("gateway+otel", openai_urls(traced.url), {}, "bench", traced.pid)
        finally:
            traced.stop()


def telemetry_rounds(setup: Setup, gateway_env: dict[str, str], requests: int) -> dict[str, str]:
    """Only the paired rows: a gateway without telemetry and one with it, in turn."""
    gateway = GatewayProcess(gateway_env, setup.workdir / "gateway.log").start()
    ingestion = FakeIngestion()
    try:
        target = Target("gateway", openai_urls(gateway.url), {}, "bench", gateway.pid)
        with traced_gateway(setup, gateway_env, ingestion) as traced_target:
            summary = telemetry_pairs(target, traced_target, requests)
            made = calls_made(TELEMETRY_ROUNDS * len(TELEMETRY_LOADS), requests)
            summary["calls traced, telemetry on"] = traced_calls(ingestion, made)
    finally:
        gateway.stop()
    return summary


def azure_rounds(
    setup: Setup,
    gateway_env: dict[str, str],
    direct_urls: dict[str, str],
    options: argparse.Namespace,
    summary: dict[str, dict[str, str]],
) -> None:
    """The Azure OpenAI rows: direct, the gateway (twice), the gateway with telemetry, LiteLLM's proxy."""
    direct = run_loads(Target("direct", direct_urls, {"api-key": BENCH_KEY}, "bench", None), options.requests)

    gateway = GatewayProcess(gateway_env, setup.workdir / "gateway.log").start()
    ingestion = FakeIngestion()
    try:
        target = Target("gateway", openai_urls(gateway.url), {}, "bench", gateway.pid)
        figures, summary["gateway"] = server_rounds(target, options.requests)
        summary["gateway"]["p50 added over direct, c=1"] = overhead(figures, direct)
        with traced_gateway(setup, gateway_env, ingestion) as traced_target:
            traced_figures = run_loads(traced_target, options.requests)
            summary["gateway"]["p50 added by telemetry, c=1"] = overhead(traced_figures, figures)
            summary["gateway"] |= telemetry_pairs(target, traced_target, options.requests)
            made = calls_made(len(LOADS) + TELEMETRY_ROUNDS * len(TELEMETRY_LOADS), options.requests)
            summary["gateway"]["calls traced, telemetry on"] = traced_calls(ingestion, made)
    finally:
        gateway.stop()

    if options.proxy.exists():
        port = free_port()
        command = proxy_command(options.proxy, setup.proxy_config(), port)
        with running(command, _proxy_env(), setup.workdir / "proxy.log") as proxy:
            wait_for(accepting(port), "LiteLLM's proxy server", proxy, timeout=120)
            target = Target("litellm-proxy", openai_urls(f"http://127.0.0.1:{port}"), PROXY_AUTH, "bench", proxy.pid)
            figures, summary["litellm-proxy"] = server_rounds(target, options.requests)
            summary["litellm-proxy"]["p50 added over direct, c=1"] = overhead(figures, direct)


if __name__ == "__main__":
    main()
