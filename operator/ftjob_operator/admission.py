"""Validating admission: `kubectl apply` refuses what `ftjob validate` refuses.

The webhook runs `validation.validate_document` (the checks of `ftjob validate`) on every
create and on every update that changes the spec, and refuses the request with every
problem and its field path. Warnings of the checks become admission warnings (kubectl
prints them). An update the operator would not act on (a started job's spec edited outside
the mutable fields) is admitted with the warning the SpecChangeIgnored condition will carry.

With `checkReferenceAccess` on (the default), a request the checks admit is also refused when
its author may not read what the job's pods would read, or may not create pods (`access`).

Updates that leave the spec alone (finalizers, labels, annotations; a job being deleted) are
always admitted, and the status subresource is outside the webhook's rules, so the
operator's and the trainer's own writes never wait for it. An update is refused only for
problems the edit introduces: a stored job that no longer passes newer checks can still be
suspended or cleaned up.

The server is kopf's `WebhookServer`. Its certificate is either the files of a mounted
Secret (cert-manager; kopf reloads them when they change) or a self-signed one generated at
each start and renewed before it expires, whose CA the operator writes into the chart's
ValidatingWebhookConfiguration.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from pathlib import Path
from typing import Any

import kopf

from ftjob_api import api
from ftjob_api.problems import Problem, errors
from ftjob_api.validation import DEFAULTS, Allowed, validate_document

from . import access, observe
from .policies.spec_edits import ignored_changes, ignored_changes_message
from .settings import Settings

log = logging.getLogger(__name__)

HANDLER_ID = "validate"  # also the URL path the webhook configuration calls: /validate
CERT_FILE, KEY_FILE = "tls.crt", "tls.key"  # names in a kubernetes.io/tls Secret
# Self-signed certificates: lifetime, renewal ahead of expiry, how often kopf looks at them.
CERT_LIFETIME = datetime.timedelta(days=90)
SYNC_WAIT_SECONDS = 4.0  # within the API server's webhook timeout
RENEW_BEFORE = datetime.timedelta(days=30)
FILE_CHECK_SECONDS = 10.0
PUBLISH_RETRY_MAX_SECONDS = 10.0


# --------------------------------------------------------------------------- the decision


def review(operation: str, new: dict[str, Any], old: dict[str, Any] | None,
           started_spec: dict[str, Any] | None, allowed: Allowed = DEFAULTS
           ) -> tuple[list[Problem], list[str]]:
    """(problems that refuse the request, warnings) for one admission request; `allowed`:
    what the operator's settings allow. Pure."""
    if operation not in ("CREATE", "UPDATE"):
        return [], []
    if operation == "UPDATE" and old is not None:
        if (new.get("metadata") or {}).get("deletionTimestamp"):
            return [], []
        if new.get("spec") == old.get("spec"):
            return [], []
    problems = validate_document(_without_server_fields(new), allowed)
    known: set[Problem] = set()
    if operation == "UPDATE" and old is not None:
        known = set(validate_document(_without_server_fields(old), allowed))
    refused = [p for p in errors(problems) if p not in known]
    warnings = [f"{p.path}: {p.message}" for p in problems if p not in refused]
    spec = new.get("spec")
    if isinstance(spec, dict):
        changed = ignored_changes(spec, started_spec)
        if changed:
            warnings.append(ignored_changes_message(changed))
    return refused, warnings


def _without_server_fields(doc: dict[str, Any]) -> dict[str, Any]:
    """The document as the user wrote it: `status` is not theirs (and is not checked by
    `ftjob validate` either); metadata keeps only what ObjectMeta validates."""
    out = {k: v for k, v in doc.items() if k != "status"}
    meta = doc.get("metadata")
    if isinstance(meta, dict):
        out["metadata"] = {k: meta[k] for k in ("name", "namespace", "labels", "annotations")
                           if k in meta}
    return out


def refusal(kind_name: str, problems: list[Problem]) -> str:
    lines = "\n".join(f"  {p}" for p in problems)
    return f"{kind_name} is invalid (`ftjob validate` finds the same):\n{lines}"


# --------------------------------------------------------------------------- kopf glue


