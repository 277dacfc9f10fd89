"""What only real nodes show: a kubelet, containerd, the flannel pod network and CoreDNS
(the kind cluster of scripts/kind-up.sh, one control plane and two workers).

One long job (`NODES`) trains while the first tests look at its pods: where they run, the
name rank 1 rendezvouses with, /dev/shm, `kubectl logs`. Then the worker holding rank 1 is
drained and the next attempt must resume on what is left. A second job runs over its
memory limit.
"""

from __future__ import annotations

import ipaddress

import pytest
from ftjob_api import naming

from . import jobs, kit
from .kit import finished, seed, step_of
from tests.polling import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NODES, OOM = "e2e-nodes", "e2e-oom"
# So many steps that no machine finishes before the scenarios end: they wait for conditions,
# never for time. The job is deleted by its fixture.
ENDLESS = 1_000_000
TIMEOUT = 300
SHM = "256Mi"


@pytest.fixture(scope="module")
def nodes_job(backend):
    """NODES, trained past step 5 of its first attempt, with 2 DataLoader workers per rank
    (they hand batches over through /dev/shm). Deleted at the end of the module."""
    seed(backend, [NODES, OOM])
    backend.apply(jobs.training_job(NODES, ENDLESS, save_steps=10 * ENDLESS,
                                    dataloader_num_workers=2))
    try:
        running = kit.wait_status(backend, NODES, lambda s: step_of(s) >= 5 or finished(s),
                                  "step 5", TIMEOUT)
        assert not finished(running), running
        yield running
    finally:
        backend.kubectl("delete", "finetunejob", NODES, "--wait=false", check=False)


def rank_pods(backend, name: str, attempt: int) -> list[dict]:
    pods = backend.list("pods", f"{naming.LABEL_JOB}={name},{naming.LABEL_ATTEMPT}={attempt}")
    return sorted(pods, key=lambda p: int(p["metadata"]["labels"][naming.LABEL_RANK]))


def test_ranks_run_on_different_workers_with_pod_network_addresses(backend, nodes_job):
    pods = rank_pods(backend, NODES, nodes_job["attempt"])
    assert len(pods) == 2, [p["metadata"]["name"] for p in pods]
    nodes = [p["spec"]["nodeName"] for p in pods]
    assert nodes[0] != nodes[1], f"both ranks on {nodes[0]}"
    for pod in pods:
        address = ipaddress.ip_address(pod["status"]["podIP"])
        assert not address.is_loopback, pod["status"]["podIP"]
        assert address in ipaddress.ip_network("10.244.0.0/16"), address  # flannel's network


def test_rank1_finds_rank0_through_the_headless_service_in_cluster_dns(backend, nodes_job):
    rank0, rank1 = rank_pods(backend, NODES, nodes_job["attempt"])
    name = naming.master_addr(NODES, nodes_job["attempt"])
    # The name torchrun rendezvouses with, resolved in rank 1's container by CoreDNS.
    resolved = backend.exec(rank1["metadata"]["name"], "python", "-c",
                            f"import socket; print(socket.gethostbyname({name!r}))")
    assert resolved.strip() == rank0["status"]["podIP"], (name, resolved)


def test_shm_is_memory_backed_and_dataloader_workers_train(backend, nodes_job):
    rank0 = rank_pods(backend, NODES, nodes_job["attempt"])[0]["metadata"]["name"]
    mounts = backend.exec(rank0, "cat", "/proc/mounts").splitlines()
    shm = [line.split() for line in mounts if line.split()[1] == "/dev/shm"]
    assert shm and shm[0][2] == "tmpfs", mounts
    assert "size=262144k" in shm[0][3].split(","), shm  # the job's shmSize, 256Mi
    # Each rank runs 2 DataLoader worker processes beside its trainer process (started
    # again each epoch: poll).
    count = "grep -lx pt_data_worker /proc/[0-9]*/comm 2>/dev/null | wc -l"
    wait_for(lambda: int(backend.exec(rank0, "sh", "-c", count)) == 2, 60,
             f"2 DataLoader workers in {rank0}", interval=0.5,
             describe=lambda: backend.exec(rank0, "sh", "-c", "cat /proc/[0-9]*/comm"))
    later = kit.wait_status(backend, NODES, lambda s: step_of(s) > step_of(nodes_job),
                            "the step to advance", TIMEOUT)
    assert later["phase"] == "Running", later


