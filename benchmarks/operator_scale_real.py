"""200 jobs x 4 pods to Running on a real control plane, kwok playing the nodes' kubelets.

    python -m benchmarks.operator_scale_real [--jobs 200] [--nodes 4] [--fake-nodes 20]
                                             [--existing-claim] [--keep]

The same run as benchmarks/operator_scale.py, on the real thing instead of the emulator:
etcd, kube-apiserver (RBAC, PodSecurity `restricted`, audit log), controller-manager and
scheduler from tests/controlplane, started fresh for the run. kwok (tests/controlplane/kwok.py)
registers `--fake-nodes` Nodes and marks each pod the real scheduler binds to one of them
Running; the claims the operator creates are bound by tests/controlplane/volumes.py. The
operator runs as its own process (`python -m ftjob_operator`) under the chart's
ServiceAccount and RBAC, so every request it makes is authorised as in a cluster and
recorded in the audit log under its own user.

Event-to-action latency, per job, as in the emulator benchmark: from the last of its pods
turning Running to the operator's status write that records phase Running. Two clocks:
- `audit`: both ends stamped by the API server (audit log): kwok's pod status patch answered
  (stageTimestamp) -> the operator's finetunejobs/status patch received.
- `watch`: both ends as a watch client sees them (this process watches pods and jobs as
  admin): the pod's Running event -> the job's phase Running event.
Every process (the control plane, kwok, the operator, this one) shares the machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.operator_common import (NS, ROOT, _free_port, cpu_seconds, manifest, percentile,
                                        rss_mib, wait_for)
from ftjob_api import api, naming
from ftjob_api.crd import build_crd
from tests.controlplane import ControlPlane
from tests.controlplane.cluster import _die_with_parent
from tests.controlplane.install import (apply, audit_events, chart_rbac, create_namespace,
                                        service_account_kubeconfig, wait_established)
from tests.controlplane.kwok import USER as KWOK_USER
from tests.controlplane.kwok import Kwok
from tests.controlplane.volumes import LocalVolumes

SCHEDULER_USER = "system:kube-scheduler"
POD_RESOURCES = {"cpu": "1", "memory": "1Gi"}
# kwok's default node (64 CPU, 256 GiB, 110 pods): 800 such pods fit 20 nodes (40 each).


# --------------------------------------------------------------------------- watching


class Watcher(threading.Thread):
    """Watch one collection as admin from now on; `on_event(type, object, monotonic)`.

    The API server closes a watch whose client falls behind (the watch cache's "Forcing
    watcher close due to unresponsiveness") and ends each after `timeoutSeconds`; like an
    informer, this one then watches again from the last resourceVersion it saw, and counts
    how often it had to (`reconnects`)."""

    def __init__(self, plane: ControlPlane, path: str, on_event: Callable[..., None],
                 query: str = "") -> None:
        super().__init__(name=f"watch {path}", daemon=True)
        self.plane, self.path, self.on_event, self.query = plane, path, on_event, query
        self.error: BaseException | None = None
        self.started_watching = threading.Event()
        self.stopping = threading.Event()
        self.reconnects = 0

    def _context(self) -> ssl.SSLContext:
        pki = self.plane.pki
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        context.load_cert_chain(str(pki.client_cert("admin")), str(pki.client_key("admin")))
        return context

    def run(self) -> None:
        try:
            code, body = self.plane.get(f"{self.path}?limit=1&{self.query}")
            if code != 200:
                raise RuntimeError(f"list {self.path}: HTTP {code} {body[:200]!r}")
            version = json.loads(body)["metadata"]["resourceVersion"]
            context = self._context()
            while not self.stopping.is_set():
                url = (f"{self.plane.server}{self.path}?watch=1&resourceVersion={version}"
                       f"&allowWatchBookmarks=true&{self.query}")
                with urllib.request.urlopen(url, context=context) as stream:
                    self.started_watching.set()
                    for line in stream:
                        now = time.monotonic()
                        event = json.loads(line)
                        if event["type"] == "ERROR":  # 410 Gone: too far behind to resume
                            raise RuntimeError(f"watch {self.path}: {event['object']}")
                        version = event["object"]["metadata"]["resourceVersion"]
                        if event["type"] != "BOOKMARK":
                            self.on_event(event["type"], event["object"], now)
                self.reconnects += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the benchmark
            self.error = exc
            self.started_watching.set()


# --------------------------------------------------------------------------- operator


class OperatorProcess:
    """`python -m ftjob_operator` with the chart ServiceAccount's kubeconfig."""

    def __init__(self, plane: ControlPlane, kubeconfig: Path, user: str, workdir: Path,
                 source: Path = ROOT) -> None:
        self.plane, self.kubeconfig, self.user, self.workdir = plane, kubeconfig, user, workdir
        self.source = source  # the checkout whose operator runs (another one: a before/after)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> subprocess.Popen:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "FTJOB_LOG_LEVEL": "WARNING",
               "FTJOB_LIVENESS_PORT": str(_free_port()), "FTJOB_RESYNC_SECONDS": "30",
               "PYTHONPATH": os.pathsep.join(str(self.source / d) for d in ("api", "operator"))}
        self.log = open(self.workdir / "operator.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "ftjob_operator"], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     preexec_fn=_die_with_parent)

        def watching() -> bool:  # the operator has listed FineTuneJobs and opened its watch
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited: see {self.workdir / 'operator.log'}")
            return any(e["verb"] == "watch" and e["objectRef"].get("resource") == api.PLURAL
                       for e in audit_events(self.plane, self.user))

        wait_for(watching, timeout, "the operator to start watching", interval=0.5)
        return self.proc

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()
        self.proc = None


def install_operator(plane: ControlPlane, workdir: Path) -> tuple[str, Path]:
    """The CRD and the chart's RBAC on `plane`; the operator's user name and a kubeconfig
    with a token of its ServiceAccount."""
    crd = build_crd()
    apply(plane, [crd])
    wait_established(plane, crd["metadata"]["name"])
    rbac = chart_rbac()
    account = next(o["metadata"] for o in rbac if o["kind"] == "ServiceAccount")
    create_namespace(plane, account["namespace"])
    apply(plane, rbac)
    user = f"system:serviceaccount:{account['namespace']}:{account['name']}"
    return user, service_account_kubeconfig(plane, account["namespace"], account["name"],
                                            workdir / "operator.kubeconfig")


# --------------------------------------------------------------------------- audit log


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def _call(event: dict[str, Any]) -> str:
    ref = event.get("objectRef") or {}
    what = ref.get("resource", event.get("requestURI", "?"))
    if ref.get("subresource"):
        what += "/" + ref["subresource"]
    return f"{event['verb']} {what} -> {(event.get('responseStatus') or {}).get('code')}"


def completed(events: list[dict[str, Any]], user: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("stage") == "ResponseComplete"
            and (e.get("user") or {}).get("username") == user]


def audit_latencies(events: list[dict[str, Any]], operator_user: str,
                    pod_job: dict[str, str]) -> dict[str, float]:
    """Per job: kwok's status patch that made its last pod Running, answered -> the
    operator's next status patch of that job, received (the write recording phase Running)."""
    first: dict[str, tuple[float, float]] = {}  # pod -> (received, answered), first patch
    for e in completed(events, KWOK_USER):
        ref = e.get("objectRef") or {}
        if (ref.get("resource") == "pods" and ref.get("subresource") == "status"
                and e["verb"] == "patch" and ref.get("name") in pod_job):
            at = (_ts(e["requestReceivedTimestamp"]), _ts(e["stageTimestamp"]))
            first[ref["name"]] = min(first.get(ref["name"], at), at)
    # kwok patches a few pods twice (after the server closed its watch and it relisted);
    # the first patch is the one that made the pod Running.
    last_pod: dict[str, tuple[float, float]] = {}  # job -> its last pod's first patch
    for pod, at in first.items():
        job = pod_job[pod]
        last_pod[job] = max(last_pod.get(job, at), at)
    writes: dict[str, list[float]] = {}
    for e in completed(events, operator_user):
        ref = e.get("objectRef") or {}
        if (ref.get("resource") == api.PLURAL and ref.get("subresource") == "status"
                and e["verb"] == "patch"):
            writes.setdefault(ref.get("name"), []).append(_ts(e["requestReceivedTimestamp"]))
    out = {}
    for job, (received, answered) in last_pod.items():
        # The pod's change is committed before kwok's answer is logged, so the operator's
        # write may arrive in between: count it as 0.
        later = [t for t in writes.get(job, []) if t >= received]
        if later:
            out[job] = max(0.0, min(later) - answered)
    return out


def last_at(events: list[dict[str, Any]], user: str, verb: str, resource: str,
            subresource: str | None = None) -> float | None:
    """Wall time of the last answered request of that kind by `user`."""
    times = [_ts(e["stageTimestamp"]) for e in completed(events, user)
             if e["verb"] == verb and (e.get("objectRef") or {}).get("resource") == resource
             and (e.get("objectRef") or {}).get("subresource") == subresource
             and (e.get("objectRef") or {}).get("namespace") == NS]
    return max(times) if times else None


def submit(plane: ControlPlane, bodies: list[dict[str, Any]], threads: int = 8) -> None:
    """Create the jobs at once, as the emulator benchmark does: 8 concurrent POSTs as admin.
    (`kubectl create -f` would send them one by one at client-go's default 5 per second.)"""
    context = ssl.create_default_context(cafile=str(plane.pki.ca_cert))
    context.load_cert_chain(str(plane.pki.client_cert("admin")),
                            str(plane.pki.client_key("admin")))
    url = f"{plane.server}/apis/{api.GROUP}/{api.VERSION}/namespaces/{NS}/{api.PLURAL}"

    def post(body: dict[str, Any]) -> None:
        request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, context=context, timeout=60) as answer:
            answer.read()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(post, bodies))


