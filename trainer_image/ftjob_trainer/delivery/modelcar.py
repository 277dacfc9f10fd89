"""The one thing a model image needs besides `/models` to run as a KServe modelcar: a shell.

KServe starts the image as a sidecar whose command is `sh -c 'ln -s /proc/$$/root/models
/mnt/ && sleep infinity'`, so the image needs `sh`, `ln` and `sleep` that run on their own.
A statically linked busybox (Debian's busybox-static, in the trainer image) is all three:
its own layer, `/bin/busybox` and `sh`, `ln`, `sleep` linked to it, built byte for byte the
same each time, so the registry stores it once for every model pushed.
"""

from __future__ import annotations

import hashlib
import io
import logging
import struct
import tarfile
from pathlib import Path

from .oci import Layer

log = logging.getLogger("ftjob_trainer.export")

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "ln", "sleep")  # what KServe's modelcar command runs
PT_INTERP = 3  # an ELF program header naming the dynamic loader


def is_static_executable(path: Path) -> bool:
    """Whether `path` is an ELF executable that needs no dynamic loader (it runs in an image
    that has nothing else)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only
                return False
            order = "<" if head[5] == 1 else ">"
            phoff, = struct.unpack_from(order + "Q", head, 32)
            phentsize, phnum = struct.unpack_from(order + "HH", head, 54)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    return all(struct.unpack_from(order + "I", table, i * phentsize)[0] != PT_INTERP
               for i in range(phnum) if (i + 1) * phentsize <= len(table))


def find_shell(candidate: Path = BUSYBOX) -> Path | None:
    """The static busybox to put in the image, or None (the image then has no shell: `docker
    pull` and `oras` take it, KServe's modelcar cannot start it)."""
    if is_static_executable(candidate):
        return candidate
    log.warning("no statically linked busybox at %s: the image gets no shell, so KServe can "
                "read it but not run it as a modelcar (install busybox-static)", candidate)
    return None


def _entry(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, size, link
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    return info


def shell_layer(busybox: Path) -> Layer:
    """`/bin/busybox` and its applets for the modelcar command, as one deterministic
    uncompressed tar (the binary is a couple of MB: built in memory)."""
    data = busybox.read_bytes()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_entry("bin/", tarfile.DIRTYPE, 0o755))
        tar.addfile(_entry("bin/busybox", tarfile.REGTYPE, 0o755, len(data)), io.BytesIO(data))
        for applet in APPLETS:
            tar.addfile(_entry(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox"))
    body = out.getvalue()
    files = ("/bin/busybox", *(f"/bin/{a}" for a in APPLETS))
    return Layer(body, f"sha256:{hashlib.sha256(body).hexdigest()}", files)  # type: ignore[arg-type]
