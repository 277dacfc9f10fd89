"""The Docker CLI, and nothing else. Debian's /usr/bin/docker by default (see FACTS)."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

DOCKER = os.environ.get("DOCKER", "/usr/bin/docker")


class DockerError(RuntimeError):
    pass


class Docker:
    def __init__(self, binary: str = DOCKER, timeout: float = 60.0) -> None:
        self.binary = binary
        self.timeout = timeout

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        done = subprocess.run([self.binary, *args], capture_output=True, timeout=self.timeout)
        if check and done.returncode != 0:
            raise DockerError(f"docker {args[0]} failed ({done.returncode}): "
                              f"{done.stderr.decode(errors='replace').strip()}")
        return done

    def run(self, args: list[str]) -> str:
        """`docker run --detach ...`; returns the container id."""
        return self._run(*args).stdout.decode().strip()

    def image_exists(self, image: str) -> bool:
        return self._run("image", "inspect", image, check=False).returncode == 0

    def state(self, container: str) -> dict[str, Any] | None:
        """The container's .State, or None when there is no such container."""
        done = self._run("inspect", "--format", "{{json .State}}", container, check=False)
        if done.returncode != 0:
            return None
        return json.loads(done.stdout)

    def kill(self, container: str, signal: str = "KILL") -> None:
        # A container that already exited answers an error; that is the wanted end state.
        self._run("kill", f"--signal={signal}", container, check=False)

    def logs(self, container: str, tail: int | None = None, timestamps: bool = False) -> bytes:
        args = (["logs"] + ([f"--tail={tail}"] if tail is not None else [])
                + (["--timestamps"] if timestamps else []) + [container])
        done = self._run(*args, check=False)
        return done.stdout + done.stderr

    def remove(self, container: str) -> None:
        self._run("rm", "--force", container, check=False)

    def containers(self, label: str) -> list[str]:
        """Names of all containers (running or not) with this label (`key=value`)."""
        done = self._run("ps", "--all", "--quiet", "--filter", f"label={label}",
                         "--format", "{{.Names}}")
        return [line for line in done.stdout.decode().split() if line]
