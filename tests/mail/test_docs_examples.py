"""The configuration examples in the documentation are valid cluster files."""

from __future__ import annotations

import re
from pathlib import Path

from clustermail.cluster.config import parse_config

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_configuration_reference_example_is_valid() -> None:
    text = (DOCS / "configuration.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert blocks, "docs/configuration.md has no TOML example"
    for block in blocks:
        config = parse_config(block)
        imap = config.virtual_servers[0].resource("imap4")
        assert imap is not None and imap.properties["cert"] == "/etc/ssl/mail1.pem"
