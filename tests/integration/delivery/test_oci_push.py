"""Pushing a model folder to a real registry (docker-registry with TLS and htpasswd), and
reading it back with the `oras` CLI: what a `docker pull` or a KServe modelcar would get."""

from __future__ import annotations

import json

import pytest

from ftjob_trainer.delivery import oci
from tests.oci_images import copy_to_layout, read_image, run_oras, tree_digests, unpack

pytestmark = pytest.mark.timeout(300)


def test_push_then_pull_gives_the_same_files(registry, oras_cli, model, tmp_path):
    ref = f"{registry.host}/team/bert:v1"
    result = oci.push(model, ref, docker_config=registry.docker_config(),
                      ca_file=registry.ca_file)

    assert result.reference == ref
    assert (result.blobs_sent, result.blobs_skipped) == (4, 0)  # 2 shards, small files, config
    assert result.bytes_sent == result.size
    assert sorted(registry.blob_uploads("team/bert")) == sorted(result.sent)
    # oras takes localhost for plain HTTP unless told otherwise.
    served = json.loads(run_oras(oras_cli, "manifest", "fetch", "--descriptor",
                                 "--plain-http=false", "--ca-file",
                                 str(registry.ca_file), "-u", registry.username,
                                 "-p", registry.password, ref))
    assert served["digest"] == result.digest
    assert served["mediaType"] == oci.MANIFEST_MEDIA_TYPE

    manifest, _, layers = read_image(copy_to_layout(oras_cli, registry, ref, tmp_path))
    assert tree_digests(unpack(layers, tmp_path / "rootfs")) == tree_digests(model)
    assert [layer["annotations"][oci.FILES_ANNOTATION] for layer in manifest["layers"]] == [
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
        "README.md\nconfig.json\ngeneration_config.json\ntokenizer/vocab.txt"]
    assert manifest["annotations"]["org.opencontainers.image.title"] == "bert"
    assert "org.opencontainers.image.created" in manifest["annotations"]


def test_failures_say_what_to_fix(registry, model):
    ref = f"{registry.host}/team/bert:v1"
    with pytest.raises(oci.PushError) as wrong:
        oci.push(model, ref, docker_config=registry.docker_config(password="not-it"),
                 ca_file=registry.ca_file)
    assert not wrong.value.retryable
    assert registry.host in wrong.value.message and "credentials" in wrong.value.message

    with pytest.raises(oci.PushError) as anonymous:
        oci.push(model, ref, ca_file=registry.ca_file)
    assert not anonymous.value.retryable and "has none for" in anonymous.value.message

    with pytest.raises(oci.PushError) as untrusted:
        oci.push(model, ref, docker_config=registry.docker_config())
    assert not untrusted.value.retryable and "CA" in untrusted.value.message

    registry.stop()
    with pytest.raises(oci.PushError) as down:
        oci.push(model, ref, docker_config=registry.docker_config(), ca_file=registry.ca_file)
    assert down.value.retryable
    assert f"localhost port {registry.port}" in down.value.message
    assert registry.blob_uploads() == []


def test_push_again_sends_only_what_changed(registry, model):
    ref = f"{registry.host}/team/bert:v1"
    push = dict(docker_config=registry.docker_config(), ca_file=registry.ca_file)
    first = oci.push(model, ref, **push)
    assert len(registry.blob_uploads()) == 4

    again = oci.push(model, ref, **push)
    assert (again.blobs_sent, again.blobs_skipped, again.bytes_sent) == (0, 4, 0)
    assert len(registry.blob_uploads()) == 4

    (model / "config.json").write_text('{"model_type": "bert", "hidden_size": 64}\n')
    changed = oci.push(model, ref, **push)
    assert (changed.blobs_sent, changed.blobs_skipped) == (2, 2)  # small-files layer, config
    assert registry.blob_uploads()[4:] == list(changed.sent)
    assert not set(first.sent[:2]) & set(changed.sent)  # the shards are not sent again
    assert changed.digest != first.digest


def test_a_push_cut_short_resumes(registry, oras_cli, model, tmp_path):
    ref = f"{registry.host}/team/bert:v2"
    push = dict(docker_config=registry.docker_config(), ca_file=registry.ca_file)
    events = []

    def stop_after_first_layer(event: oci.BlobEvent) -> None:
        events.append(event)
        if event.sent and len(events) == 1:
            registry.stop()

    with pytest.raises(oci.PushError) as cut:
        oci.push(model, ref, on_blob=stop_after_first_layer, **push)
    assert cut.value.retryable
    assert [e.files for e in events] == [("model-00001-of-00002.safetensors",)]
    assert registry.blob_uploads() == [events[0].digest]

    registry.start()
    resumed = oci.push(model, ref, **push)
    assert (resumed.blobs_sent, resumed.blobs_skipped) == (3, 1)
    assert events[0].digest not in resumed.sent
    assert registry.blob_uploads()[1:] == list(resumed.sent)

    _, _, layers = read_image(copy_to_layout(oras_cli, registry, ref, tmp_path))
    assert tree_digests(unpack(layers, tmp_path / "rootfs")) == tree_digests(model)


@pytest.mark.parametrize("registry", ["token"], indirect=True)
def test_a_pull_only_token_is_renewed_for_the_push(registry, model, monkeypatch):
    """A token held for pull only (as a HEAD's challenge gives) is replaced, on the upload's
    401, by one for the scope the registry then asks: the push goes on."""
    from tests.registry import issue_token

    connect = oci._Pusher.connect

    def connect_with_a_pull_token(pusher) -> None:
        connect(pusher)
        pki = registry.dir / "pki"
        pusher.registry.auth.token = issue_token(pki / "apiserver.crt", pki / "apiserver.key",
                                                 registry.username, ["repository:team/bert:pull"])

    monkeypatch.setattr(oci._Pusher, "connect", connect_with_a_pull_token)
    result = oci.push(model, f"{registry.host}/team/bert:v1",
                      docker_config=registry.docker_config(), ca_file=registry.ca_file)
    assert result.blobs_sent == 4
    assert '"POST /v2/team/bert/blobs/uploads/ HTTP/1.1" 401' in registry.log_file.read_text()
