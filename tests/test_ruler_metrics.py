"""Ruler's MLT windows and PM/FM tables (agents/metrics/ruler.py)."""
from __future__ import annotations

import math

import pytest

from agents.metrics import ruler


def test_tables_cover_the_nine_targets():
    assert ruler.TLG_TARGETS == ("10", "30", "50", "80", "150", "300", "500", "700", ">800")
    for table in (ruler.MLT_WINDOWS, ruler.PM_INTERVALS, ruler.FM_INTERVALS):
        assert tuple(table) == ruler.TLG_TARGETS
    assert sum(len(v) for v in ruler.LEVELS.values()) == 9
    assert ruler.level_of(80) == "Level:0" and ruler.level_of("150") == "Level:1"
    assert ruler.level_of(">800") == "Level:2"


def test_fm_partitions_positive_counts():
    bounds = [ruler.FM_INTERVALS[t] for t in ruler.TLG_TARGETS]
    assert bounds[0][0] == 0 and bounds[-1][1] == math.inf
    for (_, hi), (lo, _) in zip(bounds, bounds[1:]):
        assert hi == lo
    for n in range(1, 1200, 7):
        assert sum(ruler.fm_hit(t, n) for t in ruler.TLG_TARGETS) == 1


@pytest.mark.parametrize("target,n,pm,fm", [
    ("10", 0, False, False),       # empty always fails
    ("10", 20, True, True),        # upper bound included
    ("30", 20, False, False),      # lower bound excluded
    ("80", 70, False, True),
    ("80", 71, True, True),
    ("80", 100, False, True),
    ("150", 131, True, True),
    ("150", 171, False, True),
    ("300", 200, False, False),
    ("500", 450, False, True),
    ("700", 770, True, True),
    ("700", 801, False, False),
    (">800", 800, False, False),
    (">800", 801, True, True),
    (">800", 10_000, True, True),
])
def test_pm_fm_hits(target, n, pm, fm):
    assert ruler.pm_hit(target, n) is pm
    assert ruler.fm_hit(target, n) is fm


def test_targets_normalise():
    assert ruler.pm_hit(150, 150) and ruler.pm_hit("[MLT:150]", 150)
    assert ruler.fm_hit("more than 800", 900)
    with pytest.raises(ValueError):
        ruler.pm_hit("100", 100)


def test_mlt_windows_and_mapping():
    assert ruler.mlt_for_count(15) == "10" and ruler.mlt_for_count(5) is None
    assert ruler.mlt_for_count(136) == "150" and ruler.mlt_for_count(135) is None
    assert ruler.mlt_for_count(155) == "150" and ruler.mlt_for_count(156) is None
    assert ruler.mlt_for_count(801) == ">800" and ruler.mlt_for_count(800) is None
    assert ruler.mlt_for(150) == "150" and ruler.mlt_for(10) == "10"
    assert ruler.mlt_for(100) == "80" and ruler.mlt_for(120) == "150"
    assert ruler.mlt_for(800) == "700" and ruler.mlt_for(801) == ">800"
    assert ruler.mlt_for(5000) == ">800" and ruler.mlt_for(1) == "10"
    assert ruler.tlg_target(300) == "300" and ruler.tlg_target(301) is None
    assert ruler.tlg_target(801) == ">800" and ruler.tlg_target(None) is None


def test_mlt_tokens_strip_and_parse():
    assert ruler.mlt_token(">800") == "[MLT:>800]" and ruler.mlt_token(30) == "[MLT:30]"
    assert ruler.strip_mlt("[MLT:150]Hello world.") == "Hello world."
    assert ruler.strip_mlt("[MLT:>800] Long. [MLT:30]Again.") == "Long. Again."
    assert ruler.strip_mlt("No token.") == "No token."
    assert ruler.leading_mlt("  [MLT:>800]text") == ">800"
    assert ruler.leading_mlt("[MLT:300]text") == "300"
    assert ruler.leading_mlt("text [MLT:300]") is None


def test_baseline_sentence():
    assert ruler.baseline_sentence(150) == "The response should have a word count of 150 words."
    assert ruler.baseline_sentence(">800") == (
        "The response should have a word count of more than 800 words.")
