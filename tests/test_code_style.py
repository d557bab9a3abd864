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


def readme_layout() -> set[str]:
    """The paths the README's `## Layout` tree names (two spaces of indent per level)."""
    readme = (PROJECT_DIR / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    named, parents = set(), []
    for line in block.splitlines():
        if not line.strip() or line.startswith(" " * 8):  # a description's continuation
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2
        name = line.split()[0]
        parents = [*parents[:depth], name]
        named.add("".join(parents))
    return named


def test_the_readme_layout_names_every_module_and_only_modules_that_exist() -> None:
    modules = {
        path.relative_to(PROJECT_DIR).as_posix()
        for path in [PROJECT_DIR / "function_app.py", *(PROJECT_DIR / "shared").rglob("*.py")]
        if path.name != "__init__.py"
    }
    named = readme_layout()
    assert modules - named == set(), "add these modules to the README's layout"
    missing = {path for path in named if not (PROJECT_DIR / path).exists()}
    assert missing == set(), "the README's layout names these, which do not exist"


#: The gateway's modules below the providers package, the only ones it may import (layers point down).
BELOW_PROVIDERS = frozenset({"domain", "errors", "secrets", "validation", "wire"})


def test_the_providers_import_nothing_above_them() -> None:
    import ast

    offenders = []
    for path in sorted((PROJECT_DIR / "shared" / "providers").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 2:
                named = [node.module] if node.module else [alias.name for alias in node.names]
                offenders += [f"{path.name}: {name}" for name in named if name.split(".")[0] not in BELOW_PROVIDERS]
    assert not offenders, f"provider modules importing a layer above them: {offenders}"
