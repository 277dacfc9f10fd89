"""The modelcar's shell layer: a static busybox and the applets KServe's command runs, the
same bytes each time; a dynamically linked binary (it would not run in the image) is not
taken."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest
from ftjob_trainer.delivery import modelcar

BUSYBOX = Path("/bin/busybox")
static = pytest.mark.skipif(not modelcar.is_static_executable(BUSYBOX),
                            reason="Debian's busybox-static is not installed (.ci/run installs it)")


@static
def test_the_shell_layer_is_busybox_and_its_applets_made_the_same_each_time():
    first, second = modelcar.shell_layer(BUSYBOX), modelcar.shell_layer(BUSYBOX)
    assert first.digest == second.digest and first.body == second.body
    with tarfile.open(fileobj=io.BytesIO(first.body)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == ["bin", "bin/busybox", "bin/ln", "bin/sh", "bin/sleep"]
        assert tar.extractfile("bin/busybox").read() == BUSYBOX.read_bytes()
    assert all(members[f"bin/{a}"].issym() and members[f"bin/{a}"].linkname == "busybox"
               for a in modelcar.APPLETS)
    assert members["bin/busybox"].mode == 0o755
    assert {(m.mtime, m.uid, m.gid) for m in members.values()} == {(0, 0, 0)}
    assert first.files == ("/bin/busybox", "/bin/sh", "/bin/ln", "/bin/sleep")


@static
def test_a_static_busybox_is_found():
    assert modelcar.find_shell(BUSYBOX) == BUSYBOX


def test_a_dynamically_linked_or_missing_binary_is_not_taken(tmp_path):
    dynamic = Path(shutil.which("ls"))
    assert not modelcar.is_static_executable(dynamic)
    assert modelcar.find_shell(dynamic) is None
    assert modelcar.find_shell(tmp_path / "absent") is None
    text = tmp_path / "busybox"
    text.write_text("#!/bin/sh\necho not a binary\n")
    assert modelcar.find_shell(text) is None
