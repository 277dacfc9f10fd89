"""e2e fixtures: the backend the scenarios run on, and an emulated API for runner tests.

Backend: `--e2e-backend emulated|cluster` (or FTJOB_E2E_BACKEND). The scenario module is
parameterised with the chosen backend only, so a run reports exactly what it ran.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from .podrunner.docker import Docker

BACKENDS = ("emulated", "cluster")


def pytest_addoption(parser):
    parser.addoption("--e2e-backend", choices=BACKENDS,
                     default=os.environ.get("FTJOB_E2E_BACKEND", "emulated"),
                     help="where e2e scenarios run (default: emulated)")


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
    from .backends import ClusterBackend, EmulatedBackend, wait_ready

    if request.param == "emulated":
        _require_docker()
        chosen = EmulatedBackend(_work_dir("emulated"))
    else:
        chosen = ClusterBackend()
    try:
        wait_ready(chosen)
        yield chosen
    finally:
        chosen.close()


@pytest.fixture
def emulated_api():
    """(CoreV1Api, runner factory) on a fresh emulator; the runners stop at teardown."""
    _require_docker()
    from kubeemu import Emulator
    from kubernetes import client, config

    from .podrunner.runner import PodRunner

    runners: list[PodRunner] = []
    with Emulator() as emu:
        work = _work_dir("runner")
        api_client = config.new_client_from_config(
            config_file=str(emu.write_kubeconfig(work / "kubeconfig")))
        core = client.CoreV1Api(api_client)

        def make() -> PodRunner:
            runner = PodRunner(core, work / f"r{len(runners)}", namespace="default")
            runner.start()
            runners.append(runner)
            return runner

        try:
            yield core, make
        finally:
            for runner in runners:
                runner.stop()
            api_client.close()
