"""`make cluster-up` / `make cluster-down`: the local control plane as background processes.

    python -m tests.controlplane up   [--dir .cache/cluster] [--port 6443]
    python -m tests.controlplane down [--dir .cache/cluster]
    python -m tests.controlplane status [--dir .cache/cluster]

`up` prints where the admin kubeconfig is; the processes keep running after it returns
(their pids are under DIR/pids, their logs under DIR/logs) until `down`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cluster import ControlPlane, ControlPlaneError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.controlplane")
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--dir", default=".cache/cluster", help="state folder")
    parser.add_argument("--port", type=int, default=6443, help="API server port on 127.0.0.1")
    args = parser.parse_args(argv)
    plane = ControlPlane(Path(args.dir), apiserver_port=args.port, detach=True)
    if args.command == "up":
        if all(plane.running().values()):
            print(f"control plane already running at {plane.server}")
            print(f"  export KUBECONFIG={plane.kubeconfig}")
            return 0
        try:
            plane.start()
        except ControlPlaneError as exc:
            print(f"cluster-up: {exc}", file=sys.stderr)
            plane.stop()
            return 1
        print(f"control plane up in {plane.startup_seconds:.1f} s at {plane.server}")
        print(f"  export KUBECONFIG={plane.kubeconfig}")
        print(f"  kubectl: {plane.binary('kubectl')}")
        return 0
    if args.command == "down":
        plane.stop()
        print("control plane stopped")
        return 0
    states = plane.running()
    for name, alive in states.items():
        print(f"{name:26} {'running' if alive else 'stopped'}")
    return 0 if all(states.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
