"""The per-command counter and latency histogram, as a Prometheus scrape reads them."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from clustermail.mail.metrics import COMMAND_BUCKETS, CommandMetrics


def scrape(commands: CommandMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(commands)
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_counts_buckets_and_sum_as_prometheus_histograms_do() -> None:
    commands = CommandMetrics()
    for seconds in (0.0001, 0.0005, 0.0006, 0.003, 99.0):  # 0.0005 is in le="0.0005"
        commands.observe("pop3", "retr", seconds)
    commands.observe("smtp", "DATA", 0.02)
    got = scrape(commands)
    retr = (("command", "RETR"), ("protocol", "pop3"))
    assert got[("clustermail_commands_total", retr)] == 5
    assert got[("clustermail_command_seconds_count", retr)] == 5
    assert abs(got[("clustermail_command_seconds_sum", retr)] - 99.0042) < 1e-9

    def bucket(le: str) -> float:
        return got[("clustermail_command_seconds_bucket", (*retr[:1], ("le", le), retr[1]))]

    assert [bucket(le) for le in ("0.0005", "0.001", "0.0025", "0.005", "10.0", "+Inf")] == [
        2, 3, 3, 4, 4, 5]
    assert len([k for k in got if k[0] == "clustermail_command_seconds_bucket"
                and ("protocol", "pop3") in k[1]]) == len(COMMAND_BUCKETS) + 1
    data = (("command", "DATA"), ("protocol", "smtp"))
    assert got[("clustermail_commands_total", data)] == 1


def test_a_scrape_from_another_thread_sees_counts_that_agree() -> None:
    """The loop updates while a scrape thread reads: each row is copied at once, so a
    command's count, its +Inf bucket and its counter are always the same number."""
    commands = CommandMetrics()
    stop = threading.Event()
    seen: list[tuple[float, float, float]] = []

    def scraper() -> None:
        key = (("command", "RETR"), ("protocol", "pop3"))
        while not stop.is_set() and len(seen) < 200:
            got = scrape(commands)
            if ("clustermail_commands_total", key) in got:
                seen.append((got[("clustermail_commands_total", key)],
                             got[("clustermail_command_seconds_count", key)],
                             got[("clustermail_command_seconds_bucket",
                                  (key[0], ("le", "+Inf"), key[1]))]))

    thread = threading.Thread(target=scraper)
    thread.start()
    try:
        for i in range(200_000):
            commands.observe("pop3", "RETR", (i % 7) / 1000)
            if len(seen) >= 200:
                break
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert seen and all(a == b == c for a, b, c in seen)
