"""The systemd unit we ship: Type=notify with a watchdog, restart on failure,
hardened; systemd itself finds nothing wrong with it where it is installed."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "packaging" / "systemd" / "clustermail-node.service"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def test_the_node_unit_notifies_and_restarts_on_failure() -> None:
    service = _unit()["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert int(service["WatchdogSec"]) > 0
    assert service["Restart"] == "on-failure"
    assert "node run" in service["ExecStart"]
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "ProtectKernelModules",
                "ProtectKernelTunables", "ProtectControlGroups", "RestrictSUIDSGID"):
        assert service[key] == "yes", key
    assert service["ProtectSystem"] in ("full", "strict")
    assert "CAP_SYS_MODULE" not in service["CapabilityBoundingSet"]
    # Start limits are [Unit] settings (systemd ignores them under [Service]).
    unit = _unit()["Unit"]
    assert "StartLimitIntervalSec" in unit and "StartLimitBurst" in unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_knows_every_setting(tmp_path: Path) -> None:
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text())
    done = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                          text=True, timeout=60, check=False)
    # The program it names is not installed here; every other complaint is ours.
    problems = [line for line in done.stderr.splitlines()
                if line.strip() and "is not executable" not in line]
    assert not problems, done.stderr
