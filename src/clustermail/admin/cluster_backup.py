"""Backup and restore of what the cluster keeps in its coordination store and no disk has:
the applied configuration, the administrators' intents, the fencing epochs and the
recipient directory. Not leases, status or the event log: those are rebuilt by running
nodes.

A cluster backup is a directory beside the mail store backups::

    <backups>/cluster-<time>/manifest.json     format, time, key count, SHA-256 of keys.json.zst
    <backups>/cluster-<time>/keys.json.zst     every key and its value (base64), Zstandard

written under ``.<id>.partial`` and renamed when complete. The values are copied byte for
byte, so a backup of one backend (SQLite) restores into another (etcd). A restore writes
only into a store that holds none of these keys, in batches of compare-and-swap
transactions (each key must still be absent), the configuration last so that node agents
waiting for it find everything else in place. Fencing epochs are restored raised by
:data:`EPOCH_MARGIN`: disks and databases refuse a mount with an epoch older than the last
they saw, and owners may have changed after the backup was taken.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from clustermail.admin.errors import AdminError
from clustermail.cluster import keys as cluster_keys
from clustermail.cluster.records import EpochRecord, RecordError
from clustermail.coord import Compare, KeyValue, Put, Store
from clustermail.fsutil import fsync_dir
from clustermail.mail import keys as mail_keys
from clustermail.mail.backup import sets
from clustermail.mail.directory import model as dm

FORMAT = "clustermail-cluster-backup"
VERSION = 1
KEYS_FILE = "keys.json.zst"
PREFIX = "cluster-"
#: Added to every restored fencing epoch (see the module docstring).
EPOCH_MARGIN = 1_000_000
#: Keys per restore transaction (etcd refuses more than 128 operations in one).
BATCH = 50

#: (prefix, whether it is one key) of what a cluster backup holds.
OWNED: list[tuple[str, bool]] = [
    (cluster_keys.CONFIG, True),
    (cluster_keys.NODE_ADMIN, False),
    (cluster_keys.VS_ADMIN, False),
    (cluster_keys.RESOURCE_ADMIN, False),
    (cluster_keys.EPOCH, False),
    (mail_keys.DIRECTORY, False),
    (mail_keys.DATABASES, False),
]
#: Observed state under an owned prefix: rebuilt by the running virtual servers.
SKIPPED = (mail_keys.DIRECTORY + dm.PROVISIONED,)


@dataclass(frozen=True, slots=True)
class ClusterSet:
    id: str
    created: float
    keys: int
    path: Path

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": "cluster", "created": self.created, "keys": self.keys,
                "path": str(self.path)}


async def owned_keys(store: Store) -> list[KeyValue]:
    found: list[KeyValue] = []
    for prefix, single in OWNED:
        if single:
            kv = await store.get(prefix)
            found += [kv] if kv is not None else []
        else:
            found += [kv for kv in (await store.range(prefix)).kvs
                      if not kv.key.startswith(SKIPPED)]
    return found


def is_cluster_set(path: Path) -> bool:
    return path.name.startswith(PREFIX) and (path / sets.MANIFEST).is_file()


def _manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads((path / sets.MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdminError(f"{path}: no {sets.MANIFEST}: not a complete cluster backup") from None
    except (OSError, ValueError) as exc:
        raise AdminError(f"{path / sets.MANIFEST}: unreadable ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise AdminError(f"{path}: not a cluster backup (restore a virtual server's backup "
                         "with clustermail restore VS …)")
    if data.get("version") != VERSION:
        raise AdminError(f"{path}: cluster backup version {data.get('version')}, "
                         f"this clustermail reads version {VERSION}")
    return data


def list_sets(backups: Path) -> list[ClusterSet]:
    try:
        names = sorted(os.listdir(backups))
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        path = backups / name
        if not is_cluster_set(path):
            continue
        try:
            data = _manifest(path)
            out.append(ClusterSet(name, float(data["created"]), int(data["keys"]), path))
        except (AdminError, KeyError, TypeError, ValueError):
            continue
    return sorted(out, key=lambda c: (c.created, c.id))


async def create(store: Store, backups: Path) -> tuple[dict[str, Any], str]:
    found = await owned_keys(store)
    if not any(kv.key == cluster_keys.CONFIG for kv in found):
        raise AdminError(f"no cluster configuration in {store.url}: nothing to back up")
    doc = {"keys": [{"key": kv.key, "value": base64.b64encode(kv.value).decode()}
                    for kv in found]}
    now = time.time()
    payload = zstandard.ZstdCompressor(level=sets.LEVEL).compress(
        json.dumps(doc, sort_keys=True).encode())
    with sets.locked(backups):
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        set_id, n = f"{PREFIX}{stamp}", 1
        while (backups / set_id).exists():
            n += 1
            set_id = f"{PREFIX}{stamp}-{n}"
        partial = backups / f".{set_id}{sets.PARTIAL}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            _write(partial / KEYS_FILE, payload)
            manifest = {
                "format": FORMAT, "version": VERSION, "id": set_id, "created": now,
                "keys": len(found), "revision": max((kv.mod_revision for kv in found),
                                                    default=0),
                "files": {KEYS_FILE: {"sha256": hashlib.sha256(payload).hexdigest(),
                                      "size": len(payload)}},
            }
            _write(partial / sets.MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
            os.rename(partial, backups / set_id)
            fsync_dir(backups)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    return ({"id": set_id, "kind": "cluster", "keys": len(found),
             "path": str(backups / set_id)}, set_id)


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def read(backups: Path, set_id: str) -> list[tuple[str, bytes]]:
    """The keys of a cluster backup, after checking its checksum."""
    path = backups / set_id
    if not path.is_dir():
        raise AdminError(f"no backup {set_id!r} in {backups} (see backup list)")
    manifest = _manifest(path)
    try:
        meta = manifest["files"][KEYS_FILE]
        payload = (path / KEYS_FILE).read_bytes()
    except (KeyError, TypeError, OSError) as exc:
        raise AdminError(f"{path}: cannot read {KEYS_FILE} ({exc})") from None
    if hashlib.sha256(payload).hexdigest() != meta.get("sha256"):
        raise AdminError(f"{path / KEYS_FILE}: checksum mismatch (the file is damaged)")
    try:
        doc = json.loads(zstandard.ZstdDecompressor().decompress(payload))
        return [(str(e["key"]), base64.b64decode(e["value"])) for e in doc["keys"]]
    except (zstandard.ZstdError, ValueError, KeyError, TypeError) as exc:
        raise AdminError(f"{path / KEYS_FILE}: unreadable ({exc})") from None


def verify(backups: Path, set_id: str) -> tuple[dict[str, Any], str]:
    try:
        entries = read(backups, set_id)
    except AdminError as exc:
        return ({"id": set_id, "ok": False, "problems": [str(exc)]},
                f"backup {set_id}: DAMAGED\n  problem: {exc}")
    has_config = any(k == cluster_keys.CONFIG for k, _ in entries)
    problems = [] if has_config else ["it holds no cluster configuration"]
    return ({"id": set_id, "ok": not problems, "keys": len(entries), "problems": problems},
            f"backup {set_id}: {'ok' if not problems else 'DAMAGED'}\n  {len(entries)} keys "
            "match their SHA-256" + "".join(f"\n  problem: {p}" for p in problems))


def prune(backups: Path, keep: int) -> tuple[list[str], list[str]]:
    with sets.locked(backups):
        found = list_sets(backups)
        old, kept = found[:-keep], found[-keep:]
        for c in old:
            shutil.rmtree(c.path)
    return [c.id for c in kept], [c.id for c in old]


async def restore(store: Store, backups: Path, set_id: str) -> tuple[dict[str, Any], str]:
    entries = read(backups, set_id)
    present = await owned_keys(store)
    if present:
        raise AdminError(
            f"{store.url} is not empty ({len(present)} cluster or directory keys, such as "
            f"{present[0].key}): a cluster backup restores only into an empty store")
    restored: list[tuple[str, bytes]] = []
    for key, value in entries:
        if key.startswith(cluster_keys.EPOCH):
            try:
                epoch = EpochRecord.from_store(key, value).epoch
            except RecordError as exc:
                raise AdminError(f"backup {set_id}: {exc}") from None
            value = EpochRecord(epoch + EPOCH_MARGIN).to_store()
        restored.append((key, value))
    restored.sort(key=lambda e: e[0] == cluster_keys.CONFIG)  # the configuration last
    written = 0
    for i in range(0, len(restored), BATCH):
        batch = restored[i:i + BATCH]
        result = await store.txn([Compare.absent(k) for k, _ in batch],
                                 [Put(k, v) for k, v in batch])
        if not result.succeeded:
            raise AdminError(
                f"someone wrote into {store.url} during the restore; {written} of "
                f"{len(restored)} keys were restored (the configuration last, so the "
                "cluster has not started from a partial restore)")
        written += len(batch)
    return ({"id": set_id, "keys": written, "store": store.url},
            f"restored {written} keys from {set_id} into {store.url}; start the nodes "
            "(clustermail node run, or clustermail up)")


__all__ = ["EPOCH_MARGIN", "ClusterSet", "create", "is_cluster_set", "list_sets", "prune",
           "read", "restore", "verify"]
