"""LonGen length following: Self-Lengthen's word count, the constraint intervals and the score,
the file loader, the report, and `longform eval longen` (--local on the fake model server, and
a missing `lengthen` kind as a clear error)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.length_target import find_numbers
from agents.longen import (
    BUNDLED_SAMPLE,
    LonGenFileError,
    LonGenItem,
    build_report,
    job_for,
    load_longen,
    render_table,
    run_longen,
    summary_line,
    write_plot,
)
from agents.metrics.longen import ConstraintError, constraint_interval, length_following, position
from agents.text import count_words, count_words_selflengthen
from tests.api_server import free_port
from tests.test_cli import api_settings, api_url, clean_env, run  # noqa: F401  (fixtures)

# -- the word count (spec A.11) --------------------------------------------------------------------


def test_selflengthen_counter_on_the_spec_examples():
    assert count_words_selflengthen("Don't stop - it's state-of-the-art, v3.14!") == 6
    assert count_words_selflengthen("我们今天学习。Hello world，你好！") == 13
    # CJK punctuation (U+3000-303F) and full-width forms (U+FF00-FFEF) count; Markdown marks count.
    assert count_words_selflengthen("「你好」") == 4 and count_words_selflengthen("ＡＢ") == 2
    assert count_words_selflengthen("## Title\n- item") == 4
    assert count_words_selflengthen("") == 0 and count_words_selflengthen(" \n\t") == 0
    # LongWriter's count differs on the same text: digits, punctuation and "-" do not count there.
    assert count_words("Don't stop - it's state-of-the-art, v3.14!") != 6


# -- constraints and the score (spec A.12) ---------------------------------------------------------


@pytest.mark.parametrize("kind, constraint, interval", [
    ("about", "about 3000 words", (2400, 3600)),
    ("about", "大约2000字", (1600, 2400)),
    ("about", "大约五千字", (4000, 6000)),
    ("about", "一篇约两千字的文章", (1600, 2400)),  # the largest number is the length
    ("range", "2000-4000 words", (2000, 4000)),
    ("range", "2000字至3000字", (2000, 3000)),
    ("range", "6,000-8,000 words", (6000, 8000)),
    ("range", "2-4k words", (2000, 4000)),
    ("range", "两至四千字", (2000, 4000)),
    ("range", "4000 to 2000 words", (2000, 4000)),
    ("above", "more than 4,000 words", (4000, 6000)),
    ("above", "大于二千五百字", (2500, 3750)),
    ("above", "more than two thousand words", (2000, 3000)),
    ("below", "less than 5000 words", (2500, 5000)),
    ("below", "小于1.5万字", (7500, 15000)),
])
def test_constraint_intervals(kind, constraint, interval):
    assert constraint_interval(kind, constraint) == pytest.approx(interval)


@pytest.mark.parametrize("kind, constraint, message", [
    ("about", "about a few words", "no number"),
    ("range", "around 3000 words", "needs two numbers"),
    ("roughly", "3000 words", "type must be one of"),
])
def test_constraints_that_do_not_parse(kind, constraint, message):
    with pytest.raises(ConstraintError, match=message):
        constraint_interval(kind, constraint)


def test_find_numbers():
    assert find_numbers("2,000 and 1.5万 and 2.5k") == [2000, 15000, 2500]
    assert find_numbers("2000字至4千字") == [2000, 4000]  # a scaled first number keeps its own value
    assert find_numbers("a 3000-word essay, 2 kilometres") == [3000, 2]


def test_score_edges():
    # inside, both ends included
    assert length_following(2000, 2000, 3000) == 1.0 and length_following(3000, 2000, 3000) == 1.0
    # below a: 2n/a - 1, reaching 0 at a/2 and never negative
    assert length_following(1500, 2000, 3000) == pytest.approx(0.5)
    assert length_following(1000, 2000, 3000) == 0.0 and length_following(0, 2000, 3000) == 0.0
    assert length_following(1999, 2000, 3000) == pytest.approx(0.999)
    # above b: 3 - 2n/b, reaching 0 at 1.5 b and never negative
    assert length_following(3750, 2000, 3000) == pytest.approx(0.5)
    assert length_following(4500, 2000, 3000) == 0.0 and length_following(9000, 2000, 3000) == 0.0
    assert length_following(3001, 2000, 3000) == pytest.approx(1 - 2 / 3000)
    assert [position(n, 2000, 3000) for n in (1999, 2000, 3000, 3001)] == ["below", "inside", "inside", "above"]
    # the intervals of the four types, scored: about 1000 -> [800, 1200]
    low, high = constraint_interval("about", "about 1000 words")
    assert length_following(700, low, high) == pytest.approx(2 * 700 / 800 - 1)
    assert length_following(1300, low, high) == pytest.approx(3 - 2 * 1300 / 1200)


# -- the file --------------------------------------------------------------------------------------


def test_the_bundled_sample_is_balanced():
    items = load_longen(BUNDLED_SAMPLE)
    assert len(items) == 24
    cells = {(i.language, i.type, i.range) for i in items}
    assert len(cells) == 24  # one per language x type x range
    assert {i.language for i in items} == {"en", "zh"} and {i.range for i in items} == {"2-4k", "4-6k", "6-8k"}


def test_loader_reports_every_bad_line(tmp_path):
    good = {"query": "Write about 3000 words on tides.", "type": "about", "constraint": "about 3000 words",
            "language": "en", "range": "2-4k"}
    lines = [
        json.dumps(good),
        "{oops",
        json.dumps({**good, "type": "roughly"}),
        "",
        json.dumps({**good, "query": "  "}),
        json.dumps({**good, "type": "range"}),  # one number for a range
        json.dumps([1, 2]),
        json.dumps({k: v for k, v in good.items() if k != "constraint"}),
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(LonGenFileError) as err:
        load_longen(bad)
    message = str(err.value)
    for number in (2, 3, 5, 6, 7, 8):
        assert f"line {number}:" in message
    assert "line 1:" not in message and "line 4:" not in message
    assert "needs two numbers" in message and "must be one of about, range, above, below" in message

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(LonGenFileError, match="no queries"):
        load_longen(empty)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(json.dumps(good).encode() + b"\n\xe9\n")
    with pytest.raises(LonGenFileError, match="not UTF-8"):
        load_longen(latin)


def test_loader_defaults_language_and_range(tmp_path):
    path = tmp_path / "min.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"query": "写一篇不超过四千字的文章。", "type": "below", "constraint": "小于四千字"},
        {"query": "Write more than 6000 words.", "type": "above", "constraint": "more than 6000 words", "extra": 1},
    ]), encoding="utf-8")
    first, second = load_longen(path)
    assert (first.language, first.range, first.low, first.high) == ("zh", "2-4k", 2000, 4000)
    assert (second.language, second.range) == ("en", "6-8k")


def test_jobs_get_only_the_query():
    item = LonGenItem(0, "Write about 3000 words.", "en", "about", "about 3000 words", "2-4k", 2400, 3600)
    assert job_for(item, "single", "controlled") == (
        "write", {"judge": False, "instruction": item.query, "protocol": "controlled", "method": "single"})
    assert job_for(item, "agentwrite", "paper", {"temperature": 0.5, "judge": True})[1]["judge"] is True
    assert job_for(item, "lengthen", "paper", {"temperature": 0.5}) == (
        "lengthen", {"temperature": 0.5, "instruction": item.query, "protocol": "paper"})
    with pytest.raises(ValueError, match="unknown method"):
        job_for(item, "ruler", "controlled")


# -- the report ------------------------------------------------------------------------------------


def _items() -> list[LonGenItem]:
    return [
        LonGenItem(0, "q0", "en", "about", "about 2000 words", "2-4k", 1600, 2400),
        LonGenItem(1, "q1", "en", "below", "less than 4000 words", "2-4k", 2000, 4000),
        LonGenItem(2, "q2", "zh", "range", "4000字至5000字", "4-6k", 4000, 5000),
        LonGenItem(3, "q3", "zh", "above", "大于6000字", "6-8k", 6000, 9000),
    ]


async def test_report_aggregates_per_type_range_language_and_overall(tmp_path):
    words = {  # per method: the answer's length per item
        "single": [1200, 3000, 5500, 2000],  # 0.5, 1, 0.8, 0
        "agentwrite": [2000, 4000, 4500, 9000],  # all inside
    }

    async def run_item(item, method, protocol):
        if method == "single" and item.index == 3:
            raise RuntimeError("model down")
        text = "w " * words[method][item.index] if item.language == "en" else "字" * words[method][item.index]
        return {"text": text, "word_count": 1}

    seen = []
    report = await run_longen(_items(), run_item, ("single", "agentwrite"), concurrency=2, on_outcome=seen.append)
    assert len(seen) == 8
    single, aw = report["methods"]["single/controlled"], report["methods"]["agentwrite/controlled"]
    assert aw["overall"]["length_following"] == 1.0 and aw["overall"]["inside"] == 4
    assert single["overall"] == {"n": 4, "failed": 1, "length_following": pytest.approx((0.5 + 1 + 0.8 + 0) / 4),
                                 "below": 1, "inside": 1, "above": 1, "mean_words": pytest.approx((1200 + 3000 + 5500) / 3)}
    assert single["by_type"]["about"]["length_following"] == pytest.approx(0.5)
    assert single["by_type"]["above"]["failed"] == 1 and single["by_type"]["above"]["length_following"] == 0.0
    assert single["by_range"]["2-4k"]["length_following"] == pytest.approx(0.75)  # micro: (0.5 + 1) / 2
    assert single["by_language"]["zh"]["length_following"] == pytest.approx(0.4)
    assert report["types"] == ["about", "range", "above", "below"]
    assert report["ranges"] == ["2-4k", "4-6k", "6-8k"] and report["languages"] == ["en", "zh"]
    row = next(r for r in report["items"] if r["method"] == "single" and r["index"] == 2)
    assert row["word_count"] == 5500 and row["job_word_count"] == 1 and row["position"] == "above"

    table = render_table(report)
    for text in ("single/controlled", "Length following by type", "by range", "by language", "0.575", "6-8k"):
        assert text in table
    assert json.loads(summary_line(report)) == {
        "single": {"protocol": "controlled", "length_following": 0.575},
        "agentwrite": {"protocol": "controlled", "length_following": 1.0},
    }
    png = write_plot(report, tmp_path / "plot.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_nests_other_protocols_and_reads_the_text_field():
    rows = [{"index": 0, "query": "q", "language": "en", "type": "about", "constraint": "c", "range": "2-4k",
             "low": 1600.0, "high": 2400.0, "method": "lengthen", "protocol": p, "word_count": 2000,
             "job_word_count": None, "score": s, "position": "inside", "error": None}
            for p, s in (("paper", 1.0), ("controlled", 0.25))]
    report = build_report(rows, ["lengthen"], ["paper", "controlled"])
    assert json.loads(summary_line(report)) == {
        "lengthen": {"protocol": "controlled", "length_following": 0.25, "paper": {"length_following": 1.0}}}


async def test_a_result_without_its_text_fails_the_item():
    async def run_item(item, method, protocol):
        return {"final_text": "w " * 2000}

    report = await run_longen(_items()[:1], run_item, ("lengthen",))
    row = report["items"][0]
    assert row["error"] and "no text in 'text'" in row["error"] and row["score"] == 0.0
    report = await run_longen(_items()[:1], run_item, ("lengthen",), text_fields={"lengthen": "final_text"})
    assert report["items"][0]["score"] == 1.0


# -- the CLI ---------------------------------------------------------------------------------------


def _no_api() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_cli_local_prints_the_table_and_the_summary_line(fake_llm, tmp_path):
    out = tmp_path / "eval-longen"
    result = run(["eval", "longen", str(BUNDLED_SAMPLE), "--local", "--limit", "3", "--method", "single",
                  "--method", "agentwrite", "--out", str(out)], LLM_ENDPOINTS=fake_llm.base_url, LONGFORM_URL=_no_api())
    assert result.exit_code == 0, result.output
    assert "Length following by type" in result.stdout and "single/controlled" in result.stdout
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(summary) == {"single", "agentwrite"}
    assert all(v["protocol"] == "controlled" and 0 <= v["length_following"] <= 1 for v in summary.values())
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert list(report["methods"]) == ["single/controlled", "agentwrite/controlled"]
    assert len(report["items"]) == 6 and all(r["error"] is None and r["word_count"] > 0 for r in report["items"])
    assert (out / "table.txt").read_text(encoding="utf-8").strip() and (out / "plot.png").stat().st_size > 0
    assert "[6/6]" in result.stderr and "6 runs in" in result.stderr
    # Figures on the fake server are plumbing: its lengths are its own constants.


def test_cli_bad_file_exits_2_with_the_line_number(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "type": "about", "constraint": "about 3000 words"}\n{"query": "q"}\n', encoding="utf-8")
    result = run(["eval", "longen", str(bad), "--local", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "line 2:" in result.output and not (tmp_path / "out").exists()


def without_lengthen(monkeypatch) -> None:
    """An installation without the `lengthen` kind."""
    from agents import kinds

    real = kinds.get_kind

    def get_kind(name: str):
        if name == "lengthen":
            raise kinds.UnknownKind(f"unknown job kind '{name}'")
        return real(name)

    monkeypatch.setattr(kinds, "get_kind", get_kind)


def test_cli_lengthen_without_its_kind_is_a_clear_error(fake_llm, tmp_path, monkeypatch):
    without_lengthen(monkeypatch)
    out = tmp_path / "out"
    result = run(["eval", "longen", str(BUNDLED_SAMPLE), "--local", "--method", "lengthen", "--limit", "1",
                  "--out", str(out)], LLM_ENDPOINTS=fake_llm.base_url, LONGFORM_URL=_no_api())
    assert result.exit_code == 2, result.output
    assert "--method lengthen needs the job kind 'lengthen', which this installation does not have" in result.output
    assert not out.exists()


def test_cli_refuses_an_unknown_protocol(tmp_path):
    result = run(["eval", "longen", str(BUNDLED_SAMPLE), "--local", "--protocol", "fancy", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--protocol takes a comma-separated list" in result.output


def test_cli_default_methods_leave_out_a_missing_lengthen(fake_llm, tmp_path, monkeypatch):
    without_lengthen(monkeypatch)
    out = tmp_path / "out"
    result = run(["eval", "longen", str(BUNDLED_SAMPLE), "--local", "--limit", "1", "--out", str(out)],
                 LLM_ENDPOINTS=fake_llm.base_url, LONGFORM_URL=_no_api())
    assert result.exit_code == 0, result.output
    assert "method lengthen left out: this installation has no job kind 'lengthen'" in result.stderr
    assert set(json.loads(result.stdout.strip().splitlines()[-1])) == {"single", "agentwrite"}


def test_cli_through_the_api(api_url, tmp_path):
    """Jobs go through the API: write jobs with the query alone (no target_words, no judge);
    a second protocol nests under the method in the summary line."""
    from api.client import LongformClient

    out = tmp_path / "out"
    result = run(["eval", "longen", str(BUNDLED_SAMPLE), "--limit", "2", "--method", "single",
                  "--protocol", "controlled,paper", "--out", str(out)], LONGFORM_URL=api_url)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(summary) == {"single"} and set(summary["single"]) == {"protocol", "length_following", "paper"}
    jobs = LongformClient(api_url).list_jobs(kind="write", limit=10)["items"]
    assert len(jobs) == 4
    items = load_longen(BUNDLED_SAMPLE)[:2]
    for job in (LongformClient(api_url).get_job(j["id"]) for j in jobs):
        assert job["params"]["instruction"] in {i.query for i in items}
        assert job["params"].get("target_words") is None and job["params"]["judge"] is False


def test_cli_local_runs_lengthen_with_the_query_alone(fake_llm, tmp_path):
    out = tmp_path / "out"
    result = run(["eval", "longen", str(BUNDLED_SAMPLE), "--local", "--method", "lengthen", "--limit", "1",
                  "--out", str(out)], LLM_ENDPOINTS=fake_llm.base_url, LONGFORM_URL=_no_api())
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert list(summary) == ["lengthen"] and 0 <= summary["lengthen"]["length_following"] <= 1
    row = json.loads((out / "report.json").read_text(encoding="utf-8"))["items"][0]
    assert row["error"] is None and row["word_count"] > 0
    # The fake server's lengths are its own constants: this checks the plumbing, not the method.
