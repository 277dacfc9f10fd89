"""Run the emulator in a background thread: usable from pytest, benchmarks and e2e scripts.

    with Emulator() as emu:
        emu.write_kubeconfig("/tmp/kubeconfig")
        ...  # kubectl --kubeconfig /tmp/kubeconfig --validate=false get ftj
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import kmock
import yaml

from .kubelet import Kubelet
from .server import Faults, KubeEmulator
from .store import Store


class Emulator:
    def __init__(self, crds: list[dict[str, Any]] | None = None, auto_run_pods: bool = False,
                 faults: Faults | None = None, host: str = "127.0.0.1", port: int | None = None):
        self.store = Store()
        self.handler = KubeEmulator(store=self.store, faults=faults or Faults(), strict=False)
        for crd in crds or []:
            self.handler.register_crd(crd)
        self.kubelet = Kubelet(self.store, auto_run=auto_run_pods)
        self._host, self._port = host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.base_url = ""

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Emulator:
        self._thread = threading.Thread(target=self._run, name="kubeemu", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout=30):
            raise RuntimeError("the Kubernetes emulator did not start within 30s")
        if self._error is not None:
            raise RuntimeError("the Kubernetes emulator failed to start") from self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=30)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._started.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = kmock.Server(self.handler, host=self._host, port=self._port)
        async with self.handler, server:
            self.base_url = str(server.url).rstrip("/")
            self._started.set()
            await self._stop.wait()

    # ------------------------------------------------------------------ clients

    @property
    def faults(self) -> Faults:
        return self.handler.faults

    @property
    def calls(self):
        return self.handler.calls

    def kubeconfig(self, namespace: str = "default") -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kubeemu", "cluster": {"server": self.base_url}}],
            "users": [{"name": "kubeemu", "user": {"token": "kubeemu"}}],
            "contexts": [{"name": "kubeemu", "context": {"cluster": "kubeemu", "user": "kubeemu",
                                                          "namespace": namespace}}],
            "current-context": "kubeemu",
        }

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        path = Path(path)
        path.write_text(yaml.safe_dump(self.kubeconfig(namespace)))
        return path
