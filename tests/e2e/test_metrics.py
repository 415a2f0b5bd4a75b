"""Node metrics end to end: a cluster with mail, a message sent over SMTP and a failed
IMAP login, then each node's /metrics (as Prometheus scrapes it) shows the resource
hosts' counters labelled with the virtual server, and the agent's own series."""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import smtplib
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import (
    MAIL_PASSWORD,
    MAIL_USERS,
    SEED,
    LocalCluster,
    add_mail_users,
    cluster_toml,
    free_addresses,
    mail_port,
    owners,
    wait_for_imap_login,
)

pytestmark = pytest.mark.e2e


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items()
               if n == name and set(labels.items()) <= set(ls))


async def test_node_metrics_show_mail_counters(tmp_path: Path) -> None:
    base, port = free_addresses()
    toml = cluster_toml(base, port, mail=True)
    for n in range(1, 5):
        toml = toml.replace(f"[nodes.node{n}]\n",
                            f'[nodes.node{n}]\nmetrics = "{base}.1:{port + 20 + n}"\n')
    async with LocalCluster(tmp_path, f"sqlite://{tmp_path}/cluster.db", toml) as cluster:
        cluster.start_all()
        status = await cluster.wait_for(lambda s: owners(s) == SEED, timeout=60,
                                        what="the initial layout")
        url = f"http://{base}.1:{port + 21}/metrics"
        assert status["nodes"][0]["metrics_url"] == url
        assert cluster.store is not None
        await add_mail_users(cluster.store, MAIL_USERS, MAIL_PASSWORD)
        mail1 = f"{base}.11"
        await wait_for_imap_login(mail1, mail_port(port, "imap"), "alice@example.test",
                                  MAIL_PASSWORD)

        def traffic() -> None:
            with smtplib.SMTP(mail1, mail_port(port, "smtp"), timeout=10) as smtp:
                smtp.sendmail("someone@remote.test", ["alice@example.test"],
                              "Subject: hello\r\n\r\nhello\r\n")
            with imaplib.IMAP4(mail1, mail_port(port, "imap"), timeout=10) as imap, \
                    contextlib.suppress(imaplib.IMAP4.error):
                imap.login("alice@example.test", "not the password")

        await asyncio.to_thread(traffic)
        deadline = asyncio.get_running_loop().time() + 30
        while True:  # the host reports every 5 s, its checks set gauges every 5 s
            samples = await asyncio.to_thread(scrape, url)
            if value(samples, "clustermail_logins_failed_total", vs="mail1") >= 1 \
                    and value(samples, "clustermail_mailbox_database_bytes", vs="mail1") > 0:
                break
            assert asyncio.get_running_loop().time() < deadline, "no counters from mail1"
            await asyncio.sleep(0.5)
        assert value(samples, "clustermail_messages_received_total", vs="mail1",
                     node="node1") == 1
        assert value(samples, "clustermail_messages_delivered_total", vs="mail1") == 1
        assert value(samples, "clustermail_sessions_total", vs="mail1", protocol="smtp") >= 1
        assert value(samples, "clustermail_commands_total", vs="mail1", protocol="imap4",
                     command="LOGIN") >= 1
        assert value(samples, "clustermail_commands_total", vs="mail1", protocol="smtp",
                     command="DATA") == 1
        # SMTP command latency, per command, beside IMAP4's.
        assert value(samples, "clustermail_command_seconds_count", vs="mail1",
                     protocol="smtp", command="DATA") == 1
        assert value(samples, "clustermail_command_seconds_bucket", vs="mail1",
                     protocol="smtp", command="RCPT", le="+Inf") == 1
        assert value(samples, "clustermail_command_seconds_sum", vs="mail1",
                     protocol="smtp", command="EHLO") > 0
        assert value(samples, "clustermail_command_seconds_count", vs="mail1",
                     protocol="imap4", command="LOGIN") >= 1
        assert value(samples, "clustermail_mailbox_database_bytes", vs="mail1") > 0
        assert value(samples, "clustermail_disk_free_bytes", vs="mail1") > 0
        assert ("clustermail_transaction_log_bytes", frozenset(
            {"vs": "mail1", "node": "node1", "storage_group": "SG1", "database": "DB1"}.items())
        ) in samples
        assert value(samples, "clustermail_node_up", node="node1") == 1
        assert value(samples, "clustermail_resource_state", vs="mail1", resource="smtp",
                     state="online") == 1
        assert value(samples, "clustermail_lease_renewal_seconds_count", node="node1") > 0
        # Only node1's own virtual server: mail2's counters are on node2's endpoint.
        assert value(samples, "clustermail_sessions_total", vs="mail2") == 0

        # Every node serves its own metrics, the standby too, each with what it hosts.
        hosts = {"node1": "mail1", "node2": "mail2", "node3": "mail3", "node4": None}
        for node in status["nodes"]:
            name = node["name"]
            assert node["metrics_url"] == f"http://{base}.1:{port + 20 + int(name[4:])}/metrics"
            samples = await asyncio.to_thread(scrape, node["metrics_url"])
            assert value(samples, "clustermail_node_up", node=name) == 1, name
            hosted = {dict(ls)["vs"] for (n, ls), v in samples.items()
                      if n == "clustermail_node_hosted_state" and v == 1
                      and dict(ls).get("state") == "online"}
            assert hosted == ({hosts[name]} if hosts[name] else set()), (name, hosted)
