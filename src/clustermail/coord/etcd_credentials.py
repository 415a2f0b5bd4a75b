"""The credentials of an ``etcds://`` store, read and checked before connecting.

Whoever can write to the coordination store controls every node (see
docs/security.md), so its credentials get the care of an SSH key: the client
key and the password file must be private (owned by us or root, no access for
others; root-owned files may be group-readable, as PostgreSQL allows), and no
credential file may be writable by anyone else. Certificates and keys are parsed
here, so that a wrong file, an encrypted key, a key that does not match its
certificate or an expired certificate is reported by name instead of as an
opaque TLS handshake failure.
"""

from __future__ import annotations

import datetime
import os
import stat
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from clustermail.coord.api import InvalidStoreURL, StoreCredentialsError
from clustermail.coord.url import ENV_NAME, ETCD_OPTIONS, EtcdOptions

_FILE_KEYS = ("ca", "cert", "key", "password_file")
_CONFIG_KEYS = tuple(k for k in ETCD_OPTIONS if k != "config")
#: A password or key file larger than this is not what it claims to be.
_MAX_FILE = 1 << 20


@dataclass(frozen=True)
class EtcdCredentials:
    """What a TLS connection to etcd presents. Its repr shows no secret."""

    #: PEM bundle of trusted CAs; None: the system's roots.
    ca: bytes | None = field(default=None, repr=False)
    #: Our client certificate chain and key (PEM), both or neither.
    cert: bytes | None = field(default=None, repr=False)
    key: bytes | None = field(default=None, repr=False)
    #: The client certificate's subject CN (etcd takes it as the user name when
    #: it runs with --client-cert-auth and no password is given).
    cert_cn: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    #: Where the password came from ("file /x", "environment variable X").
    password_source: str | None = None

    def __repr__(self) -> str:
        parts = [f"ca={'custom' if self.ca else 'system roots'}"]
        if self.cert is not None:
            parts.append(f"client certificate CN={self.cert_cn!r}")
        if self.user is not None:
            parts.append(f"user={self.user!r}, password=<hidden, {self.password_source}>")
        return f"EtcdCredentials({', '.join(parts)})"

    __str__ = __repr__


def load_credentials(options: EtcdOptions) -> EtcdCredentials:
    """Reads and checks every file ``options`` names.

    Raises :class:`InvalidStoreURL` for options that do not fit together and
    :class:`StoreCredentialsError` for a file that is missing, unreadable, not
    private or not what it should be."""
    if options.config is not None:
        options = _merge(options, _read_config(options.config))
    if (options.cert is None) != (options.key is None):
        raise InvalidStoreURL("etcds options: cert= and key= go together (the client "
                              "certificate and its private key)")
    if options.password_file is not None and options.password_env is not None:
        raise InvalidStoreURL("etcds options: give password_file= or password_env=, not both")
    has_password = options.password_file is not None or options.password_env is not None
    if options.user is not None and not has_password:
        raise InvalidStoreURL(f"etcds options: user={options.user!r} needs "
                              "password_file=/path or password_env=VARIABLE")
    if has_password and options.user is None:
        raise InvalidStoreURL("etcds options: a password needs user=NAME")

    ca = None
    if options.ca is not None:
        ca = _read(options.ca, "CA file", private=False)
        _parse_ca(options.ca, ca)
    cert = key = None
    cert_cn = None
    if options.cert is not None and options.key is not None:
        cert = _read(options.cert, "client certificate file", private=False)
        key = _read(options.key, "client key file", private=True)
        cert_cn = _check_pair(options.cert, cert, options.key, key)
    password = source = None
    if options.password_file is not None:
        raw = _read(options.password_file, "password file", private=True)
        source = f"file {options.password_file}"
        password = _password(raw.decode("utf-8", "replace"), source)
    elif options.password_env is not None:
        source = f"environment variable {options.password_env}"
        password = _password(os.environ.get(options.password_env, ""), source)
    return EtcdCredentials(ca=ca, cert=cert, key=key, cert_cn=cert_cn, user=options.user,
                           password=password, password_source=source)


# ---------------------------------------------------------------- the config file


