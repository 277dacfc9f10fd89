"""Push a finished model folder to an OCI registry as an image (spec.output.oci).

The image holds the folder's files under `/models` (KServe's modelcar convention), so
`docker pull`, `oras copy` and a modelcar's `storageUri: oci://...` read it. Its layers:

- one layer per large file (`large_file_bytes`, 1 MiB by default), one for all the small files
  together, last (they change most often; the shards below them keep their place);
- each an uncompressed tar written the same way every time (sorted, mtime 0, uid/gid 0, modes
  0644 and 0755, no pax times), so one file always gives one digest: an unchanged base shard
  is never sent twice, and a push cut short resumes, since every blob the registry has
  already (HEAD) is skipped. The image config names no time, so a push of an unchanged folder
  sends no blob at all; the manifest carries the `created` time.

Files are read in blocks, twice: once to hash each layer, once to send it; a multi-GB shard
never sits in memory nor in a temporary copy.

The registry client is oras-py's `Registry` (its Basic and Bearer-token auth, container URLs,
HEAD of a blob) with its request method replaced. Its own `push()` does not fit: it makes
one layer of each file as it is (no `/models` tar, so no modelcar), a config of an unknown
media type docker refuses, and its uploads read a whole blob into memory (`put_upload`) or
need the blob as a file on disk (`chunked_upload`). Its `do_request` sleeps and retries for
about two minutes before an unreachable registry is reported, sends no timeout, sends the
credentials only after a 401 (a layer's body twice), and keeps a pull-only token that a HEAD
got when a push then needs more: `_Registry.do_request` below does none of these.

The module is over the 500-line rule: the image's format and the registry's protocol make one
push, read together; split it in two (image, registry) if either grows.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
import logging
import os
import re
import tarfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from typing import Any

import oras.auth.utils
import oras.container
import oras.provider
import oras.utils
import requests

log = logging.getLogger(__name__)

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
MODELS_DIR = "models"
LARGE_FILE_BYTES = 1 << 20
FILES_ANNOTATION = "dev.finetune.files"  # on each layer: the files it holds, one a line
BLOCK = 1 << 20  # read and send in blocks of this size
TIMEOUT = (10.0, 300.0)  # connect, read: a registry may take minutes to commit a big blob
_DOCKER_HUB = {"docker.io", "index.docker.io", "registry-1.docker.io"}
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


class PushError(Exception):
    """A push that failed for a reason the message names; `retryable`: pushing again later may
    succeed (the registry was unreachable or failed), or not until something is changed."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


@dataclass(frozen=True)
class Reference:
    registry: str  # host[:port], as written
    repository: str
    tag: str

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"

    @property
    def api_host(self) -> str:
        return "registry-1.docker.io" if self.registry in _DOCKER_HUB else self.registry


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Layer:
    """A layer's content: the files (path relative to the folder, size) it puts under /models."""

    body: LayerTar
    digest: str
    files: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.body)


@dataclass(frozen=True)
class BlobEvent:
    """One blob done: sent, or skipped because the registry had it."""

    digest: str
    size: int
    kind: str  # "layer" | "config"
    files: tuple[str, ...]
    sent: bool


@dataclass(frozen=True)
class PushResult:
    reference: str  # registry/repository:tag
    digest: str  # the manifest's sha256 digest
    size: int  # bytes of the layers and the config
    blobs_sent: int
    blobs_skipped: int
    bytes_sent: int
    sent: tuple[str, ...]  # digests of the blobs sent
    finished: datetime.datetime

    @property
    def pinned(self) -> str:
        """registry/repository@digest: the reference that always names this very image."""
        return f"{self.reference.rsplit(':', 1)[0]}@{self.digest}"


# ----------------------------------------------------------------------- pure parts


