"""The code's own checks, run with the suite: ruff (lint and format) over the
tree, mypy over the gateway (`ruff.toml`, `mypy.ini`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


def test_the_tests_and_the_build_read_nothing_outside_the_repository() -> None:
    """A clone of the project alone must pass its tests: no path climbs out of the checkout."""
    tracked = subprocess.run(["git", "ls-files"], cwd=PROJECT_DIR, capture_output=True, text=True, check=True)
    climbing = ("../shared", '"shared" / "spec"', "parent.parent.parent")
    offenders = [
        f"{name}: {needle}"
        for name in tracked.stdout.splitlines()
        if name.endswith((".py", ".ini", ".toml", ".json", ".sh", "Makefile", "run"))
        and "spec/" not in name
        and PROJECT_DIR / name != Path(__file__)
        for needle in climbing
        if needle in (PROJECT_DIR / name).read_text(encoding="utf-8", errors="replace")
    ]
    assert not offenders, f"paths outside the repository: {offenders}"
    from tests.openapi import SPEC_PATH

    assert SPEC_PATH.is_file() and SPEC_PATH.resolve().is_relative_to(PROJECT_DIR.resolve())
