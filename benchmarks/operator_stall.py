"""A hung rank: how long from its last step until the operator restarts the gang, and how
many steps that loses.

    python -m benchmarks.operator_stall [--timeouts 10 20] [--hang-at 6] [--save-steps 4]

On a real control plane started for the run (tests/controlplane), the operator in this
process (kopf, as in the integration tests, under the chart's ServiceAccount) runs a
one-pod job; the test kubelet marks the pod Running and this process runs its container,
`ftjob-launch` with 2 ranks of the tiny BERT, reporting progress as the job's own
ServiceAccount. The trainer's test hook (`FTJOB_TEST_HANG_AT_STEP`) makes rank 1 stop before
step N+1, as a rank stuck in a collective would; rank 0 then waits in the gradient
all-reduce and keeps its heartbeat going. For each `stallTimeoutSeconds`:

- last step -> restart: from when this process first sees `globalStep == N` in the job's
  status (polled every 0.1 s) to when it sees the pod's deletion (the gang restart);
- steps lost: `status.attempts[0].stepsLost` (N minus the newest checkpoint's step).

Without stall detection nothing restarts such a job: gloo's and NCCL's own timeouts are
30 min and more.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from ftjob_api import api, naming

from tests import tinymodels as tm
from tests.controlplane.install import create_namespace, service_account_kubeconfig
from tests.controlplane.session import operator_cluster
from tests.integration.trainer.helpers import start
from tests.polling import wait_for

NODE = "bench-node"


@contextlib.contextmanager
def operator(kubeconfig: Path):
    from kopf.testing import KopfRunner

    os.environ.update(KUBECONFIG=str(kubeconfig), FTJOB_RESYNC_SECONDS="2",
                      FTJOB_TRAINER_IMAGE="ftjob/trainer:bench")
    with KopfRunner(["run", "--standalone", "--all-namespaces", "-m",
                     "ftjob_operator.handlers"], timeout=60) as runner:
        yield runner


def one_run(plane, api_client, kubelet, tiny: dict[str, Path], work: Path, timeout: int,
            hang_at: int, save_steps: int) -> dict[str, Any]:
    from kubernetes import client

    ns = f"b-{uuid.uuid4().hex[:6]}"
    create_namespace(plane, ns)
    custom = client.CustomObjectsApi(api_client)
    spec = {
        "task": "sequence-classification",
        "model": {"path": str(tiny["bert"])},
        "dataset": {"files": {"train": str(tiny["train"])}, "maxLength": 32},
        "trainingArguments": {"max_steps": 500, "save_steps": save_steps, "logging_steps": 1,
                              "per_device_train_batch_size": 8, "seed": 7},
        "resources": {"nodes": 1, "cpu": "1", "memory": "1Gi"},
        "storage": {"accessModes": ["ReadWriteOnce"], "size": "1Gi"},
        "restartPolicy": {"maxRestarts": 1, "backoffSeconds": 0,
                          "stallTimeoutSeconds": timeout, "startupTimeoutSeconds": 600},
    }
    body = {"apiVersion": api.API_VERSION, "kind": api.KIND,
            "metadata": {"name": "hang", "namespace": ns}, "spec": spec}
    custom.create_namespaced_custom_object(api.GROUP, api.VERSION, ns, api.PLURAL, body)

    def status() -> dict[str, Any]:
        return custom.get_namespaced_custom_object(api.GROUP, api.VERSION, ns, api.PLURAL,
                                                   "hang").get("status") or {}

    pod = naming.pod("hang", 1, 0)
    wait_for(lambda: kubelet.pods(ns), 60, "the pod")
    kubelet.run(ns, pod)
    wait_for(lambda: status().get("phase") == "Running", 60, "Running")
    trainer_kubeconfig = service_account_kubeconfig(plane, ns, naming.trainer_account("hang"),
                                                    work / f"{ns}.kubeconfig")
    run = start(work / ns, spec, nproc=2, isolate=True, name="hang", env={
        "FTJOB_JOB_NAME": "hang", "FTJOB_NAMESPACE": ns, "FTJOB_ATTEMPT": "1",
        "FTJOB_REPORTER": "kubernetes", "FTJOB_PROGRESS_INTERVAL": "0",
        "KUBECONFIG": str(trainer_kubeconfig), "FTJOB_TEST_MODE": "1",
        "FTJOB_TEST_HANG_AT_STEP": str(hang_at)})
    try:
        wait_for(lambda: (status().get("progress") or {}).get("globalStep") == hang_at, 300,
                 f"step {hang_at}", interval=0.1, describe=run.log)
        last_step = time.monotonic()

        def deleted() -> bool:  # attempt 1's pod deleted (the next one may exist already)
            mine = [p for p in kubelet.pods(ns) if p["metadata"]["name"] == pod]
            return not mine or bool(mine[0]["metadata"].get("deletionTimestamp"))

        wait_for(deleted, timeout + 120, "the restart", interval=0.1)
        restart = time.monotonic()
    finally:
        run.proc.kill()
        run.proc.wait(30)
    record = wait_for(lambda: (status().get("attempts") or [{}])[0].get("endTime")
                      and status()["attempts"][0], 30, "the attempt record")
    return {"stallTimeoutSeconds": timeout, "lastStepToRestart": round(restart - last_step, 2),
            "lastStep": record.get("lastStep"), "stepsLost": record.get("stepsLost"),
            "reason": record.get("reason"), "message": record.get("message")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeouts", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--hang-at", type=int, default=6)
    parser.add_argument("--save-steps", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ftjob-stall-") as tmp:
        root = Path(tmp)
        tiny = {"bert": tm.build_bert(root / "bert"),
                "train": tm.write_jsonl(root / "train.jsonl", tm.classification_rows(256, 1))}
        with operator_cluster(root, NODE) as c, operator(c.operator_kubeconfig):
            for timeout in args.timeouts:
                result = one_run(c.plane, c.api_client, c.kubelet, tiny, root, timeout,
                                 args.hang_at, args.save_steps)
                # KopfRunner (click's test runner) captures sys.stdout while it runs.
                print(json.dumps(result), file=sys.__stdout__, flush=True)


if __name__ == "__main__":
    main()
