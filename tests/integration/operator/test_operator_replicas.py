"""Two operator replicas as the chart runs them with `replicaCount: 2`: both watch and run the
job loops, and only the one holding the replicas' Lease writes (ftjob_operator/leadership.py):
the first started takes it. The API server's audit log, with each replica under its own
ServiceAccount, shows who wrote what and when.

- SIGKILL the active one while a rank fails: the standby takes over once the killed one's
  Lease record has gone unrenewed for the Lease's duration (15 s) and restarts the job
  exactly once.
- SIGSTOP the active one past the Lease's duration while a rank fails, then wake it: the
  woken one finishes the plan it was in before it learns it was replaced; the Lease's fence
  keeps its writes out while the other holds it: the two never write in turns.
"""

from __future__ import annotations

import contextlib
import copy
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from ftjob_api import naming

from tests.controlplane.install import (apply, chart_rbac, kubectl, service_account_kubeconfig,
                                        wait_established)
from tests.integration.operator.helpers import (NAME, TIMEOUT, PodCreations, Real, bring_up,
                                                describe, manifest, operator_process,
                                                parse_time, settled_audit_events)
from tests.polling import wait_for
from tests.unit.chart.rendering import chart_crds, container_env, one, render

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


# The chart for HA: two replicas, so kopf peering; all namespaces (the default), so one
# ClusterKopfPeering. The chart refuses the self-signed webhook certificate with two replicas,
# so cert-manager's (the webhook itself is not served here). Its own full name, so that its
# ClusterRole and ServiceAccount do not replace the session's `ftjob` ones other tests use.
VALUES = {"replicaCount": 2, "fullnameOverride": "ftjob-ha",
          "webhook": {"certificates": {"source": "cert-manager"}}}
WRITES = {"create", "update", "patch", "delete", "deletecollection"}
# kopf's keep-alives (every replica writes them, paused or not) and the Lease.
PEERINGS = {"clusterkopfpeerings", "kopfpeerings", "leases"}


@dataclass
class Replica:
    identity: str  # kopf's peering identity (POD_ID)
    user: str  # the ServiceAccount it authenticates as: tells its requests apart
    kubeconfig: Path


@dataclass
class Install:
    env: dict[str, str]  # the chart's FTJOB_* for the operator container
    peering: str
    replicas: list[Replica]


@pytest.fixture
def ha(cluster, tmp_path) -> Iterator[Install]:
    """What the chart installs for two replicas (kopf's peering CRDs, the ClusterKopfPeering,
    its RBAC), plus a second ServiceAccount bound like the chart's, for the second replica.
    Removed afterwards: the RBAC and the peering object always, the CRDs when this test
    installed them (left behind they would be inert: other tests run kopf standalone)."""
    plane = cluster.plane
    objects = render(VALUES)
    deployment = one(objects, "Deployment")
    env = container_env(deployment["spec"]["template"]["spec"]["containers"][0])
    crds = [c for c in chart_crds() if c["spec"]["group"] == "kopf.dev"]
    crd_path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
    ours = [c for c in crds if plane.get(crd_path + c["metadata"]["name"])[0] == 404]
    rbac = chart_rbac(VALUES)
    account = one(rbac, "ServiceAccount")
    second = copy.deepcopy(account)
    second["metadata"]["name"] += "-b"
    bindings = []
    for binding in (o for o in rbac if o["kind"] in ("ClusterRoleBinding", "RoleBinding")):
        binding = copy.deepcopy(binding)
        binding["metadata"]["name"] += "-b"
        binding["subjects"] = [{"kind": "ServiceAccount", **{
            k: second["metadata"][k] for k in ("name", "namespace")}}]
        bindings.append(binding)
    peering = one(objects, "ClusterKopfPeering")
    created = [*rbac, second, *bindings, peering]
    try:
        apply(plane, crds)
        for crd in crds:
            wait_established(plane, crd["metadata"]["name"])
        apply(plane, created)
        replicas = []
        for identity, sa in (("replica-a", account), ("replica-b", second)):
            ns, name = sa["metadata"]["namespace"], sa["metadata"]["name"]
            kubeconfig = tmp_path / f"{identity}.kubeconfig"
            replicas.append(Replica(identity, f"system:serviceaccount:{ns}:{name}",
                                    service_account_kubeconfig(plane, ns, name, kubeconfig)))
        assert deployment["spec"]["replicas"] == len(replicas)
        yield Install(env, peering["metadata"]["name"], replicas)
    finally:
        kubectl(plane, "delete", "--ignore-not-found", "-f", "-",
                input=yaml.safe_dump_all([*created, *ours]))
        kubectl(plane, "delete", "--ignore-not-found", "lease", "-n",
                env["FTJOB_LEASE_NAMESPACE"], env["FTJOB_PEERING"])


