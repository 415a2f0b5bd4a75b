"""The shared protocol plumbing: admission, login throttling, certificates."""

from __future__ import annotations

import ssl
import threading
from pathlib import Path

import pytest

from clustermail.mail.net.auth_throttle import Attempt
from clustermail.mail.net.listener import Admission, AuthThrottle, ListenerLimits, is_loopback
from clustermail.mail.net.tls import (
    TlsError,
    ensure_certificate,
    fingerprint,
    server_context,
)


def test_admission_limits_total_and_per_client() -> None:
    a = Admission(ListenerLimits(max_connections=3, max_per_client=2))
    assert a.admit("1.1.1.1") and a.admit("1.1.1.1")
    assert not a.admit("1.1.1.1")  # per client
    assert a.admit("2.2.2.2")
    assert not a.admit("3.3.3.3")  # total
    a.release("1.1.1.1")
    assert a.admit("3.3.3.3")
    a.release("9.9.9.9")  # unknown: ignored
    assert a.active == 3


def test_auth_throttle_delays_then_locks() -> None:
    """The basics; tests/security/test_throttle_policy.py has the rest."""
    now = [1000.0]
    t = AuthThrottle(max_failures=3, window=60, base_delay=0.5, max_delay=1.5, lockout=30,
                     clock=lambda: now[0])

    def fail(client: str = "c") -> float:
        attempt = t.begin(client, "alice")
        assert isinstance(attempt, Attempt)
        return t.failure(attempt)

    assert t.locked("c", "alice") == 0
    assert [fail() for _ in range(3)] == [0.5, 1.0, 1.5]
    assert t.locked("c", "alice") == 30
    assert t.locked("other", "alice") == 0
    now[0] += 31
    assert t.locked("c", "alice") == 0
    now[0] += 100  # outside the window: counting starts again
    assert fail() == 0.5
    ok = t.begin("c", "alice")
    assert isinstance(ok, Attempt)
    t.success(ok)
    assert fail() == 0.5


def test_loopback() -> None:
    assert is_loopback("127.0.0.12") and is_loopback("::1")
    assert not is_loopback("10.0.0.1") and not is_loopback("nonsense")


def test_self_signed_certificate_is_made_once_and_kept(tmp_path: Path) -> None:
    first = ensure_certificate(tmp_path, "mail1", addresses=("127.0.0.11",))
    assert first.generated and first.cert.parent == tmp_path / "tls"
    assert oct(first.key.stat().st_mode & 0o777) == "0o600"
    again = ensure_certificate(tmp_path, "mail1")
    assert again.cert.read_bytes() == first.cert.read_bytes()  # moves with the disk
    ctx = server_context(first)
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert len(fingerprint(first.cert.read_bytes()).split(":")) == 32


def test_concurrent_first_starts_make_one_certificate(tmp_path: Path) -> None:
    results: list[bytes] = []

    def make() -> None:
        results.append(ensure_certificate(tmp_path, "mail2").cert.read_bytes())

    threads = [threading.Thread(target=make) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(set(results)) == 1


def test_admin_certificate_errors(tmp_path: Path) -> None:
    own = ensure_certificate(tmp_path / "a", "mail.example.test")
    paths = ensure_certificate(tmp_path, "x", cert=own.cert, key=own.key)
    assert not paths.generated and paths.cert == own.cert
    with pytest.raises(TlsError, match="both"):
        ensure_certificate(tmp_path, "x", cert=own.cert)
    with pytest.raises(TlsError, match="does not exist"):
        ensure_certificate(tmp_path, "x", cert=tmp_path / "nope.crt", key=own.key)
    (tmp_path / "bad.crt").write_text("not a certificate")
    bad = ensure_certificate(tmp_path, "x", cert=tmp_path / "bad.crt", key=own.key)
    with pytest.raises(TlsError, match="cannot load"):
        server_context(bad)
