"""When the agent takes a resource host for hung: the pure rules of HostWatch."""

from __future__ import annotations

from clustermail.cluster.supervision import FIRST_ANSWER_ALLOWANCE, HostWatch, offline_budget


def test_a_host_that_stops_answering_is_hung_after_its_timeout() -> None:
    watch = HostWatch(timeout=5.0, since=100.0)
    watch.answered(101.0)
    assert watch.verdict(106.0) is None
    assert watch.verdict(106.2) == "did not answer for 5.2 s"
    watch.answered(106.1)
    assert watch.verdict(106.2) is None


def test_a_new_host_has_an_allowance_for_its_first_answer() -> None:
    watch = HostWatch(timeout=5.0, since=100.0)
    assert watch.verdict(100.0 + 5.0 + FIRST_ANSWER_ALLOWANCE - 0.1) is None
    late = 100.0 + 5.0 + FIRST_ANSWER_ALLOWANCE + 0.5
    assert watch.verdict(late) == f"did not answer for {late - 100.0:.1f} s"


def test_time_the_agent_did_not_run_does_not_count() -> None:
    watch = HostWatch(timeout=5.0, since=100.0)
    watch.answered(101.0)
    watch.excuse(20.0)  # the agent was frozen: the host's answers wait in the pipe
    assert watch.verdict(125.0) is None
    assert watch.verdict(126.5) == "did not answer for 5.5 s"


def test_an_answer_read_late_never_moves_the_clock_back() -> None:
    watch = HostWatch(timeout=5.0, since=100.0)
    watch.answered(110.0)
    watch.answered(109.0)
    assert watch.answered_at == 110.0


def test_a_stop_is_bounded_even_for_a_host_that_answers() -> None:
    watch = HostWatch(timeout=5.0, since=100.0)
    budget = offline_budget([10.0, 20.0], watch.timeout)
    assert budget == 35.0
    watch.stopping(200.0, budget)
    watch.stopping(210.0, budget)  # asked again: the first ask counts
    for t in range(200, 236):
        watch.answered(float(t))
    assert watch.verdict(235.0) is None
    assert watch.verdict(235.5) == "did not go offline within 35 s"
