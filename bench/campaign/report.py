"""The campaign's results: totals, recovery per fault kind, the JSON document and
the table of docs/performance.md."""

from __future__ import annotations

import statistics
from typing import Any


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def recovery_stats(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per fault kind (runs with that one fault), and for runs of two faults:
    recovery p50/p99/max, the bound, how many runs recovered within it."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        kinds = [f["kind"] for f in run["faults"]]
        key = kinds[0] if len(kinds) == 1 else "two faults"
        groups.setdefault(key, []).append(run)
    out: dict[str, dict[str, Any]] = {}
    for key, group in sorted(groups.items()):
        times = [r["recovery_s"] for r in group if r["recovery_s"] is not None]
        entry: dict[str, Any] = {
            "runs": len(group),
            "recovered": len(times),
            "within_bound": sum(1 for r in group if r["within_bound"]),
            "bound_s": max(r["bound_s"] for r in group),
        }
        if times:
            entry |= {"p50": round(statistics.median(times), 3), "p99": round(pct(times, 99), 3),
                      "max": round(max(times), 3)}
        out[key] = entry
    return out


def totals(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "runs": len(runs),
        "acknowledged": sum(r["acked"] for r in runs),
        "lost": sum(r["lost"] for r in runs),
        "duplicates": sum(r["duplicates"] for r in runs),
        "phantoms": sum(r["phantoms"] for r in runs),
        "overlaps": sum(len(r["overlaps"]) for r in runs),
        "unrecovered": sum(1 for r in runs if r["recovery_s"] is None),
        "beyond_bound": sum(1 for r in runs if not r["within_bound"]),
        "repairs_failed": sum(1 for r in runs if r.get("repair_failed")),
        "mail_unchecked": sum(1 for r in runs if r.get("unchecked")),
    }


def document(meta: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    by_backend = {}
    for backend in sorted({r["backend"] for r in runs}):
        mine = [r for r in runs if r["backend"] == backend]
        by_backend[backend] = {**totals(mine), "recovery": recovery_stats(mine)}
    faults: dict[str, int] = {}
    for run in runs:
        for f in run["faults"]:
            faults[f["kind"]] = faults.get(f["kind"], 0) + 1
    return {**meta, **totals(runs), "faults": dict(sorted(faults.items())),
            "recovery": recovery_stats(runs), "by_backend": by_backend, "run_log": runs}


def markdown(doc: dict[str, Any]) -> str:
    lines = ["| backend | fault | runs | recovered | p50 s | p99 s | max s | bound s | "
             "within bound |", "|---|---|---|---|---|---|---|---|---|"]
    for backend, part in doc["by_backend"].items():
        for kind, s in part["recovery"].items():
            lines.append(
                f"| {backend} | {kind} | {s['runs']} | {s['recovered']} | "
                f"{s.get('p50', '-')} | {s.get('p99', '-')} | {s.get('max', '-')} | "
                f"{s['bound_s']:g} | {s['within_bound']} |")
    lines.append("")
    lines.append("| backend | runs | acknowledged | lost | duplicates | refused yet delivered | "
                 "overlaps | unrecovered | beyond bound |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for backend, t in doc["by_backend"].items():
        lines.append(f"| {backend} | {t['runs']} | {t['acknowledged']} | {t['lost']} | "
                     f"{t['duplicates']} | {t['phantoms']} | {t['overlaps']} | "
                     f"{t['unrecovered']} | {t['beyond_bound']} |")
    return "\n".join(lines)
