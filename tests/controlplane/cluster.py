"""A local Kubernetes control plane from upstream binaries: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler on loopback, the way envtest runs one, but with the
controllers and the scheduler too.

    plane = ControlPlane(Path(".cache/cluster")).start()   # writes plane.kubeconfig (admin)
    ...
    plane.stop()

The API server runs with real authentication (client certificates from our own CA,
ServiceAccount tokens signed by a key made here), the Node and RBAC authorizers, the default
admission chain (PodSecurity, ServiceAccount, NamespaceLifecycle, ...) and an audit log of
every request (`plane.audit_log`). `make cluster-up` and the tests' session fixture both use
this class; the binaries come from scripts/build-control-plane.sh. For fault tests: `kill` and
`restart` one component, `compact_etcd`.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .pki import Pki, make_pki

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-control-plane.sh"
OPTIONAL_TOOLS = ("kwok",)  # built by BUILD_SCRIPT only when asked for
SERVICE_CIDR = "10.0.0.0/24"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
# Every request at Metadata level: who did what to which resource, without bodies.
AUDIT_POLICY = {"apiVersion": "audit.k8s.io/v1", "kind": "Policy",
                "omitStages": ["RequestReceived"], "rules": [{"level": "Metadata"}]}


class ControlPlaneError(RuntimeError):
    """The control plane could not be built or did not come up; the message says where."""


def binaries_dir(*extras: str) -> Path:
    """The folder holding the pinned binaries, building them first when needed; `extras`
    names optional tools (kwok) the caller needs as well."""
    chosen = os.environ.get("FTJOB_CONTROL_PLANE_BIN")
    if chosen and all((Path(chosen) / tool).exists() for tool in extras):
        return Path(chosen)
    done = subprocess.run(["bash", str(BUILD_SCRIPT), *extras], capture_output=True, text=True)
    if done.returncode != 0:
        raise ControlPlaneError(f"{BUILD_SCRIPT.name} failed:\n{done.stderr[-4000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_kubeconfig(path: Path, server: str, ca: Path, *, user: str, cert: Path | None = None,
                     key: Path | None = None, token: str | None = None,
                     namespace: str | None = None) -> Path:
    """A kubeconfig with one cluster, one user (client certificate or token), one context."""
    credentials: dict[str, str] = {}
    if cert is not None and key is not None:
        credentials = {"client-certificate": str(cert), "client-key": str(key)}
    if token is not None:
        credentials = {"token": token}
    context = {"cluster": "ftjob-local", "user": user}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "ftjob-local",
        "clusters": [{"name": "ftjob-local",
                      "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": "ftjob-local", "context": context}],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


@dataclass
class ControlPlane:
    """The four control-plane processes, their state and logs under `state_dir`."""

    state_dir: Path
    apiserver_port: int | None = None  # None: any free port
    bin_dir: Path | None = None
    # False (tests): the processes die with the process that started them, even on SIGKILL,
    # so an interrupted test run leaves no cluster behind. True (`make cluster-up`): they
    # outlive it, until `down`.
    detach: bool = False
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    killed: dict[str, list[str]] = field(default_factory=dict)  # name -> argv, for restart()

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).resolve()
        self.pki = Pki(self.state_dir / "pki")

    # ------------------------------------------------------------------ paths

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (system:masters): for tests' own set-up and for kubectl."""
        return self.state_dir / "kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.state_dir / "audit.log"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self._port('apiserver')}"

    def binary(self, name: str) -> Path:
        if self.bin_dir is None:
            self.bin_dir = binaries_dir()
        if name in OPTIONAL_TOOLS and not (self.bin_dir / name).exists():
            self.bin_dir = binaries_dir(name)
        return self.bin_dir / name

    def _port(self, name: str) -> int:
        """A port chosen by `start()` (kept in ports.json, so `down` in another process
        finds the same cluster)."""
        ports = self.state_dir / "ports.json"
        if not ports.exists():
            raise ControlPlaneError(f"no control plane was started in {self.state_dir}")
        return int(json.loads(ports.read_text())[name])

    # ------------------------------------------------------------------ start / stop

    def start(self, timeout: float = 120) -> ControlPlane:
        for name in COMPONENTS:  # fail early, before any process starts
            if not self.binary(name).exists():
                raise ControlPlaneError(f"{self.binary(name)} is missing")
        self.stop()  # a previous run's processes (after a crash) would hold the state
        for stale in ("etcd-data", "pki", "audit.log", "logs"):
            path = self.state_dir / stale
            if path.is_dir():
                subprocess.run(["rm", "-rf", str(path)], check=True)
            elif path.exists():
                path.unlink()
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        ports = {"apiserver": self.apiserver_port or free_port(), "etcd": free_port(),
                 "etcd-peer": free_port()}
        (self.state_dir / "ports.json").write_text(json.dumps(ports))
        make_pki(self.pki.dir)
        write_kubeconfig(self.kubeconfig, self.server, self.pki.ca_cert, user="admin",
                         cert=self.pki.client_cert("admin"), key=self.pki.client_key("admin"))
        for who in ("controller-manager", "scheduler"):
            write_kubeconfig(self.state_dir / f"{who}.kubeconfig", self.server,
                             self.pki.ca_cert, user=who, cert=self.pki.client_cert(who),
                             key=self.pki.client_key(who))
        (self.state_dir / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY))
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        self._launch("etcd", self._etcd_args(ports))
        self._wait(lambda: self._etcd_healthy(ports["etcd"]), deadline, "etcd")
        self._launch("kube-apiserver", self._apiserver_args(ports))
        self._wait(self._apiserver_ready, deadline, "kube-apiserver /readyz")
        self._launch("kube-controller-manager", self._controller_manager_args())
        self._launch("kube-scheduler", self._scheduler_args())
        # The controllers are up once the default namespace has its ServiceAccount and CA.
        self._wait(self._controllers_ready, deadline, "the controller-manager")
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Stop every process this state folder records, newest first (SIGTERM, then KILL)."""
        pids_dir = self.state_dir / "pids"
        for name in reversed(COMPONENTS):
            pid_file = pids_dir / f"{name}.pid"
            process = self.processes.pop(name, None)
            pid = process.pid if process else _read_pid(pid_file, name)
            if pid:
                _terminate(pid, process)
            pid_file.unlink(missing_ok=True)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def running(self) -> dict[str, bool]:
        pids_dir = self.state_dir / "pids"
        return {name: _alive(_read_pid(pids_dir / f"{name}.pid", name)) for name in COMPONENTS}

    # ------------------------------------------------------------------ faults

    def kill(self, name: str, timeout: float = 30) -> None:
        """SIGKILL one component (a crash: no graceful shutdown, connections reset) and wait
        until it is gone. Its command line is kept for `restart`."""
        process = self.processes.pop(name, None)
        pid = process.pid if process else _read_pid(self.state_dir / "pids" / f"{name}.pid", name)
        if not pid:
            raise ControlPlaneError(f"{name} is not running")
        # The exact arguments (the controllers' secure ports were drawn at launch).
        self.killed[name] = (list(process.args) if process else
                             Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1])
        os.kill(pid, signal.SIGKILL)
        if process is not None:
            process.wait(timeout=timeout)  # reaps it, so its pid cannot be taken for it later
        else:
            self._wait(lambda: not _alive(pid), time.monotonic() + timeout, f"{name} to exit")
        (self.state_dir / "pids" / f"{name}.pid").unlink(missing_ok=True)

    def restart(self, name: str, timeout: float = 120) -> None:
        """Start a component `kill` stopped again: same arguments, ports, PKI and etcd data;
        return once it serves (etcd /health, kube-apiserver /readyz, the others /healthz)."""
        if name not in self.killed:
            raise ControlPlaneError(f"{name} was not killed by kill()")
        args = self.killed.pop(name)[1:]
        self._launch(name, args)
        ports = json.loads((self.state_dir / "ports.json").read_text())
        ready = {"etcd": lambda: self._etcd_healthy(ports["etcd"]),
                 "kube-apiserver": self._apiserver_ready}.get(name)
        if ready is None:  # the controllers: their own /healthz (always allowed, self-signed)
            port = next(a.split("=", 1)[1] for a in args if a.startswith("--secure-port="))
            ready = lambda: _healthz(f"https://127.0.0.1:{port}/healthz")  # noqa: E731
        self._wait(ready, time.monotonic() + timeout, f"{name} after a restart")

    def compact_etcd(self) -> int:
        """Compact etcd's history at its current revision and defragment; returns the
        revision. A watch or list from an older resourceVersion that reaches etcd is then
        answered 410 Gone. Through etcd's JSON gRPC gateway on the client port (v3.5+:
        /v3/...; int64 fields are strings, keys base64)."""
        base = f"http://127.0.0.1:{self._port('etcd')}/v3"

        def post(path: str, body: dict) -> dict:
            request = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=60) as r:
                    return json.loads(r.read())
            except urllib.error.HTTPError as e:
                raise ControlPlaneError(f"etcd {path}: {e.code} {e.read()[:500]!r}") from e

        revision = int(post("/kv/range", {"key": "AA=="})["header"]["revision"])  # key "\0"
        post("/kv/compaction", {"revision": str(revision), "physical": True})
        post("/maintenance/defragment", {})
        return revision

    # ------------------------------------------------------------------ processes

    def _launch(self, name: str, args: list[str]) -> None:
        log = open(self.logs_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        process = subprocess.Popen([str(self.binary(name)), *args], stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=self.detach,
                                   preexec_fn=None if self.detach else _die_with_parent)
        log.close()
        self.processes[name] = process
        (self.state_dir / "pids").mkdir(exist_ok=True)
        (self.state_dir / "pids" / f"{name}.pid").write_text(str(process.pid))

    def _wait(self, ready, deadline: float, what: str) -> None:
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise ControlPlaneError(f"{name} exited with {process.returncode}:\n"
                                            f"{self.log_tail(name)}")
            if ready():
                return
            time.sleep(0.2)
        raise ControlPlaneError(f"timed out waiting for {what}; logs in {self.logs_dir}")

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.logs_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    # ------------------------------------------------------------------ arguments

    def _etcd_args(self, ports: dict[str, int]) -> list[str]:
        client, peer = f"http://127.0.0.1:{ports['etcd']}", f"http://127.0.0.1:{ports['etcd-peer']}"
        return ["--name=default", f"--data-dir={self.state_dir / 'etcd-data'}",
                f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
                # Test clusters: a crash loses the cluster anyway, so skip fsync.
                "--unsafe-no-fsync", "--log-level=warn"]

    def _apiserver_args(self, ports: dict[str, int]) -> list[str]:
        p = self.pki
        return [
            f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={ports['apiserver']}",
            f"--tls-cert-file={p.server_cert}", f"--tls-private-key-file={p.server_key}",
            f"--client-ca-file={p.ca_cert}",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={p.sa_pub}",
            f"--service-account-signing-key-file={p.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            # Endpoints may not hold loopback addresses, and 127.0.0.1 is all there is here.
            "--endpoint-reconciler-type=none",
            f"--audit-policy-file={self.state_dir / 'audit-policy.yaml'}",
            f"--audit-log-path={self.audit_log}", "--audit-log-format=json",
            "--profiling=false", "--v=1",
        ]

    def _component_args(self, who: str) -> list[str]:
        """Flags the controller-manager and the scheduler share: their own identity for the
        API and for delegated authentication, no leader election, HTTPS on a free port."""
        kubeconfig = self.state_dir / f"{who}.kubeconfig"
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            "--profiling=false", "--v=1",
        ]

    def _controller_manager_args(self) -> list[str]:
        return [
            *self._component_args("controller-manager"),
            f"--service-account-private-key-file={self.pki.sa_key}",
            f"--root-ca-file={self.pki.ca_cert}",
            "--use-service-account-credentials=true",
            f"--cluster-signing-cert-file={self.pki.ca_cert}",
            f"--cluster-signing-key-file={self.pki.ca_key}",
            # More garbage-collector workers: tests wait for a deleted job's children to go.
            "--concurrent-gc-syncs=5",
        ]

    def _scheduler_args(self) -> list[str]:
        return self._component_args("scheduler")

    # ------------------------------------------------------------------ health

    def _etcd_healthy(self, port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                return json.loads(r.read()).get("health") == "true"
        except OSError:
            return False

    def _ssl(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(str(self.pki.client_cert("admin")),
                                str(self.pki.client_key("admin")))
        return context

    def get(self, path: str) -> tuple[int, bytes]:
        """GET on the API server as admin: (status, body); (0, b"") when it does not answer."""
        try:
            with urllib.request.urlopen(self.server + path, timeout=5,
                                        context=self._ssl()) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except OSError:
            return 0, b""

    def _apiserver_ready(self) -> bool:
        return self.get("/readyz")[0] == 200

    def _controllers_ready(self) -> bool:
        return (self.get("/api/v1/namespaces/default/serviceaccounts/default")[0] == 200
                and self.get("/api/v1/namespaces/default/configmaps/kube-root-ca.crt")[0] == 200)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the parent goes (Linux PR_SET_PDEATHSIG). Not
    SIGTERM: kube-apiserver's graceful shutdown waits long for an etcd that is gone too."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def _healthz(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2,
                                    context=ssl._create_unverified_context()) as r:  # noqa: S323
            return r.status == 200
    except OSError:
        return False


def _read_pid(path: Path, name: str) -> int | None:
    """The pid in `path` if that process is still `name` (a pid file can outlive its
    process, and the pid be reused by another)."""
    try:
        pid = int(path.read_text().strip())
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except (OSError, ValueError):
        return None
    return pid if Path(command.decode(errors="replace")).name == name else None


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _terminate(pid: int, process: subprocess.Popen | None, grace: float = 10) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if process is not None:
            if process.poll() is not None:
                return
        elif not _alive(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        return
    if process is not None:
        process.wait(timeout=10)