def parse_reference(text: str) -> Reference:
    """`[oci://]host[:port]/repository[:tag]` (tag `latest` when left out)."""
    ref = text.strip().removeprefix("oci://")
    host, sep, rest = ref.partition("/")
    if not sep or not ("." in host or ":" in host or host == "localhost"):
        raise PushError(f"OCI reference {text!r} names no registry host: write it as "
                        "host[:port]/repository:tag, e.g. registry.example.com/team/model:v1",
                        retryable=False)
    if "@" in rest:
        raise PushError(f"OCI reference {text!r} has a digest: a push needs a tag "
                        "(repository:tag)", retryable=False)
    repository, _, tag = rest.partition(":")
    tag = tag or "latest"
    if host in _DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if not _REPOSITORY.fullmatch(repository):
        raise PushError(f"OCI reference {text!r}: {repository!r} is not a valid repository "
                        "name (lowercase letters, digits, separators . _ - and /)",
                        retryable=False)
    if not _TAG.fullmatch(tag):
        raise PushError(f"OCI reference {text!r}: {tag!r} is not a valid tag "
                        "(letters, digits, _ . -, at most 128)", retryable=False)
    return Reference(host.lower(), repository, tag)


def _auth_key_host(key: str) -> str:
    key = key.strip().lower()
    key = re.sub(r"^[a-z]+://", "", key)
    return key.split("/", 1)[0]


def credentials_for(docker_config: str | bytes | Mapping | os.PathLike | None,
                    registry: str) -> Credentials | None:
    """The credentials a `kubernetes.io/dockerconfigjson` Secret's `.dockerconfigjson` (its
    text, a path to it, or the parsed dict) holds for `registry` (host[:port]); keys may carry
    a scheme and a path (`https://host/v1/`). None when it has none for that host."""
    if docker_config is None:
        return None
    config = _load_docker_config(docker_config)
    auths = config.get("auths")
    if auths is None and all(isinstance(v, Mapping) for v in config.values()):
        auths = config  # the older .dockercfg layout: the auths map itself
    if not isinstance(auths, Mapping):
        raise PushError("the push secret's .dockerconfigjson has no \"auths\" map",
                        retryable=False)
    wanted = {registry.lower()} | (_DOCKER_HUB if registry.lower() in _DOCKER_HUB else set())
    for key, entry in auths.items():
        if _auth_key_host(key) in wanted and isinstance(entry, Mapping):
            return _entry_credentials(entry, key)
    return None


def _load_docker_config(docker_config: str | bytes | Mapping | os.PathLike) -> Mapping:
    if isinstance(docker_config, Mapping):
        return docker_config
    try:
        text = Path(docker_config).read_bytes() if isinstance(docker_config, os.PathLike) \
            else docker_config
        config = json.loads(text)
    except OSError as e:
        raise PushError(f"cannot read the push secret's .dockerconfigjson: {e}",
                        retryable=False) from None
    except ValueError as e:
        raise PushError(f"the push secret's .dockerconfigjson is not valid JSON ({e})",
                        retryable=False) from None
    if not isinstance(config, Mapping):
        raise PushError("the push secret's .dockerconfigjson is not a JSON object",
                        retryable=False)
    return config


def _entry_credentials(entry: Mapping, key: str) -> Credentials:
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(entry["auth"], validate=True).decode()
            user, sep, password = decoded.partition(":")
        except (binascii.Error, UnicodeDecodeError, TypeError):
            user, sep, password = "", "", ""
        if not sep:
            raise PushError(f"the push secret's auths[{key!r}].auth is not base64 of "
                            "user:password", retryable=False)
        return Credentials(user, password)
    if entry.get("username") is not None and entry.get("password") is not None:
        return Credentials(str(entry["username"]), str(entry["password"]))
    raise PushError(f"the push secret's auths[{key!r}] has neither auth nor username and "
                    "password (identity tokens and credential helpers are not supported)",
                    retryable=False)


def plan_layers(folder: Path,
                large_file_bytes: int = LARGE_FILE_BYTES) -> list[list[tuple[str, int]]]:
    """The files of `folder` (relative POSIX path, size) grouped into layers: each large file
    alone, sorted by path, then every smaller file in one last layer."""
    files = sorted((p.relative_to(folder).as_posix(), p.stat().st_size)
                   for p in folder.rglob("*") if p.is_file())
    large = [[f] for f in files if f[1] >= large_file_bytes]
    small = [f for f in files if f[1] < large_file_bytes]
    return large + ([small] if small else [])


