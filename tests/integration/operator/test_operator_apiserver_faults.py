"""The operator process through API server faults on the real control plane: the server
killed for 30 s while jobs run, and an etcd compaction during a gap in the operator's watch.

Both restart the session's kube-apiserver (tests/controlplane/cluster.py: kill, restart); the
controller-manager, the scheduler and the session's node, volume and kubelet threads
reconnect on their own, so the tests after these run on the same plane.
"""

from __future__ import annotations

import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from ftjob_api import api, naming

from tests.integration.operator.helpers import (TIMEOUT, PodCreations, Real, bring_up,
                                                describe, event_reasons, manifest,
                                                operator_log, operator_process, parse_time,
                                                pods, settled_audit_events, status)
from tests.polling import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

APISERVER = "kube-apiserver"
JOBS = 10
OUTAGE_SECONDS = 30.0
# After the server's return the scheduler resumes its watches on client-go's reflector
# backoff, which grew while the server was down: 30 s at most, doubled by jitter.
SCHEDULER_TIMEOUT = TIMEOUT + 60


def kill_apiserver_for(plane, seconds: float) -> tuple[float, float]:
    """SIGKILL the API server, keep it down `seconds`, start it again and wait for /readyz.
    Returns (killed_at, ready_at) on the monotonic clock."""
    plane.kill(APISERVER)
    killed_at = time.monotonic()
    # A fixed outage is the fault injected here, not a wait for some condition: nothing
    # can change while the server is down, so there is nothing to poll for. The Event only
    # gives a clock-measured wait that nothing sets.
    threading.Event().wait(max(0.0, seconds - (time.monotonic() - killed_at)))
    plane.restart(APISERVER, timeout=180)
    return killed_at, time.monotonic()


def scheduled_then_up(h: Real, name: str = "demo", attempt: int = 1) -> dict:
    """`bring_up`, once the scheduler has bound the attempt's pods: after an API server
    restart that can take longer than the test kubelet's bind wait (30 s), and it is the
    control plane's recovery, not the operator's."""
    wait_for(lambda: (ps := pods(h, name, attempt)) and all(p["spec"].get("nodeName")
                                                            for p in ps),
             SCHEDULER_TIMEOUT, what=f"{name}: the scheduler to bind attempt {attempt}",
             describe=lambda: describe(h, name))
    return bring_up(h, attempt=attempt, name=name)


def test_apiserver_killed_for_30s_while_jobs_run_and_a_rank_fails(cluster, tmp_path):
    h = Real(cluster)
    names = [f"job-{i}" for i in range(JOBS)]
    victim = names[3]
    log_path = tmp_path / "operator.log"
    created = PodCreations(h)
    try:
        with operator_process(cluster, log_path):
            for name in names:
                h.create_job(manifest(name=name))
            for name in names:
                bring_up(h, name=name)

            # The failure lands, then at once the server dies: the operator may be anywhere
            # in the gang restart (status written, pods being deleted, nothing yet) when its
            # requests start failing, and must finish it exactly once afterwards.
            h.kubelet.terminate(h.ns, naming.pod(victim, 1, 1), 1)
            killed_at, ready_at = kill_apiserver_for(cluster.plane, OUTAGE_SECONDS)
            print(f"\nAPI server down {ready_at - killed_at:.1f}s "
                  f"(killed -> restarted after {OUTAGE_SECONDS:.0f}s -> /readyz)")

            # The operator's part: nominally under 30 s (its child watches retry within about
            # 12 s, kopf's job watch within 5 s: handlers.configure_kopf); TIMEOUT for a slow
            # host.
            wait_for(lambda: len(pods(h, victim, attempt=2)) == 2, TIMEOUT,
                     what=f"{victim}: attempt 2 pods after the API server's return",
                     describe=lambda: describe(h, victim) + operator_log(log_path))
            pods_after = time.monotonic() - ready_at

            # Everyone else never noticed: still Running in attempt 1, no restart counted.
            def unsettled() -> list[str]:
                return [n for n in names if n != victim
                        and not ((s := status(h, n)).get("phase") == "Running"
                                 and s.get("attempt") == 1 and s.get("restarts", 0) == 0
                                 and {p["metadata"]["labels"][naming.LABEL_ATTEMPT]
                                      for p in pods(h, n)} == {"1"})]

            wait_for(lambda: not unsettled(), TIMEOUT, what="the other jobs Running",
                     describe=lambda: str(unsettled()) + operator_log(log_path))
            others_after = time.monotonic() - ready_at

            st = scheduled_then_up(h, victim, attempt=2)
            running_after = time.monotonic() - ready_at
            assert st["restarts"] == 1, st
            # And the plane serves a new job end to end (the scheduler's and controllers'
            # informers are back): what the next test in the session relies on.
            h.create_job(manifest(name="after-outage"))
            scheduled_then_up(h, "after-outage")
            print(f"after /readyz: {victim} attempt-2 pods {pods_after:.1f}s, Running "
                  f"{running_after:.1f}s (scheduler and kubelet included), other jobs "
                  f"checked {others_after:.1f}s, a new job Running "
                  f"{time.monotonic() - ready_at:.1f}s; {victim} events "
                  f"{sorted(event_reasons(h, victim))}")

            jobs = cluster.custom.list_namespaced_custom_object(api.GROUP, api.VERSION, h.ns,
                                                                api.PLURAL)["items"]
            assert sorted(j["metadata"]["name"] for j in jobs) == sorted([*names, "after-outage"])
            assert status(h, victim)["attempt"] == 2 and status(h, victim)["restarts"] == 1
            assert not unsettled()
            # The restart decided once: a loop whose kopf copy of the job lagged behind its own
            # status write used to decide it again (and post it again) every 10 s.
            assert event_reasons(h, victim).count("GangRestart") <= 1, event_reasons(h, victim)

        # The watch (which relists after the 410 a fresh server gives) sees the last pods
        # some time after bring_up listed them.
        last = [naming.pod(victim, 2, r) for r in (0, 1)] + [
            naming.pod("after-outage", 1, r) for r in (0, 1)]
        wait_for(lambda: all(n in created.created_at for n in last), TIMEOUT,
                 what="the pod watch to see attempt 2", describe=lambda: str(created.names))
        assert created.duplicates() == []
        assert len(created.names) == 2 * JOBS + 4, sorted(created.names)
        print(f"pod creations: {len(created.names)}, none twice: {2 * JOBS} attempt 1, "
              f"{victim} attempt 2, after-outage")
    finally:
        created.stop()


