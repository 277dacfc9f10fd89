"""Pure: a Pod manifest plus what the runner prepared on the host -> `docker run` arguments.

Follows the kubelet's rules where they matter to the trainer: `command` replaces the image
entrypoint and `args` its CMD; env `valueFrom` is resolved before the container starts;
each volume mount becomes a bind mount of a host folder; an in-memory emptyDir on /dev/shm
sizes /dev/shm; the termination message file is a host file bind-mounted into the
container; limits become docker's --memory/--cpus; the security context becomes --user,
--group-add and dropped capabilities. Anything the runner cannot honour raises
UnsupportedPod naming the pod and field, instead of being silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "": 1}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P|m)?$")


class UnsupportedPod(ValueError):
    """A pod the runner cannot start faithfully; the message names the pod and field."""


def parse_bytes(quantity: str | int) -> int:
    """A Kubernetes memory quantity ("8Gi", "512M", "1000") in bytes."""
    match = _QUANTITY.match(str(quantity))
    if not match or match.group(2) == "m":
        raise ValueError(f"not a byte quantity: {quantity!r}")
    number, suffix = float(match.group(1)), match.group(2) or ""
    return int(number * (_BINARY.get(suffix) or _DECIMAL[suffix]))


def parse_cpus(quantity: str | int) -> float:
    """A Kubernetes CPU quantity ("2", "500m") in cores."""
    match = _QUANTITY.match(str(quantity))
    if not match or match.group(2) not in (None, "m"):
        raise ValueError(f"not a CPU quantity: {quantity!r}")
    number = float(match.group(1))
    return number / 1000 if match.group(2) == "m" else number


def pod_key(pod: dict[str, Any]) -> str:
    meta = pod["metadata"]
    return f"{meta.get('namespace', 'default')}/{meta['name']}"


@dataclass(frozen=True)
class HostVolume:
    """A pod volume as the runner provides it on the host."""

    path: Path | None = None  # folder bind-mounted for claims, configMaps, secrets, emptyDirs
    memory: bool = False  # emptyDir with medium: Memory (tmpfs, or --shm-size on /dev/shm)
    size_limit: str | None = None


@dataclass(frozen=True)
class RunInputs:
    container_name: str
    image: str
    env: list[tuple[str, str]]  # resolved, in order
    volumes: dict[str, HostVolume]
    hosts: dict[str, str]  # /etc/hosts entries, name -> address
    termination_file: Path
    labels: dict[str, str] = field(default_factory=dict)


# Used for /dev/shm when an in-memory emptyDir gives no sizeLimit (kubelet: half of RAM).
DEFAULT_SHM = "1Gi"


def the_container(pod: dict[str, Any]) -> dict[str, Any]:
    containers = pod["spec"].get("containers") or []
    if len(containers) != 1:
        raise UnsupportedPod(f"pod {pod_key(pod)}: spec.containers has {len(containers)} "
                             "entries; the runner runs exactly one")
    if pod["spec"].get("initContainers"):
        raise UnsupportedPod(f"pod {pod_key(pod)}: spec.initContainers are not supported")
    if pod["spec"].get("runtimeClassName"):
        raise UnsupportedPod(f"pod {pod_key(pod)}: spec.runtimeClassName is not supported")
    if containers[0].get("envFrom"):
        raise UnsupportedPod(f"pod {pod_key(pod)}: envFrom is not supported")
    return containers[0]


def termination_message_path(container: dict[str, Any]) -> str:
    return container.get("terminationMessagePath") or "/dev/termination-log"


def grace_period_seconds(pod: dict[str, Any]) -> float:
    value = pod["spec"].get("terminationGracePeriodSeconds")
    return 30.0 if value is None else float(value)


def pod_field(pod: dict[str, Any], path: str | None, pod_ip: str) -> str | None:
    """A downward-API `fieldRef` value of the pod, or None when the runner does not know it."""
    meta, spec = pod["metadata"], pod["spec"]
    fields = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta.get("namespace", "default"),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": pod_ip,
        "status.hostIP": "127.0.0.1",
    }
    return fields.get(path or "")


def resolve_env(pod: dict[str, Any], pod_ip: str,
                lookup: Callable[[str, str, str], str | None]) -> list[tuple[str, str]]:
    """The container's env with every `valueFrom` resolved.

    `lookup(kind, name, key)` reads a ConfigMap or Secret key (kind "configMap"/"secret")
    and answers None when it is missing; a missing non-optional key fails like the kubelet
    (CreateContainerConfigError), with the variable named.
    """
    out: list[tuple[str, str]] = []
    for var in the_container(pod).get("env") or []:
        name = var["name"]
        if "valueFrom" not in var:
            out.append((name, str(var.get("value", ""))))
            continue
        source = var["valueFrom"]
        where = f"pod {pod_key(pod)}: env {name}"
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            value = pod_field(pod, path, pod_ip)
            if value is None:
                raise UnsupportedPod(f"{where}: fieldRef {path} is not supported")
            out.append((name, value))
            continue
        for kind in ("configMapKeyRef", "secretKeyRef"):
            if kind in source:
                ref = source[kind]
                value = lookup(kind.removesuffix("KeyRef"), ref["name"], ref["key"])
                if value is None:
                    if ref.get("optional"):
                        break
                    raise UnsupportedPod(f"{where}: {kind} {ref['name']}/{ref['key']} not found")
                out.append((name, value))
                break
        else:
            raise UnsupportedPod(f"{where}: valueFrom {sorted(source)} is not supported")
    return out


def _mount_args(pod: dict[str, Any], container: dict[str, Any],
                volumes: dict[str, HostVolume]) -> list[str]:
    declared = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    args: list[str] = []
    for mount in container.get("volumeMounts") or []:
        name, target = mount["name"], mount["mountPath"]
        where = f"pod {pod_key(pod)}: volumeMounts {name}"
        if name not in declared:
            raise UnsupportedPod(f"{where}: no volume of that name in spec.volumes")
        host = volumes.get(name)
        if host is None:
            raise UnsupportedPod(f"{where}: the runner prepared no host folder for it")
        if host.memory:
            size = parse_bytes(host.size_limit or DEFAULT_SHM)
            if target == "/dev/shm":
                args.append(f"--shm-size={size}")
            else:
                args += ["--tmpfs", f"{target}:size={size}"]
            continue
        if host.path is None:
            raise UnsupportedPod(f"{where}: no host path")
        source = host.path / mount["subPath"] if mount.get("subPath") else host.path
        spec = f"type=bind,source={source},target={target}"
        if mount.get("readOnly"):
            spec += ",readonly"
        args += ["--mount", spec]
    return args


def _security_args(pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
    pod_sc = pod["spec"].get("securityContext") or {}
    sc = container.get("securityContext") or {}
    args: list[str] = []
    user = sc.get("runAsUser", pod_sc.get("runAsUser"))
    group = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    if user is not None:
        args.append(f"--user={user}:{group if group is not None else 0}")
    if pod_sc.get("fsGroup") is not None:
        args.append(f"--group-add={pod_sc['fsGroup']}")
    for cap in (sc.get("capabilities") or {}).get("drop") or []:
        args.append(f"--cap-drop={cap}")
    for cap in (sc.get("capabilities") or {}).get("add") or []:
        args.append(f"--cap-add={cap}")
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    if sc.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    return args


def _resource_args(container: dict[str, Any]) -> list[str]:
    limits = (container.get("resources") or {}).get("limits") or {}
    args: list[str] = []
    if "memory" in limits:
        args.append(f"--memory={parse_bytes(limits['memory'])}")
    if "cpu" in limits:
        args.append(f"--cpus={parse_cpus(limits['cpu']):g}")
    return args


def docker_run_args(pod: dict[str, Any], inputs: RunInputs) -> list[str]:
    """The arguments after `docker` that start this pod's container, detached."""
    container = the_container(pod)
    spec = pod["spec"]
    args = [
        "run", "--detach",
        f"--name={inputs.container_name}",
        "--network=host",
        f"--hostname={spec.get('hostname') or pod['metadata']['name']}",
    ]
    for key, value in sorted(inputs.labels.items()):
        args.append(f"--label={key}={value}")
    for name, address in sorted(inputs.hosts.items()):
        args.append(f"--add-host={name}:{address}")
    for name, value in inputs.env:
        args += ["--env", f"{name}={value}"]
    args += _mount_args(pod, container, inputs.volumes)
    args += ["--mount", f"type=bind,source={inputs.termination_file},"
                        f"target={termination_message_path(container)}"]
    args += _security_args(pod, container)
    args += _resource_args(container)
    if container.get("workingDir"):
        args.append(f"--workdir={container['workingDir']}")
    command = container.get("command") or []
    if command:
        args.append(f"--entrypoint={command[0]}")
    args.append(inputs.image)
    args += [str(a) for a in command[1:]]
    args += [str(a) for a in container.get("args") or []]
    return args