def _header(name: str, size: int, directory: bool) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.size = 0 if directory else size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


class LayerTar:
    """The deterministic tar of some files of a folder, under `models/`: iterable again and
    again (one pass hashes it, the next sends it), its length known before, one block of a
    file in memory at a time."""

    def __init__(self, folder: Path, files: Sequence[tuple[str, int]]) -> None:
        self.folder = folder
        self.files = tuple(files)
        dirs = {MODELS_DIR}
        for rel, _ in self.files:
            parts = rel.split("/")[:-1]
            dirs.update(f"{MODELS_DIR}/{'/'.join(parts[:i])}" for i in range(1, len(parts) + 1))
        self._parts: list[bytes | tuple[str, int]] = [_header(d + "/", 0, True)
                                                      for d in sorted(dirs)]
        for rel, size in self.files:
            self._parts += [_header(f"{MODELS_DIR}/{rel}", size, False), (rel, size),
                            b"\0" * (-size % tarfile.BLOCKSIZE)]
        self._parts.append(b"\0" * (2 * tarfile.BLOCKSIZE))
        self._size = sum(len(p) if isinstance(p, bytes) else p[1] for p in self._parts)

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[bytes]:
        for part in self._parts:
            if isinstance(part, bytes):
                if part:
                    yield part
            else:
                yield from self._file_blocks(*part)

    def _file_blocks(self, rel: str, size: int) -> Iterator[bytes]:
        # An OSError here would reach the HTTP library, which reports it as a broken
        # connection: say what it is instead.
        left = size
        try:
            with open(self.folder / rel, "rb") as f:
                while left > 0:
                    block = f.read(min(BLOCK, left))
                    if not block:
                        break
                    left -= len(block)
                    yield block
        except OSError as e:
            raise PushError(f"cannot read {self.folder / rel}: {e}", retryable=False) from None
        if left:
            raise PushError(f"{self.folder / rel} changed while it was pushed (it was {size} "
                            "bytes); push again once it is written", retryable=True)


def build_layers(folder: Path, large_file_bytes: int = LARGE_FILE_BYTES) -> list[Layer]:
    """Plan the folder's layers and hash each one (the first of two reads)."""
    layers = []
    for files in plan_layers(folder, large_file_bytes):
        body = LayerTar(folder, files)
        digest = hashlib.sha256()
        for block in body:
            digest.update(block)
        layers.append(Layer(body, f"sha256:{digest.hexdigest()}", tuple(f for f, _ in files)))
    return layers


def canonical_json(document: Mapping) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def image_config(layers: Sequence[Layer], platform: str = "linux/amd64") -> bytes:
    """The image config: no time in it, so an unchanged folder gives an unchanged config.
    The layers are uncompressed tars, so each diff_id is the layer's own digest."""
    os_name, _, architecture = platform.partition("/")
    return canonical_json({
        "architecture": architecture, "os": os_name, "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
        "history": [{"created_by": f"ftjob: {_describe(layer.files)}"} for layer in layers],
    })


def _describe(files: Sequence[str]) -> str:
    if files and files[0].startswith("/"):  # not the model's (modelcar.shell_layer)
        return ", ".join(files)
    if len(files) == 1:
        return f"{MODELS_DIR}/{files[0]}"
    return f"{len(files)} files under /{MODELS_DIR}"


def image_manifest(layers: Sequence[Layer], config: bytes, annotations: Mapping[str, str]) -> bytes:
    def descriptor(media_type: str, digest: str, size: int, extra: Mapping | None = None) -> dict:
        return {"mediaType": media_type, "digest": digest, "size": size,
                **({"annotations": dict(extra)} if extra else {})}

    return canonical_json({
        "schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE,
        "config": descriptor(CONFIG_MEDIA_TYPE, _sha256(config), len(config)),
        "layers": [descriptor(LAYER_MEDIA_TYPE, layer.digest, layer.size,
                              {FILES_ANNOTATION: "\n".join(layer.files)}) for layer in layers],
        **({"annotations": dict(annotations)} if annotations else {}),
    })


