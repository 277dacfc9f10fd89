"""The Kubernetes "restricted" Pod Security Standard as a pure check over a pod spec.

Follows https://kubernetes.io/docs/concepts/security/pod-security-standards/ (baseline and
restricted controls, as enforced by the PodSecurity admission plugin since 1.25). Returns
readable violations instead of a bool so a failing test names the pod, container and field.
"""

from __future__ import annotations

from typing import Any

RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
ALLOWED_SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t",
                         "container_engine_t"}
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


def containers(pod: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{field}[{c.get('name', i)}]", c)
            for field in CONTAINER_LISTS for i, c in enumerate(pod.get(field) or [])]


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """Every way the pod spec breaks the restricted standard; empty when it complies."""
    problems: list[str] = []
    psc = pod.get("securityContext") or {}

    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            problems.append(f"spec.{field} must be unset or false")
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume.get('name')}: type {sorted(kinds)} not allowed")
    for sysctl in psc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            problems.append(f"spec.securityContext.sysctls: {sysctl.get('name')} is not safe")
    problems += _common("spec.securityContext", psc)

    pod_non_root = psc.get("runAsNonRoot") is True
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in ("RuntimeDefault", "Localhost"):
        problems.append(f"spec.securityContext.seccompProfile.type {pod_seccomp} not allowed")

    for where, c in containers(pod):
        sc = c.get("securityContext") or {}
        at = f"{where}.securityContext"
        problems += _common(at, sc)
        if sc.get("privileged"):
            problems.append(f"{at}.privileged must be unset or false")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{at}.allowPrivilegeEscalation must be false")
        if sc.get("procMount", "Default") != "Default":
            problems.append(f"{at}.procMount must be Default")
        non_root = sc.get("runAsNonRoot", pod_non_root if pod_non_root else None)
        if non_root is not True:
            problems.append(f"{at}.runAsNonRoot must be true (here or in spec.securityContext)")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{at}.seccompProfile.type must be RuntimeDefault or Localhost "
                            "(here or in spec.securityContext)")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"{at}.capabilities.drop must contain ALL")
        extra = set(caps.get("add") or []) - {"NET_BIND_SERVICE"}
        if extra:
            problems.append(f"{at}.capabilities.add may hold only NET_BIND_SERVICE, not "
                            f"{sorted(extra)}")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                problems.append(f"{where}.ports: hostPort {port['hostPort']} not allowed")
    return problems


def _common(at: str, sc: dict[str, Any]) -> list[str]:
    """Controls that apply alike to the pod's and to each container's securityContext."""
    problems = []
    if sc.get("runAsUser") == 0:
        problems.append(f"{at}.runAsUser must not be 0")
    if (sc.get("windowsOptions") or {}).get("hostProcess"):
        problems.append(f"{at}.windowsOptions.hostProcess must be unset or false")
    if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
        problems.append(f"{at}.appArmorProfile.type must not be Unconfined")
    selinux = sc.get("seLinuxOptions") or {}
    if selinux.get("type", "") not in ALLOWED_SELINUX_TYPES:
        problems.append(f"{at}.seLinuxOptions.type {selinux['type']} not allowed")
    if selinux.get("user") or selinux.get("role"):
        problems.append(f"{at}.seLinuxOptions.user/role must be unset")
    return problems