def test_trainer_root_filesystem_is_read_only_while_it_trains(backend, nodes_job):
    """containerd mounts the image read-only: writing there fails (EROFS, whatever the
    folder's owner), while the scratch folders (/tmp, HOME) and the output volume take
    writes, and the job keeps training."""
    rank0 = rank_pods(backend, NODES, nodes_job["attempt"])[0]["metadata"]["name"]
    probe = ("for d in / /opt/venv /etc /tmp /home/ftjob /output; do "
             "if touch $d/.ftjob-write-probe 2>/dev/null; then rm -f $d/.ftjob-write-probe; "
             "echo $d writable; else echo $d refused; fi; done")
    found = dict(line.split() for line in backend.exec(rank0, "sh", "-c", probe).splitlines())
    assert found == {"/": "refused", "/opt/venv": "refused", "/etc": "refused",
                     "/tmp": "writable", "/home/ftjob": "writable", "/output": "writable"}, found
    for path in ("/probe", "/opt/venv/probe"):
        failed = backend.kubectl("exec", rank0, "--", "sh", "-c", f"echo x > {path}",
                                 check=False)
        assert failed.returncode != 0 and "Read-only file system" in failed.stderr, \
            (path, failed.stderr)
    later = kit.wait_status(backend, NODES, lambda s: step_of(s) > step_of(nodes_job),
                            "the step to advance", TIMEOUT)
    assert later["phase"] == "Running", later


def test_kubectl_logs_of_rank0_shows_its_progress(backend, nodes_job):
    """The kubelet keeps the container's output: the Trainer's log lines (logging_steps 1),
    more of them as training goes on."""
    rank0 = rank_pods(backend, NODES, nodes_job["attempt"])[0]["metadata"]["name"]

    def loss_lines() -> list[str]:
        log = backend.kubectl("logs", rank0).stdout
        return [line for line in log.splitlines() if line.startswith("{'loss':")]

    first = wait_for(loss_lines, 60, f"loss lines in `kubectl logs {rank0}`",
                     describe=lambda: backend.kubectl("logs", rank0, "--tail=30").stdout)
    wait_for(lambda: len(loss_lines()) > len(first), 60, "more loss lines", interval=1.0)
    assert "'epoch':" in first[-1], first[-1]


@pytest.fixture(scope="module")
def drained(backend, nodes_job):
    """The worker holding rank 1 drained (`kubectl drain`: evictions, SIGTERM): the job's
    status then, and once the next attempt trains past the step it resumed from."""
    before = kit.job_status(backend, NODES)
    rank1 = rank_pods(backend, NODES, before["attempt"])[1]
    node = rank1["spec"]["nodeName"]
    try:
        backend.drain(node)

        def resumed_and_training(status):
            resumed = (status.get("checkpoint") or {}).get("resumedFromStep") or 0
            return (status.get("attempt") == before["attempt"] + 1
                    and status.get("phase") == "Running" and resumed > 0
                    and step_of(status) > resumed)

        after = kit.wait_status(backend, NODES, resumed_and_training,
                                "the next attempt to train past its resume point", TIMEOUT)
        yield node, before, after
    finally:
        backend.uncordon(node)


def test_drain_checkpoints_on_sigterm_and_resumes_on_the_remaining_worker(backend, drained):
    node, before, after = drained
    resumed = after["checkpoint"]["resumedFromStep"]
    # 0 steps lost: the attempt saved on SIGTERM at or after the last step seen before it.
    assert resumed >= step_of(before) > 0, (resumed, step_of(before))
    (record,) = [a for a in after["attempts"] if a["attempt"] == before["attempt"]]
    assert record["reason"] == "Preempted", record
    assert record.get("stepsLost", 0) == 0, record
    assert after.get("restarts", 0) == 0, "a drain must not use the restart budget"
    pods = rank_pods(backend, NODES, after["attempt"])
    assert {p["spec"]["nodeName"] for p in pods} and node not in {
        p["spec"]["nodeName"] for p in pods}, [p["spec"]["nodeName"] for p in pods]


def test_a_rank_over_its_memory_limit_ends_the_attempt_as_oomkilled(backend):
    job = jobs.training_job(OOM, 50, 10, max_restarts=0)
    job["spec"]["resources"]["memory"] = "200Mi"
    backend.apply(job)
    done = kit.wait_status(backend, OOM, finished, "the end", TIMEOUT)
    assert done["phase"] == "Failed", done
    (record,) = done["attempts"]
    assert "OOMKilled" in (record.get("message") or ""), record
