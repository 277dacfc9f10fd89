"""A real OCI registry for tests: Debian's `docker-registry` (distribution 2.8) on a free
localhost port, with TLS (a CA made here) and either htpasswd (bcrypt) auth, as a small private
registry has, or Bearer tokens from a token server, as Harbor, GHCR or Docker Hub have; its
storage in a folder and its log in a file.

    reg = TestRegistry.create(tmp_path)      # started; stop() and start() keep storage and port
    reg = TestRegistry.create(tmp_path, auth="token")
    reg.blob_uploads()                       # digests of the blob uploads completed, from its log
    reg.close()                              # the registry and its token server

The token server (a thread here) checks the same user and password and grants the scope asked
for, in an ES256 JWT whose x5c header carries the server certificate: the registry trusts
tokens that chain to the CA.

The upload count reads the registry's access log: one `PUT /v2/<name>/blobs/uploads/<id>?...
&digest=...` answered 201 for each blob it stored.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
import uuid
from base64 import b64decode, b64encode, urlsafe_b64encode
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import bcrypt
import requests
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tests.controlplane.pki import make_pki
from tests.polling import wait_for

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"
SERVICE = "ftjob-test-registry"
ISSUER = "ftjob-test-token-issuer"
_UPLOAD = re.compile(r'"PUT /v2/(?P<name>\S+?)/blobs/uploads/\S*?[?&]digest=(?P<digest>[^&\s"]+)'
                     r'\S* HTTP/[\d.]+" 201 ')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class TestRegistry:
    __test__ = False  # not a test class, despite its name

    dir: Path
    port: int
    username: str
    password: str
    auth: str = "htpasswd"  # | "token"
    proc: subprocess.Popen | None = field(default=None, repr=False)
    token_server: ThreadingHTTPServer | None = field(default=None, repr=False)

    @classmethod
    def create(cls, directory: Path, *, auth: str = "htpasswd", username: str = "pusher",
               password: str = "s3cret-pass", start: bool = True) -> TestRegistry:
        directory.mkdir(parents=True, exist_ok=True)
        reg = cls(directory, free_port(), username, password, auth)
        pki = make_pki(directory / "pki")
        if auth == "token":
            reg.token_server = _token_server(pki.server_cert, pki.server_key, username, password)
            realm = f"https://localhost:{reg.token_server.server_address[1]}/token"
            auth_config = {"token": {"realm": realm, "service": SERVICE, "issuer": ISSUER,
                                     "rootcertbundle": str(pki.ca_cert)}}
        else:
            (directory / "htpasswd").write_bytes(
                username.encode() + b":"
                + bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)) + b"\n")
            auth_config = {"htpasswd": {"realm": "ftjob-test", "path": str(directory / "htpasswd")}}
        config = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text"},
            "storage": {"filesystem": {"rootdirectory": str(directory / "storage")},
                        "delete": {"enabled": True}},
            "http": {"addr": f"127.0.0.1:{reg.port}", "secret": "ftjob-test-registry",
                     "tls": {"certificate": str(pki.server_cert), "key": str(pki.server_key)}},
            "auth": auth_config,
        }
        (directory / "config.yml").write_text(yaml.safe_dump(config))
        if start:
            reg.start()
        return reg

    @property
    def host(self) -> str:
        return f"localhost:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.dir / "pki" / "ca.crt"

    @property
    def log_file(self) -> Path:
        return self.dir / "registry.log"

    def docker_config(self, password: str | None = None) -> str:
        """A `.dockerconfigjson` with this registry's credentials (or another password)."""
        auth = b64encode(f"{self.username}:{password or self.password}".encode()).decode()
        return json.dumps({"auths": {self.host: {"auth": auth}}})

    def start(self, timeout: float = 30.0) -> None:
        assert self.proc is None, "the registry is running already"
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(self.dir / "config.yml")],
                                         stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        wait_for(self._ready, timeout, f"the registry on {self.host} to answer /v2/",
                 describe=self.log_tail)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"docker-registry exited with {self.proc.returncode}:\n"
                                 f"{self.log_tail()}")
        try:
            r = requests.get(f"https://{self.host}/v2/", verify=str(self.ca_file), timeout=2)
        except requests.RequestException:
            return False
        return r.status_code in (200, 401)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def close(self) -> None:
        """Stop the registry and its token server."""
        self.stop()
        if self.token_server is not None:
            self.token_server.shutdown()
            self.token_server.server_close()
            self.token_server = None

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_file.exists():
            return "(no registry log)"
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def blob_uploads(self, repository: str | None = None) -> list[str]:
        """Digests of the blob uploads the registry completed (201), oldest first, over all
        its runs; only those to `repository` when given."""
        if not self.log_file.exists():
            return []
        found = []
        for m in _UPLOAD.finditer(self.log_file.read_text(errors="replace")):
            if repository is None or m["name"] == repository:
                found.append(urllib.parse.unquote(m["digest"]))
        return found


# --------------------------------------------------------------------------- token server


def _b64url(data: bytes) -> str:
    return urlsafe_b64encode(data).rstrip(b"=").decode()


def issue_token(cert_file: Path, key_file: Path, subject: str, scopes: list[str],
                lifetime: float = 300.0) -> str:
    """An ES256 JWT granting `scopes` (`repository:<name>:<actions>`) to `subject`."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    header = {"typ": "JWT", "alg": "ES256",
              "x5c": [b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]}
    access = []
    for scope in scopes:
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        access.append({"type": kind, "name": name, "actions": actions.split(",")})
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": now + int(lifetime),
              "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access}
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _token_server(cert_file: Path, key_file: Path, username: str,
                  password: str) -> ThreadingHTTPServer:
    """GET /token?service=...&scope=... with Basic auth of the right user: a token for those
    scopes; anything else: 401."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
            given = self.headers.get("Authorization", "")
            try:
                user, _, secret = b64decode(given.removeprefix("Basic ")).decode().partition(":")
            except ValueError:
                user, secret = "", ""
            if not given.startswith("Basic ") or (user, secret) != (username, password):
                self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            token = issue_token(cert_file, key_file, user, query.get("scope", []))
            body = json.dumps({"token": token, "access_token": token, "expires_in": 300}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True, name="token-server").start()
    return server
