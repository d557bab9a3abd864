"""What the project installs: only what its lock files pin, each package by its hashes.

The gateway holds every provider credential of a company, and a package
release can be replaced by a credential stealer (LiteLLM 1.82.7 and 1.82.8
were, in March 2026: a `.pth` file run at every interpreter start). So every
install takes a lock file in which each package is pinned to one version and
its published hashes, and pip refuses anything else (`--require-hashes`).
"""

from __future__ import annotations

import re
import site
import sys
from pathlib import Path

import pytest

from tests.support import PROJECT_DIR

LOCK_FILES = [
    "requirements.txt",
    "requirements-dev.txt",
    "infra/requirements-checkov.txt",
    "bench/requirements-proxy.txt",
]
#: A requirement line of a lock file: `name==version \`, its hashes on the lines that follow.
PINNED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")
#: `.pth` files that may run code at interpreter start: setuptools' own shim.
KNOWN_STARTUP_FILES = {"distutils-precedence.pth"}


def _requirements(lock_file: str) -> dict[str, list[str]]:
    """Each requirement of a lock file and the hashes listed for it."""
    requirements: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in (PROJECT_DIR / lock_file).read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not line.startswith(" "):
            match = PINNED.match(stripped)
            assert match, f"{lock_file}: {stripped!r} is not pinned to one version"
            current = requirements.setdefault(match[1].lower(), [])
        elif stripped.startswith("--hash=sha256:") and current is not None:
            current.append(stripped.removeprefix("--hash=sha256:").rstrip(" \\"))
    return requirements


@pytest.mark.parametrize("lock_file", LOCK_FILES)
def test_every_locked_package_is_pinned_with_its_hashes(lock_file: str) -> None:
    requirements = _requirements(lock_file)
    assert len(requirements) > 10, f"{lock_file} lists almost nothing: is it a lock file?"
    unhashed = [name for name, hashes in requirements.items() if not hashes]
    assert not unhashed, f"{lock_file}: no hashes for {unhashed}"
    assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for hashes in requirements.values() for digest in hashes)


def test_the_dev_lock_pins_the_runtime_at_the_same_versions_and_hashes() -> None:
    runtime, dev = _requirements("requirements.txt"), _requirements("requirements-dev.txt")
    assert runtime.keys() <= dev.keys()
    assert {name: dev[name] for name in runtime} == runtime


def test_every_install_requires_hashes() -> None:
    """Each virtualenv the Makefile fills is filled from a lock file, in hash-checking mode."""
    makefile = (PROJECT_DIR / "Makefile").read_text(encoding="utf-8")
    recipes = [line.strip() for line in makefile.splitlines() if line.startswith("\t")]
    installs = [line for line in recipes if re.search(r"pip install|\$\(INSTALL\)", line)]
    from_locks = [line for line in installs if "$(INSTALL)" in line]
    assert {lock for lock in LOCK_FILES if any(f"-r {lock}" in line for line in from_locks)} == set(LOCK_FILES)
    assert re.search(r"^INSTALL := pip install .*--require-hashes", makefile, re.M)
    # The one other install is the maintainers' lock tool, pinned by version.
    assert [line for line in installs if line not in from_locks] == [
        "$(VENV)/lock/bin/pip install --quiet pip-tools==7.7.0"
    ]


def test_no_installed_package_runs_code_at_interpreter_start() -> None:
    """A `.pth` file with an import line runs at every interpreter start: only setuptools' may be there."""
    startup = sorted(
        path.name
        for directory in {*site.getsitepackages(), Path(sys.prefix) / "lib"}
        for path in Path(directory).glob("*.pth")
        if any(line.startswith(("import ", "import\t")) for line in path.read_text(errors="replace").splitlines())
    )
    assert set(startup) <= KNOWN_STARTUP_FILES, f"unexpected start-up code in {startup}"
