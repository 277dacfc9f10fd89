"""Loopback addresses for pods sharing the host network.

With host networking every container has the host's interfaces, so pods are told apart
by address: each pod gets its own 127.0.x.y (all of 127/8 is loopback on Linux). torch's
c10d/gloo resolve the node's own hostname and bind to that address; two pods resolving
to the same address would rendezvous as the same node and hang.
"""

from __future__ import annotations

from collections.abc import Iterable


def pod_dns_names(name: str, subdomain: str | None, namespace: str) -> list[str]:
    """The names a pod answers to: its hostname and, with a subdomain, the Service forms."""
    names = [name]
    if subdomain:
        names += [
            f"{name}.{subdomain}",
            f"{name}.{subdomain}.{namespace}",
            f"{name}.{subdomain}.{namespace}.svc",
            f"{name}.{subdomain}.{namespace}.svc.cluster.local",
        ]
    return names


class AddressBook:
    """Hands out 127.0.1.1, 127.0.1.2, ... one per (namespace, pod name), stable for a run.

    127.0.0.x is left alone: 127.0.0.1 is where the API emulator listens.
    """

    PER_BLOCK = 250

    def __init__(self) -> None:
        self._by_pod: dict[tuple[str, str], str] = {}

    def address(self, namespace: str, pod: str) -> str:
        key = (namespace, pod)
        if key not in self._by_pod:
            index = len(self._by_pod)
            block, host = divmod(index, self.PER_BLOCK)
            if block > 250:
                raise RuntimeError("AddressBook: out of loopback addresses")
            self._by_pod[key] = f"127.0.{1 + block}.{1 + host}"
        return self._by_pod[key]


def hosts_entries(pods: Iterable[tuple[str, str | None, str]], book: AddressBook) -> dict[str, str]:
    """/etc/hosts entries (name -> address) for pods given as (name, subdomain, namespace)."""
    entries: dict[str, str] = {}
    for name, subdomain, namespace in pods:
        address = book.address(namespace, name)
        for dns_name in pod_dns_names(name, subdomain, namespace):
            entries[dns_name] = address
    return entries
