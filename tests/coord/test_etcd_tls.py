"""etcd over TLS with client certificates and user/password authentication,
against a real member (the session's, see conftest.py): what works, what is
refused and how it is said, and that no secret shows."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from clustermail.coord import (
    EventType,
    StoreCredentialsError,
    open_store,
    parse_store_url,
)
from clustermail.coord.etcd import EtcdStore
from tests.coord.conftest import TLSEtcd
from tests.support.tls_certs import TestCA

#: A refusal is final: no retries over the call's whole budget (2 × 2 s).
PROMPT = 3.0


async def refused(url: str) -> str:
    """Opens ``url``, expecting a prompt StoreCredentialsError; returns its message."""
    started = time.monotonic()
    with pytest.raises(StoreCredentialsError) as info:
        store = await open_store(url)
        await store.close()
    assert time.monotonic() - started < PROMPT
    message = str(info.value)
    assert "\n" not in message
    return message


async def test_client_certificate_store_works_and_reopens_from_its_url(
        etcd_tls: TLSEtcd, ns: str) -> None:
    store = await open_store(etcd_tls.cert_url)
    try:
        assert isinstance(store, EtcdStore)
        assert store.url.startswith("etcds://127.0.0.1:")
        await store.put(ns + "k", "v")
    finally:
        await store.close()
    # Node agents hand store.url to the processes they start.
    again = await open_store(store.url)
    try:
        kv = await again.get(ns + "k")
        assert kv is not None and kv.value == b"v"
    finally:
        await again.close()


async def test_password_shows_nowhere(etcd_tls: TLSEtcd, ns: str) -> None:
    store = await open_store(etcd_tls.password_url)
    assert isinstance(store, EtcdStore)
    try:
        await store.put(ns + "k", "v")
        for text in (store.url, repr(store), str(parse_store_url(store.url)),
                     repr(parse_store_url(store.url))):
            assert etcd_tls.password not in text
        assert "user=root" in store.url and "password_file=" in store.url
        creds = store._credentials
        assert creds is not None and creds.password == etcd_tls.password
        assert etcd_tls.password not in repr(creds) and etcd_tls.password not in str(creds)
        assert "<hidden" in repr(creds)
    finally:
        await store.close()


async def test_password_from_an_environment_variable(
        etcd_tls: TLSEtcd, ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CM_TEST_ETCD_PASSWORD", etcd_tls.password)
    url = etcd_tls.url(ca=etcd_tls.ca, cert=etcd_tls.client.cert, key=etcd_tls.client.key,
                       user="root", password_env="CM_TEST_ETCD_PASSWORD")
    store = await open_store(url)
    try:
        await store.put(ns + "k", "v")
    finally:
        await store.close()


async def test_client_config_file(etcd_tls: TLSEtcd, ns: str, tmp_path: Path) -> None:
    # Relative paths in the file are relative to the file's folder.
    (tmp_path / "ca.pem").write_bytes(etcd_tls.ca.read_bytes())
    config = tmp_path / "etcd-client.toml"
    config.write_text(
        'ca = "ca.pem"\n'
        f'cert = "{etcd_tls.client.cert}"\n'
        f'key = "{etcd_tls.client.key}"\n'
        'user = "root"\n'
        f'password_file = "{etcd_tls.password_file}"\n'
    )
    store = await open_store(etcd_tls.url(config=config))
    try:
        await store.put(ns + "k", "v")
        assert store.url == etcd_tls.url(config=config)
    finally:
        await store.close()


async def test_a_new_token_when_etcd_drops_ours(etcd_tls: TLSEtcd, ns: str) -> None:
    """Changing a user's password invalidates its tokens (and a restarted
    member forgets them): calls and new watches go on with a fresh token."""
    store = await open_store(etcd_tls.password_url)
    assert isinstance(store, EtcdStore)
    try:
        await store.put(ns + "before", "1")
        first = store._token
        assert first is not None
        change_password = ("user", "passwd", "root", "--interactive=false")
        etcd_tls.cluster.etcdctl(*change_password, stdin=etcd_tls.password + "\n")
        await store.put(ns + "again", "1")  # a call refused for its token is sent again
        second = store._token
        assert second not in (None, first)
        etcd_tls.cluster.etcdctl(*change_password, stdin=etcd_tls.password + "\n")
        events = store.watch(ns)  # a watch is cancelled for its token: created again
        async with asyncio.timeout(10):
            waiter = asyncio.ensure_future(anext(events))
            while not waiter.done() and store._token == second:
                await asyncio.sleep(0.05)  # until the watch holds its new token
            rev = await store.put(ns + "after", "2")
            event = await waiter
        assert (event.type, event.key, event.revision) == (EventType.PUT, ns + "after", rev)
        assert store._token not in (None, second)
        await events.aclose()  # type: ignore[attr-defined]
    finally:
        await store.close()


@pytest.mark.parametrize("which", ["another CA", "a CA of the same name"])
async def test_wrong_ca_is_one_line_naming_the_endpoint(etcd_tls: TLSEtcd, which: str,
                                                        tmp_path: Path) -> None:
    # A CA of the same name (say, one made again) fails on the signature instead.
    ca = etcd_tls.rogue_ca if which == "another CA" else TestCA(tmp_path).cert_path
    endpoint = etcd_tls.cluster.url.removeprefix("etcds://")
    message = await refused(etcd_tls.url(ca=ca, cert=etcd_tls.client.cert,
                                         key=etcd_tls.client.key))
    assert f"etcd at {endpoint}: TLS handshake failed: certificate verify failed" in message
    assert "(is ca= the CA that signed the member's certificate?)" in message


async def test_no_client_certificate_is_refused(etcd_tls: TLSEtcd) -> None:
    message = await refused(etcd_tls.url(ca=etcd_tls.ca))
    assert "refused our TLS connection" in message and "client certificate" in message


async def test_client_certificate_of_another_ca_is_refused(etcd_tls: TLSEtcd) -> None:
    message = await refused(etcd_tls.url(ca=etcd_tls.ca, cert=etcd_tls.rogue_client.cert,
                                         key=etcd_tls.rogue_client.key))
    assert "refused our TLS connection" in message


async def test_wrong_password(etcd_tls: TLSEtcd, tmp_path: Path) -> None:
    wrong = tmp_path / "password"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)
    message = await refused(etcd_tls.url(ca=etcd_tls.ca, cert=etcd_tls.client.cert,
                                         key=etcd_tls.client.key, user="root",
                                         password_file=wrong))
    assert "authentication failed for user 'root'" in message
    assert str(wrong) in message and "not-the-password" not in message


async def test_a_user_without_permissions(etcd_tls: TLSEtcd) -> None:
    # Under --client-cert-auth the certificate's CN is the user: this one has no role.
    nobody = etcd_tls.authority.issue("nobody", "nobody", client=True)
    message = await refused(etcd_tls.url(ca=etcd_tls.ca, cert=nobody.cert, key=nobody.key))
    assert "user 'nobody'" in message and "permission denied" in message


async def test_world_readable_key_is_refused_before_connecting(
        etcd_tls: TLSEtcd, tmp_path: Path) -> None:
    key = tmp_path / "client-key.pem"
    key.write_bytes(etcd_tls.client.key.read_bytes())
    key.chmod(0o644)
    message = await refused(etcd_tls.url(ca=etcd_tls.ca, cert=etcd_tls.client.cert, key=key))
    assert message == (f"client key file {key} is readable by others (mode 0644): "
                       f"chmod 600 {key}")
