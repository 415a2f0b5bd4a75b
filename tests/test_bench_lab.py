"""The lab bench's arithmetic: the prober's lines, the client's outage, percentiles."""

from __future__ import annotations

from bench.lab import (
    Probe,
    collateral,
    fences,
    first_online,
    markdown_table,
    outage,
    parse_probes,
    pct,
    summary,
)


def probes(*spec: tuple[float, bool]) -> list[Probe]:
    return [Probe(start, start + 0.01, ok, "node4" if ok else "-") for start, ok in spec]


def test_parse_probes_skips_torn_and_foreign_lines() -> None:
    text = ("100.1000 100.1100 1 node3\n"
            "100.0500 100.5500 0 -\n"
            "garbage\n"
            "100.2000 100.2")  # the prober killed mid-line
    assert parse_probes(text) == [Probe(100.05, 100.55, False, "-"),
                                  Probe(100.1, 100.11, True, "node3")]


def test_outage_from_first_failure_to_first_success_after_it() -> None:
    seen = probes((9.0, True), (10.0, False), (10.05, False), (10.1, True), (10.15, False),
                  (10.2, True))
    result = outage(seen, fault=9.5)
    assert result.unavailable_s is not None and abs(result.unavailable_s - 0.1) < 1e-9
    assert result.failed == 2
    assert result.recovered_on == "node4"


def test_outage_ignores_probes_that_ended_before_the_fault() -> None:
    seen = probes((1.0, False), (2.0, True), (3.0, False), (4.0, True))
    result = outage(seen, fault=2.5)
    assert result.unavailable_s == 1.0 and result.failed == 1


def test_outage_without_failure_or_without_recovery() -> None:
    assert outage(probes((1.0, True), (2.0, True)), fault=0.5).unavailable_s is None
    never = outage(probes((1.0, False), (2.0, False)), fault=0.5)
    assert never.unavailable_s is None and never.failed == 2


def test_percentiles_are_measured_values() -> None:
    values = [float(x) for x in range(1, 21)]
    assert pct(values, 99) == 20.0
    assert pct(values, 50) in values
    assert summary(values) == {"p50": 10.5, "p99": 20.0, "max": 20.0, "n": 20}
    assert summary([]) is None


def test_first_online_from_another_node_after_the_fault() -> None:
    entries = [
        {"time": 5.0, "node": "node4", "event": "vs_online", "vs": "mail3"},  # before
        {"time": 11.0, "node": "node3", "event": "vs_online", "vs": "mail3"},  # old owner
        {"time": 12.0, "node": "node4", "event": "vs_online", "vs": "mail1"},  # other vs
        {"time": 13.0, "node": "node4", "event": "vs_online_pending", "vs": "mail3"},
        {"time": 14.5, "node": "node4", "event": "vs_online", "vs": "mail3"},
        {"time": 14.0, "node": "node4", "event": "vs_online", "vs": "mail3"},
    ]
    found = first_online(entries, "mail3", "node3", fault=10.0)
    assert found is not None and found["time"] == 14.0
    assert first_online(entries, "mail2", "node3", fault=10.0) is None


def test_markdown_table_marks_missing_values() -> None:
    cell = {"fault": "partition", "profile": "fast", "runs": 2, "runs_ok": 0,
            "failover_s": None, "unavailable_s": None, "failed_banners": 0,
            "failed_banners_outside_faults": 1, "errors": ["run 1: timed out"]}
    row = markdown_table([cell]).splitlines()[-1]
    assert row == "| partition | fast | 0/2 | – / – / – | – / – / – | 0 / 1 | 0 | 1 |"


def test_fences_of_other_nodes_per_run() -> None:
    log = ('{"time": "2026-12-05T22:11:33.500+00:00", "event": "fenced", "message": "x"}\n'
           '{"time": "2026-12-05T22:11:40.000+00:00", "event": "cycle", "message": "fenced"}\n'
           'not json "fenced"\n')
    found = fences(log, "node1")
    assert len(found) == 1 and found[0][1] == "node1"
    t = found[0][0]
    runs = [{"run": 1, "owner": "node3", "fault_time": t - 1},
            {"run": 2, "owner": "node1", "fault_time": t + 5}]
    assert collateral([*found, (t + 6, "node1"), (t, "node3")], runs, t + 60) == {
        1: ["node1"], 2: []}