def forced_closes(plane: ControlPlane) -> int:
    """Watches the API server closed because their client fell behind the watch cache."""
    return sum("due to unresponsiveness" in line for line in
               (plane.logs_dir / "kube-apiserver.log").read_text(errors="replace").splitlines())


# --------------------------------------------------------------------------- the run


SHARED_CLAIM = "bench-shared"


def shared_claim() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": SHARED_CLAIM, "namespace": NS},
            "spec": {"accessModes": ["ReadWriteMany"],
                     "resources": {"requests": {"storage": "1Ti"}}, "storageClassName": ""}}


def pod_writes(events: list[dict[str, Any]]) -> dict[str, int]:
    """Every answered write to the benchmark's pods, by who made it: the events each pod
    watcher (the operator's included) receives."""
    writes = Counter()
    for e in events:
        ref = e.get("objectRef") or {}
        if (e.get("stage") == "ResponseComplete" and ref.get("resource") == "pods"
                and ref.get("namespace") == NS and e["verb"] in ("create", "patch", "update")
                and (e.get("responseStatus") or {}).get("code", 0) < 300):
            what = e["verb"] + (f" {ref['subresource']}" if ref.get("subresource") else "")
            writes[f"{e['user']['username']}: {what}"] += 1
    return dict(sorted(writes.items()))


