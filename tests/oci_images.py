"""Reading a pushed image back as `docker pull` or a KServe modelcar would: the `oras` CLI
(scripts/build-oras.sh) copies it into an OCI layout, the layers are checked against the
image spec and unpacked. For the registry tests (tests/integration/delivery) and the e2e
push from the kind cluster."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import os
from pathlib import Path

from ftjob_trainer.delivery import oci


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p)
            for p in sorted(root.rglob("*")) if p.is_file()}


def run_oras(oras_cli: str, *args: str) -> str:
    done = subprocess.run([oras_cli, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"oras {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def oras_binary() -> str:
    """The oras binary: $FTJOB_ORAS, else built (once, cached) by scripts/build-oras.sh."""
    if os.environ.get("FTJOB_ORAS"):
        return os.environ["FTJOB_ORAS"]
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(["bash", str(root / "scripts" / "build-oras.sh")], cwd=root,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"scripts/build-oras.sh failed:\n{done.stderr[-3000:]}"
    return done.stdout.strip().splitlines()[-1]


def copy_to_layout(oras_cli: str, registry, ref: str, tmp_path: Path) -> Path:
    """`oras cp` of the whole image (manifest, config, every layer) into an OCI layout: what
    `docker pull` fetches. (`oras pull` writes only layers titled with a file name; these are
    tars to unpack under /, as a container runtime does, so they carry no title.)
    `registry`: a tests/registry.py TestRegistry (TLS, credentials), or None for a plain
    HTTP registry without auth."""
    layout = tmp_path / "layout"
    if registry is None:
        source = ["--from-plain-http"]
    else:
        auth = tmp_path / "auth.json"
        auth.write_text(registry.docker_config())
        source = ["--from-plain-http=false", "--from-ca-file", str(registry.ca_file),
                  "--from-registry-config", str(auth)]
    run_oras(oras_cli, "cp", *source, ref, "--to-oci-layout", f"{layout}:pulled")
    return layout


def read_image(layout: Path) -> tuple[dict, dict, list[bytes]]:
    """The manifest, config and layers of the layout's image, each checked against the OCI
    image spec as far as docker and containerd rely on it."""
    def blob(digest: str) -> bytes:
        data = (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
        return data

    index = json.loads((layout / "index.json").read_text())
    (desc,) = [m for m in index["manifests"]
               if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "pulled"]
    assert desc["mediaType"] == oci.MANIFEST_MEDIA_TYPE
    manifest = json.loads(blob(desc["digest"]))
    assert manifest["schemaVersion"] == 2 and manifest["mediaType"] == oci.MANIFEST_MEDIA_TYPE
    assert manifest["config"]["mediaType"] == oci.CONFIG_MEDIA_TYPE
    config_bytes = blob(manifest["config"]["digest"])
    assert len(config_bytes) == manifest["config"]["size"]
    config = json.loads(config_bytes)
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    assert config["rootfs"]["type"] == "layers"
    # Uncompressed tars: each layer's diff_id is its own digest.
    assert config["rootfs"]["diff_ids"] == [layer["digest"] for layer in manifest["layers"]]
    assert len(config["history"]) == len(manifest["layers"])
    layers = []
    for layer in manifest["layers"]:
        assert layer["mediaType"] == oci.LAYER_MEDIA_TYPE
        data = blob(layer["digest"])
        assert len(data) == layer["size"]
        layers.append(data)
    return manifest, config, layers


def unpack(layers: list[bytes], root: Path) -> Path:
    """Apply the layers in order, as a container runtime does; returns /models. Each entry
    is under /models, or the modelcar shell's /bin (trainer delivery/modelcar.py)."""
    for data in layers:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar.getmembers():
                assert member.name.split("/")[0] in ("models", "bin"), member.name
                assert (member.mtime, member.uid, member.gid) == (0, 0, 0)
                if not member.issym():
                    assert member.mode == (0o755 if member.isdir() or member.name.startswith(
                        "bin/") else 0o644), (member.name, oct(member.mode))
                assert not member.pax_headers
            tar.extractall(root, filter="fully_trusted")
    return root / "models"


def runs_as_modelcar(root: Path) -> str:
    """Run KServe's modelcar command, with the image's own shell alone, in the unpacked
    image `root` (chroot: nothing of this machine's is visible), the /proc link aside:
    `ln -s /models /mnt/models && sleep 0`, then read a file through the link."""
    (root / "mnt").mkdir(exist_ok=True)
    done = subprocess.run(["chroot", str(root), "/bin/sh", "-c",
                           "ln -s /models /mnt/models && sleep 0 && ls /mnt/models/"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout
