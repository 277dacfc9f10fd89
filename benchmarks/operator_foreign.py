"""What other people's pods and ConfigMaps cost the operator, on a real control plane.

    python -m benchmarks.operator_foreign [--pods 5000] [--config-maps 5000] [--jobs 50]
                                          [--source DIR]

The operator (`python -m ftjob_operator`, all namespaces, the chart's ServiceAccount) idles;
then `--pods` pods and `--config-maps` ConfigMaps of 16 KiB that are not ftjob's are created
in another namespace, then `--jobs` FineTuneJobs (2 pods each; nothing runs them, they stay
Pending). Reported: the operator's RSS and CPU-seconds after each step, and the list/watch
requests it made for pods and ConfigMaps (from the audit log: with a label selector or not).
`--source` runs the operator of another checkout (e.g. a `git worktree` of an older commit)
for a before/after on the same machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.operator_common import NS, ROOT, cpu_seconds, manifest, rss_mib, wait_for
from benchmarks.operator_scale_real import OperatorProcess, install_operator, submit
from ftjob_api import naming
from tests.controlplane import ControlPlane
from tests.controlplane.install import audit_events, create_namespace

FOREIGN_NS = "someone-else"
PAYLOAD = "x" * 16 * 1024


def foreign_pod(i: int) -> dict[str, Any]:
    # A scheduler nobody runs: the pod stays Pending and untouched (no node, no kubelet).
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"web-{i:05d}", "labels": {"app": "web"}},
            "spec": {"schedulerName": "nobody", "containers": [
                {"name": "web", "image": "example/web:1",
                 "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}


def foreign_config_map(i: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": f"settings-{i:05d}", "labels": {"app": "web"}},
            "data": {"payload": PAYLOAD}}


def create_all(api_client: Any, pods: int, config_maps: int) -> float:
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    calls = [(core.create_namespaced_pod, foreign_pod(i)) for i in range(pods)]
    calls += [(core.create_namespaced_config_map, foreign_config_map(i))
              for i in range(config_maps)]
    start = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        # Raw answers (not parsed into models), each read whole before the next request.
        for _ in pool.map(lambda c: c[0](FOREIGN_NS, c[1], _preload_content=False).data,
                          calls):
            pass
    return time.monotonic() - start


def settled(pid: int, quiet: float = 3.0, timeout: float = 300) -> float:
    """Wait until the process has used no CPU for `quiet` seconds (it has caught up with
    its watches); returns its CPU-seconds then."""
    last = [cpu_seconds(pid), time.monotonic()]

    def quiet_for() -> bool:
        now, used = time.monotonic(), cpu_seconds(pid)
        if used > last[0] + 0.02:
            last[:] = [used, now]
            return False
        return now - last[1] >= quiet

    wait_for(quiet_for, timeout, "the operator to go quiet", interval=0.5)
    return cpu_seconds(pid)


def list_watch_requests(plane: ControlPlane, user: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in audit_events(plane, user):
        resource = (e.get("objectRef") or {}).get("resource")
        if resource in ("pods", "configmaps") and e["verb"] in ("list", "watch"):
            scoped = "labelSelector=" in e.get("requestURI", "")
            key = f"{resource} {e['verb']} ({'by label' if scoped else 'everything'})"
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def run(pods: int, config_maps: int, jobs: int, source: Path) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="ftjob-foreign-"))
    plane = ControlPlane(workdir / "state")
    plane.start()
    from kubernetes import config

    api_client = config.new_client_from_config(config_file=str(plane.kubeconfig))
    operator: OperatorProcess | None = None
    try:
        user, kubeconfig = install_operator(plane, workdir)
        create_namespace(plane, NS)
        create_namespace(plane, FOREIGN_NS, restricted=False)
        operator = OperatorProcess(plane, kubeconfig, user, workdir, source)
        proc = operator.start()
        steps: dict[str, Any] = {}
        cpu = settled(proc.pid)
        steps["idle"] = {**rss_mib(proc.pid), "cpu_seconds": cpu}
        created_in = create_all(api_client, pods, config_maps)
        cpu_after = settled(proc.pid)
        steps["foreign objects"] = {**rss_mib(proc.pid),
                                    "cpu_seconds": round(cpu_after - cpu, 2),
                                    "created_in_s": round(created_in, 1)}
        submit(plane, [manifest(f"job-{i:03d}", nodes=2) for i in range(jobs)])
        selector = urllib.parse.quote(f"{naming.LABEL_MANAGED_BY}={naming.MANAGER}")
        wait_for(lambda: len(json.loads(plane.get(
            f"/api/v1/namespaces/{NS}/pods?labelSelector={selector}")[1]).get("items") or [])
            == 2 * jobs, 300, f"{2 * jobs} job pods", interval=1)
        cpu_jobs = settled(proc.pid)
        steps[f"{jobs} jobs"] = {**rss_mib(proc.pid),
                                 "cpu_seconds": round(cpu_jobs - cpu_after, 2)}
        return {"source": str(source), "foreign_pods": pods,
                "foreign_config_maps_16KiB": config_maps, "jobs": jobs, "steps": steps,
                "rss_growth_from_foreign_mib": round(
                    steps["foreign objects"]["rss_mib"] - steps["idle"]["rss_mib"], 1),
                "operator_list_watch": list_watch_requests(plane, user)}
    finally:
        if operator is not None:
            operator.stop()
        api_client.close()
        plane.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=5000)
    parser.add_argument("--config-maps", type=int, default=5000)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--source", type=Path, default=ROOT,
                        help="checkout whose operator runs (default: this one)")
    args = parser.parse_args()
    print(json.dumps(run(args.pods, args.config_maps, args.jobs, args.source.resolve()),
                     indent=2))


if __name__ == "__main__":
    main()