@kopf.on.validate(api.GROUP, api.VERSION, api.PLURAL, id=HANDLER_ID,
                  operations=["CREATE", "UPDATE"])
async def validate_job(operation: str, body: kopf.Body, old: kopf.Body | None,
                       name: str | None, namespace: str | None, warnings: list[str],
                       userinfo: dict[str, Any], memo: kopf.Memo, **_: Any) -> None:
    new = dict(body)
    old_doc = dict(old) if old is not None else None
    started = None
    if old_doc is not None:
        uid = (old_doc.get("metadata") or {}).get("uid")
        # An edit is checked against the started spec: not before the ConfigMaps are listed.
        try:
            await asyncio.wait_for(memo.watches.synced(), SYNC_WAIT_SECONDS)
        except asyncio.TimeoutError:
            raise kopf.AdmissionError("the operator is starting (listing the jobs' started "
                                      "specs): try again in a few seconds", code=503) from None
        view = observe.started_view(memo.watches.started_specs.get((namespace, name), ()), uid)
        started = view.spec() if view is not None else None
    config: Settings = memo.config
    refused, found = review(operation, new, old_doc, started, config.allowed)
    warnings.extend(found)
    if refused:
        raise kopf.AdmissionError(refusal(f"{api.KIND} {namespace}/{name}", refused), code=422)
    if config.check_reference_access:
        await check_access(memo.kube, operation, new, old_doc, userinfo,
                           namespace or "", f"{api.KIND} {namespace}/{name}")


async def check_access(kube: Any, operation: str, new: dict[str, Any],
                       old: dict[str, Any] | None, userinfo: dict[str, Any], namespace: str,
                       kind_name: str) -> None:
    """Ask the API server for every access the request needs (`access.checks`); refuse the
    request for any it does not allow, or when it cannot be asked."""
    wanted = access.checks(operation, new, old)
    if not wanted:
        return
    keys = access.distinct(wanted)
    reviews = [access.access_review(userinfo, namespace, access.Check("", *key))
               for key in keys]
    answers = await asyncio.gather(*(kube.may(r) for r in reviews), return_exceptions=True)
    failed = next((a for a in answers if isinstance(a, BaseException)), None)
    if failed is not None:
        log.warning("cannot review access for %s: %s", kind_name, failed)
        raise kopf.AdmissionError(f"{kind_name}: cannot check that its author may read what "
                                  f"it references (try again): {failed}", code=503)
    allowed = {key: bool(answer) for key, answer in zip(keys, answers)}
    problems = access.refusals(wanted, allowed, userinfo.get("username") or "", namespace)
    if problems:
        raise kopf.AdmissionError(access.refusal(kind_name, problems), code=403)


class NoWebhookServer:
    """Stands in when the webhook is off: kopf refuses to start with an admission handler
    and no server."""

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        await asyncio.Event().wait()
        yield {}  # pragma: no cover (never reached)


class WebhookServer(kopf.WebhookServer):
    """kopf's server, plus a hook that publishes each CA bundle it yields and, for a
    self-signed certificate, its renewal before it expires."""

    def __init__(self, *, publish: Callable[[str], Awaitable[None]] | None = None,
                 self_signed: SelfSignedFiles | None = None, **kwargs: Any) -> None:
        if self_signed is not None:
            kwargs.update(certfile=self_signed.pair, pkeyfile=self_signed.pair,
                          cafile=self_signed.ca, file_check_interval=FILE_CHECK_SECONDS)
        super().__init__(**kwargs)
        self.publish = publish
        self.self_signed = self_signed
        self.published = b""  # the CA bundle (PEM) the API server was last given
        self._published_changed = asyncio.Event()

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        renewing = None
        try:
            async for client_config in super().__call__(fn):
                ca = client_config.get("caBundle")
                if self.publish is not None and ca:
                    await self.publish(ca)
                self.published = base64.b64decode(ca) if ca else b""
                self._published_changed.set()
                if self.self_signed is not None and renewing is None:
                    renewing = asyncio.create_task(self._renew_forever())
                yield client_config
        finally:
            if renewing is not None:
                renewing.cancel()

    async def _renew_forever(self) -> None:
        """Renew before expiry without a moment the API server distrusts the served
        certificate: first trust old and new, and only once that is published serve the new."""
        files = self.self_signed
        assert files is not None
        while True:
            await asyncio.sleep(max(files.seconds_until_renewal(), 1.0))
            cert, key = self_signed_certificate(files.hosts)
            files.write_ca(files.current + cert)
            while cert not in self.published:
                self._published_changed.clear()
                await self._published_changed.wait()
            files.write_pair(cert, key)
            log.info("webhook certificate renewed")