def _read_config(path: Path) -> dict[str, Any]:
    data = _read(path, "etcd client config file", private=False)
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidStoreURL(f"etcd client config {path}: not valid TOML: {exc}") from None
    for name, value in table.items():
        if name in ("password", "passwd", "secret", "token"):
            raise InvalidStoreURL(
                f"etcd client config {path}: {name!r}: keep the password in its own "
                "private file (password_file = \"/path\") or name an environment "
                "variable (password_env = \"VARIABLE\")")
        if name not in _CONFIG_KEYS:
            raise InvalidStoreURL(f"etcd client config {path}: unknown key {name!r} "
                                  f"(known: {', '.join(_CONFIG_KEYS)})")
        if not isinstance(value, str) or not value:
            raise InvalidStoreURL(f"etcd client config {path}: {name!r} must be a "
                                  "non-empty string")
        if name == "password_env" and not ENV_NAME.fullmatch(value):
            raise InvalidStoreURL(f"etcd client config {path}: password_env={value!r} is "
                                  "not an environment variable name")
    return table


def _merge(options: EtcdOptions, table: dict[str, Any]) -> EtcdOptions:
    assert options.config is not None
    changes: dict[str, Any] = {}
    for name, value in table.items():
        if getattr(options, name) is not None:
            raise InvalidStoreURL(f"etcds options: {name!r} is given both in the URL and "
                                  f"in {options.config}: keep one")
        if name in _FILE_KEYS:
            # Relative paths are relative to the config file, not to the cwd.
            changes[name] = options.config.parent / value
        else:
            changes[name] = value
    return replace(options, **changes)


# ---------------------------------------------------------------- files


def _check_mode(path: Path, what: str, st: os.stat_result, *, private: bool) -> None:
    mode = stat.S_IMODE(st.st_mode)
    euid = os.geteuid()
    if private and st.st_uid not in (euid, 0):
        raise StoreCredentialsError(
            f"{what} {path} is owned by uid {st.st_uid}: it must be owned by this "
            f"user (uid {euid}) or root")
    if mode & 0o022:
        raise StoreCredentialsError(
            f"{what} {path} is writable by others (mode {mode:04o}): chmod go-w {path}")
    if private:
        # Group read is tolerated only on a root-owned file (root:clustermail 0640).
        allowed = 0o040 if st.st_uid == 0 else 0
        if mode & 0o077 & ~allowed:
            raise StoreCredentialsError(
                f"{what} {path} is readable by others (mode {mode:04o}): "
                f"chmod 600 {path}")


def _read(path: Path, what: str, *, private: bool) -> bytes:
    try:
        with path.open("rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise StoreCredentialsError(f"{what} {path} is not a regular file")
            _check_mode(path, what, st, private=private)
            data = f.read(_MAX_FILE + 1)
    except FileNotFoundError:
        raise StoreCredentialsError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise StoreCredentialsError(f"{what} {path} is not a regular file") from None
    except OSError as exc:
        raise StoreCredentialsError(f"{what} {path} cannot be read: "
                                    f"{exc.strerror or exc}") from None
    if not data.strip():
        raise StoreCredentialsError(f"{what} {path} is empty")
    if len(data) > _MAX_FILE:
        raise StoreCredentialsError(f"{what} {path} is larger than {_MAX_FILE} bytes")
    return data


def _certificates(path: Path, data: bytes, what: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise StoreCredentialsError(f"{what} {path} holds no PEM certificate "
                                    "(-----BEGIN CERTIFICATE-----)")
    return certs


def _parse_ca(path: Path, data: bytes) -> None:
    _certificates(path, data, "CA file")


def _check_pair(cert_path: Path, cert_data: bytes, key_path: Path, key_data: bytes) -> str:
    """Checks that the key opens without a passphrase, matches the certificate,
    and that the certificate is valid now. Returns the certificate's CN."""
    cert = _certificates(cert_path, cert_data, "client certificate file")[0]
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except TypeError:
        raise StoreCredentialsError(
            f"client key file {key_path} is encrypted: gRPC needs an unencrypted key "
            "(protect it with file permissions)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise StoreCredentialsError(
            f"client key file {key_path} holds no PEM private key") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, spki) != cert.public_key().public_bytes(der, spki):
        raise StoreCredentialsError(
            f"client key file {key_path} does not match the certificate in {cert_path}")
    now = datetime.datetime.now(datetime.UTC)
    if now < cert.not_valid_before_utc:
        raise StoreCredentialsError(
            f"client certificate {cert_path} is not valid before "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    if now > cert.not_valid_after_utc:
        raise StoreCredentialsError(
            f"client certificate {cert_path} expired on "
            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _password(text: str, source: str) -> str:
    # A file usually ends with a newline that is not part of the password.
    password = text.removesuffix("\n").removesuffix("\r")
    if not password:
        raise StoreCredentialsError(f"the etcd password ({source}) is empty or not set")
    if "\n" in password or "\0" in password:
        raise StoreCredentialsError(f"the etcd password ({source}) must be one line")
    return password
