"""The pod runner's pure parts, on pods rendered by the operator's own builder.

No Docker and no API here (these run in `make test`); the runner's behaviour with real
containers is covered by test_podrunner_docker.py (e2e).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ftjob_api import api
from ftjob_operator import render
from ftjob_operator.settings import Settings

from .podrunner import status, translate
from .podrunner.addresses import AddressBook, hosts_entries, pod_dns_names

JOB = render.JobRef(name="demo", namespace="team-a", uid="0000-1111")


def rendered_pod(rank: int = 0, nodes: int = 2, **spec_extra) -> dict:
    spec = api.parse_spec({
        "task": "sequence-classification",
        "model": {"path": "/models/tiny"},
        "dataset": {"files": {"train": "/output/data/train.jsonl"}},
        "resources": {"nodes": nodes, **spec_extra.pop("resources", {})},
        **spec_extra,
    })
    return render.render_pod(JOB, spec, attempt=1, rank=rank,
                             settings=Settings(trainer_image="ftjob-trainer:dev"))


def inputs(tmp_path: Path, **over) -> translate.RunInputs:
    base = dict(
        container_name="c1", image="ftjob-trainer:dev", env=[("A", "1")],
        volumes={
            render.JOB_FILE_VOLUME: translate.HostVolume(path=tmp_path / "cm"),
            render.OUTPUT_VOLUME: translate.HostVolume(path=tmp_path / "claim"),
            render.SHM_VOLUME: translate.HostVolume(memory=True, size_limit="2Gi"),
        },
        hosts={"demo-1-0.demo": "127.0.1.1"}, termination_file=tmp_path / "term",
    )
    base.update(over)
    return translate.RunInputs(**base)


@pytest.mark.parametrize("text, expected", [
    ("8Gi", 8 * 2**30), ("512Mi", 512 * 2**20), ("1G", 10**9), ("1000", 1000), ("1.5Ki", 1536)])
def test_parse_bytes(text, expected):
    assert translate.parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["500m", "8Gb", "", "-1Gi"])
def test_parse_bytes_rejects(text):
    with pytest.raises(ValueError):
        translate.parse_bytes(text)


@pytest.mark.parametrize("text, expected", [("2", 2.0), ("500m", 0.5), ("1.5", 1.5)])
def test_parse_cpus(text, expected):
    assert translate.parse_cpus(text) == expected


def test_run_args_follow_the_pod(tmp_path):
    pod = rendered_pod(rank=1, resources={"cpu": "1500m", "memory": "3Gi", "shmSize": "2Gi"})
    args = translate.docker_run_args(pod, inputs(tmp_path))
    container = pod["spec"]["containers"][0]
    # command replaces the entrypoint, args follow the image, in order
    image_at = args.index("ftjob-trainer:dev")
    assert args[image_at + 1:] == container["args"]
    assert "--entrypoint=ftjob-launch" in args[:image_at]
    assert "--network=host" in args and "--hostname=demo-1-1" in args
    assert "--add-host=demo-1-0.demo:127.0.1.1" in args
    assert f"--shm-size={2 * 2**30}" in args
    assert f"--memory={3 * 2**30}" in args and "--cpus=1.5" in args
    assert "--user=1000:1000" in args and "--group-add=1000" in args
    assert "--cap-drop=ALL" in args
    assert ["--env", "A=1"] == args[args.index("--env"):args.index("--env") + 2]
    mounts = [args[i + 1] for i, a in enumerate(args) if a == "--mount"]
    assert f"type=bind,source={tmp_path / 'cm'},target=/etc/ftjob,readonly" in mounts
    assert f"type=bind,source={tmp_path / 'claim'},target=/output" in mounts
    assert f"type=bind,source={tmp_path / 'term'},target=/dev/termination-log" in mounts


def test_existing_claim_sub_path_is_mounted(tmp_path):
    pod = rendered_pod(storage={"existingClaim": "shared"})
    args = translate.docker_run_args(pod, inputs(tmp_path))
    assert f"type=bind,source={tmp_path / 'claim' / 'demo'},target=/output" in \
        [args[i + 1] for i, a in enumerate(args) if a == "--mount"]


def test_missing_host_volume_names_pod_and_volume(tmp_path):
    pod = rendered_pod()
    with pytest.raises(translate.UnsupportedPod, match=r"team-a/demo-1-0: volumeMounts output"):
        translate.docker_run_args(pod, inputs(tmp_path, volumes={
            render.JOB_FILE_VOLUME: translate.HostVolume(path=tmp_path)}))


def test_resolve_env_reads_references_and_fields():
    pod = rendered_pod(model={"name": "org/m", "hfTokenSecretRef": {"name": "hf", "key": "t"}},
                       env=[{"name": "FROM_CM", "configMapKeyRef": {"name": "cm", "key": "k"}}])
    pod["spec"]["containers"][0]["env"].append(
        {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    store = {("secret", "hf", "t"): "tok", ("configMap", "cm", "k"): "v"}
    env = dict(translate.resolve_env(pod, "127.0.1.7", lambda *ref: store.get(ref)))
    assert env["HF_TOKEN"] == "tok" and env["FROM_CM"] == "v" and env["MY_IP"] == "127.0.1.7"
    assert env["FTJOB_JOB_NAME"] == "demo"


def test_resolve_env_missing_reference_names_the_variable():
    pod = rendered_pod(model={"name": "org/m", "hfTokenSecretRef": {"name": "hf", "key": "t"}})
    with pytest.raises(translate.UnsupportedPod, match="env HF_TOKEN: secretKeyRef hf/t"):
        translate.resolve_env(pod, "127.0.1.1", lambda *ref: None)


@pytest.mark.parametrize("template, field", [
    ({"runtimeClassName": "gvisor"}, "spec.runtimeClassName"),
    ({"envFrom": [{"configMapRef": {"name": "cm"}}]}, "envFrom"),
])
def test_pod_template_fields_it_cannot_honour_are_refused(template, field):
    with pytest.raises(translate.UnsupportedPod, match=f"team-a/demo-1-0: {field}"):
        translate.the_container(rendered_pod(podTemplate=template))


def test_only_the_master_rank_holds_the_rendezvous_port():
    assert translate.host_ports(rendered_pod(rank=0)) == {29500}
    assert translate.host_ports(rendered_pod(rank=1)) == set()


def test_every_rank_dials_rank_0_of_its_attempt():
    assert translate.rendezvous(rendered_pod(rank=1)) == ("demo-1-0", 29500)
    assert translate.rendezvous(rendered_pod(rank=0)) == ("demo-1-0", 29500)


def test_addresses_are_distinct_and_stable():
    book = AddressBook()
    a, b = book.address("ns", "p0"), book.address("ns", "p1")
    assert a != b and a.startswith("127.0.1.") and book.address("ns", "p0") == a
    assert book.address("other", "p0") not in (a, b)


def test_hosts_entries_cover_service_names():
    book = AddressBook()
    entries = hosts_entries([("demo-1-0", "demo", "team-a")], book)
    for name in pod_dns_names("demo-1-0", "demo", "team-a"):
        assert entries[name] == book.address("team-a", "demo-1-0")
    assert "demo-1-0.demo.team-a.svc.cluster.local" in entries


def test_terminated_status_reasons():
    def state(code, oom=False):
        return status.ContainerState.from_inspect({
            "Running": False, "ExitCode": code, "OOMKilled": oom,
            "StartedAt": "2026-01-01T00:00:00.123456789Z", "FinishedAt": "0001-01-01T00:00:00Z"})
    ok = status.terminated_status("trainer", "img", "abc", "127.0.1.1", state(0), "", "now")
    assert ok["status"]["phase"] == "Succeeded"
    assert ok["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    failed = status.terminated_status("trainer", "img", "abc", "127.0.1.1", state(11), "bad data",
                                      "now")["status"]
    term = failed["containerStatuses"][0]["state"]["terminated"]
    assert failed["phase"] == "Failed" and term["exitCode"] == 11 and term["message"] == "bad data"
    assert term["startedAt"] == "2026-01-01T00:00:00Z"
    oom = status.terminated_status("trainer", "img", "abc", "x", state(137, oom=True), "", "now")
    assert oom["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] == "OOMKilled"


def test_termination_message_is_capped_and_falls_back_to_logs():
    long = b"x" * 5000
    assert len(status.termination_message(long, "File", 1, b"")) == 4096
    assert status.termination_message(b"", "File", 1, b"log line") == ""
    assert status.termination_message(b"", "FallbackToLogsOnError", 1, b"log line") == "log line"
    assert status.termination_message(b"", "FallbackToLogsOnError", 0, b"log line") == ""
