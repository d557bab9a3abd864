"""The code's own checks, run with the suite: ruff (lint and format) over the
tree, mypy over the gateway (`ruff.toml`, `mypy.ini`)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import PROJECT_DIR


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *command], cwd=PROJECT_DIR, capture_output=True, text=True)


@pytest.mark.parametrize(
    "command",
    [("ruff", "check", "--no-cache", "."), ("ruff", "format", "--no-cache", "--check", "--diff", "."), ("mypy",)],
    ids=["ruff-lint", "ruff-format", "mypy"],
)
def test_the_code_passes(command: tuple[str, ...]) -> None:
    result = _run(*command)
    assert result.returncode == 0, f"{' '.join(command)} found problems:\n{result.stdout}{result.stderr}"
