"""The pure parts of the OCI push (ftjob_trainer.delivery.oci): layer planning, the tar bytes,
the image config and manifest, references, credentials, and the errors a user reads."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
import requests

from ftjob_trainer.delivery import oci

MiB = 1 << 20


def make_folder(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def tar_bytes(layer_tar: oci.LayerTar) -> bytes:
    return b"".join(layer_tar)


# --------------------------------------------------------------------------- planning


def test_each_large_file_is_a_layer_and_the_small_ones_share_the_last(tmp_path):
    folder = make_folder(tmp_path / "m", {
        "b.safetensors": b"b" * MiB, "a.safetensors": b"a" * (MiB + 1),
        "config.json": b"{}", "tok/vocab.txt": b"x" * (MiB - 1), "README.md": b"# card"})
    assert oci.plan_layers(folder) == [
        [("a.safetensors", MiB + 1)], [("b.safetensors", MiB)],
        [("README.md", 6), ("config.json", 2), ("tok/vocab.txt", MiB - 1)]]


def test_only_small_or_only_large_files_and_an_empty_folder(tmp_path):
    small = make_folder(tmp_path / "small", {"a": b"1", "b": b"2"})
    assert oci.plan_layers(small) == [[("a", 1), ("b", 1)]]
    assert oci.plan_layers(small, large_file_bytes=1) == [[("a", 1)], [("b", 1)]]
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert oci.plan_layers(tmp_path / "empty") == []
    assert oci.build_layers(tmp_path / "empty") == []


# --------------------------------------------------------------------------- tar bytes


def test_the_tar_puts_the_files_under_models_with_fixed_owners_modes_and_times(tmp_path):
    folder = make_folder(tmp_path / "m", {"config.json": b"{}", "tok/deep/vocab.txt": b"abc"})
    os.chmod(folder / "config.json", 0o600)
    body = oci.LayerTar(folder, oci.plan_layers(folder)[0])
    data = tar_bytes(body)
    assert len(data) == len(body) and len(data) % 512 == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        assert [(m.name, m.type, m.mode) for m in members] == [
            ("models", tarfile.DIRTYPE, 0o755), ("models/tok", tarfile.DIRTYPE, 0o755),
            ("models/tok/deep", tarfile.DIRTYPE, 0o755),
            ("models/config.json", tarfile.REGTYPE, 0o644),
            ("models/tok/deep/vocab.txt", tarfile.REGTYPE, 0o644)]
        assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
        assert not any(m.pax_headers for m in members)
        assert tar.extractfile("models/tok/deep/vocab.txt").read() == b"abc"


def test_the_same_file_gives_the_same_bytes_whatever_its_time_mode_or_folder(tmp_path):
    content = os.urandom(3 * MiB + 7)
    one = make_folder(tmp_path / "one", {"model.safetensors": content, "config.json": b"{}"})
    two = make_folder(tmp_path / "two", {"model.safetensors": content, "config.json": b"{1}"})
    os.utime(two / "model.safetensors", (1, 1))
    os.chmod(two / "model.safetensors", 0o755)
    first, second = oci.build_layers(one), oci.build_layers(two)
    assert first[0].digest == second[0].digest  # the shard: unchanged, never sent twice
    assert first[1].digest != second[1].digest  # the small files: config.json changed
    assert first[0].digest == "sha256:" + hashlib.sha256(tar_bytes(first[0].body)).hexdigest()
    assert tar_bytes(first[0].body) == tar_bytes(oci.build_layers(one)[0].body)


def test_a_long_path_round_trips_without_a_time_in_its_pax_header(tmp_path):
    rel = "/".join(["d" * 40] * 4) + "/" + "f" * 90 + ".bin"
    folder = make_folder(tmp_path / "m", {rel: b"data"})
    data = tar_bytes(oci.LayerTar(folder, oci.plan_layers(folder)[0]))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.getmember(f"models/{rel}")
        assert tar.extractfile(member).read() == b"data"
        assert member.mtime == 0 and set(member.pax_headers) <= {"path"}


def test_a_file_that_shrinks_while_pushed_is_a_retryable_error(tmp_path):
    folder = make_folder(tmp_path / "m", {"a.bin": b"x" * 5000})
    body = oci.LayerTar(folder, oci.plan_layers(folder)[0])
    (folder / "a.bin").write_bytes(b"x" * 10)
    with pytest.raises(oci.PushError) as changed:
        tar_bytes(body)
    assert changed.value.retryable and "changed while it was pushed" in changed.value.message
    (folder / "a.bin").unlink()
    with pytest.raises(oci.PushError) as gone:
        tar_bytes(body)
    assert not gone.value.retryable and "a.bin" in gone.value.message


# --------------------------------------------------------------------------- config, manifest


def test_the_config_names_the_layers_and_no_time(tmp_path):
    folder = make_folder(tmp_path / "m", {"w.bin": b"w" * MiB, "config.json": b"{}"})
    layers = oci.build_layers(folder)
    config_bytes = oci.image_config(layers)
    assert config_bytes == oci.image_config(oci.build_layers(folder))
    config = json.loads(config_bytes)
    assert config["architecture"] == "amd64" and config["os"] == "linux"
    assert config["rootfs"] == {"type": "layers", "diff_ids": [la.digest for la in layers]}
    assert [h["created_by"] for h in config["history"]] == [
        "ftjob: models/w.bin", "ftjob: models/config.json"]
    assert "created" not in config
    assert json.loads(oci.image_config(layers, "linux/arm64"))["architecture"] == "arm64"


def test_the_manifest_describes_config_and_layers(tmp_path):
    folder = make_folder(tmp_path / "m", {"w.bin": b"w" * MiB, "config.json": b"{}"})
    layers = oci.build_layers(folder)
    config = oci.image_config(layers)
    manifest = json.loads(oci.image_manifest(layers, config, {"org.example": "x"}))
    assert manifest["schemaVersion"] == 2 and manifest["mediaType"] == oci.MANIFEST_MEDIA_TYPE
    assert manifest["config"] == {"mediaType": oci.CONFIG_MEDIA_TYPE, "size": len(config),
                                  "digest": "sha256:" + hashlib.sha256(config).hexdigest()}
    assert [(la["mediaType"], la["digest"], la["size"]) for la in manifest["layers"]] == [
        (oci.LAYER_MEDIA_TYPE, layer.digest, layer.size) for layer in layers]
    assert manifest["layers"][1]["annotations"] == {oci.FILES_ANNOTATION: "config.json"}
    assert manifest["annotations"] == {"org.example": "x"}


# --------------------------------------------------------------------------- references


@pytest.mark.parametrize("text, expected", [
    ("registry.example.com/team/model:v1", ("registry.example.com", "team/model", "v1")),
    ("oci://localhost:5000/model", ("localhost:5000", "model", "latest")),
    ("localhost/a/b/c:1.0-rc_1", ("localhost", "a/b/c", "1.0-rc_1")),
    ("docker.io/bert:v1", ("docker.io", "library/bert", "v1")),
    ("Registry.Example.com:443/x:y", ("registry.example.com:443", "x", "y")),
])
def test_references(text, expected):
    ref = oci.parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag) == expected
    assert str(ref) == "{}/{}:{}".format(*expected)


def test_docker_hub_is_reached_at_its_api_host():
    assert oci.parse_reference("docker.io/me/m:v1").api_host == "registry-1.docker.io"


@pytest.mark.parametrize("text, says", [
    ("team/model:v1", "names no registry host"),
    ("model", "names no registry host"),
    ("r.example.com/team/model@sha256:" + "0" * 64, "needs a tag"),
    ("r.example.com/Team/Model:v1", "not a valid repository"),
    ("r.example.com/team/model:-v1", "not a valid tag"),
])
def test_bad_references(text, says):
    with pytest.raises(oci.PushError) as bad:
        oci.parse_reference(text)
    assert says in bad.value.message and not bad.value.retryable


# --------------------------------------------------------------------------- credentials


def auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_credentials_from_a_dockerconfigjson(tmp_path):
    config = {"auths": {
        "https://registry.example.com/v1/": {"auth": auth("alice", "pa:ss")},
        "other.example.com:5000": {"username": "bob", "password": "pw"},
        "https://index.docker.io/v1/": {"auth": auth("carol", "hub")},
    }}
    text = json.dumps(config)
    assert oci.credentials_for(text, "registry.example.com") == oci.Credentials("alice", "pa:ss")
    assert oci.credentials_for(text.encode(), "other.example.com:5000") == oci.Credentials(
        "bob", "pw")
    assert oci.credentials_for(config, "docker.io") == oci.Credentials("carol", "hub")
    assert oci.credentials_for(text, "other.example.com") is None
    assert oci.credentials_for(None, "registry.example.com") is None
    (tmp_path / "config.json").write_text(text)
    assert oci.credentials_for(tmp_path / "config.json", "registry.example.com").username == "alice"
    assert "pa:ss" not in repr(oci.credentials_for(text, "registry.example.com"))


def test_the_older_dockercfg_layout():
    config = {"r.example.com": {"auth": auth("u", "p")}}
    assert oci.credentials_for(config, "r.example.com") == oci.Credentials("u", "p")


@pytest.mark.parametrize("content, says", [
    ("{not json", "not valid JSON"),
    ("[]", "not a JSON object"),
    ('{"auths": {"r.example.com": {"auth": "bm9jb2xvbg=="}}}', "not base64 of user:password"),
    ('{"auths": {"r.example.com": {"auth": "%%%"}}}', "not base64 of user:password"),
    ('{"auths": {"r.example.com": {"identitytoken": "t"}}}', "neither auth nor username"),
    ('{"auths": []}', 'no "auths" map'),
])
def test_bad_dockerconfigjson(content, says):
    with pytest.raises(oci.PushError) as bad:
        oci.credentials_for(content, "r.example.com")
    assert says in bad.value.message and not bad.value.retryable


# --------------------------------------------------------------------------- errors


REF = oci.parse_reference("r.example.com:5000/team/model:v1")
ALICE = oci.Credentials("alice", "pw")


@pytest.mark.parametrize("status, said, credentials, says, retryable", [
    (401, "", ALICE, "refused the credentials of user 'alice'", False),
    (401, "", None, "has none for r.example.com:5000", False),
    (403, "DENIED: requested access to the resource is denied", ALICE,
     "refused the push to repository team/model", False),
    (404, "NAME_UNKNOWN: repository name not known to registry", ALICE,
     "has no repository team/model", False),
    (400, "DIGEST_INVALID: provided digest did not match", ALICE, "changed while", True),
    (500, "", ALICE, "answered 500", True),
    (503, "", ALICE, "answered 503", True),
    (429, "TOOMANYREQUESTS: slow down", ALICE, "slow down", True),
    (400, "MANIFEST_INVALID: bad", ALICE, "MANIFEST_INVALID", False),
])
def test_http_errors(status, said, credentials, says, retryable):
    error = oci._http_error(status, said, REF, "uploading", credentials)
    assert says in error.message and error.retryable is retryable
    assert "r.example.com:5000" in error.message


def test_network_errors_name_the_host_and_what_to_do():
    refused = requests.exceptions.ConnectionError("Connection refused")
    error = oci._network_error(refused, REF, False, None)
    assert error.retryable and "r.example.com port 5000" in error.message
    untrusted = requests.exceptions.SSLError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate "
                                             "verify failed: unable to get local issuer")
    error = oci._network_error(untrusted, REF, False, "/etc/ca.pem")
    assert not error.retryable and "/etc/ca.pem" in error.message
    assert "caConfigMapRef" in error.message
    plain = oci.parse_reference("plain.example.com/m:v1")
    assert "port 80" in oci._network_error(refused, plain, True, None).message
    assert "port 443" in oci._network_error(refused, plain, False, None).message
    ipv6 = oci.parse_reference("[::1]:5000/m:v1")
    assert "[::1] port 5000" in oci._network_error(refused, ipv6, False, None).message


def test_server_error_bodies_are_read():
    response = requests.Response()
    response.status_code = 403
    response._content = json.dumps({"errors": [{"code": "DENIED", "message": "no"}]}).encode()
    assert oci._server_says(response) == "DENIED: no"
    response._content = b"<html>proxy says no</html>"
    assert oci._server_says(response) == "<html>proxy says no</html>"


def test_push_refuses_what_it_cannot_push_before_any_request(tmp_path):
    with pytest.raises(oci.PushError, match="is not a folder"):
        oci.push(tmp_path / "missing", "r.example.com/m:v1")
    with pytest.raises(oci.PushError, match="CA bundle .* does not exist"):
        oci.push(tmp_path, "r.example.com/m:v1", ca_file=tmp_path / "ca.pem")


def test_a_pinned_reference_names_the_digest():
    result = oci.PushResult("localhost:5000/team/m:v1", "sha256:ab", 1, 1, 0, 1, ("sha256:ab",),
                            None)
    assert result.pinned == "localhost:5000/team/m@sha256:ab"


def test_a_large_file_is_read_in_blocks(tmp_path):
    folder = make_folder(tmp_path / "m", {"w.bin": os.urandom(3 * oci.BLOCK + 5)})
    blocks = list(oci.LayerTar(folder, oci.plan_layers(folder)[0]))
    assert max(len(b) for b in blocks) <= oci.BLOCK