def replica(cluster, install: Install, r: Replica, log: Path, **env: str):
    """`python -m ftjob_operator` with the chart's peering and namespace settings."""
    return operator_process(cluster, log, kubeconfig=r.kubeconfig, wait_healthy=False, **env,
                            FTJOB_PEERING=install.env["FTJOB_PEERING"],
                            FTJOB_LEASE_NAMESPACE=install.env["FTJOB_LEASE_NAMESPACE"],
                            # "": all namespaces, as the chart has it by default
                            FTJOB_NAMESPACES=install.env["FTJOB_NAMESPACES"],
                            # kopf's identity in the peering object (else user@host/...)
                            POD_ID=r.identity)


def peers(h: Real, name: str) -> dict[str, dict]:
    """The ClusterKopfPeering's records: identity -> priority, lifetime, lastseen."""
    return h.custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings",
                                              name).get("status") or {}


def lease(h: Real, ha: Install) -> tuple[str, datetime, float]:
    """The replicas' Lease: (holder, last renewal, duration in seconds)."""
    from kubernetes import client

    spec = client.CoordinationV1Api(h.custom.api_client).read_namespaced_lease(
        ha.env["FTJOB_PEERING"], ha.env["FTJOB_LEASE_NAMESPACE"]).spec
    return spec.holder_identity or "", spec.renew_time, float(spec.lease_duration_seconds)


def holds_lease(h: Real, ha: Install, r: Replica) -> bool:
    # leadership.identity(): POD_ID, then a random tail
    return lease(h, ha)[0].startswith(f"{r.identity}_")


def received(event: dict) -> datetime:
    return parse_time(event["requestReceivedTimestamp"])


def start_both(stack: contextlib.ExitStack, cluster, ha: Install, h: Real,
               logs: dict[str, Path], tails, **first_env: str) -> tuple[dict, Replica, Replica]:
    """The first replica started, then the second once the first holds the Lease, which it
    keeps: the first is the active one. `first_env`: more variables for the first. Returns
    (processes, active, standby)."""
    from kubernetes.client.exceptions import ApiException

    active, standby = ha.replicas
    procs = {active.identity: stack.enter_context(
        replica(cluster, ha, active, logs[active.identity], **first_env))}

    def leading() -> bool:
        try:
            return holds_lease(h, ha, active)
        except ApiException as exc:
            if exc.status == 404:  # not created yet
                return False
            raise

    wait_for(leading, TIMEOUT, what=f"{active.identity} holding the Lease", describe=tails)
    procs[standby.identity] = stack.enter_context(
        replica(cluster, ha, standby, logs[standby.identity]))
    seen = wait_for(lambda: set(p := peers(h, ha.peering)) == set(procs) and p,
                    TIMEOUT, what="both replicas in the peering object", describe=tails)
    assert holds_lease(h, ha, active), tails()
    return procs, active, standby


