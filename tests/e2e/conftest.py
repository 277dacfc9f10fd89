"""e2e fixtures: the backend the scenarios run on.

Backend: `--e2e-backend local|cluster` (or FTJOB_E2E_BACKEND). The scenario module is
parameterised with the chosen backend only, so a run reports exactly what it ran.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from .podrunner.docker import Docker

BACKENDS = ("local", "cluster")


def pytest_addoption(parser):
    parser.addoption("--e2e-backend", choices=BACKENDS,
                     default=os.environ.get("FTJOB_E2E_BACKEND", "local"),
                     help="where e2e scenarios run (default: local)")


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("--e2e-backend")
        metafunc.parametrize("backend", [chosen], indirect=True, scope="session")


def _require_docker() -> None:
    docker = Docker()
    if not Path(docker.binary).exists() or docker._run("info", check=False).returncode != 0:
        pytest.fail(f"Docker is needed ({docker.binary} with a running daemon): "
                    "run scripts/docker-setup.sh", pytrace=False)


def _work_dir(name: str) -> Path:
    # Outside pytest's tmp folders: claims and pod logs stay for a look after a failure.
    root = Path(os.environ.get("FTJOB_E2E_WORK", "/tmp/ftjob-e2e")) / name
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    return root


@pytest.fixture(scope="session")
def backend(request):
    from . import jobs
    from .backends import ClusterBackend, LocalBackend, wait_admission, wait_ready

    if request.param == "local":
        _require_docker()
        chosen = LocalBackend(_work_dir("local"))
    else:
        chosen = ClusterBackend()
    try:
        wait_ready(chosen)
        wait_admission(chosen, jobs.misspelt_job("e2e-admission-probe"))
        yield chosen
    finally:
        chosen.close()
