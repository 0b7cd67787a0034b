"""A real SMTP server in-process (aiosmtpd) that records what it receives.

`running(...)` starts it on 127.0.0.1 and a free port; `Recorder` keeps every accepted
message with what the session looked like (TLS, authenticated). Knobs let a test make
the server slow, refuse recipients, refuse the data, or answer QUIT badly.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

HOST = "127.0.0.1"


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool
    authenticated: bool


@dataclass
class Recorder:
    """aiosmtpd handler: records accepted messages; knobs for failure modes."""

    delay: float = 0.0  # seconds to sit in DATA (async: other sessions go on)
    refuse_rcpt: dict[str, str] = field(default_factory=dict)  # address -> reply
    data_reply: str | None = None  # e.g. "451 4.3.0 try later"; None accepts
    quit_reply: str | None = None  # e.g. "421 4.3.2 going away"; None says 221
    received: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.refuse_rcpt:
            return self.refuse_rcpt[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.data_reply is not None:
            return self.data_reply
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self.received.append(
                Received(
                    mail_from=envelope.mail_from,
                    rcpt_tos=list(envelope.rcpt_tos),
                    message=message,
                    tls=session.ssl is not None,
                    authenticated=bool(session.authenticated),
                )
            )
        return "250 Message accepted"

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        return self.quit_reply or "221 Bye"

    def message_ids(self) -> list[str]:
        with self._lock:
            return [str(r.message["Message-ID"]) for r in self.received]


class Credentials:
    """aiosmtpd authenticator: accepts exactly one login/password (checked server-side).
    `echo=True` makes a careless server that repeats the attempted password in its 535."""

    def __init__(self, login: str, password: str, echo: bool = False) -> None:
        self.login, self.password, self.echo = login.encode(), password.encode(), echo
        self.attempts: list[tuple[bytes, bool]] = []  # (login, accepted)

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ok = auth_data.login == self.login and auth_data.password == self.password
        self.attempts.append((auth_data.login, ok))
        if ok:
            return AuthResult(success=True, auth_data=auth_data)
        reply = None
        if self.echo:
            attempted = auth_data.password.decode(errors="replace")
            reply = f"535 5.7.8 credentials {auth_data.login.decode()}:{attempted} invalid"
        return AuthResult(success=False, handled=False, message=reply)


@contextmanager
def running(handler: Recorder, port: int | None = None, **smtp_kwargs: Any) -> Iterator[int]:
    """Serve `handler` on 127.0.0.1:`port` (a free one by default); yields the port."""
    port = port or free_port()
    controller = Controller(
        handler, hostname=HOST, port=port, server_hostname="smtp.test", **smtp_kwargs
    )
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@contextmanager
def silent_listener(hold: float = 3.0) -> Iterator[int]:
    """A TCP port that accepts connections and never says a word (a hung server).
    After `hold` seconds it closes, so a client without a timeout fails slowly, not never."""
    sock = socket.socket()
    sock.bind((HOST, 0))
    sock.listen(8)
    closer = threading.Timer(hold, sock.close)
    closer.start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        closer.cancel()
        sock.close()


def self_signed_cert(folder: Path) -> tuple[Path, Path] | None:
    """A certificate for 127.0.0.1 (IP SAN) and its key; None when nothing can make one."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    try:
        _cert_with_cryptography(cert, key)
        return cert, key
    except ImportError:
        pass
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def _cert_with_cryptography(cert_path: Path, key_path: Path) -> None:
    import datetime
    import ipaddress

    from cryptography import x509  # type: ignore[import-not-found, unused-ignore]
    from cryptography.hazmat.primitives import (  # type: ignore[import-not-found, unused-ignore]
        hashes,
        serialization,
    )
    from cryptography.hazmat.primitives.asymmetric import ec  # type: ignore[import-not-found, unused-ignore]
    from cryptography.x509.oid import NameOID  # type: ignore[import-not-found, unused-ignore]

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    return context