def master_address(container: dict[str, Any]) -> str | None:
    """The torchrun `--master-addr` in the container's arguments, if any."""
    words = [str(w) for w in (container.get("command") or []) + (container.get("args") or [])]
    return _flag(words, ("--master-addr", "--master_addr"))


def _flag(words: list[str], names: tuple[str, ...]) -> str | None:
    for i, word in enumerate(words):
        for name in names:
            if word.startswith(name + "="):
                return word.split("=", 1)[1]
            if word == name and i + 1 < len(words):
                return words[i + 1]
    return None


def rendezvous(pod: dict[str, Any]) -> tuple[str, int] | None:
    """(pod name of the master, port) a torchrun pod dials, from its arguments."""
    container = the_container(pod)
    words = [str(w) for w in (container.get("command") or []) + (container.get("args") or [])]
    master = _flag(words, ("--master-addr", "--master_addr"))
    port = _flag(words, ("--master-port", "--master_port"))
    if master is None or port is None:
        return None
    return master.split(".")[0], int(port)


def host_ports(pod: dict[str, Any]) -> set[int]:
    """Ports this pod will listen on in the host's network.

    Every rank declares the rendezvous port, but only the rank that hosts the master
    address listens on it, and torchrun's TCPStore binds it on ALL addresses: while an old
    rank 0 is still stopping, a new rank would dial the old store. See `rendezvous`.
    """
    container = the_container(pod)
    master = master_address(container)
    name = pod["metadata"]["name"]
    if master is None or master.split(".")[0] != (pod["spec"].get("hostname") or name):
        return set()
    return {int(p["containerPort"]) for p in container.get("ports") or []}
