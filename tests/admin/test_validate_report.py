"""`validate`'s pure parts: verdicts and exit codes, clock skew, the cluster report."""

from __future__ import annotations

import pytest

from clustermail.admin.validate_report import (
    FAIL,
    PASS,
    SKEW_FAIL,
    SKEW_WARN,
    WARN,
    Check,
    ClockSample,
    ClusterReport,
    NodeReport,
    checks_from_json,
    exit_code,
    node_report,
    rows,
    skew_checks,
    spread_check,
    summary,
    verdict,
    with_clocks,
)


def test_the_verdict_is_the_worst_check_and_sets_the_exit_code() -> None:
    assert verdict([]) == PASS and exit_code(PASS) == 0
    assert verdict([Check("a", PASS, ""), Check("b", WARN, "")]) == WARN
    assert exit_code(WARN) == 3  # 2 is the CLI's usage error
    assert verdict([Check("a", WARN, ""), Check("b", FAIL, ""), Check("c", PASS, "")]) == FAIL
    assert exit_code(FAIL) == 1


def sample(node: str, offset: float, rtt: float = 0.02, sent: float = 1000.0) -> ClockSample:
    """A node whose clock is ``offset`` ahead of the asker's, answering in ``rtt``."""
    return ClockSample(node, sent, sent + rtt, sent + rtt / 2 + offset)


def test_a_clock_sample_places_the_node_clock_between_send_and_claim() -> None:
    s = ClockSample("n", sent=100.0, seen=100.4, node_time=105.0)
    assert s.offset == pytest.approx(4.8)
    assert s.uncertainty == pytest.approx(0.2)


def test_skew_is_measured_against_the_nodes_median_not_the_asker() -> None:
    # The asker's own clock is 30 s off: all nodes agree, so all pass.
    got = skew_checks([sample(n, 30.0) for n in ("a", "b", "c")])
    assert {c.result for c in got.values()} == {PASS}
    got = skew_checks([sample("a", 0.0), sample("b", 0.1), sample("c", SKEW_WARN + 0.3),
                       sample("d", -(SKEW_FAIL + 1))])
    assert (got["a"].result, got["b"].result) == (PASS, PASS)
    assert got["c"].result == WARN and "chronyc" in got["c"].detail
    assert got["d"].result == FAIL


def test_a_slow_round_trip_gives_the_node_the_benefit_of_the_doubt() -> None:
    # 0.8 s off, but the claim took 1.0 s to be seen: at least 0.3 s, not over the warning.
    got = skew_checks([sample("a", 0.0), sample("b", 0.0), sample("c", 0.8, rtt=1.0)])
    assert got["c"].result == PASS and "±0.500" in got["c"].detail


def test_one_node_has_nothing_to_compare() -> None:
    only = skew_checks([sample("a", 3.0)])
    assert only["a"].result == PASS and "nothing to compare" in only["a"].detail
    assert spread_check([sample("a", 3.0)]) is None
    assert skew_checks([]) == {}


def test_the_spread_names_the_two_nodes_furthest_apart() -> None:
    spread = spread_check([sample("a", 0.0), sample("b", 1.0), sample("c", -0.2)])
    assert spread is not None and spread.result == WARN
    assert "between b and c" in spread.detail


def test_a_node_answer_is_read_defensively() -> None:
    good = node_report("n1", {"checks": [{"name": "x", "result": "warn", "detail": "d"}]},
                       round_trip=0.25)
    assert good.answered and good.verdict == WARN
    assert [c.name for c in good.checks] == ["answer", "x"]
    for bad in ({"checks": "nope"}, {"checks": [{"name": "x", "result": "maybe"}]}, {}):
        report = node_report("n1", bad)
        assert not report.answered and report.verdict == FAIL
        assert "unreadable answer" in report.checks[0].detail
    silent = node_report("n3", None, error="n3 did not answer in 10 s")
    assert (silent.answered, silent.verdict) == (False, FAIL)
    assert silent.checks[0].detail == "n3 did not answer in 10 s"
    with pytest.raises(ValueError):
        checks_from_json([1])


def test_clocks_go_after_the_answer_line_and_the_report_aggregates() -> None:
    reports = [node_report("a", {"checks": []}, round_trip=0.1),
               node_report("b", {"checks": [{"name": "disk", "result": "pass", "detail": ""}]},
                           round_trip=0.1),
               node_report("c", None, error="c did not answer in 10 s")]
    nodes, spread = with_clocks(reports, [sample("a", 0.0), sample("b", 5.0)])
    assert [c.name for c in nodes[1].checks] == ["answer", "clock", "disk"]
    assert [c.name for c in nodes[2].checks] == ["answer"]
    assert spread is not None and spread.result == FAIL
    down = NodeReport("d", False, (Check("answer", WARN, "not running"),))
    report = ClusterReport((Check("store", PASS, "ok"), spread), (*nodes, down))
    assert report.verdict == FAIL
    assert rows(report)[0] == ("cluster", "store", PASS, "ok")
    assert ("d", "answer", WARN, "not running") in rows(report)
    data = report.to_json()
    assert data["verdict"] == FAIL and data["exit_code"] == 1
    assert [n["node"] for n in data["nodes"]] == ["a", "b", "c", "d"]
    assert data["nodes"][2]["answered"] is False and data["nodes"][2]["clock_offset"] is None
    assert summary(report).startswith("FAIL: 2 of 4 node(s) answered;")
