"""Store URLs and the typed errors of opening a store."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from clustermail.coord import (
    InvalidStoreURL,
    StoreCredentialsError,
    StoreUnavailable,
    open_store,
    parse_store_url,
)
from clustermail.coord.etcd_credentials import load_credentials
from clustermail.coord.url import EtcdOptions, redact
from tests.support.tls_certs import CertFiles, TestCA


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("cluster.db", "has no scheme"),
        ("sqlite://relative.db", "absolute file path"),
        ("sqlite:///", "absolute file path"),
        ("redis://127.0.0.1:6379", "unknown scheme 'redis'"),
        ("etcd://127.0.0.1", "is not host:port"),
        ("etcd://127.0.0.1:2379,:5", "is not host:port"),
        ("etcd://127.0.0.1:99999", "is not host:port"),
        ("etcd://127.0.0.1:2379?ca=/ca.pem", "need etcds://"),
        ("etcds://127.0.0.1:2379?ca=ca.pem", "must be an absolute path"),
        ("etcds://127.0.0.1:2379?ca=/a.pem&ca=/b.pem", "given twice"),
        ("etcds://127.0.0.1:2379?cacert=/a.pem", "unknown option 'cacert'"),
        ("etcds://127.0.0.1:2379?user=", "has no value"),
        ("etcds://127.0.0.1:2379?password_env=1BAD", "not an environment variable"),
        ("etcds://127.0.0.1:2379?user=root&password=hunter2", "never put a password"),
        ("etcds://root:hunter2@127.0.0.1:2379", "do not go before the host"),
        ("etcds://127.0.0.1:2379?ca", "not name=value pairs"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(InvalidStoreURL, match=message) as info:
        parse_store_url(url)
    assert "hunter2" not in str(info.value)


def test_good_urls() -> None:
    assert parse_store_url("sqlite:///var/lib/cm/cluster.db").path == Path(
        "/var/lib/cm/cluster.db"
    )
    assert parse_store_url("etcd://127.0.0.1:2379,localhost:22379").endpoints == (
        ("127.0.0.1", 2379),
        ("localhost", 22379),
    )


def test_etcds_options_and_the_canonical_url() -> None:
    url = ("etcds://10.0.0.1:2379,[fd00::2]:2379?ca=/etc/cm/ca.pem&cert=/etc/cm/c.pem"
           "&key=/etc/cm/c-key.pem&user=clustermail&password_file=/etc/cm/etcd%20pw")
    parsed = parse_store_url(url)
    assert parsed.tls and parsed.endpoints == (("10.0.0.1", 2379), ("fd00::2", 2379))
    assert parsed.options == EtcdOptions(
        ca=Path("/etc/cm/ca.pem"), cert=Path("/etc/cm/c.pem"), key=Path("/etc/cm/c-key.pem"),
        user="clustermail", password_file=Path("/etc/cm/etcd pw"))
    assert parse_store_url(str(parsed)) == parsed
    assert str(parse_store_url("etcds://h:1")) == "etcds://h:1"
    assert str(parse_store_url("etcd://h:1,h:2")) == "etcd://h:1,h:2"


def test_redact_hides_what_looks_like_a_secret() -> None:
    assert redact("etcds://h:1?user=u&password=p&ca=/x") == "etcds://h:1?user=u&password=***&ca=/x"
    assert redact("etcds://u:p@h:1") == "etcds://***@h:1"


# ---------------------------------------------------------------- credential files


@pytest.fixture
def pki(tmp_path: Path) -> tuple[TestCA, CertFiles]:
    ca = TestCA(tmp_path / "pki")
    return ca, ca.issue("client", "clustermail", client=True)


def private_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_credentials_load_and_hide_the_password(pki: tuple[TestCA, CertFiles],
                                                tmp_path: Path) -> None:
    ca, client = pki
    pw = private_file(tmp_path / "pw", "s3cret-Pa55\n")
    creds = load_credentials(EtcdOptions(ca=ca.cert_path, cert=client.cert, key=client.key,
                                         user="clustermail", password_file=pw))
    assert creds.password == "s3cret-Pa55" and creds.cert_cn == "clustermail"
    assert "s3cret" not in repr(creds) and "s3cret" not in str(creds)
    assert creds.ca == ca.cert_path.read_bytes()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing ca", "CA file {tmp}/nowhere.pem does not exist"),
        ("ca not pem", "CA file {tmp}/junk.pem holds no PEM certificate"),
        ("ca writable by others", "CA file {tmp}/open.pem is writable by others (mode 0666)"),
        ("key readable by others", "client key file {tmp}/key.pem is readable by others "
                                   "(mode 0644): chmod 600 {tmp}/key.pem"),
        ("key of another certificate", "does not match the certificate"),
        ("key not a key", "client key file {tmp}/key.pem holds no PEM private key"),
        ("password readable by others", "password file {tmp}/pw is readable by others "
                                        "(mode 0604)"),
        ("password empty", "password file {tmp}/pw is empty"),
        ("password env unset", "environment variable CM_TEST_UNSET_PASSWORD) is empty or "
                               "not set"),
        ("password is a folder", "password file {tmp} is not a regular file"),
    ],
)
def test_credential_file_problems_are_named(case: str, message: str,
                                            pki: tuple[TestCA, CertFiles],
                                            tmp_path: Path) -> None:
    ca, client = pki
    options = EtcdOptions(ca=ca.cert_path, cert=client.cert, key=client.key)
    if case == "missing ca":
        options = replace(options, ca=tmp_path / "nowhere.pem")
    elif case == "ca not pem":
        options = replace(options, ca=private_file(tmp_path / "junk.pem", "junk", 0o644))
    elif case == "ca writable by others":
        options = replace(options, ca=tmp_path / "open.pem")
        private_file(options.ca, ca.cert_path.read_text(), 0o644)  # type: ignore[arg-type]
        os.chmod(tmp_path / "open.pem", 0o666)  # past the umask
    elif case == "key readable by others":
        options = replace(options, key=private_file(tmp_path / "key.pem",
                                                    client.key.read_text(), 0o644))
    elif case == "key of another certificate":
        other = ca.issue("other", "other", client=True)
        options = replace(options, key=other.key)
    elif case == "key not a key":
        options = replace(options, key=private_file(tmp_path / "key.pem", "junk"))
    elif case.startswith("password"):
        options = replace(options, user="clustermail")
        if case == "password env unset":
            options = replace(options, password_env="CM_TEST_UNSET_PASSWORD")
        elif case == "password is a folder":
            options = replace(options, password_file=tmp_path)
        else:
            mode = 0o604 if "others" in case else 0o600
            text = "" if "empty" in case else "pw"
            options = replace(options, password_file=private_file(tmp_path / "pw", text, mode))
    with pytest.raises(StoreCredentialsError) as info:
        load_credentials(options)
    assert message.format(tmp=tmp_path) in str(info.value)


def test_a_root_owned_key_may_be_group_readable(pki: tuple[TestCA, CertFiles]) -> None:
    # As PostgreSQL allows: root:clustermail 0640. Only root can make a root-owned file.
    if os.geteuid() != 0:
        pytest.skip("needs root to own a file as root")
    _, client = pki
    client.key.chmod(0o640)
    assert load_credentials(EtcdOptions(cert=client.cert, key=client.key)).key


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cert": "c.pem"}, "cert= and key= go together"),
        ({"user": "u"}, "needs password_file=/path or password_env=VARIABLE"),
        ({"password_env": "X"}, "a password needs user=NAME"),
        ({"user": "u", "password_env": "X", "password_file": "/p"}, "not both"),
    ],
)
def test_options_that_do_not_fit_together(options: dict[str, str], message: str) -> None:
    fields = {k: Path(v) if k in ("cert", "password_file") else v for k, v in options.items()}
    with pytest.raises(InvalidStoreURL, match=message):
        load_credentials(EtcdOptions(**fields))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('ca = "/x"\nca = "/y"\n', "not valid TOML"),
        ('cacert = "/x"\n', "unknown key 'cacert'"),
        ('password = "hunter2"\n', "keep the password in its own private file"),
        ("user = 3\n", "'user' must be a non-empty string"),
        ('user = "root"\n', "'user' is given both in the URL and in"),
    ],
)
def test_config_file_problems(text: str, message: str, tmp_path: Path) -> None:
    config = private_file(tmp_path / "etcd-client.toml", text, 0o644)
    with pytest.raises(InvalidStoreURL, match=message) as info:
        load_credentials(EtcdOptions(config=config, user="root"))
    assert "hunter2" not in str(info.value)


async def test_sqlite_in_a_missing_folder_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="does not exist"):
        await open_store(f"sqlite://{tmp_path}/nowhere/cluster.db")


async def test_sqlite_on_a_file_that_is_not_a_store(tmp_path: Path) -> None:
    junk = tmp_path / "cluster.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreUnavailable, match=r"not a usable clustermail store|cannot open"):
        await open_store(f"sqlite://{junk}")
    assert junk.read_bytes().startswith(b"this is not a database")  # left untouched


async def test_unreachable_etcd_fails_promptly() -> None:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        store = await open_store("etcd://127.0.0.1:1")
        try:
            await store.revision()
        finally:
            await store.close()
    assert time.monotonic() - started < 15