def writes_by(audit: list[dict], r: Replica, namespace: str) -> list[dict]:
    """The replica's writes to the test's jobs and their children (not its keep-alives or
    the Lease; not what another test of the session wrote)."""
    return sorted((e for e in audit if (e.get("user") or {}).get("username") == r.user
                   and e["verb"] in WRITES
                   and (e.get("objectRef") or {}).get("namespace") == namespace
                   and (e.get("objectRef") or {}).get("resource") not in PEERINGS),
                  key=received)


def test_standby_takes_over_once_when_the_active_replica_is_killed(cluster, ha, tmp_path):
    h = Real(cluster)
    created = PodCreations(h)
    logs = {r.identity: tmp_path / f"{r.identity}.log" for r in ha.replicas}

    def tails() -> str:
        return "".join(f"\n--- {n}\n{p.read_text()[-2000:]}" for n, p in logs.items())

    try:
        with contextlib.ExitStack() as stack:
            procs, active, standby = start_both(stack, cluster, ha, h, logs, tails)
            h.create_job(manifest())
            bring_up(h)
            proc = procs[active.identity]
            proc.kill()
            killed = datetime.now(UTC)
            proc.wait(timeout=30)
            # Its last renewal: the standby takes the Lease once it has seen that record
            # unchanged for the Lease's duration.
            _, renewed, duration = lease(h, ha)
            expiry = renewed + timedelta(seconds=duration)
            h.kubelet.terminate(h.ns, naming.pod(NAME, 1, 1), 1)
            st = bring_up(h, attempt=2, timeout=duration + TIMEOUT)
            assert procs[standby.identity].poll() is None, tails()
    finally:
        created.stop()
    assert st["restarts"] == 1, st
    assert created.duplicates() == [], describe(h)
    assert sorted(created.names) == ["demo-1-0", "demo-1-1", "demo-2-0", "demo-2-1"]

    audit = settled_audit_events(h)

    by_active, by_standby = writes_by(audit, active, h.ns), writes_by(audit, standby, h.ns)
    creators = {e["objectRef"]["name"]: e["user"]["username"] for e in audit
                if e["verb"] == "create" and (e.get("objectRef") or {}).get("resource") == "pods"
                and e["objectRef"].get("namespace") == h.ns
                and not e["objectRef"].get("subresource")  # the scheduler's bindings
                and (e.get("responseStatus") or {}).get("code") == 201}
    assert creators == {"demo-1-0": active.user, "demo-1-1": active.user,
                        "demo-2-0": standby.user, "demo-2-1": standby.user}, creators
    assert by_standby, "the standby never wrote"
    first = received(by_standby[0])
    # Waiting for the Lease until the kill: not one write (keep-alives aside).
    assert first > killed, by_standby[0]
    # The killed replica's last request was answered before the standby's first write:
    # never both writing.
    last_answered = max(parse_time(e["stageTimestamp"]) for e in by_active)
    assert last_answered < first, (last_answered, first)
    # The standby wrote once the Lease record had expired, not before.
    assert first >= expiry, (first, expiry)
    pods_at = max(received(e) for e in by_standby
                  if e["verb"] == "create" and e["objectRef"].get("resource") == "pods"
                  and not e["objectRef"].get("subresource"))

    # The figures (pytest -rP or -s shows them). The hand-over is the time left on the killed
    # replica's Lease record (renewed every 2 s: up to its 15 s duration) plus the standby's
    # reaction (it looks every 2 s).
    def after_kill(t: datetime) -> str:
        return f"{(t - killed).total_seconds():.2f}s"

    ref = by_standby[0]["objectRef"]
    print(f"\nhand-over ({active.identity} killed, {standby.identity} took over): record "
          f"expired {after_kill(expiry)} after the kill (duration {duration:.0f}s); "
          f"standby's first write {after_kill(first)} ({by_standby[0]['verb']} "
          f"{ref.get('resource')}/{ref.get('subresource', '')}, "
          f"{(first - expiry).total_seconds() * 1000:.0f} ms after the expiry); attempt-2 "
          f"pods {after_kill(pods_at)}; killed replica's last write answered "
          f"{(first - last_answered).total_seconds():.2f}s before the standby's first")


