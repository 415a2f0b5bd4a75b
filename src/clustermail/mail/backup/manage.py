"""Listing, verifying and pruning backup sets."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clustermail.mail.backup import sets
from clustermail.mail.backup.restore import build, set_records
from clustermail.mail.backup.sets import BackupError, BackupSet


@dataclass
class Chain:
    full: BackupSet
    sets: list[BackupSet] = field(default_factory=list)  # the full one first

    def to_json(self) -> dict[str, Any]:
        return {
            "chain": self.full.id, "virtual_server": self.full.virtual_server,
            "sets": [{"id": s.id, "kind": s.kind, "created": s.created,
                      "parent": s.parent, "size": sum(f["size"] for f in s.files.values()),
                      "databases": {f"{d.storage_group}/{d.name}": d.txn
                                    for d in s.databases}} for s in self.sets],
        }


def list_chains(backups: Path, virtual_server: str | None = None) -> list[Chain]:
    """Complete sets grouped into chains, oldest first; a set whose parent is gone is
    listed in a chain of its own (``verify`` says it is broken)."""
    chains: dict[str, Chain] = {}
    for s in sets.all_sets(backups):
        if virtual_server is not None and s.virtual_server != virtual_server:
            continue
        chain = chains.get(s.chain)
        if chain is None:
            chain = chains[s.chain] = Chain(s)
        chain.sets.append(s)
    return sorted(chains.values(), key=lambda c: c.sets[0].created)


@dataclass
class VerifyReport:
    id: str
    chain: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)  # what was checked, one line each

    @property
    def ok(self) -> bool:
        return not self.problems


def _file_ok(backup: BackupSet, name: str, meta: dict[str, Any]) -> str | None:
    digest = hashlib.sha256()
    size = 0
    try:
        with open(backup.path / name, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        return f"{backup.id}/{name}: {exc}"
    if size != meta.get("size") or digest.hexdigest() != meta.get("sha256"):
        return f"{backup.id}/{name}: checksum mismatch (the file is damaged)"
    return None


def verify(backups: Path, set_id: str) -> VerifyReport:
    """Checksums of every file in the chain up to ``set_id``, every database image restored
    to a scratch file with the chain's incrementals applied and checked (SQLite's integrity
    check), the queue image's integrity, the chain's completeness."""
    report = VerifyReport(set_id)
    try:
        chain = sets.chain_of(backups, set_id)
    except BackupError as exc:
        report.problems.append(str(exc))
        return report
    report.chain = [s.id for s in chain]
    for backup in chain:
        for name, meta in backup.files.items():
            problem = _file_ok(backup, name, meta)
            if problem:
                report.problems.append(problem)
        report.checked.append(f"{backup.id}: {len(backup.files)} file(s) match their SHA-256")
    if report.problems:
        return report
    last = chain[-1]
    with tempfile.TemporaryDirectory(prefix=".verify-", dir=backups) as tmp:
        for copy in last.databases:
            where = f"{copy.storage_group}/{copy.name}"
            scratch = Path(tmp) / f"{copy.storage_group}-{copy.name}.sqlite"
            try:
                if len(chain) > 1:  # incremental records must be whole before replay
                    for b in chain[1:]:
                        for _ in set_records(b, b.database(copy.storage_group,
                                                           copy.name).file):
                            pass
                _image, replayed = build(chain, copy.storage_group, copy.name, scratch)
            except (BackupError, OSError) as exc:
                report.problems.append(f"{where}: {exc}")
                continue
            problems = _integrity(scratch)
            image = chain[0].database(copy.storage_group, copy.name).image_sha256
            if len(chain) == 1 and image and _sha256(scratch) != image:
                problems.append("the decompressed image differs from the one backed up")
            if replayed.txn != copy.txn:
                problems.append(f"replays to change {replayed.txn}, manifest says {copy.txn}")
            if problems:
                report.problems += [f"{where}: {p}" for p in problems]
            else:
                report.checked.append(f"{where}: integrity ok at change {copy.txn}")
        if last.queue is not None:
            scratch = Path(tmp) / "queue.sqlite"
            with sets.open_member(last, last.queue["file"]) as src, open(scratch, "wb") as dst:
                shutil.copyfileobj(src, dst)
            problems = _integrity(scratch)
            report.problems += [f"queue: {p}" for p in problems]
            if not problems:
                report.checked.append("queue: integrity ok")
    return report


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _integrity(path: Path) -> list[str]:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            lines = [str(r[0]) for r in conn.execute("PRAGMA integrity_check(20)")]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return [f"SQLite cannot read it: {exc}"]
    return [] if lines == ["ok"] else lines


@dataclass
class PruneReport:
    kept: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def prune(backups: Path, keep: int, virtual_server: str | None = None) -> PruneReport:
    """Keep the ``keep`` newest chains per virtual server (whole: a full set with all its
    incrementals), delete older ones and partial sets left by crashed runs."""
    if keep < 1:
        raise BackupError(f"--keep must be at least 1, got {keep}")
    report = PruneReport()
    with sets.locked(backups):
        by_vs: dict[str, list[Chain]] = {}
        for chain in list_chains(backups, virtual_server):
            by_vs.setdefault(chain.full.virtual_server, []).append(chain)
        for chains in by_vs.values():
            for i, chain in enumerate(chains):
                ids = [s.id for s in chain.sets]
                if i < len(chains) - keep:
                    for s in reversed(chain.sets):
                        shutil.rmtree(s.path)
                    report.deleted += ids
                else:
                    report.kept += ids
        for partial in backups.glob(f".*{sets.PARTIAL}"):
            shutil.rmtree(partial, ignore_errors=True)  # we hold the lock: no run owns it
            report.deleted.append(partial.name)
    return report