def start_profiler(pid: int, output: Path) -> subprocess.Popen:
    """py-spy (on PATH, not a dependency) sampling the operator from submission until all
    jobs are Running, as collapsed stacks (flamegraph.pl, speedscope). It costs the operator CPU: take the figures from a
    run without it."""
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("--profile needs py-spy on PATH (pip install py-spy)")
    proc = subprocess.Popen([py_spy, "record", "--pid", str(pid), "--rate", "200",
                             "--format", "raw", "--output", str(output), "--nonblocking", "--gil"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)  # py-spy attaches
    return proc


def stop_profiler(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
    proc.wait(timeout=60)


def run(jobs: int, nodes: int, fake_nodes: int, timeout: float, keep: bool,
        existing_claim: bool = False, source: Path = ROOT,
        profile: Path | None = None) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="ftjob-scale-real-"))
    plane = ControlPlane(workdir / "state")
    set_up = time.monotonic()
    plane.start()
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=str(plane.kubeconfig))
    volumes = LocalVolumes(client.CoreV1Api(api_client), workdir / "volumes").start()
    kwok = Kwok(plane, workdir)
    operator: OperatorProcess | None = None
    try:
        operator_user, kubeconfig = install_operator(plane, workdir)
        kwok.start()
        kwok.add_nodes(fake_nodes)
        create_namespace(plane, NS)
        if existing_claim:
            apply(plane, [shared_claim()])
            wait_for(lambda: json.loads(plane.get(
                f"/api/v1/namespaces/{NS}/persistentvolumeclaims/{SHARED_CLAIM}")[1]
            ).get("status", {}).get("phase") == "Bound", 60, "the shared claim to be bound")
        set_up = time.monotonic() - set_up

        lock = threading.Lock()
        pod_job: dict[str, str] = {}
        running_pods: dict[str, set[str]] = {}
        last_pod_running: dict[str, float] = {}
        job_running_at: dict[str, float] = {}
        all_pods_running_at: list[float] = []

        def on_pod(etype: str, obj: dict[str, Any], now: float) -> None:
            meta = obj.get("metadata") or {}
            job = (meta.get("labels") or {}).get(naming.LABEL_JOB)
            if not job:
                return
            with lock:
                pod_job[meta["name"]] = job
                if etype != "DELETED" and (obj.get("status") or {}).get("phase") == "Running":
                    seen = running_pods.setdefault(job, set())
                    if meta["name"] not in seen:
                        seen.add(meta["name"])
                        if len(seen) == nodes:
                            last_pod_running[job] = now
                        if sum(map(len, running_pods.values())) == jobs * nodes:
                            all_pods_running_at.append(now)

        def on_job(etype: str, obj: dict[str, Any], now: float) -> None:
            if (obj.get("status") or {}).get("phase") == "Running":
                with lock:
                    job_running_at.setdefault(obj["metadata"]["name"], now)

        # Only Running pods: a fraction of the pod events, so this process keeps up.
        watchers = [Watcher(plane, f"/api/v1/namespaces/{NS}/pods", on_pod,
                            "fieldSelector=status.phase%3DRunning"),
                    Watcher(plane, f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{NS}/{api.PLURAL}",
                            on_job)]
        for w in watchers:
            w.start()
            w.started_watching.wait(30)
            if w.error:
                raise RuntimeError(f"{w.name}: {w.error}")

        operator = OperatorProcess(plane, kubeconfig, operator_user, workdir, source)
        proc = operator.start()
        idle = rss_mib(proc.pid)
        others = {name: p.pid for name, p in plane.processes.items()}
        others["kwok"] = kwok.process.pid
        cpu_before = {name: cpu_seconds(pid) for name, pid in
                      {"operator": proc.pid, **others}.items()}
        self_before = resource.getrusage(resource.RUSAGE_SELF)

        profiler = start_profiler(proc.pid, profile) if profile else None
        bodies = [manifest(f"scale-{i:04d}", nodes=nodes) for i in range(jobs)]
        for body in bodies:
            body["spec"]["resources"].update(POD_RESOURCES)
            if existing_claim:
                body["spec"]["storage"] = {"existingClaim": SHARED_CLAIM}
        wall_start = time.time()
        start = time.monotonic()
        submit(plane, bodies)
        submitted = time.monotonic() - start

        def done() -> bool:
            for w in watchers:
                if w.error:
                    raise RuntimeError(f"{w.name}: {w.error}")
            if proc.poll() is not None:
                raise RuntimeError(f"operator exited: see {workdir / 'operator.log'}")
            return len(job_running_at) == jobs and bool(all_pods_running_at)

        wait_for(done, timeout, f"{jobs} jobs and {jobs * nodes} pods Running", interval=0.2,
                 describe=lambda: f"jobs Running: {len(job_running_at)}, pods Running: "
                                  f"{sum(map(len, running_pods.values()))}")
        elapsed = time.monotonic() - start
        wall_end = time.time()
        memory = rss_mib(proc.pid)
        if profiler is not None:
            stop_profiler(profiler)
        cpu = {name: round(cpu_seconds(pid) - cpu_before[name], 1)
               for name, pid in {"operator": proc.pid, **others}.items()}
        self_after = resource.getrusage(resource.RUSAGE_SELF)
        cpu["this process (watches, volumes, submit)"] = round(
            self_after.ru_utime + self_after.ru_stime
            - self_before.ru_utime - self_before.ru_stime, 1)
        for w in watchers:
            w.stopping.set()
        time.sleep(3)  # anything the operator does right after the last job turned Running
        operator.stop()
        operator = None

        events = audit_events(plane)
        mine = [e for e in completed(events, operator_user) if e["verb"] != "watch"]
        at_end = [e for e in mine if _ts(e["requestReceivedTimestamp"]) <= wall_end]
        startup = [e for e in at_end if _ts(e["requestReceivedTimestamp"]) < wall_start]
        by_call = Counter(_call(e) for e in at_end)
        watches = Counter(_call(e) for e in events
                          if (e.get("user") or {}).get("username") == operator_user
                          and e["verb"] == "watch" and e.get("stage") == "ResponseStarted")
        audit = audit_latencies(events, operator_user, pod_job)
        # Watches of the operator that ended before it stopped: the server closed them
        # (timeoutSeconds, or a client too slow for the watch cache).
        closed_watches = Counter(
            _call(e) for e in events if (e.get("user") or {}).get("username") == operator_user
            and e["verb"] == "watch" and e.get("stage") == "ResponseComplete"
            and _ts(e["stageTimestamp"]) <= wall_end)
        watch = [job_running_at[j] - last_pod_running[j] for j in job_running_at
                 if j in last_pod_running]

        def since(t: float | None) -> float | None:
            return None if t is None else round(t - wall_start, 2)

        all_pods = round(all_pods_running_at[0] - start, 2)
        return {
            "jobs": jobs, "pods": jobs * nodes, "fake_nodes": fake_nodes,
            "storage": f"existingClaim {SHARED_CLAIM}" if existing_claim else "a claim per job",
            "control_plane_start_seconds": round(plane.startup_seconds, 1),
            "set_up_seconds": round(set_up, 1),
            "seconds_to_submit": round(submitted, 2),
            "seconds_until_all_pods_running": all_pods,
            "seconds_until_all_running": round(elapsed, 2),
            "seconds_to_last_pod_created": since(last_at(events, operator_user, "create", "pods")),
            "seconds_to_last_pod_bound": since(last_at(events, SCHEDULER_USER, "create", "pods",
                                                       "binding")),
            "seconds_to_last_pod_marked_running": since(last_at(events, KWOK_USER, "patch",
                                                                "pods", "status")),
            "operator_rss_mib_idle": idle["rss_mib"],
            "operator_rss_mib_at_end": memory["rss_mib"],
            "operator_peak_rss_mib": memory["peak_rss_mib"],
            "event_to_action_ms_audit_p50": round(percentile(list(audit.values()), 50) * 1000, 1),
            "event_to_action_ms_audit_p99": round(percentile(list(audit.values()), 99) * 1000, 1),
            "event_to_action_ms_audit_max": round(max(audit.values(), default=float("nan"))
                                                  * 1000, 1),
            "event_to_action_jobs_audit": len(audit),
            "event_to_action_ms_watch_p50": round(percentile(watch, 50) * 1000, 1),
            "event_to_action_ms_watch_p99": round(percentile(watch, 99) * 1000, 1),
            "event_to_action_ms_watch_max": round(max(watch, default=float("nan")) * 1000, 1),
            "cpu_seconds_during_run": cpu,
            "api_requests_total": len(at_end),
            "api_requests_at_startup": len(startup),
            "api_requests_within_3s_after": len(mine) - len(at_end),
            # children, pods, 2 status writes, 2 Events (no finalizer patch: job_loops.py)
            "api_requests_minimum": jobs * ((5 if existing_claim else 6) + nodes + 2 + 2),
            "api_requests_by_call": dict(sorted(by_call.items())),
            "operator_watches_closed_by_server": closed_watches,
            "benchmark_watch_reconnects": sum(w.reconnects for w in watchers),
            "apiserver_forced_watch_closes": forced_closes(plane),
            "watches_opened": dict(sorted(watches.items())),
            "pod_writes_by_user": pod_writes(events),
            "audit_log_mib": round(plane.audit_log.stat().st_size / 2**20, 1),
            "workdir": str(workdir) if keep else None,
        }
    finally:
        if operator is not None:
            operator.stop()
        kwok.stop()
        volumes.stop()
        api_client.close()
        plane.stop()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--nodes", type=int, default=4, help="pods per job")
    parser.add_argument("--fake-nodes", type=int, default=20, help="kwok Nodes")
    parser.add_argument("--timeout", type=float, default=480)
    parser.add_argument("--existing-claim", action="store_true",
                        help="jobs share one bound claim (storage.existingClaim) instead of "
                        "each creating one: no pod waits for a volume to be provisioned")
    parser.add_argument("--keep", action="store_true", help="keep the state, logs, audit log")
    parser.add_argument("--source", type=Path, default=ROOT,
                        help="checkout whose operator runs (a git worktree: before/after)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="write a py-spy profile (collapsed stacks) of the operator to this file")
    args = parser.parse_args()
    print(json.dumps(run(args.jobs, args.nodes, args.fake_nodes, args.timeout, args.keep,
                         args.existing_claim, args.source.resolve(), args.profile), indent=2))


if __name__ == "__main__":
    main()
