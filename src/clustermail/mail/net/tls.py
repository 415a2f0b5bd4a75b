"""TLS for the protocol listeners: the virtual server's certificate and SSL contexts.

Each virtual server gets a self-signed certificate for its network name the first time a
protocol resource starts; it is kept on the virtual server's disk (``<disk>/tls/``), so it
moves with the virtual server and clients see the same certificate after a failover.
Administrators may point to their own PEM certificate chain and key instead.

Generated with ``cryptography`` (in-process, no ``openssl`` binary needed on the nodes):
ECDSA P-256, valid for ten years, subjectAltName = the network name (and the address, so
clients that connect by IP can pin it).
"""

from __future__ import annotations

import datetime
import fcntl
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from clustermail.private_files import append_private, make_private_dir

TLS_DIR = "tls"
VALID_DAYS = 3650
HANDSHAKE_TIMEOUT = 30.0


class TlsError(Exception):
    """A certificate or key cannot be read, generated or used; the text is for operators."""


@dataclass(frozen=True, slots=True)
class CertificatePaths:
    cert: Path
    key: Path
    generated: bool  # True when it is the virtual server's self-signed certificate


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in name) or "server"


def self_signed(hostname: str, addresses: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
    """A new self-signed certificate and key (PEM) for ``hostname``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64])])
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = [x509.DNSName(hostname)]
    for address in addresses:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            continue
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def ensure_certificate(
    disk: Path,
    hostname: str,
    *,
    cert: Path | None = None,
    key: Path | None = None,
    addresses: tuple[str, ...] = (),
) -> CertificatePaths:
    """The certificate to serve: the administrator's (``cert`` and ``key``, both or neither),
    else the virtual server's own under ``<disk>/tls/``, generated on first use. Several
    resources of one virtual server may call this at once; a file lock makes one generate."""
    if (cert is None) != (key is None):
        raise TlsError("give both 'cert' and 'key' properties, or neither")
    if cert is not None and key is not None:
        for p in (cert, key):
            if not p.is_file():
                raise TlsError(f"{p} does not exist or is not a file")
        return CertificatePaths(cert, key, generated=False)
    folder = disk / TLS_DIR
    base = _safe_name(hostname)
    cert_path, key_path = folder / f"{base}.crt", folder / f"{base}.key"
    try:
        make_private_dir(folder)
        with os.fdopen(append_private(folder / ".lock"), "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            if not (cert_path.is_file() and key_path.is_file()):
                cert_pem, key_pem = self_signed(hostname, addresses)
                _write_atomic(key_path, key_pem, 0o600)
                _write_atomic(cert_path, cert_pem, 0o600)
    except OSError as exc:
        raise TlsError(f"cannot create the certificate in {folder}: {exc}") from exc
    return CertificatePaths(cert_path, key_path, generated=True)


def server_context(paths: CertificatePaths) -> ssl.SSLContext:
    """A server-side context: TLS 1.2 or newer, no client certificates asked."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(paths.cert, paths.key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cannot load certificate {paths.cert} with key {paths.key}: {exc}") from exc
    return ctx


def client_context(verify: bool = False) -> ssl.SSLContext:
    """For relaying between virtual servers and to a smart host. Unverified by default:
    opportunistic STARTTLS, as MTAs do (RFC 7435); the virtual servers' certificates are
    self-signed."""
    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 fingerprint (hex with colons), for clients that pin self-signed certificates."""
    digest = x509.load_pem_x509_certificate(cert_pem).fingerprint(hashes.SHA256())
    return ":".join(f"{b:02X}" for b in digest)