def test_compaction_during_a_watch_gap_is_handled_by_a_relist(cluster, tmp_path):
    """The operator is stopped (SIGSTOP) across an API server restart and an etcd
    compaction; a rank fails meanwhile. On SIGCONT its watches resume from versions the
    server no longer has (410 Gone), list again, and the failure is acted on once."""
    h = Real(cluster)
    log_path = tmp_path / "operator.log"
    created = PodCreations(h)
    try:
        with operator_process(cluster, log_path) as proc:
            h.create_job(manifest())
            bring_up(h)

            proc.send_signal(signal.SIGSTOP)
            # The order makes the relist the only way to learn of the failure:
            # 1. a write the operator's (label-selected) watches do not see, so the versions
            #    they hold are older than any the restarted server's fresh watch cache
            #    starts from (a resume from exactly that version would be served, not 410);
            # 2. the restart drops every stream, so no event for the failure can sit unread
            #    in the stopped operator's sockets;
            # 3. the failure, during the gap;
            # 4. compaction at the current revision: a resume that reaches etcd (not the
            #    watch cache) is answered 410 as well.
            cluster.core.create_namespaced_config_map(
                h.ns, {"metadata": {"name": "gap-marker"}})
            kill_apiserver_for(cluster.plane, 0)
            h.kubelet.terminate(h.ns, naming.pod("demo", 1, 1), 1)
            revision = cluster.plane.compact_etcd()
            resumed = datetime.now(UTC)
            proc.send_signal(signal.SIGCONT)

            wait_for(lambda: len(pods(h, attempt=2)) == 2, TIMEOUT,
                     what="attempt 2 pods after the relist",
                     describe=lambda: describe(h) + operator_log(log_path))
            st = scheduled_then_up(h, attempt=2)
            assert st["restarts"] == 1, st
            assert proc.poll() is None, operator_log(log_path)

        wait_for(lambda: all(naming.pod("demo", 2, r) in created.created_at for r in (0, 1)),
                 TIMEOUT, what="the pod watch to see attempt 2",
                 describe=lambda: str(sorted(created.created_at)))
        assert created.duplicates() == []
        assert sorted(created.names) == ["demo-1-0", "demo-1-1", "demo-2-0", "demo-2-1"]

        # The relist, from the audit log: watches.py lists pods only at its start and after
        # a 410 (a dropped stream resumes with a watch), so a plain LIST after SIGCONT is
        # the 410 being handled.
        logged = settled_audit_events(h, user=cluster.session.operator_account)
        relists = [e for e in logged
                   if e["verb"] == "list"
                   and (e.get("objectRef") or {}).get("resource") == "pods"
                   and parse_time(e["requestReceivedTimestamp"]) >= resumed]
        assert relists, (f"no LIST of pods by the operator after SIGCONT (etcd compacted at "
                         f"{revision})" + operator_log(log_path))
        assert all("labelSelector=" in e["requestURI"] for e in relists), relists
        # ...and from the operator's own log (watches.py, at INFO).
        assert f"watch of pods in {h.ns} expired (410 Gone): listing again" in \
            log_path.read_text(), operator_log(log_path)
        print(f"\netcd compacted at revision {revision}; operator relisted pods: "
              f"{[e['requestURI'] for e in relists]}")
    finally:
        created.stop()
