"""API requests per job lifecycle, and status writes per running job.

    python -m benchmarks.operator_lifecycle [--jobs 20] [--window 60]

1. One 2-node job: create -> Running -> one rank fails -> gang restart -> Running ->
   Succeeded. Counts the requests the operator made for it (watch set-up excluded) against
   the minimum such a lifecycle needs.
2. N running jobs while a trainer writes progress into each one's status every second: how
   many status writes per minute per job the operator adds on top.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import Counter

from benchmarks.operator_common import (NS, cluster, manifest, operator_process, wait_for)
from ftjob_api import api, naming

# What this lifecycle cannot do with less (2 nodes, 2 attempts):
MINIMUM = {
    "create job objects (SA, Role, RoleBinding, Service, PVC, ConfigMap)": 6,
    "create pods (2 nodes x 2 attempts)": 4,
    "delete the failed attempt's pods": 2,
    "status writes (Pending, Running, Restarting, Pending, Running, Succeeded)": 6,
    "events (Started, Running, GangRestart, Restarted, Running, Succeeded)": 6,
}


def _key(call) -> str:
    sub = f"/{call.subresource}" if call.subresource else ""
    return f"{call.verb} {call.resource}{sub}"


def lifecycle() -> dict:
    with cluster() as emu, operator_process(emu):
        jobs = emu.store.type_of(api.GROUP, api.PLURAL)
        start = len(emu.calls)
        emu.store.create(jobs, NS, manifest("life"))

        def phase(p: str, attempt: int):
            st = emu.store.get(jobs, NS, "life").get("status") or {}
            return st.get("phase") == p and st.get("attempt") == attempt

        def run(attempt: int):
            wait_for(lambda: len(emu.kubelet.pods(NS, f"{naming.LABEL_ATTEMPT}={attempt}")) == 2,
                     30, f"attempt {attempt} pods")
            for rank in (0, 1):
                emu.kubelet.run(NS, naming.pod("life", attempt, rank))
            wait_for(lambda: phase("Running", attempt), 30, f"attempt {attempt} Running")

        run(1)
        emu.kubelet.terminate(NS, naming.pod("life", 1, 1), 1)
        run(2)
        emu.kubelet.terminate(NS, naming.pod("life", 2, 1), 0)
        emu.kubelet.terminate(NS, naming.pod("life", 2, 0), 0,
                              message=json.dumps({"status": "succeeded", "metrics": {}}))
        wait_for(lambda: phase("Succeeded", 2), 30, "Succeeded")
        # Events are posted in the background; let them land before counting.
        wait_for(lambda: sum(1 for c in emu.calls[start:] if c.resource == "events") >= 6,
                 10, "events")
        calls = [c for c in emu.calls[start:] if c.verb not in ("watch", "list")]
    counts = Counter(_key(c) for c in calls)
    return {"requests": len(calls), "minimum": sum(MINIMUM.values()),
            "by_call": dict(sorted(counts.items())), "minimum_by_purpose": MINIMUM}


def status_writes(jobs: int, window: float) -> dict:
    with cluster(auto_run_pods=True) as emu, operator_process(emu):
        jtype = emu.store.type_of(api.GROUP, api.PLURAL)
        names = [f"steady-{i}" for i in range(jobs)]
        for name in names:
            emu.store.create(jtype, NS, manifest(name))
        wait_for(lambda: all((emu.store.get(jtype, NS, n).get("status") or {}).get("phase")
                             == "Running" for n in names), 120, "all jobs Running")
        time.sleep(1.0)  # let the last Running writes and events settle before the window
        start = len(emu.calls)
        stop = threading.Event()
        progress_writes = 0

        def trainer_progress() -> None:
            nonlocal progress_writes
            step = 0
            while not stop.wait(1.0):
                step += 1
                for name in names:
                    emu.store.patch(jtype, NS, name, {"status": {"progress": {"globalStep": step}}},
                                    "application/merge-patch+json", "status")
                    progress_writes += 1

        thread = threading.Thread(target=trainer_progress, daemon=True)
        thread.start()
        time.sleep(window)  # the measurement window itself
        stop.set()
        thread.join()
        calls = emu.calls[start:]
    ours = sum(1 for c in calls if c.resource == "finetunejobs" and c.subresource == "status")
    return {"jobs": jobs, "window_s": window, "trainer_progress_writes": progress_writes,
            "operator_status_writes": ours,
            "operator_status_writes_per_job_per_min": round(ours / jobs / (window / 60), 3),
            "operator_requests_in_window": len([c for c in calls if c.verb != "watch"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--window", type=float, default=60.0)
    args = parser.parse_args()
    result = {"lifecycle": lifecycle(), "steady_state": status_writes(args.jobs, args.window)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
