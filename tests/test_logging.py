"""Logs never carry a phone or ID number in clear, whatever the caller passed."""

from __future__ import annotations

import json
import logging

import pytest

from bot.logging_setup import setup_logging


@pytest.fixture(autouse=True)
def _restore_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _emit(capsys, as_json: bool) -> str:
    setup_logging("INFO", as_json)
    log = logging.getLogger("yilian.test")
    log.info("patient 110101199003071234 called from 13912345678", extra={"phone": "13800001111"})
    try:
        raise ValueError("bad id 110101199003071234")
    except ValueError:
        log.exception("failed")
    return capsys.readouterr().err


def test_plain_log_lines_are_masked(capsys):
    err = _emit(capsys, as_json=False)
    assert "110101199003071234" not in err and "13912345678" not in err and "13800001111" not in err
    assert "110***********1234" in err and "139****5678" in err and "phone=138****1111" in err


def test_json_log_lines_are_masked_and_parse(capsys):
    err = _emit(capsys, as_json=True)
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert lines[0]["msg"] == "patient 110***********1234 called from 139****5678"
    assert lines[0]["phone"] == "138****1111"
    assert "110101199003071234" not in lines[1]["exc"]
