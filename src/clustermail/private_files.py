"""Private files, for every layer: the process umask, folders ``0700`` and files ``0600``,
and the check of a data directory before a node agent or `clustermail up` uses it.

A data directory holds all mail, every password hash (``cluster.db`` of the local
cluster) and undo records, which are commands the node agent runs. So nobody but the
user clustermail runs as may read anything in it, and nobody else may write in it.
Every entry point sets the umask (:func:`restrict_umask`), and what clustermail
creates gets an explicit mode as well, so a library caller with a looser umask still
creates private files. SQLite gives a database's ``-wal`` and ``-shm`` files the mode of
the database file, hence :func:`create_private_file` before the first connection.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import stat
from pathlib import Path

#: The umask of every clustermail process: nothing for group and others.
PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600
#: Mode bits that let others in: any access for group or others.
_OTHERS = 0o077
_OTHERS_WRITE = 0o022


class UnsafePathError(Exception):
    """A data directory (or something in it) that others can write; the text says
    what to chmod or chown."""


def restrict_umask() -> None:
    """Files and folders this process creates are its user's only (umask 077)."""
    os.umask(PRIVATE_UMASK)


def make_private_dir(path: Path) -> Path:
    """``mkdir -p`` with mode 0700 for every folder it creates (``Path.mkdir(parents=True)``
    gives missing parents the default mode). Existing folders are left as they are."""
    path = Path(path)
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # created meanwhile by another process
            folder.mkdir(mode=DIR_MODE)
    return path


def create_private_file(path: Path) -> None:
    """Creates ``path`` empty with mode 0600 if it does not exist (before SQLite opens it,
    so the database and its -wal and -shm files are private)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE))


def open_private(path: Path, flags: int) -> int:
    """``os.open`` that creates with mode 0600."""
    return os.open(path, flags | os.O_CLOEXEC, FILE_MODE)


def append_private(path: Path) -> int:
    """A file descriptor appending to ``path`` (created 0600), e.g. for a log."""
    return open_private(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)


def write_private_text(path: Path, text: str) -> None:
    """Replaces ``path`` atomically by a 0600 file holding ``text``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------- checks


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _trusted_owner(uid: int) -> bool:
    """The user we run as, or root (who can do anything anyway)."""
    return uid in (os.geteuid(), 0)


def _refuse_unsafe(path: Path, st: os.stat_result, root: Path, what: str) -> None:
    """UnsafePathError for an entry of ``root`` that another user owns or others can write."""
    recursive = " -R" if path != root else ""
    if not _trusted_owner(st.st_uid):
        me = _user(os.geteuid())
        raise UnsafePathError(
            f"{what} {path} is owned by {_user(st.st_uid)}, not by {me} who runs "
            f"clustermail: chown{recursive} {me} {root}"
        )
    if st.st_mode & _OTHERS_WRITE:
        who = {0o020: "its group", 0o002: "others"}.get(st.st_mode & _OTHERS_WRITE,
                                                        "group and others")
        raise UnsafePathError(
            f"{what} {path} is writable by {who} (mode {stat.S_IMODE(st.st_mode):04o}): "
            f"chmod{recursive} go-w {root}"
        )


def check_private_dir(path: Path, what: str = "the folder") -> bool:
    """Refuses (UnsafePathError) a folder that others can write or that another user
    owns; takes group and others' access away from one of ours. Returns True if it had
    to (the folder was readable by others)."""
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(f"{what} {path} is not a folder")
    _refuse_unsafe(path, st, path, what)
    if st.st_mode & _OTHERS and st.st_uid == os.geteuid():
        os.chmod(path, stat.S_IMODE(st.st_mode) & ~_OTHERS)
        return True
    return False


def check_data_dir(path: Path, trusted: tuple[str, ...] = ()) -> int:
    """The check a node agent and `clustermail up` make before they use a data directory.

    Creates it (0700) if missing. Refuses (UnsafePathError, one line saying what to chmod
    or chown) if it is writable by group or others, or owned by another user than the one
    running clustermail (root excepted), and likewise if anything in its ``trusted``
    subfolders is (what the caller acts on, such as undo records). Takes group and
    others' access away from the data directory (then nothing in it can be reached by
    others, whatever older files' modes) and from everything in ``trusted``; returns how
    many entries it changed. The rest of the tree is not walked: the data directory may
    be large, and may hold what is not clustermail's. Symbolic links are neither
    followed nor changed."""
    root = make_private_dir(Path(path))
    changed = int(check_private_dir(root, "the data directory"))
    for sub in trusted:
        changed += _check_tree(root, root / sub)
    return changed


def _check_tree(root: Path, top: Path) -> int:
    """Refuses what others can change in ``top`` (and ``top``); makes the rest private."""
    changed = 0
    entries = [top]
    for folder, dirs, files in os.walk(top):
        entries += [Path(folder) / name for name in (*dirs, *files)]
    for entry in entries:
        try:
            st = os.lstat(entry)
        except FileNotFoundError:
            continue  # absent, or removed meanwhile (a temporary file)
        if stat.S_ISLNK(st.st_mode):
            continue
        _refuse_unsafe(entry, st, root, f"in the data directory {root},")
        if st.st_mode & _OTHERS and st.st_uid == os.geteuid():
            with contextlib.suppress(FileNotFoundError):
                os.chmod(entry, stat.S_IMODE(st.st_mode) & ~_OTHERS)
                changed += 1
    return changed
