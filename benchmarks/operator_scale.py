"""200 concurrent jobs x 4 pods to Running: wall time, operator memory, event-to-action latency.

    python -m benchmarks.operator_scale [--jobs 200] [--nodes 4]

The emulated kubelet starts every pod the moment it is created. Event-to-action latency
is, per job, the time from the watch event of its last pod turning Running to the
operator's status write that records phase Running (both stamped by the emulated API).
The operator runs as its own process; the API emulator shares the 2 cores with it.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import Counter

from benchmarks.operator_common import (NS, cluster, cpu_seconds, manifest, operator_process,
                                        percentile, rss_mib, wait_for)
from ftjob_api import api, naming


def run(jobs: int, nodes: int, timeout: float) -> dict:
    with cluster(auto_run_pods=True) as emu:
        lock = threading.Lock()
        last_pod_running: dict[str, float] = {}
        running_pods: dict[str, set[str]] = {}
        job_running_at: dict[str, float] = {}

        def hook(etype: str, rtype, obj: dict) -> None:
            now = time.monotonic()
            meta = obj["metadata"]
            if rtype.key == "pods" and (obj.get("status") or {}).get("phase") == "Running":
                job = meta["labels"][naming.LABEL_JOB]
                with lock:
                    seen = running_pods.setdefault(job, set())
                    if meta["name"] not in seen:
                        seen.add(meta["name"])
                        if len(seen) == nodes:
                            last_pod_running[job] = now
            elif rtype.plural == api.PLURAL and (obj.get("status") or {}).get("phase") == "Running":
                with lock:
                    job_running_at.setdefault(meta["name"], now)

        emu.store.hooks.append(hook)
        jtype = emu.store.type_of(api.GROUP, api.PLURAL)
        with operator_process(emu) as proc:
            idle = rss_mib(proc.pid)
            cpu_before = cpu_seconds(proc.pid)
            start = time.monotonic()
            for i in range(jobs):
                emu.store.create(jtype, NS, manifest(f"scale-{i:04d}", nodes=nodes))
            created = time.monotonic() - start
            wait_for(lambda: len(job_running_at) == jobs, timeout, f"{jobs} jobs Running",
                     interval=0.2)
            elapsed = time.monotonic() - start
            memory = rss_mib(proc.pid)
            cpu = cpu_seconds(proc.pid) - cpu_before
            calls = [c for c in emu.calls if c.verb != "watch"]
            requests = len(calls)
            by_call = Counter(f"{c.verb} {c.resource}{'/' + c.subresource if c.subresource else ''}"
                              f" -> {c.status}" for c in calls)
    latencies = [job_running_at[j] - last_pod_running[j] for j in job_running_at]
    return {
        "jobs": jobs, "pods": jobs * nodes,
        "seconds_to_submit": round(created, 2),
        "seconds_until_all_running": round(elapsed, 2),
        "operator_rss_mib_idle": idle["rss_mib"],
        "operator_rss_mib_at_end": memory["rss_mib"],
        "operator_peak_rss_mib": memory["peak_rss_mib"],
        "event_to_action_ms_p50": round(percentile(latencies, 50) * 1000, 1),
        "event_to_action_ms_p99": round(percentile(latencies, 99) * 1000, 1),
        "event_to_action_ms_max": round(max(latencies) * 1000, 1),
        "operator_cpu_seconds": round(cpu, 2),
        "api_requests_total": requests,
        # children, pods, 2 status writes, 2 Events (no finalizer patch: job_loops.py)
        "api_requests_minimum": jobs * (6 + nodes + 2 + 2),
        "api_requests_by_call": dict(sorted(by_call.items())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    print(json.dumps(run(args.jobs, args.nodes, args.timeout), indent=2))


if __name__ == "__main__":
    main()
