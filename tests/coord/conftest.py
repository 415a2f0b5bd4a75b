"""The coordination-store tests add two backends to the suite's own: etcd over
TLS with a client certificate, and with user/password authentication.

One TLS etcd member serves the session: it requires client certificates signed
by a throwaway CA and has etcd's authentication enabled (user root). A client
certificate whose CN is ``root`` is therefore both a TLS credential and, by
etcd's ``--client-cert-auth`` rule, the user; the password store presents the
same certificate plus a token from user/password authentication.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.support.etcd_server import EtcdCluster, EtcdTLS
from tests.support.tls_certs import CertFiles, TestCA

BACKENDS = ["sqlite", "etcd", "etcds-cert", "etcds-password"]


@dataclass(frozen=True)
class TLSEtcd:
    """The session's TLS etcd and the files to reach it."""

    cluster: EtcdCluster
    authority: TestCA
    ca: Path
    client: CertFiles
    password: str
    password_file: Path
    #: A CA and a client certificate that the member does not trust.
    rogue_ca: Path
    rogue_client: CertFiles

    def url(self, **options: str | Path) -> str:
        query = urlencode({k: str(v) for k, v in options.items()}, safe="/")
        return self.cluster.url + ("?" + query if query else "")

    @property
    def cert_url(self) -> str:
        return self.url(ca=self.ca, cert=self.client.cert, key=self.client.key)

    @property
    def password_url(self) -> str:
        return self.url(ca=self.ca, cert=self.client.cert, key=self.client.key,
                        user="root", password_file=self.password_file)


@pytest.fixture(scope="session")
def etcd_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSEtcd]:
    folder = tmp_path_factory.mktemp("etcd-tls")
    ca = TestCA(folder / "ca")
    # etcd also dials its own client port (its gRPC gateway) with the server
    # certificate: it needs the client usage too.
    server = ca.issue("server", "etcd", server=True, client=True, ips=("127.0.0.1",),
                      dns=("localhost",))
    client = ca.issue("client", "root", client=True)
    rogue = TestCA(folder / "rogue", "rogue CA")
    rogue_client = rogue.issue("client", "root", client=True)
    password = secrets.token_urlsafe(16)
    password_file = folder / "etcd-password"
    fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    tls = EtcdTLS(cert_file=server.cert, key_file=server.key, trusted_ca_file=ca.cert_path,
                  admin_cert_file=client.cert, admin_key_file=client.key)
    cluster = EtcdCluster.start(folder, members=1, tls=tls)
    try:
        cluster.enable_auth(password)
        yield TLSEtcd(cluster, ca, ca.cert_path, client, password, password_file,
                      rogue.cert_path, rogue_client)
    finally:
        cluster.stop()


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Overrides the suite's fixture (tests/conftest.py) for tests/coord."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/cluster.db"
    if request.param == "etcd":
        cluster: EtcdCluster = request.getfixturevalue("etcd_cluster")
        return cluster.url
    tls: TLSEtcd = request.getfixturevalue("etcd_tls")
    return tls.cert_url if request.param == "etcds-cert" else tls.password_url
