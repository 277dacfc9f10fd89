"""Serve the emulated API until interrupted (for shell-driven suites and manual poking).

    python -m tests.kubeemu --kubeconfig /tmp/kubeconfig [--port 0] [--auto-run-pods]

Installs the FineTuneJob CRD, writes a kubeconfig, prints the base URL, and stops on
SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import threading

from ftjob_operator.crd import build_crd

from .runtime import Emulator


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the emulated Kubernetes API.")
    parser.add_argument("--kubeconfig", required=True, help="where to write the kubeconfig")
    parser.add_argument("--namespace", default="default", help="the kubeconfig's namespace")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--auto-run-pods", action="store_true",
                        help="run every pod as soon as it is created")
    args = parser.parse_args()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with Emulator(crds=[build_crd()], auto_run_pods=args.auto_run_pods, host=args.host,
                  port=args.port or None) as emu:
        emu.write_kubeconfig(args.kubeconfig, args.namespace)
        print(emu.base_url, flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
