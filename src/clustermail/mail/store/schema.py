"""The mailbox database file: schema, pragmas and opening with clear errors.

Each database is one SQLite file in WAL mode with ``synchronous=FULL``: a commit returns
only after its WAL frames are fsynced, and an unclean shutdown is recovered by SQLite when
the file is next opened. The writer relaxes this for batches of flag changes alone, and
with a transaction log the log's fsync stands for the WAL's (see ``writer``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from clustermail.mail.store.errors import DatabaseOpenError
from clustermail.private_files import create_private_file

APPLICATION_ID = 0x434D5342  # "CMSB": marks a file as a clustermail mailbox database
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 10.0

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- The fencing epoch of the current owner (safety rule 1); one row.
CREATE TABLE mount (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch INTEGER NOT NULL,
    mounted_at REAL NOT NULL,
    owner TEXT NOT NULL
);
CREATE TABLE mailbox (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    used_bytes INTEGER NOT NULL DEFAULT 0,
    used_messages INTEGER NOT NULL DEFAULT 0,
    quota_custom INTEGER NOT NULL DEFAULT 0,
    quota_warning INTEGER,
    quota_send INTEGER,
    quota_send_receive INTEGER,
    last_warning REAL,
    created REAL NOT NULL
);
CREATE TABLE folder (
    id INTEGER PRIMARY KEY,
    mailbox_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    special_use TEXT,
    uidvalidity INTEGER NOT NULL,
    uidnext INTEGER NOT NULL DEFAULT 1,
    highestmodseq INTEGER NOT NULL DEFAULT 1,
    UNIQUE (mailbox_id, name),
    UNIQUE (mailbox_id, uidvalidity)
);
CREATE TABLE subscription (
    mailbox_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (mailbox_id, name)
) WITHOUT ROWID;
-- Single-instance storage: one row per distinct message per database; refcount counts the
-- message and deleted_item rows that point at it. raw is last so reading the other columns
-- never touches the blob's overflow pages.
CREATE TABLE body (
    id INTEGER PRIMARY KEY,
    digest BLOB NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    refcount INTEGER NOT NULL,
    structure TEXT NOT NULL,
    raw BLOB NOT NULL
);
CREATE TABLE message (
    folder_id INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    body_id INTEGER NOT NULL,
    flags INTEGER NOT NULL,
    keywords TEXT,
    internaldate INTEGER NOT NULL,
    size INTEGER NOT NULL,
    modseq INTEGER NOT NULL,
    PRIMARY KEY (folder_id, uid)
) WITHOUT ROWID;
CREATE INDEX message_modseq ON message (folder_id, modseq);
CREATE INDEX message_keywords ON message (folder_id) WHERE keywords IS NOT NULL;
-- The expunge log (QRESYNC VANISHED, notifications to other sessions).
CREATE TABLE expunged (
    folder_id INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    modseq INTEGER NOT NULL,
    PRIMARY KEY (folder_id, uid)
) WITHOUT ROWID;
CREATE INDEX expunged_modseq ON expunged (folder_id, modseq);
CREATE TABLE folder_chunk (
    id INTEGER PRIMARY KEY,
    folder_id INTEGER NOT NULL,
    first_uid INTEGER NOT NULL,
    data BLOB NOT NULL,
    UNIQUE (folder_id, first_uid)
);
-- Deleted-item retention: expunged messages kept for the database's retention window.
CREATE TABLE deleted_item (
    id INTEGER PRIMARY KEY,
    mailbox_id INTEGER NOT NULL,
    folder_name TEXT NOT NULL,
    body_id INTEGER NOT NULL,
    flags INTEGER NOT NULL,
    keywords TEXT,
    internaldate INTEGER NOT NULL,
    size INTEGER NOT NULL,
    deleted_at REAL NOT NULL
);
CREATE INDEX deleted_item_mailbox ON deleted_item (mailbox_id, deleted_at);
CREATE INDEX deleted_item_time ON deleted_item (deleted_at);
"""


def connect(path: Path, *, create: bool) -> sqlite3.Connection:
    """Open a mailbox database; create its schema when ``create`` and the file is new.
    Every failure is a DatabaseOpenError naming the file and the reason."""
    if not create and not path.exists():
        raise DatabaseOpenError(path, "file does not exist")
    conn: sqlite3.Connection | None = None
    try:
        if create:
            create_private_file(path)  # its -wal and -shm files get the same mode 0600
        conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S
        )
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise DatabaseOpenError(path, f"could not enable WAL mode (journal_mode is {mode})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA cache_size = -16384")  # 16 MiB page cache per connection
        conn.execute("PRAGMA temp_store = MEMORY")
        _ensure_schema(conn, path, create)
        return conn
    except sqlite3.DatabaseError as exc:
        if conn is not None:
            conn.close()
        raise DatabaseOpenError(path, _describe(exc)) from None
    except OSError as exc:
        raise DatabaseOpenError(path, exc.strerror or str(exc)) from None
    except BaseException:
        if conn is not None:
            conn.close()
        raise


def _describe(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "not a database" in text:
        return "not a SQLite database (wrong header: corrupt, or not a database file)"
    if "malformed" in text:
        return "corrupt (database disk image is malformed); run check with repair or restore"
    return text


def _ensure_schema(conn: sqlite3.Connection, path: Path, create: bool) -> None:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if app_id == 0 and version == 0:
        tables = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
        if tables:
            raise DatabaseOpenError(
                path, "a SQLite database, but not a clustermail mailbox database"
            )
        if not create:
            raise DatabaseOpenError(path, "empty file: not a mailbox database")
        _create_schema(conn)
        return
    if app_id != APPLICATION_ID:
        raise DatabaseOpenError(
            path, f"not a clustermail mailbox database (application_id {app_id:#x})"
        )
    if version > SCHEMA_VERSION:
        raise DatabaseOpenError(
            path, f"schema version {version} is newer than this program's {SCHEMA_VERSION}"
        )
    # A full read of the schema catches a corrupt first page early with a clear message.
    conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()


def _create_schema(conn: sqlite3.Connection) -> None:
    """All tables in one transaction, so a crash leaves either no schema or all of it."""
    statements = [
        stmt
        for stmt in "\n".join(
            line for line in SCHEMA.splitlines() if not line.lstrip().startswith("--")
        ).split(";")
        if stmt.strip()
    ]
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0] == 0:
            for stmt in statements:
                conn.execute(stmt)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
