"""Private files: folders 0700, files 0600, and the check of a data directory at start."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from clustermail.private_files import (
    UnsafePathError,
    check_data_dir,
    check_private_dir,
    create_private_file,
    make_private_dir,
    write_private_text,
)

NOBODY = 65534


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture(autouse=True)
def loose_umask() -> object:
    """Whatever the caller's umask, what these functions create is private."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_folders_and_files_are_created_private(tmp_path: Path) -> None:
    deep = make_private_dir(tmp_path / "a" / "b" / "c")
    assert [mode(p) for p in (tmp_path / "a", tmp_path / "a" / "b", deep)] == [0o700] * 3
    create_private_file(deep / "db.sqlite")
    write_private_text(deep / "cluster.toml", "x = 1\n")
    assert mode(deep / "db.sqlite") == 0o600
    assert mode(deep / "cluster.toml") == 0o600
    assert (deep / "cluster.toml").read_text() == "x = 1\n"


def test_sqlite_gives_wal_and_shm_the_mode_of_the_database(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "mail.sqlite"
    create_private_file(path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    for suffix in ("-wal", "-shm"):
        assert mode(tmp_path / f"mail.sqlite{suffix}") == 0o600
    conn.close()


def test_a_missing_data_directory_is_created_private(tmp_path: Path) -> None:
    assert check_data_dir(tmp_path / "data" / "here") == 0
    assert mode(tmp_path / "data") == 0o700 and mode(tmp_path / "data" / "here") == 0o700


def test_what_others_can_read_is_made_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "undo" / "node1").mkdir(parents=True)
    data.chmod(0o755)
    (data / "undo").chmod(0o750)
    (data / "undo" / "node1" / "ip.json").write_text("{}")
    (data / "undo" / "node1" / "link").symlink_to("/etc/passwd")  # never followed
    (data / "cluster.db").write_text("")
    (data / "cluster.db").chmod(0o644)
    # The data directory itself, and the trusted folder's tree (what others could read).
    assert check_data_dir(data, trusted=("undo", "absent")) == 4
    assert mode(data) == 0o700
    assert [mode(p) for p in (data / "undo", data / "undo" / "node1")] == [0o700, 0o700]
    assert mode(data / "undo" / "node1" / "ip.json") == 0o600
    assert mode(Path("/etc/passwd")) == 0o644
    # The rest is not walked: once the data directory is 0700, nobody else reaches it.
    assert mode(data / "cluster.db") == 0o644
    assert check_data_dir(data, trusted=("undo",)) == 0


@pytest.mark.parametrize(("chmod", "who"), [(0o777, "group and others"), (0o775, "its group"),
                                            (0o703, "others")])
def test_a_data_directory_others_can_write_is_refused(
    tmp_path: Path, chmod: int, who: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(chmod)
    with pytest.raises(UnsafePathError) as err:
        check_data_dir(data)
    assert str(err.value) == (f"the data directory {data} is writable by {who} "
                              f"(mode {chmod:04o}): chmod go-w {data}")
    assert mode(data) == chmod  # refused: nothing changed


def test_something_writable_in_a_trusted_folder_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    record = data / "undo" / "node1" / "mail1" / "ip.json"
    record.parent.mkdir(parents=True)
    record.write_text("{}")
    record.chmod(0o666)
    assert check_data_dir(data) == 1  # the data directory; undo/ is not looked at
    with pytest.raises(UnsafePathError, match=r"ip.json is writable by group and others "
                       rf"\(mode 0666\): chmod -R go-w {data}$"):
        check_data_dir(data, trusted=("undo",))
    record.chmod(0o600)
    record.parent.chmod(0o777)
    with pytest.raises(UnsafePathError, match=r"mail1 is writable by group and others"):
        check_data_dir(data, trusted=("undo",))


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_what_another_user_owns_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "undo").mkdir()
    os.chown(data / "undo", NOBODY, NOBODY)
    with pytest.raises(UnsafePathError, match=rf"undo is owned by \S+, not by root who runs "
                       rf"clustermail: chown -R root {data}$"):
        check_data_dir(data, trusted=("undo",))
    os.chown(data, NOBODY, NOBODY)
    with pytest.raises(UnsafePathError, match=rf"^the folder {data} is owned by"):
        check_private_dir(data)
