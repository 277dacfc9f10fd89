"""The hashed dependency locks (locks/, `bash scripts/lock.sh`): every package pinned with
its file hashes, every requirement of pyproject.toml satisfied by the locked version, the
three locks on the same versions, and the venv and both images installing from them with
hashes required."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
LOCKS = REPO / "locks"
ENTRY = re.compile(r"^([A-Za-z0-9_.-]+)==(\S+)((?:\s*\\\n\s+--hash=sha256:[0-9a-f]{64})*)",
                   re.MULTILINE)
CUDA_WHEELS = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*)$")


def locked(name: str) -> dict[str, tuple[str, int]]:
    """package -> (version, number of hashes)."""
    text = (LOCKS / name).read_text()
    return {canonicalize_name(m[1]): (m[2], m[3].count("--hash=")) for m in ENTRY.finditer(text)}


def requirement_lines(name: str) -> list[str]:
    return [line for line in (LOCKS / name).read_text().splitlines()
            if line and not line.startswith((" ", "#"))]


def pyproject_requirements(*extras: str) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    raw = list(project["dependencies"])
    for extra in extras:
        raw += project["optional-dependencies"][extra]
    return [Requirement(r) for r in raw]


LOCK_EXTRAS = {
    "dev.txt": ("operator", "trainer", "deepspeed", "dev"),
    "trainer.txt": ("trainer", "deepspeed"),
    "operator.txt": ("operator",),
}


@pytest.mark.parametrize("lock", [*LOCK_EXTRAS, "demo.txt"])
def test_every_package_is_pinned_with_hashes(lock):
    lines = requirement_lines(lock)
    entries = locked(lock)
    assert lines and len(entries) == len(lines), f"{lock}: a requirement without == and hashes"
    unhashed = [name for name, (_, hashes) in entries.items() if hashes == 0]
    assert not unhashed, f"{lock}: no --hash for {unhashed}"


@pytest.mark.parametrize("lock,extras", LOCK_EXTRAS.items())
def test_every_pyproject_requirement_is_met_by_the_lock(lock, extras):
    entries = locked(lock)
    for requirement in pyproject_requirements(*extras):
        name = canonicalize_name(requirement.name)
        if lock == "trainer.txt" and CUDA_WHEELS.match(name):
            continue  # the trainer image's base brings torch
        assert name in entries, f"{lock}: {requirement} is not locked (bash scripts/lock.sh)"
        version = entries[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock}: {name}=={version} does not meet pyproject.toml's {requirement} "
            f"(bash scripts/lock.sh)")


@pytest.mark.parametrize("lock", ["trainer.txt", "operator.txt"])
def test_image_locks_use_the_versions_of_the_dev_lock(lock):
    dev = locked("dev.txt")
    differ = {n: (v, dev.get(n, (None,))[0]) for n, (v, _) in locked(lock).items()
              if dev.get(n, (None,))[0] != v}
    assert not differ, f"{lock} and dev.txt disagree: {differ}"


def test_the_trainer_image_lock_leaves_torch_and_cuda_to_the_base():
    assert not [n for n in locked("trainer.txt") if CUDA_WHEELS.match(n)]


def test_torch_is_the_same_version_everywhere():
    torch = locked("dev.txt")["torch"][0]
    assert f'TORCH_VERSION={torch}' in (REPO / "scripts/lock.sh").read_text()
    assert f"ARG TORCH_VERSION={torch}" in (REPO / "trainer_image/Dockerfile").read_text()


@pytest.mark.parametrize("path,lock", [
    ("Makefile", "locks/dev.txt"), ("Makefile", "locks/demo.txt"),
    ("trainer_image/Dockerfile", "locks/trainer.txt"),
    ("operator/Dockerfile", "locks/operator.txt"),
])
def test_installs_require_the_hashes(path, lock):
    text = (REPO / path).read_text()
    assert lock in text
    installs = [line for line in re.split(r"(?<!\\)\n", text) if "pip install" in line
                and ("-r " in line or "requirements" in line)]
    assert installs and all("--require-hashes" in line for line in installs), installs
    assert re.search(r"pip install -q pip==(\$\(PIP_VERSION\)|\d)", text), "pip is not pinned"
