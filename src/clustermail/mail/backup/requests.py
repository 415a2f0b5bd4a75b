"""Store operations asked of a virtual server's owner, as records in the coordination store.

An administrator's backup, restore, reset or recovery must run where the disk is and,
while the virtual server serves, inside its mail_store resource (which can dismount one
database and mount it again while the others keep serving). So the CLI (or the API)
writes a request under :data:`clustermail.mail.keys.REQUESTS` and waits on it; the
owner's resource claims it, runs it, and writes progress and the result back:

    pending --claim (owner, CAS with its fencing epoch)--> running --> done | failed

* A request runs at most once: the claim is a compare-and-swap on the request's revision
  and on the owner key the claimant read (a deposed owner cannot claim).
* A pending request has a deadline to be claimed (``claim_by``): past it, nobody runs it
  (the one who asked stopped waiting), so a request never runs hours later by surprise.
* A running request whose claimant lost the virtual server (its owner key is gone or has
  another epoch) is failed with a message that says so — by the next owner when it comes
  online, or by whoever waits on it. Operations are built to be safe to cut short (a
  backup set appears only whole, a restored file replaces the live one only when
  complete), so "run it again" is always the answer.

Pure records and thin store helpers (the protocol itself, shared with the cluster's node
requests, is :mod:`clustermail.cluster.requests`); the owner's side is :mod:`.worker`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from clustermail.cluster.requests import (
    DONE,
    FAILED,
    KEEP_FINISHED,
    PENDING,
    RUNNING,
    STATES,
    new_id,
    put_new,
    replace_if,
    who,
    withdraw,
)
from clustermail.coord import KeyValue, Store
from clustermail.mail import keys
from clustermail.mail.backup.sets import BackupError

#: The operations an owner runs (see :mod:`.operations`).
OPERATIONS = ("backup", "restore", "reset", "drop_recovery", "recover")


class RequestError(BackupError):
    """A request record that cannot be read, or a request that cannot be made."""


@dataclass(frozen=True, slots=True)
class RequestProgress:
    what: str
    done: int
    total: int


@dataclass(frozen=True, slots=True)
class StoreRequest:
    id: str
    vs: str
    op: str
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    created: float = 0.0
    #: Past this time a pending request is never run (nobody waits for it any more).
    claim_by: float = 0.0
    requested_by: str = ""
    state: str = PENDING
    node: str | None = None
    epoch: int | None = None
    started: float | None = None
    progress: RequestProgress | None = None
    result: Mapping[str, Any] | None = field(default=None, hash=False)
    text: str = ""
    error: str = ""
    finished: float | None = None

    @property
    def key(self) -> str:
        return request_key(self.vs, self.id)

    @property
    def is_finished(self) -> bool:
        return self.state in (DONE, FAILED)

    def to_store(self) -> bytes:
        data: dict[str, Any] = {
            "id": self.id, "vs": self.vs, "op": self.op, "params": dict(self.params),
            "created": self.created, "claim_by": self.claim_by,
            "requested_by": self.requested_by, "state": self.state, "node": self.node,
            "epoch": self.epoch, "started": self.started,
            "progress": None if self.progress is None else {
                "what": self.progress.what, "done": self.progress.done,
                "total": self.progress.total},
            "result": None if self.result is None else dict(self.result),
            "text": self.text, "error": self.error, "finished": self.finished,
        }
        return json.dumps({k: v for k, v in data.items() if v is not None},
                          sort_keys=True).encode()

    @classmethod
    def from_store(cls, key: str, value: bytes) -> StoreRequest:
        try:
            data = json.loads(value)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            state = str(data.get("state", PENDING))
            if state not in STATES:
                raise ValueError(f"unknown state {state!r}")
            progress = data.get("progress")
            return cls(
                id=_text(data, "id"), vs=_text(data, "vs"), op=_text(data, "op"),
                params=dict(data.get("params") or {}),
                created=float(data.get("created", 0.0)),
                claim_by=float(data.get("claim_by", 0.0)),
                requested_by=str(data.get("requested_by", "")), state=state,
                node=_opt(data, "node", str), epoch=_opt(data, "epoch", int),
                started=_opt(data, "started", float),
                progress=None if progress is None else RequestProgress(
                    str(progress["what"]), int(progress["done"]), int(progress["total"])),
                result=data.get("result"), text=str(data.get("text", "")),
                error=str(data.get("error", "")), finished=_opt(data, "finished", float),
            )
        except (ValueError, TypeError, KeyError) as exc:  # JSONDecodeError is a ValueError
            raise RequestError(f"{key}: not a store request ({exc})") from None


def _text(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"field {name!r} is missing")
    return value


def _opt(data: dict[str, Any], name: str, kind: type[Any]) -> Any:
    value = data.get(name)
    return None if value is None else kind(value)


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """The last slot of each kind of scheduled backup ("full", "incremental") taken."""

    slots: Mapping[str, float] = field(default_factory=dict, hash=False)

    def to_store(self) -> bytes:
        return json.dumps({"slots": dict(self.slots)}, sort_keys=True).encode()

    @classmethod
    def from_store(cls, key: str, value: bytes) -> ScheduleRecord:
        try:
            data = json.loads(value)
            return cls({str(k): float(v) for k, v in dict(data.get("slots") or {}).items()})
        except (ValueError, TypeError, AttributeError) as exc:
            raise RequestError(f"{key}: not a backup schedule record ({exc})") from None


# --------------------------------------------------------------------------- keys


def prefix_of(vs: str) -> str:
    return f"{keys.REQUESTS}{vs}/"


def request_key(vs: str, request_id: str) -> str:
    return f"{prefix_of(vs)}{request_id}"


def schedule_key(vs: str) -> str:
    return f"{keys.SCHEDULES}{vs}"


# --------------------------------------------------------------------------- store helpers


def parse(kv: KeyValue) -> StoreRequest:
    return StoreRequest.from_store(kv.key, kv.value)


def new_request(
    vs: str, op: str, params: Mapping[str, Any], *, claim_timeout: float,
    requested_by: str | None = None, request_id: str | None = None,
) -> StoreRequest:
    if op not in OPERATIONS:
        raise RequestError(f"unknown store operation {op!r}")
    now = time.time()
    return StoreRequest(
        id=request_id or new_id(now), vs=vs, op=op, params=dict(params), created=now,
        claim_by=now + claim_timeout, requested_by=requested_by or who())


async def submit(store: Store, request: StoreRequest) -> int:
    """Writes a new pending request; returns its revision."""
    revision = await put_new(store, request)
    if revision is None:
        raise RequestError(f"request id {request.id} is taken; try again")
    return revision


async def read(store: Store, vs: str, request_id: str) -> tuple[StoreRequest, int] | None:
    kv = await store.get(request_key(vs, request_id))
    return None if kv is None else (parse(kv), kv.mod_revision)


async def fail_if(store: Store, request: StoreRequest, revision: int, error: str) -> bool:
    """Marks a request failed unless it changed meanwhile; True if this call did it."""
    failed = replace(request, state=FAILED, error=error, finished=time.time())
    return await replace_if(store, failed, revision) is not None


__all__ = [
    "DONE", "FAILED", "KEEP_FINISHED", "OPERATIONS", "PENDING", "RUNNING", "RequestError",
    "RequestProgress", "ScheduleRecord", "StoreRequest", "fail_if", "new_id", "new_request",
    "parse", "prefix_of", "read", "replace_if", "request_key", "schedule_key", "submit",
    "who", "withdraw",
]
