"""admin/common.py: the one JSON format of `--json`, and usage errors as one clear line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from rich.console import Console

from clustermail.admin.cli import build_parser, main
from clustermail.admin.common import emit, emit_line, json_text, table
from clustermail.admin.sample_cluster import sample_config
from clustermail.cluster.toml_render import render_toml

DATA = {"b": [1, {"z": True, "a": None}], "a": "Zoë"}


def test_json_text_sorts_keys_indents_and_keeps_utf8() -> None:
    assert json_text(DATA) == (
        '{\n  "a": "Zoë",\n  "b": [\n    1,\n    {\n      "a": null,\n      "z": true\n'
        "    }\n  ]\n}"
    )
    assert json_text(DATA, line=True) == '{"a": "Zoë", "b": [1, {"a": null, "z": true}]}'
    assert json.loads(json_text(DATA)) == DATA


def test_emit_prints_json_or_the_human_form(capsys: pytest.CaptureFixture[str]) -> None:
    console = Console(highlight=False, width=80)
    emit(console, argparse.Namespace(json=True), DATA, "human")
    assert capsys.readouterr().out == json_text(DATA) + "\n"
    emit(console, argparse.Namespace(json=False), DATA, "human")
    assert capsys.readouterr().out == "human\n"
    emit(console, argparse.Namespace(json=False), DATA, table("t", ["x", "y"], [["1", "2"]]))
    out = capsys.readouterr().out
    assert "x" in out and "1" in out
    emit_line(DATA)
    emit_line([1])
    assert capsys.readouterr().out.splitlines() == [json_text(DATA, line=True), "[1]"]


def test_a_command_prints_json_in_the_one_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(render_toml(sample_config()))
    assert main(["config", "check", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    assert out == json_text(json.loads(out)) + "\n"
    assert json.loads(out)["nodes"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["vs"], "the following arguments are required: ACTION"),
        (["vs", "move"], "the following arguments are required: vs"),
        (["log", "-n", "many"], "argument -n: invalid int value: 'many'"),
        (["status", "--colour"], "unrecognized arguments: --colour"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("clustermail: "), captured.err
    assert expected in lines[0] and "--help" in lines[0]
    assert captured.out == ""


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_no_local_cluster_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--data", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == (f"clustermail: no local cluster in {tmp_path.resolve()}: start one with "
                   "`clustermail up`, or give --store URL\n")