def _sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _rfc3339(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# ----------------------------------------------------------------------- the registry


class _Session(requests.Session):
    """Every request with a timeout; no cookie kept (some registries set one, then ask for CSRF
    tokens)."""

    def __init__(self, timeout: Any) -> None:
        super().__init__()
        self.timeout = timeout
        self.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))

    def request(self, method, url, **kwargs):  # noqa: ANN001, ANN201 (requests' own signature)
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, url, **kwargs)


class _Registry(oras.provider.Registry):
    """oras-py's Registry with the request method this push needs (see the module docstring)."""

    def __init__(self, ref: Reference, credentials: Credentials | None, basic: bool, *,
                 plain_http: bool, tls_verify: bool | str, timeout: Any) -> None:
        super().__init__(hostname=ref.api_host, insecure=plain_http, tls_verify=tls_verify,
                         auth_backend="basic" if basic else "token")
        self.session = self.auth.session = _Session(timeout)
        self.credentials, self.basic = credentials, basic
        if credentials is not None:
            self.auth.set_basic_auth(credentials.username, credentials.password)

    def do_request(self, url: str, method: str = "GET", data: Any = None,
                   headers: dict | None = None, json: dict | None = None,
                   stream: bool = False) -> requests.Response:
        """One request with the credentials held; on a 401 while a token is held, one new token
        for the scope the registry asks (a HEAD's pull-only token does not grant a push) and
        the request again. A body is sent again only from a re-iterable (LayerTar, bytes)."""
        held = (self.auth.get_auth_header() if self.credentials or not self.basic else {})
        send = dict(url=url, data=data, json=json, stream=stream, verify=self._tls_verify)
        response = self.session.request(method, headers={**(headers or {}), **held}, **send)
        if response.status_code != 401 or self.basic or "Www-Authenticate" not in response.headers:
            return response
        retry, changed = self.auth.authenticate_request(response, {**(headers or {})}, refresh=True)
        return self.session.request(method, headers=retry, **send) if changed else response


def _server_says(response: requests.Response) -> str:
    try:
        said = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}"
                         for e in response.json().get("errors") or [] if isinstance(e, Mapping))
    except (ValueError, AttributeError):
        said = ""
    return said or (response.text or "").strip()[:200]


def _http_error(status: int, said: str, ref: Reference, doing: str,
                credentials: Credentials | None) -> PushError:
    host = ref.registry
    if status == 401 and credentials is None:
        return PushError(f"registry {host} asks for credentials ({doing}: 401) and the push "
                         f"secret (spec.output.oci.pushSecretRef) has none for {host}: add an "
                         f"auths entry for {host} to its .dockerconfigjson", retryable=False)
    if status == 401:
        return PushError(f"registry {host} refused the credentials of user "
                         f"{credentials.username!r} ({doing}: 401): wrong credentials for "
                         f"{host} in the push secret", retryable=False)
    if status == 403 or "DENIED" in said:
        return PushError(f"registry {host} refused the push to repository {ref.repository} "
                         f"({doing}: {status} {said}): the account may not push there",
                         retryable=False)
    if status == 404 and "NAME_UNKNOWN" in said:
        return PushError(f"registry {host} has no repository {ref.repository} and does not "
                         f"create one on push ({doing}: {said}): create it first",
                         retryable=False)
    if status == 400 and "DIGEST_INVALID" in said:
        return PushError(f"registry {host} received a blob that does not match its digest "
                         f"({doing}): a file changed while it was pushed; push again",
                         retryable=True)
    return PushError(f"registry {host} answered {status} ({doing}): {said}",
                     retryable=status >= 500 or status in (408, 429))


