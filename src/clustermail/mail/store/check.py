"""Consistency check and repair of a mailbox database (isinteg/eseutil for clustermail):
SQLite's own integrity check plus the store's invariants. Runs inside one transaction; with
``repair`` it fixes what can be fixed and says what it changed."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from clustermail.mail.store import bodies, folders, index, mime, usage


@dataclass
class CheckReport:
    path: Path
    integrity: list[str] = field(default_factory=list)  # PRAGMA integrity_check lines
    problems: list[str] = field(default_factory=list)  # what was found
    repairs: list[str] = field(default_factory=list)  # what repair changed

    @property
    def ok(self) -> bool:
        return self.integrity == ["ok"] and not self.problems

    def lines(self) -> list[str]:
        out = [f"check {self.path}: {'clean' if self.ok else 'PROBLEMS FOUND'}"]
        out += [f"  sqlite: {line}" for line in self.integrity if line != "ok"]
        out += [f"  problem: {p}" for p in self.problems]
        out += [f"  repaired: {r}" for r in self.repairs]
        return out


def run(conn: sqlite3.Connection, path: Path, *, repair: bool, now: float) -> CheckReport:
    """The caller holds a transaction (a write transaction when repairing)."""
    report = CheckReport(path)
    report.integrity = [str(r[0]) for r in conn.execute("PRAGMA integrity_check(100)")]
    if report.integrity != ["ok"]:
        report.problems.append("SQLite integrity check failed: restore the database from a backup")
        return report  # the application checks would read damaged pages
    for step in (_orphans, _uids_and_modseqs, _bodies, _structures, _usage, _indexes):
        step(conn, report, repair, now)
    return report


def _say(report: CheckReport, repair: bool, problem: str, fix: str) -> bool:
    report.problems.append(problem)
    if repair:
        report.repairs.append(fix)
    return repair


def _orphans(conn: sqlite3.Connection, r: CheckReport, repair: bool, now: float) -> None:
    for fid, mid in conn.execute(
        "SELECT id, mailbox_id FROM folder WHERE mailbox_id NOT IN (SELECT id FROM mailbox)"
    ).fetchall():
        if _say(
            r, repair, f"folder {fid} belongs to missing mailbox {mid}", f"deleted folder {fid}"
        ):
            conn.execute("DELETE FROM folder WHERE id = ?", (fid,))
    for fid, n in conn.execute(
        "SELECT folder_id, count(*) FROM message WHERE folder_id NOT IN (SELECT id FROM folder) "
        "GROUP BY folder_id"
    ).fetchall():
        if _say(
            r,
            repair,
            f"{n} messages in missing folder {fid}",
            f"deleted {n} messages of missing folder {fid}",
        ):
            ids = [
                b
                for (b,) in conn.execute("SELECT body_id FROM message WHERE folder_id = ?", (fid,))
            ]
            conn.execute("DELETE FROM message WHERE folder_id = ?", (fid,))
            conn.execute("DELETE FROM folder_chunk WHERE folder_id = ?", (fid,))
            bodies.release(conn, ids)
    for fid, uid in conn.execute(
        "SELECT folder_id, uid FROM message WHERE body_id NOT IN (SELECT id FROM body)"
    ).fetchall():
        if _say(
            r,
            repair,
            f"message {fid}/{uid} has no body",
            f"deleted message {fid}/{uid} (its content was lost)",
        ):
            conn.execute("DELETE FROM message WHERE folder_id = ? AND uid = ?", (fid, uid))
            conn.execute(
                "INSERT OR REPLACE INTO expunged (folder_id, uid, modseq) SELECT id, ?, "
                "highestmodseq + 1 FROM folder WHERE id = ?",
                (uid, fid),
            )
            conn.execute("UPDATE folder SET highestmodseq = highestmodseq + 1 WHERE id = ?", (fid,))
            index.rebuild(conn, fid)


def _uids_and_modseqs(conn: sqlite3.Connection, r: CheckReport, repair: bool, now: float) -> None:
    for fid, name, uidnext, top in conn.execute(
        "SELECT f.id, f.name, f.uidnext, max(u.uid) FROM folder f JOIN "
        "(SELECT folder_id, uid FROM message UNION ALL SELECT folder_id, uid FROM expunged) u "
        "ON u.folder_id = f.id GROUP BY f.id HAVING max(u.uid) >= f.uidnext"
    ).fetchall():
        if _say(
            r,
            repair,
            f"folder {fid} ({name}): UID {top} is not below UIDNEXT {uidnext}",
            f"folder {fid}: UIDNEXT set to {top + 1}",
        ):
            conn.execute("UPDATE folder SET uidnext = ? WHERE id = ?", (top + 1, fid))
    for fid, name, hms, top in conn.execute(
        "SELECT f.id, f.name, f.highestmodseq, max(u.modseq) FROM folder f JOIN "
        "(SELECT folder_id, modseq FROM message UNION ALL SELECT folder_id, modseq FROM expunged) "
        "u "
        "ON u.folder_id = f.id GROUP BY f.id HAVING max(u.modseq) > f.highestmodseq"
    ).fetchall():
        if _say(
            r,
            repair,
            f"folder {fid} ({name}): modseq {top} above HIGHESTMODSEQ {hms}",
            f"folder {fid}: HIGHESTMODSEQ set to {top}",
        ):
            conn.execute("UPDATE folder SET highestmodseq = ? WHERE id = ?", (top, fid))
    for fid, name in conn.execute("SELECT id, name FROM folder WHERE uidvalidity <= 0").fetchall():
        if _say(
            r, repair, f"folder {fid} ({name}) has UIDVALIDITY 0", f"folder {fid}: new UIDVALIDITY"
        ):
            conn.execute(
                "UPDATE folder SET uidvalidity = ? WHERE id = ?",
                (folders.next_uidvalidity(conn, now), fid),
            )


def _bodies(conn: sqlite3.Connection, r: CheckReport, repair: bool, now: float) -> None:
    for body_id, refcount, refs in conn.execute(
        "SELECT b.id, b.refcount, coalesce(x.n, 0) FROM body b LEFT JOIN "
        "(SELECT body_id, count(*) AS n FROM (SELECT body_id FROM message UNION ALL "
        " SELECT body_id FROM deleted_item) GROUP BY body_id) x ON x.body_id = b.id "
        "WHERE b.refcount != coalesce(x.n, 0)"
    ).fetchall():
        if refs == 0:
            if _say(
                r,
                repair,
                f"body {body_id} is an orphan (refcount {refcount}, no references)",
                f"deleted orphan body {body_id}",
            ):
                conn.execute("DELETE FROM body WHERE id = ?", (body_id,))
        elif _say(
            r,
            repair,
            f"body {body_id} has refcount {refcount} but {refs} references",
            f"body {body_id}: refcount set to {refs}",
        ):
            conn.execute("UPDATE body SET refcount = ? WHERE id = ?", (refs, body_id))
    for fid, uid, size, real in conn.execute(
        "SELECT m.folder_id, m.uid, m.size, b.size FROM message m JOIN body b ON b.id = m.body_id "
        "WHERE m.size != b.size"
    ).fetchall():
        if _say(
            r,
            repair,
            f"message {fid}/{uid} says {size} bytes, its body has {real}",
            f"message {fid}/{uid}: size set to {real}",
        ):
            conn.execute(
                "UPDATE message SET size = ? WHERE folder_id = ? AND uid = ?", (real, fid, uid)
            )
            index.rebuild(conn, fid)


def _structures(conn: sqlite3.Connection, r: CheckReport, repair: bool, now: float) -> None:
    for body_id, size, text in conn.execute("SELECT id, size, structure FROM body").fetchall():
        try:
            if mime.MessageStructure.from_json(text).size != size:
                raise ValueError("size differs from the body")
        except ValueError as exc:
            if _say(
                r,
                repair,
                f"body {body_id}: cached structure unusable ({exc})",
                f"body {body_id}: structure analysed again",
            ):
                raw = conn.execute("SELECT raw FROM body WHERE id = ?", (body_id,)).fetchone()[0]
                conn.execute(
                    "UPDATE body SET structure = ? WHERE id = ?",
                    (mime.analyze(bytes(raw)).to_json(), body_id),
                )


def _usage(conn: sqlite3.Connection, r: CheckReport, repair: bool, now: float) -> None:
    for mid, name, used, count, real_used, real_count in conn.execute(
        usage.REAL_USAGE + " HAVING m.used_bytes != coalesce(sum(x.size + x.structure_bytes), 0) "
        "OR m.used_messages != count(x.size)"
    ).fetchall():
        if _say(
            r,
            repair,
            f"mailbox {name}: usage says {used} bytes/{count} messages, holds "
            f"{real_used}/{real_count}",
            f"mailbox {name}: usage set to {real_used} bytes/{real_count} messages",
        ):
            conn.execute(
                "UPDATE mailbox SET used_bytes = ?, used_messages = ? WHERE id = ?",
                (real_used, real_count, mid),
            )


def _indexes(conn: sqlite3.Connection, r: CheckReport, repair: bool, now: float) -> None:
    for (fid,) in conn.execute("SELECT id FROM folder").fetchall():
        listing = index.load(conn, fid)
        expected = conn.execute(
            "SELECT uid, flags, size, modseq, internaldate FROM message WHERE folder_id = ? ORDER "
            "BY uid",
            (fid,),
        ).fetchall()
        if [tuple(m) for m in listing] != expected and _say(
            r,
            repair,
            f"folder {fid}: listing index differs from its messages",
            f"folder {fid}: index rebuilt",
        ):
            index.rebuild(conn, fid)
    for (fid,) in conn.execute(
        "SELECT DISTINCT folder_id FROM folder_chunk WHERE folder_id NOT IN (SELECT id FROM folder)"
    ).fetchall():
        if _say(
            r,
            repair,
            f"index chunks of missing folder {fid}",
            f"deleted index chunks of folder {fid}",
        ):
            conn.execute("DELETE FROM folder_chunk WHERE folder_id = ?", (fid,))


def check_file(path: Path, *, repair: bool, now: float) -> CheckReport:
    """Check a dismounted database file (eseutil-style offline check). A file that cannot
    be opened raises DatabaseOpenError naming it."""
    from clustermail.mail.store import schema

    conn = schema.connect(path, create=False)
    try:
        conn.execute("BEGIN IMMEDIATE" if repair else "BEGIN")
        try:
            report = run(conn, path, repair=repair, now=now)
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            report = CheckReport(
                path, integrity=[str(exc)], problems=["SQLite could not read the file: restore it"]
            )
        return report
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()
