"""The lock files: every dependency pinned with its hashes, generated from the readable
requirements files and kept in step with them, and the only thing ``make install`` (scripts/bootstrap.sh)
and the Dockerfile install from."""

from __future__ import annotations

import importlib.metadata
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)\s*\\?$")


def locked(path: Path) -> dict[str, tuple[str, list[str]]]:
    """Canonical name -> (version, sha256 hashes) of every package pinned in a pip-compile lock."""
    pins: dict[str, tuple[str, list[str]]] = {}
    current: str | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line)
        if match:
            current = canonicalize_name(match.group(1))
            pins[current] = (match.group(2), [])
        elif line.strip().startswith("--hash=sha256:") and current:
            pins[current][1].append(line.strip().split(":", 1)[1].rstrip(" \\"))
        elif line and not line.startswith((" ", "#")):
            raise AssertionError(f"{path.name}: not a pinned requirement: {line!r}")
    return pins


def requirements(path: Path) -> list[Requirement]:
    """The requirements a readable file names, following ``-r`` includes."""
    found: list[Requirement] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-r "):
            found += requirements(path.parent / line[3:].strip())
            continue
        found.append(Requirement(line))
    return found


@pytest.mark.parametrize("lock", [RUNTIME_LOCK, DEV_LOCK], ids=lambda p: p.name)
def test_every_package_in_the_lock_is_pinned_with_hashes(lock: Path) -> None:
    pins = locked(lock)
    assert len(pins) > 20
    for name, (version, hashes) in pins.items():
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), f"{name}=={version} has no hash"
    assert "pip-compile" in lock.read_text(encoding="utf-8").split("\n", 8)[4]  # made by the standard tool


@pytest.mark.parametrize("source, lock", [(ROOT / "requirements.txt", RUNTIME_LOCK),
                                          (ROOT / "requirements-dev.txt", DEV_LOCK)], ids=["runtime", "dev"])
def test_the_lock_satisfies_every_readable_requirement(source: Path, lock: Path) -> None:
    """Fails when a requirements file changed and its lock was not generated again."""
    pins = locked(lock)
    for requirement in requirements(source):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in {lock.name}: regenerate it (see requirements.txt)"
        assert requirement.specifier.contains(pins[name][0], prereleases=True), \
            f"{lock.name} pins {name}=={pins[name][0]}, outside {requirement}"


def test_the_dev_lock_pins_the_runtime_packages_at_the_runtime_versions() -> None:
    runtime, dev = locked(RUNTIME_LOCK), locked(DEV_LOCK)
    assert {name: runtime[name][0] for name in runtime} == {name: dev[name][0] for name in runtime}


def test_this_environment_is_what_the_dev_lock_says() -> None:
    """make install installed exactly the locked versions (the stamp reinstalls when the lock changes)."""
    wrong = {}
    for name, (version, _) in locked(DEV_LOCK).items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[name] = (version, installed)
    assert wrong == {}, "locked vs installed; run make install"


def test_the_image_installs_from_the_runtime_lock_with_hashes() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "COPY requirements.lock ./" in dockerfile
    assert "RUN pip install --require-hashes -r requirements.lock" in dockerfile
    assert re.search(r"pip install --no-deps --no-build-isolation -e \.", dockerfile)


# -- scripts/bootstrap.sh: what make install runs ------------------------------------------------------

def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of what bootstrap.sh reads, with a .venv whose python only records how it was called,
    and the Debian programs it looks for present (so it never calls apt-get)."""
    (tmp_path / "scripts").mkdir()
    for name in ("scripts/bootstrap.sh", "requirements-dev.lock", "pyproject.toml"):
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    _executable(tmp_path / ".venv" / "bin" / "python", '#!/bin/sh\necho "$*" >> "$PIP_CALLS"\n')
    tools = tmp_path / "tools"
    tools.mkdir()
    for program in ("redis-server", "dovecot", "mbsync", "wrk"):
        _executable(tools / program, "#!/bin/sh\nexit 0\n")
    return tmp_path


def bootstrap(checkout: Path) -> list[str]:
    """Runs bootstrap.sh in ``checkout``; the pip calls it made."""
    calls = checkout / "pip-calls.txt"
    calls.write_text("")
    env = {**os.environ, "PIP_CALLS": str(calls), "PATH": f"{checkout / 'tools'}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["bash", str(checkout / "scripts" / "bootstrap.sh")], env=env, check=True, capture_output=True,
                   timeout=60)
    return calls.read_text().splitlines()


def test_bootstrap_installs_from_the_dev_lock_with_hashes_and_again_only_when_it_changes(checkout: Path) -> None:
    first = bootstrap(checkout)
    assert len(first) == 2
    assert "--require-hashes -r requirements-dev.lock" in first[0]
    assert "--no-deps --no-build-isolation -e ." in first[1]
    assert bootstrap(checkout) == []  # nothing changed: nothing installed

    lock = checkout / "requirements-dev.lock"
    lock.write_text(lock.read_text() + "# regenerated\n")
    assert len(bootstrap(checkout)) == 2
    assert bootstrap(checkout) == []
    (checkout / "pyproject.toml").write_text((checkout / "pyproject.toml").read_text() + "\n")
    assert len(bootstrap(checkout)) == 2