class SelfSignedFiles:
    """A self-signed certificate in files kopf's server watches: `pair.pem` (key and
    certificate, served) and `ca.pem` (what the API server is told to trust)."""

    def __init__(self, hosts: Collection[str], folder: Path | None = None) -> None:
        self.hosts = list(hosts)
        self.folder = folder or Path(tempfile.mkdtemp(prefix="ftjob-webhook-"))
        self.pair, self.ca = self.folder / "pair.pem", self.folder / "ca.pem"
        self.current = b""
        self.expires = datetime.datetime.now(datetime.timezone.utc)
        cert, key = self_signed_certificate(self.hosts)
        self.write_ca(cert)
        self.write_pair(cert, key)

    def seconds_until_renewal(self) -> float:
        renew_at = self.expires - RENEW_BEFORE
        return (renew_at - datetime.datetime.now(datetime.timezone.utc)).total_seconds()

    def write_ca(self, bundle: bytes) -> None:
        _replace(self.ca, bundle)

    def write_pair(self, cert: bytes, key: bytes) -> None:
        from cryptography import x509

        _replace(self.pair, key + cert)
        self.current = cert
        self.expires = x509.load_pem_x509_certificate(cert).not_valid_after_utc


def _replace(path: Path, data: bytes) -> None:
    """Write whole or not at all: kopf may read the file at any moment."""
    part = path.with_suffix(".part")
    part.write_bytes(data)
    part.chmod(0o600)
    os.replace(part, path)


def self_signed_certificate(hostnames: Collection[str]) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) valid for `hostnames` (DNS names or IPs)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    names: list[x509.GeneralName] = []
    dns: list[str] = []
    for host in dict.fromkeys(h for h in hostnames if h):
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            names.append(x509.DNSName(host))
            dns.append(host)
        else:
            if not ip.is_unspecified:
                names.append(x509.IPAddress(ip))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (dns or ["ftjob-webhook"])[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + CERT_LIFETIME)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def webhook_server(config: Settings, publish: Callable[[str], Awaitable[None]]) -> Any:
    """The server `settings.admission.server` gets for these settings."""
    if config.webhook_port is None:
        return NoWebhookServer()
    hosts = list(config.webhook_hosts)
    kwargs: dict[str, Any] = dict(addr=config.webhook_addr, port=config.webhook_port,
                                  host=hosts[0] if hosts else None)
    if config.webhook_cert_dir:
        # cert-manager: its cainjector fills in the CA; kopf reloads renewed files.
        folder = Path(config.webhook_cert_dir)
        return WebhookServer(certfile=folder / CERT_FILE, pkeyfile=folder / KEY_FILE, **kwargs)
    names = hosts or [a for a in (config.webhook_addr, "localhost", "127.0.0.1") if a]
    return WebhookServer(self_signed=SelfSignedFiles(names),
                         publish=publish if config.webhook_configuration else None, **kwargs)


def ca_publisher(kube: Any, name: str) -> Callable[[str], Awaitable[None]]:
    """Writes a CA into the ValidatingWebhookConfiguration `name`, retrying until it exists
    and the API accepts the patch (the chart creates it next to the operator's Deployment)."""

    async def publish(ca_bundle: str) -> None:
        delay = 0.5
        while True:
            try:
                changed = await kube.set_webhook_ca_bundle(name, ca_bundle)
            except Exception as exc:  # noqa: BLE001 - logged and retried: the server keeps serving
                log.warning("cannot put the webhook CA into ValidatingWebhookConfiguration "
                            "%s (retrying in %.0fs): %s", name, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, PUBLISH_RETRY_MAX_SECONDS)
                continue
            log.info("webhook CA put into ValidatingWebhookConfiguration %s (%d webhooks "
                     "updated)", name, changed)
            return

    return publish
