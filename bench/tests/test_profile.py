"""bench.profile: folding py-spy's raw stacks into top functions."""

from __future__ import annotations

from bench.profile import fold

RAW = """\
_run_code (<frozen runpy>:88);main (bus/cli.py:32);Handler.call (gateway/x.py:10);send (gateway/x.py:20) 6
_run_code (<frozen runpy>:88);main (bus/cli.py:32);Handler.call (gateway/x.py:12);parse (gateway/y.py:5) 3
_run_code (<frozen runpy>:88);main (bus/cli.py:32);idle (gateway/z.py:1) 1
"""


def test_fold_counts_self_and_inclusive_shares_without_line_numbers() -> None:
    folded = fold(RAW)
    assert folded["samples"] == 10
    assert folded["self"][0] == {"function": "send (gateway/x.py)", "share": 0.6}
    inclusive = {entry["function"]: entry["share"] for entry in folded["inclusive"]}
    assert inclusive["Handler.call (gateway/x.py)"] == 0.9  # two lines of one function count once each
    assert "main (bus/cli.py)" not in inclusive  # entry frames say nothing
    assert "_run_code (<frozen runpy>)" not in inclusive


def test_fold_of_nothing() -> None:
    assert fold("") == {"samples": 0, "self": [], "inclusive": []}
