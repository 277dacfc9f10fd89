"""What scenarios and benchmarks do with a backend: read a job, run a helper pod, seed data.

Backend-agnostic: everything goes through `backend.kubectl` / `backend.get`.
"""

from __future__ import annotations

import uuid
from typing import Any

import yaml

from . import jobs
from tests.polling import wait_for


def job_status(backend, name: str) -> dict[str, Any]:
    return ((backend.get("finetunejobs", name) or {}).get("status")) or {}


def finished(status: dict[str, Any]) -> bool:
    return status.get("phase") in ("Succeeded", "Failed")


def step_of(status: dict[str, Any]) -> int:
    return int((status.get("progress") or {}).get("globalStep") or 0)


def checkpoint_step(status: dict[str, Any]) -> int:
    return int(((status.get("checkpoint") or {}).get("latest") or {}).get("step") or 0)


def describe(backend, name: str):
    def text() -> str:
        status = yaml.safe_dump(job_status(backend, name), sort_keys=False)
        return f"--- status of {name}\n{status}\n{backend.diagnostics()}"
    return text


def wait_status(backend, name: str, check, what: str, timeout: float,
                interval: float = 0.5) -> dict[str, Any]:
    def probe():
        status = job_status(backend, name)
        return status if check(status) else None
    return wait_for(probe, timeout, f"{name}: {what}", interval=interval,
                    describe=describe(backend, name))


def run_pod(backend, pod: dict[str, Any], timeout: float = 180) -> str:
    """Create a pod, wait for it to end, return its termination message (it must succeed)."""
    name = pod["metadata"]["name"]
    backend.create(pod)

    def ended():
        seen = backend.get("pods", name) or {}
        for cs in (seen.get("status") or {}).get("containerStatuses") or []:
            if "terminated" in cs.get("state", {}):
                return cs["state"]["terminated"]
        return None

    end = wait_for(ended, timeout, f"pod {name} to end",
                   describe=lambda: yaml.safe_dump(backend.get("pods", name))
                   + backend.diagnostics())
    backend.delete("pods", name)
    assert end["exitCode"] == 0, f"pod {name} failed: {end}"
    return end.get("message", "")


def probe_claim(backend, job: str, script: str) -> str:
    """Output of `script` run in the job's folder of the shared claim."""
    name = f"probe-{uuid.uuid4().hex[:6]}"
    return run_pod(backend, jobs.probe_pod(name, backend.trainer_image, job, script))


def seed(backend, job_names: list[str]) -> None:
    """The shared claim with a tiny model and training data for each named job."""
    backend.create(jobs.shared_claim())
    name = f"seed-{uuid.uuid4().hex[:6]}"
    config_map, pod = jobs.seed_objects(name, backend.trainer_image, job_names)
    backend.create(config_map)
    message = run_pod(backend, pod)
    assert message.startswith("seeded"), message