def _network_error(e: requests.RequestException, ref: Reference, plain_http: bool,
                   ca_file: str | None) -> PushError:
    host, port = ref.api_host, str(80 if plain_http else 443)
    if re.search(r":\d+$", host):
        host, _, port = host.rpartition(":")
    where = f"{host} port {port}"
    if isinstance(e, requests.exceptions.SSLError):
        if "CERTIFICATE_VERIFY_FAILED" not in str(e):
            return PushError(f"TLS with registry {where} failed ({e}); if it serves plain "
                             "HTTP, set spec.output.oci.plainHTTP", retryable=False)
        trusted = f"the CA bundle {ca_file}" if ca_file else "the system's CAs"
        return PushError(f"TLS: the certificate of registry {where} is not signed by {trusted}:"
                         " if the registry uses a private CA, set spec.output.oci."
                         "caConfigMapRef to a ConfigMap holding that CA", retryable=False)
    cause: BaseException = e
    for _ in range(10):
        cause = cause.__cause__ or cause.__context__ or cause
    if isinstance(e, requests.exceptions.ConnectionError):
        return PushError(f"cannot reach registry {where} ({type(cause).__name__}: {cause}); a "
                         "later push resumes where this one stopped", retryable=True)
    return PushError(f"request to registry {where} failed ({type(cause).__name__}: {cause})",
                     retryable=True)


class _Pusher:
    """One push's connection: the registry found and signed in to, then blobs and a manifest
    sent, every failure turned into a PushError."""

    def __init__(self, ref: Reference, credentials: Credentials | None, *, ca_file: str | None,
                 plain_http: bool, timeout: Any) -> None:
        self.ref, self.credentials, self.ca_file = ref, credentials, ca_file
        self.plain_http, self.timeout = plain_http, timeout
        self.container = oras.container.Container(f"{ref.repository}:{ref.tag}",
                                                  registry=ref.api_host)
        self.scheme = "http" if plain_http else "https"
        self.registry: _Registry | None = None

    def url(self, path: str) -> str:
        return f"{self.scheme}://{path}"

    def call(self, doing: str, method: str, url: str, ok: tuple[int, ...],
             **kwargs: Any) -> requests.Response:
        try:
            if self.registry is None:  # the probe: no credentials, no auth handling
                response = _Session(self.timeout).request(method, url,
                                                          verify=self.ca_file or True)
            else:
                response = self.registry.do_request(url, method, **kwargs)
        except requests.RequestException as e:
            raise _network_error(e, self.ref, self.plain_http, self.ca_file) from None
        if response.status_code not in ok:
            raise _http_error(response.status_code, _server_says(response), self.ref, doing,
                              self.credentials)
        return response

    def connect(self) -> None:
        """GET /v2/ without credentials: reachable, TLS trusted, and which auth it asks for:
        Basic (checked now), or a Bearer token (fetched now, for push): a wrong password shows
        before any file is read."""
        url = f"{self.scheme}://{self.ref.api_host}/v2/"
        probe = self.call("GET /v2/", "GET", url, (200, 401))
        challenge = probe.headers.get("Www-Authenticate", "")
        basic = challenge.lower().startswith("basic")
        self.registry = _Registry(self.ref, self.credentials, basic, plain_http=self.plain_http,
                                  tls_verify=self.ca_file or True, timeout=self.timeout)
        if basic:
            self.call("signing in", "GET", url, (200,))
        elif challenge.lower().startswith("bearer"):
            wanted = oras.auth.utils.parse_auth_header(challenge)
            wanted.scope = f"repository:{self.ref.repository}:pull,push"
            auth = self.registry.auth
            try:
                token = (auth.request_token(wanted) if self.credentials
                         else auth.request_anonymous_token(wanted))
            except requests.RequestException as e:
                raise _network_error(e, self.ref, self.plain_http, self.ca_file) from None
            if not token:
                raise _http_error(401, "", self.ref, f"token from {wanted.realm}",
                                  self.credentials)
            auth.token = token

    def send_blob(self, digest: str, body: LayerTar | bytes) -> bool:
        """Send one blob unless the registry has it already; True when it was sent."""
        if self.call(f"HEAD blob {digest}", "HEAD", self.url(self.container.get_blob_url(digest)),
                     (200, 404)).status_code == 200:
            return False
        started = self.call("starting a blob upload", "POST",
                            self.url(self.container.upload_blob_url()),
                            (202,), headers={"Content-Length": "0"})
        location = self.registry._get_location(started, self.container)
        if not location:
            raise PushError(f"registry {self.ref.registry} started an upload without a "
                            "Location to send it to", retryable=True)
        # One PUT with the whole blob, its length known: the upload every registry takes
        # (not all take the chunked PATCHes of oras-py's chunked_upload).
        self.call(f"uploading blob {digest}", "PUT",
                  oras.utils.append_url_params(location, {"digest": digest}),
                  (201, 204), data=body, headers={"Content-Type": "application/octet-stream"})
        return True

    def put_manifest(self, manifest: bytes) -> str:
        response = self.call(f"PUT manifest {self.ref.tag}", "PUT",
                             self.url(self.container.manifest_url()), (200, 201), data=manifest,
                             headers={"Content-Type": MANIFEST_MEDIA_TYPE})
        return response.headers.get("Docker-Content-Digest") or _sha256(manifest)


