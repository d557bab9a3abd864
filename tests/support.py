"""Running the real gateway and the real Cosmos DB server for tests."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import wave
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import openai

from shared.cosmos import CosmosDatabase
from shared.projects import hash_key, key_document_id
from shared.settings import Settings
from shared.stores import cosmos_containers
from tests.fakes.server import free_port

PROJECT_DIR = Path(__file__).resolve().parent.parent

#: Environment variables a gateway under test must not inherit.
_INHERITED_SETTINGS = (
    "COSMOS_URL",
    "COSMOS_KEY",
    "KEY_VAULT_URL",
    "MODELS_FILE",
    "ALLOW_ANONYMOUS",
    "AZURE_API_KEY",
    "AZURE_OPENAI_API_KEY",
    "AZURE_API_BASE",
    "AZURE_API_VERSION",
    "OPENAI_API_KEY",
    "GOOGLE_APPLICATION_CREDENTIALS",
)


def wait_for(check: Any, what: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode}")
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start within {timeout} s")


def accepting(port: int) -> Callable[[], bool]:
    """A check for `wait_for`: whether something accepts TCP connections on 127.0.0.1:`port`."""

    def check() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    return check


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class GatewayProcess:
    """`python -m shared.localhost` in a subprocess, as a user would start it.

    Its log (stdout and stderr) goes to `log_path` so tests can read it.
    """

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {k: v for k, v in os.environ.items() if k not in _INHERITED_SETTINGS}
        self.env |= {
            "PYTHONUNBUFFERED": "1",
            "USAGE_FILE": str(log_path.parent / "usage.jsonl"),
            "RESPONSES_FILE": str(log_path.parent / "responses.jsonl"),
            "PROJECTS_FILE": str(log_path.parent / "projects.json"),
        } | env
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> GatewayProcess:
        log = self.log_path.open("wb")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "shared.localhost", "--port", str(self.port)],
            cwd=PROJECT_DIR,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._healthy, "the gateway", self._process)
        return self

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    @property
    def pid(self) -> int:
        assert self._process is not None, "the gateway was not started"
        return self._process.pid

    def wait_until_answering(self, model: str, timeout: float = 60) -> None:
        """Wait until a chat call to `model` succeeds. LiteLLM is imported in the
        background after start-up; on a busy machine a gateway with a short time
        budget would otherwise spend its first calls' budget waiting for it."""
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": "ready?"}]}).encode()
        deadline = time.monotonic() + timeout
        while True:
            request = urllib.request.Request(
                f"{self.url}/v1/chat/completions", body, {"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    if response.status == 200:
                        return
            except urllib.error.HTTPError as error:
                # 504: the import outlasted the budget; 429, 502: an upstream that fails now and then (bench/soak.py)
                if error.code not in (429, 502, 504) or time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def client(self, key: str = "local", request_id: str | None = None) -> openai.OpenAI:
        """An `openai` client of this gateway, presenting `key` (and `request_id` as `x-request-id`)."""
        headers = {"x-request-id": request_id} if request_id else None
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, default_headers=headers)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def usage_records(self) -> list[dict[str, Any]]:
        """The records in the gateway's usage file (the local usage store)."""
        path = Path(self.env["USAGE_FILE"])
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def usage_record(self, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The one usage record of `request_id`, once the recorder has written it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            records = [r for r in self.usage_records() if r["request_id"] == request_id]
            if records:
                assert len(records) == 1
                return records[0]
            time.sleep(0.05)
        raise AssertionError(f"no usage record for {request_id}")

    def stop(self) -> None:
        if self._process is not None:
            _stop(self._process)


def skewed_clock_env(seconds: float) -> dict[str, str]:
    """The settings of a gateway whose clock runs `seconds` ahead of this machine's (tests/fakes/skewed_clock)."""
    folder = Path(__file__).parent / "fakes" / "skewed_clock"
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, "SKEWED_CLOCK_SECONDS": str(seconds)}


@contextlib.contextmanager
def running_gateway(directory: Path, env: dict[str, str]) -> Iterator[GatewayProcess]:
    """A gateway started with `env` (its log, usage and projects files in `directory`), stopped afterwards:
    the one way the tests' fixtures start a gateway process."""
    process = GatewayProcess(env, directory / "gateway.log").start()
    try:
        yield process
    finally:
        process.stop()


class CosmosServer:
    """The npm `@vercel/cosmosdb-server` (HTTPS, self-signed) on a free port."""

    #: The server accepts any account key; the SDK still needs one to sign requests.
    KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> CosmosServer:
        binary = PROJECT_DIR / "node_modules" / ".bin" / "cosmosdb-server"
        if not binary.exists():
            raise RuntimeError("cosmosdb-server is not installed: run `make test`, which runs npm ci")
        self._process = subprocess.Popen(
            [str(binary), "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._accepting, "cosmosdb-server", self._process)
        return self

    def _accepting(self) -> bool:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock, context.wrap_socket(sock):
                return True
        except OSError:
            return False

    def settings(self, database: str) -> dict[str, str]:
        """The gateway's settings for a `database` on this server (its self-signed TLS not verified)."""
        return {
            "COSMOS_URL": self.url,
            "COSMOS_KEY": self.KEY,
            "COSMOS_VERIFY_TLS": "false",
            "COSMOS_DATABASE_ID": database,
        }

    def stop(self) -> None:
        if self._process is not None:
            _stop(self._process)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections hang instead of being refused, as with an unreachable account."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def seed(self, database_id: str, container_id: str, partition_key: str, documents: list[dict[str, Any]]) -> None:
        """Create the container if needed and upsert `documents` (sync SDK, test side)."""
        from azure.cosmos import CosmosClient, PartitionKey

        client = CosmosClient(self.url, credential=self.KEY, connection_verify=False)
        database = client.create_database_if_not_exists(database_id)
        container = database.create_container_if_not_exists(container_id, partition_key=PartitionKey(partition_key))
        for document in documents:
            container.upsert_item(document)


def create_containers(url: str, database_id: str) -> None:
    """The gateway's containers in `database_id`, on the Cosmos DB at `url`, as its set-up creates them."""

    async def create() -> None:
        database = CosmosDatabase(url, CosmosServer.KEY, database_id, verify_tls=False)
        try:
            await database.create_containers(cosmos_containers(Settings()))
        finally:
            await database.close()

    asyncio.run(create())


def start_fake_upstream(port: int, *options: str) -> subprocess.Popen[bytes]:
    """The fake Azure OpenAI in a process of its own (`python -m bench.upstream`), accepting connections."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.upstream", "--azure-port", str(port), *options], cwd=PROJECT_DIR
    )
    wait_for(accepting(port), "the fake upstream", process)
    return process


def write_catalog(path: Path, documents: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(documents, indent=2), encoding="utf-8")
    return path


def wav_bytes(seconds: float = 0.2) -> bytes:
    """A short mono 8 kHz WAV file, for transcription uploads."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(8000)
        audio.writeframes(b"\x01\x00" * int(8000 * seconds))
    return buffer.getvalue()


def project_documents(
    keys: dict[str, str], *documents: dict[str, Any], admins: Collection[str] = ()
) -> list[dict[str, Any]]:
    """A projects store's documents: each project `keys` (key -> project id) names,
    an admin one if in `admins`, each key's document, then `documents`."""
    projects = [
        {"id": project, "type": "project", "name": project} | ({"admin": True} if project in admins else {})
        for project in dict.fromkeys(keys.values())
    ]
    return projects + [key_document(key, project) for key, project in keys.items()] + list(documents)


def write_projects(path: Path, keys: dict[str, str], *documents: dict[str, Any], admins: Collection[str] = ()) -> Path:
    """A projects file (see `project_documents`)."""
    path.write_text(json.dumps(project_documents(keys, *documents, admins=admins)), encoding="utf-8")
    return path


def key_document(key: str, project: str, **extra: Any) -> dict[str, Any]:
    """A project key's document as the projects store keeps it (only the key's hash)."""
    return {
        "id": key_document_id(hash_key(key)),
        "type": "key",
        "project": project,
        "name": "test",
        "created": "2026-01-01T00:00:00Z",
        "expires": None,
        "disabled": False,
    } | extra


#: A function tool, for tool-calling requests.
WEATHER_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def streamed_tool_names(chunks: list[Any]) -> list[str]:
    """The function names a streamed chat completion's chunks call, in order."""
    return [
        tool.function.name
        for chunk in chunks
        if chunk.choices and chunk.choices[0].delta.tool_calls
        for tool in chunk.choices[0].delta.tool_calls
        if tool.function and tool.function.name
    ]


def admin_cli(env: dict[str, str], *arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`python -m shared.admin ARGUMENTS` with `env` alone (no PATH beyond the system's); `check`: it must succeed."""
    result = subprocess.run(
        [sys.executable, "-m", "shared.admin", *arguments],
        cwd=PROJECT_DIR,
        env=env | {"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result