def test_a_frozen_replica_woken_after_the_other_took_over_is_fenced(cluster, ha, tmp_path):
    """The active replica freezes (SIGSTOP, a fault point) right after it recorded a gang
    restart and before it deleted the pods; the standby takes over once the frozen one's
    Lease record expires, and restarts the job; then the frozen one is woken and carries on
    with its plan: its deletes stop at the fence (it no longer holds the Lease, and its
    clock says its last renewal is stale). One restart counted, each pod created once, and
    in the audit log the two write in turns that never interleave (the job restarts once
    more when a rank fails again, under whichever holds the Lease then)."""
    h = Real(cluster)
    created = PodCreations(h)
    logs = {r.identity: tmp_path / f"{r.identity}.log" for r in ha.replicas}

    def tails() -> str:
        return "".join(f"\n--- {n}\n{p.read_text()[-3000:]}" for n, p in logs.items())

    point = "rank failed, gang restart:after-status"
    try:
        with contextlib.ExitStack() as stack:
            procs, active, standby = start_both(stack, cluster, ha, h, logs, tails,
                                                FTJOB_FAULT_POINTS=f"{point}:stop")
            h.create_job(manifest())
            bring_up(h)
            h.kubelet.terminate(h.ns, naming.pod(NAME, 1, 1), 1)
            wait_for(lambda: f"fault point {point} reached" in logs[active.identity].read_text(),
                     TIMEOUT, what=f"{active.identity} frozen at {point}", describe=tails)
            frozen_at = datetime.now(UTC)
            duration = lease(h, ha)[2]
            bring_up(h, attempt=2, timeout=duration + TIMEOUT)
            procs[active.identity].send_signal(signal.SIGCONT)
            wait_for(lambda: "deciding again once leading" in logs[active.identity].read_text(),
                     TIMEOUT, what=f"{active.identity}'s plan stopped at the fence",
                     describe=tails)
            h.kubelet.terminate(h.ns, naming.pod(NAME, 2, 0), 1)
            st = bring_up(h, attempt=3, timeout=duration + TIMEOUT)
            assert all(p.poll() is None for p in procs.values()), tails()
    finally:
        created.stop()
    assert st["restarts"] == 2, st
    assert created.duplicates() == [], describe(h)
    assert sorted(created.names) == [f"demo-{a}-{r}" for a in (1, 2, 3) for r in (0, 1)]

    audit = settled_audit_events(h)
    users = {active.user: active.identity, standby.user: standby.identity}
    turns: list[tuple[str, datetime, datetime]] = []  # (replica, first write, last answered)
    for event in sorted((e for r in ha.replicas for e in writes_by(audit, r, h.ns)),
                        key=received):
        who = users[event["user"]["username"]]
        if turns and turns[-1][0] == who:
            turns[-1] = (who, turns[-1][1], parse_time(event["stageTimestamp"]))
        else:
            turns.append((who, received(event), parse_time(event["stageTimestamp"])))
    # The frozen replica wrote before it froze; the standby took over after that.
    assert [t[0] for t in turns[:2]] == [active.identity, standby.identity], (turns, tails())
    assert turns[0][2] < frozen_at < turns[1][1], (turns, frozen_at)
    # Never both: each turn's first write comes after the previous turn's last answer.
    for before, after in zip(turns, turns[1:]):
        assert before[2] < after[1], (before, after, tails())
    # The attempt-1 pods were deleted by the standby alone (the frozen one's deletes fenced).
    deleters = {e["user"]["username"] for e in audit if e["verb"] == "delete"
                and e["user"]["username"] in users  # not the test's kubelet finishing them
                and (e.get("objectRef") or {}).get("resource") == "pods"
                and e["objectRef"].get("namespace") == h.ns
                and e["objectRef"].get("name", "").startswith("demo-1-")}
    assert deleters == {standby.user}, deleters
    print(f"\nturns of writes: {[(t[0], t[1].time().isoformat()) for t in turns]}")