def push(folder: str | os.PathLike, reference: str, *,
         docker_config: str | bytes | Mapping | os.PathLike | None = None,
         ca_file: str | os.PathLike | None = None, plain_http: bool = False,
         annotations: Mapping[str, str] | None = None,
         created: datetime.datetime | None = None, platform: str = "linux/amd64",
         large_file_bytes: int = LARGE_FILE_BYTES,
         on_blob: Callable[[BlobEvent], None] | None = None,
         timeout: Any = TIMEOUT, base_layers: Sequence[Layer] = ()) -> PushResult:
    """Push every file of `folder` as an image (files under /models) to `reference`
    (`[oci://]host[:port]/repository[:tag]`), sending only the blobs the registry lacks.

    `base_layers`: layers under the model's (modelcar.shell_layer: a shell for KServe).
    `docker_config`: a dockerconfigjson Secret's content (or a path to it) holding the
    credentials for the registry; `ca_file`: a CA bundle for its TLS; `annotations`: added to
    the manifest's; `created`: the manifest's creation time (now by default; a fixed one gives
    the same manifest digest again); `on_blob`: called after each blob, sent or skipped.
    Raises PushError, whose message says what to do and whether a later push may succeed."""
    folder, ref = Path(folder), parse_reference(reference)
    if not folder.is_dir():
        raise PushError(f"nothing to push: {folder} is not a folder", retryable=False)
    if ca_file is not None and not Path(ca_file).is_file():
        raise PushError(f"the registry CA bundle {ca_file} does not exist", retryable=False)
    pusher = _Pusher(ref, credentials_for(docker_config, ref.registry), plain_http=plain_http,
                     ca_file=str(ca_file) if ca_file else None, timeout=timeout)
    pusher.connect()
    layers = build_layers(folder, large_file_bytes)
    if not layers:
        raise PushError(f"nothing to push: {folder} holds no file", retryable=False)
    layers = [*base_layers, *layers]
    config = image_config(layers, platform)
    blobs = [(layer.digest, layer.body, "layer", layer.files) for layer in layers]
    blobs.append((_sha256(config), config, "config", ()))
    sent = []
    for digest, body, kind, files in blobs:
        was_sent = pusher.send_blob(digest, body)
        sent += [(digest, len(body))] if was_sent else []
        log.info("%s %s: %s, %d bytes", "sent" if was_sent else "registry has", digest,
                 _describe(files) if files else kind, len(body))
        if on_blob is not None:
            on_blob(BlobEvent(digest, len(body), kind, files, was_sent))
    created = created or datetime.datetime.now(datetime.UTC)
    manifest = image_manifest(layers, config, {
        "org.opencontainers.image.title": ref.repository.rsplit("/", 1)[-1],
        "org.opencontainers.image.created": _rfc3339(created), **(annotations or {})})
    return PushResult(reference=str(ref), digest=pusher.put_manifest(manifest),
                      size=sum(layer.size for layer in layers) + len(config),
                      blobs_sent=len(sent), blobs_skipped=len(blobs) - len(sent),
                      bytes_sent=sum(size for _, size in sent), sent=tuple(d for d, _ in sent),
                      finished=datetime.datetime.now(datetime.UTC))
