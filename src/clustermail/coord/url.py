"""Store URLs select the backend and say how to reach it.

* ``sqlite:///path/cluster.db`` — the embedded store.
* ``etcd://h:p[,h:p…]`` — etcd over plain gRPC (a trusted network only).
* ``etcds://h:p[,h:p…]?ca=…&cert=…&key=…&user=…&password_file=…`` — etcd over
  TLS, optionally with a client certificate and etcd user/password
  authentication; ``config=/path/etcd-client.toml`` names the same keys in a
  file. A password itself never appears in a URL (it would show in ``ps`` and in
  logs): only the name of a file holding it, or of an environment variable.

Parsing is pure: files are read when the store is opened
(:mod:`clustermail.coord.etcd_credentials`).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, fields
from pathlib import Path

from clustermail.coord.api import InvalidStoreURL

SCHEMES = ("sqlite", "etcd", "etcds")

#: The options of an ``etcds://`` URL (and the keys of its client config file).
ETCD_OPTIONS = ("ca", "cert", "key", "user", "password_file", "password_env", "config")
_PATH_OPTIONS = frozenset({"ca", "cert", "key", "password_file", "config"})
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECRET_PARAM = re.compile(r"((?:^|[?&;])(?:password|passwd|pass|secret|token)=)[^&;#]*",
                           re.IGNORECASE)
_USERINFO = re.compile(r"^([a-z]+://)[^/@?]*@", re.IGNORECASE)


def redact(url: str) -> str:
    """``url`` fit for a message: what looks like a secret is replaced by ``***``."""
    return _SECRET_PARAM.sub(r"\1***", _USERINFO.sub(r"\1***@", url))


@dataclass(frozen=True, slots=True)
class EtcdOptions:
    """How to reach an ``etcds://`` store: paths and names only, never a secret."""

    #: PEM file of the CA(s) that sign the members' certificates (default: the
    #: system's trusted roots).
    ca: Path | None = None
    #: PEM files of our client certificate and its private key (go together).
    cert: Path | None = None
    key: Path | None = None
    #: etcd user for user/password authentication.
    user: str | None = None
    #: Where the user's password is: a private file, or an environment variable.
    password_file: Path | None = None
    password_env: str | None = None
    #: A TOML file with any of the keys above.
    config: Path | None = None

    def items(self) -> list[tuple[str, str]]:
        """The options that are set, as (name, text), in :data:`ETCD_OPTIONS` order."""
        out: list[tuple[str, str]] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out.append((f.name, str(value)))
        return out


@dataclass(frozen=True, slots=True)
class StoreURL:
    scheme: str
    #: For sqlite: the database file.
    path: Path | None = None
    #: For etcd: (host, port) of each endpoint, in order of preference.
    endpoints: tuple[tuple[str, int], ...] = ()
    #: For etcds: TLS and authentication options.
    options: EtcdOptions = EtcdOptions()

    @property
    def tls(self) -> bool:
        return self.scheme == "etcds"

    def endpoint_names(self) -> str:
        return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.endpoints)

    def __str__(self) -> str:
        """The canonical URL: it opens the same store and holds no secret."""
        if self.scheme == "sqlite":
            return f"sqlite://{self.path}"
        text = f"{self.scheme}://{self.endpoint_names()}"
        items = self.options.items()
        if items:
            text += "?" + urllib.parse.urlencode(items, safe="/")
        return text


def _bad(url: str, message: str) -> InvalidStoreURL:
    return InvalidStoreURL(f"store URL {redact(url)!r}: {message}")


def _parse_options(url: str, query: str) -> EtcdOptions:
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise _bad(url, "the options after '?' are not name=value pairs joined by '&'") from None
    values: dict[str, str] = {}
    for name, value in pairs:
        if name.lower() in ("password", "passwd", "pass", "secret", "token"):
            raise _bad(url, "never put a password in a store URL (it shows in `ps` and in "
                            "logs): use password_file=/path (a 0600 file) or "
                            "password_env=VARIABLE")
        if name not in ETCD_OPTIONS:
            raise _bad(url, f"unknown option {name!r} (known: {', '.join(ETCD_OPTIONS)})")
        if name in values:
            raise _bad(url, f"option {name!r} is given twice")
        if not value:
            raise _bad(url, f"option {name!r} has no value")
        if name in _PATH_OPTIONS and not value.startswith("/"):
            # The URL is handed to other processes (node agents, resource hosts)
            # that may run in another folder.
            raise _bad(url, f"option {name}={value!r} must be an absolute path")
        if name == "password_env" and not ENV_NAME.fullmatch(value):
            raise _bad(url, f"password_env={value!r} is not an environment variable name")
        values[name] = value
    def path(name: str) -> Path | None:
        return Path(values[name]) if name in values else None

    return EtcdOptions(ca=path("ca"), cert=path("cert"), key=path("key"),
                       user=values.get("user"), password_file=path("password_file"),
                       password_env=values.get("password_env"), config=path("config"))


def parse_store_url(url: str) -> StoreURL:
    """Parses a store URL, raising :class:`InvalidStoreURL` with what is wrong."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise InvalidStoreURL(
            f"store URL {redact(url)!r} has no scheme: use sqlite:///path/to/cluster.db, "
            "etcd://host:port[,host:port...] or etcds://host:port[,host:port...]?ca=/path"
        )
    if scheme == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise _bad(url, "a sqlite URL needs an absolute file path, "
                            "as in sqlite:///path/to/cluster.db")
        return StoreURL("sqlite", path=Path(rest))
    if scheme in ("etcd", "etcds"):
        hosts, qmark, query = rest.partition("?")
        if "@" in hosts:
            raise _bad(url, "user names and passwords do not go before the host: use "
                            "etcds://host:port?user=NAME&password_file=/path")
        options = EtcdOptions()
        if qmark:
            if scheme == "etcd":
                raise _bad(url, "TLS and authentication options need etcds:// "
                                "(a password must not cross the network in clear text)")
            options = _parse_options(url, query)
        endpoints: list[tuple[str, int]] = []
        for part in hosts.rstrip("/").split(","):
            host, colon, port = part.strip().rpartition(":")
            if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise _bad(url, f"endpoint {part!r} is not host:port "
                                f"(as in {scheme}://127.0.0.1:2379,127.0.0.1:22379)")
            endpoints.append((host.strip("[]"), int(port)))
        return StoreURL(scheme, endpoints=tuple(endpoints), options=options)
    raise _bad(url, f"unknown scheme {scheme!r} (expected one of: {', '.join(SCHEMES)})")
