"""TLG (Ruler's Target Length Generation): the bundled instructions, the set (seeded, uniform,
balanced), the baseline prompt, PM/FM per level and All Level, exact rate and RMSE, the
quality filters as misses, the instruction loader, and `longform eval tlg --local` on the
fake model server and through the API."""
from __future__ import annotations

import json
import math
import random
import re

import pytest

from agents.metrics.ruler import TLG_TARGETS, level_of
from agents.tlg import (
    BUNDLED_INSTRUCTIONS,
    Instruction,
    InstructionFileError,
    TLGItem,
    baseline_prompt,
    build_report,
    build_set,
    failed_outcome,
    job_for,
    load_instructions,
    outcome_from_result,
    render_table,
    run_tlg,
    summary,
    summary_line,
    target_counts,
    write_plot,
)
from tests.api_server import free_port
from tests.test_cli import api_settings, api_url, clean_env, run  # noqa: F401  (fixtures)


def _instructions(n: int) -> list[Instruction]:
    return [Instruction(i + 1, f"instruction {i}") for i in range(n)]


def _item(target: str, index: int = 0) -> TLGItem:
    return TLGItem(index, index + 1, f"question {index}", target, level_of(target))


def _answer(words: int) -> str:
    """`words` \\w+ runs that pass the filters (ends with a full stop, no repeated 10-gram)."""
    return " ".join(f"w{i}" for i in range(words)) + ("." if words else "")


# -- the bundled instructions and the set ----------------------------------------------------------


def test_bundled_instructions_are_many_distinct_and_state_no_length():
    items = load_instructions(BUNDLED_INSTRUCTIONS)
    texts = [i.text for i in items]
    assert len(texts) >= 300 and len(set(texts)) == len(texts)
    states_length = re.compile(r"\b\d[\d,]*\s*[- ]?words?\b|word count|words? long|sentences? long", re.I)
    assert [t for t in texts if states_length.search(t)] == []
    rows = [json.loads(line) for line in BUNDLED_INSTRUCTIONS.read_text(encoding="utf-8").splitlines()]
    assert len({r["category"] for r in rows}) >= 10


def test_the_set_is_rulers_draw():
    """Ruler: random.seed(10); random.shuffle(data); random.choice(targets) per item, in order.
    The same list gives the same set; over a list as long as OpenHermes-2.5's single-turn
    conversations (612,687) the first 2,000 targets have the counts Ruler's paper reports."""
    instructions = _instructions(500)
    random.seed(10)
    data = list(instructions)
    random.shuffle(data)
    expected = [(d.text, random.choice(list(TLG_TARGETS))) for d in data[:100]]
    assert [(i.instruction, i.target) for i in build_set(instructions, limit=100)] == expected

    counts = target_counts(build_set(_instructions(612_687), limit=2000))
    assert list(counts.values()) == [218, 215, 249, 220, 196, 237, 223, 230, 212]


def test_the_set_is_seeded_and_uniform():
    instructions = _instructions(365)
    first, again, other = build_set(instructions), build_set(instructions), build_set(instructions, seed=11)
    assert first == again and first != other
    assert len(first) == 365 and [i.index for i in first] == list(range(365))
    assert {i.instruction for i in first} == {i.text for i in instructions}  # each once, shuffled
    assert all(i.target in TLG_TARGETS and i.level == level_of(i.target) for i in first)
    assert set(target_counts(build_set(_instructions(3000))).values()) <= set(range(270, 400))  # ~333 each
    assert len(build_set(instructions, limit=20)) == 20 and build_set(instructions, limit=20) == first[:20]


def test_per_target_gives_a_balanced_set():
    items = build_set(_instructions(365), per_target=5)
    assert len(items) == 45 and set(target_counts(items).values()) == {5}
    assert len({i.instruction for i in items}) == 45
    assert build_set(_instructions(365), per_target=5, seed=3) != items
    assert len(build_set(_instructions(365), per_target=5, limit=7)) == 7
    with pytest.raises(ValueError, match="needs 45 instructions; the file has 40"):
        build_set(_instructions(40), per_target=5)


def test_the_baseline_prompt_is_rulers_sentence():
    assert baseline_prompt("What is rain?", "150") == "What is rain?\nThe response should have a word count of 150 words."
    assert baseline_prompt("What is rain?", ">800") == (
        "What is rain?\nThe response should have a word count of more than 800 words.")
    item = _item(">800")
    assert item.record() == {"id": 0, "Instruction": "question 0", "TargetLength": ">800", "prompt": item.prompt}
    assert item.target_words == ">800" and _item("10").target_words == 10


def test_jobs_per_mode():
    item = _item("300")
    kind, prompt = job_for(item, "prompt")  # the chat kind appends Ruler's sentence itself
    assert kind == "chat" and prompt == {
        "messages": [{"role": "user", "content": "question 0"}], "temperature": 0.0, "max_tokens": 2048,
        "target_words": 300, "length_mode": "prompt", "counter": "runs"}
    _, mlt = job_for(item, "mlt")
    assert mlt["messages"][0]["content"] == "question 0" and mlt["length_mode"] == "mlt" and mlt["temperature"] == 0.0
    _, controlled = job_for(item, "controlled", shared={"model": "m", "target_words": 5})
    assert controlled == {"messages": [{"role": "user", "content": "question 0"}], "model": "m",
                          "target_words": 300, "length_mode": "controlled", "counter": "runs"}
    _, over = job_for(_item(">800"), "controlled")
    assert over["target_words"] == ">800"
    with pytest.raises(ValueError, match="unknown mode"):
        job_for(item, "fancy")


# -- scoring ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("target, words, pm, fm", [
    ("10", 0, False, False),  # an empty answer always misses
    ("10", 20, True, True), ("10", 21, False, False),
    ("80", 70, False, True), ("80", 71, True, True), ("80", 100, False, True), ("80", 101, False, False),
    ("150", 130, False, True), ("150", 170, True, True),
    ("700", 800, False, True), ("700", 801, False, False),
    (">800", 800, False, False), (">800", 801, True, True), (">800", 5000, True, True),
])
def test_an_answer_is_counted_with_word_runs_and_scored(target, words, pm, fm):
    row = outcome_from_result(_item(target), "prompt", {"text": _answer(words), "passes_filters": bool(words)})
    assert row["word_count"] == words
    assert (row["pm_length"], row["fm_length"]) == (pm, fm) and (row["pm"], row["fm"]) == (pm, fm)


def test_the_counter_is_word_runs_and_mlts_are_removed():
    row = outcome_from_result(_item("10"), "mlt", {"text": "[MLT:>800] Don't stop - it's state-of-the-art, v3.14!"})
    assert row["word_count"] == 11 and row["output"].startswith("Don't")
    assert row["passes_filters"]  # no verdict in the result: the filters run on the text


def test_an_answer_failing_the_filters_is_a_miss():
    looped = outcome_from_result(_item("50"), "prompt", {"text": _answer(50), "passes_filters": False})
    assert looped["pm_length"] and looped["fm_length"] and not looped["pm"] and not looped["fm"]
    # Without the result's verdict: cut mid-sentence, or a repeated 10-word n-gram.
    cut = outcome_from_result(_item("50"), "prompt", {"text": _answer(50)[:-1]})
    loop = outcome_from_result(_item("50"), "prompt", {"text": "one two three four five six seven eight nine ten " * 5 + "."})
    assert loop["word_count"] == 50 and not cut["passes_filters"] and not loop["passes_filters"]
    assert not cut["pm"] and not loop["fm"]
    report = build_report([looped, cut, outcome_from_result(_item("50", 1), "prompt", {"text": _answer(50)})], ["prompt"])
    o = report["arms"]["prompt"]["overall"]
    assert o["PM"] == pytest.approx(100 / 3) and o["PM_length"] == 100 and o["filter_pass"] == pytest.approx(100 / 3)


def _rows(mode: str, spec: list[tuple[str, int]]) -> list[dict]:
    return [outcome_from_result(_item(t, i), mode, {"text": _answer(n)}) for i, (t, n) in enumerate(spec)]


def test_levels_and_all_level_are_pooled():
    # Level:0: 4 items, 3 PM hits; Level:1: 1 item, FM only; Level:2: 3 items, 1 hit (>800).
    spec = [("10", 10), ("30", 30), ("50", 55), ("80", 0), ("300", 350), ("700", 500), (">800", 801), (">800", 790)]
    rows = _rows("controlled", spec) + [failed_outcome(_item("150", 8), "controlled", "RuntimeError: boom")]
    report = build_report(rows, ["controlled"])
    arm = report["arms"]["controlled"]
    assert arm["by_level"]["Level:0"]["PM"] == 75 and arm["by_level"]["Level:0"]["FM"] == 75
    assert arm["by_level"]["Level:1"]["n"] == 2 and arm["by_level"]["Level:1"]["PM"] == 0
    assert arm["by_level"]["Level:1"]["FM"] == 50 and arm["by_level"]["Level:1"]["failed"] == 1
    assert arm["by_level"]["Level:2"]["PM"] == pytest.approx(100 / 3)
    # All Level: 4 PM hits of 9 (a micro-average; the mean of the levels would be 36.1).
    assert arm["overall"]["PM"] == pytest.approx(400 / 9) and arm["overall"]["FM"] == pytest.approx(500 / 9)
    assert arm["by_target"][">800"]["PM"] == 50 and arm["by_target"]["150"]["failed"] == 1
    # Exact and RMSE: without >800; the failed job is a miss for exact, left out of RMSE.
    assert arm["overall"]["exact"] == pytest.approx(200 / 7)
    errors = [0, 0, 5, 80, 50, 200]
    assert arm["overall"]["rmse"] == pytest.approx(math.sqrt(sum(e * e for e in errors) / 6))
    assert arm["overall"]["failed"] == 1


def test_report_table_plot_and_summary(tmp_path):
    rows = _rows("prompt", [("10", 40), ("500", 500)]) + _rows("controlled", [("10", 12), ("500", 480)])
    report = build_report(rows, ["prompt", "controlled"])
    table = render_table(report)
    assert "PM and FM by level" in table and "All Level" in table and "Level:2" in table and "controlled PM" in table
    assert json.loads(summary_line(report)) == {"prompt": {"PM": 50.0, "FM": 50.0, "filter_pass": 100.0},
                                                "controlled": {"PM": 100.0, "FM": 100.0, "filter_pass": 100.0}}
    assert write_plot(report, tmp_path / "p.png").stat().st_size > 0
    empty = build_report([], ["prompt"])
    assert summary(empty) == {"prompt": {"PM": None, "FM": None, "filter_pass": None}} and render_table(empty)


async def test_run_tlg_counts_a_failed_run_as_a_miss():
    items = [_item("10", 0), _item("30", 1)]

    async def run_item(item, mode, protocol):
        if item.index == 1:
            raise RuntimeError("the model went away")
        return {"text": _answer(10), "strategy": "single", "passes_filters": True}

    report = await run_tlg(items, run_item, ["controlled"])
    rows = report["items"]
    assert [r["error"] for r in rows] == [None, "RuntimeError: the model went away"]
    assert rows[0]["strategy"] == "single" and report["arms"]["controlled"]["overall"]["PM"] == 50


# -- the loader ------------------------------------------------------------------------------------


def test_loader_takes_each_key_and_skips_blank_lines(tmp_path):
    path = tmp_path / "own.jsonl"
    path.write_text('{"instruction": " a "}\n\n{"Instruction": "b", "output": "x"}\n{"prompt": "c"}\n', encoding="utf-8")
    assert load_instructions(path) == [Instruction(1, "a"), Instruction(3, "b"), Instruction(4, "c")]


def test_loader_lists_every_bad_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "ok"}\nnot json\n[1, 2]\n{"text": "x"}\n{"prompt": ""}\n{"Instruction": 3}\n',
                    encoding="utf-8")
    with pytest.raises(InstructionFileError) as info:
        load_instructions(path)
    message = str(info.value)
    assert "line 1:" not in message
    for expected in ("line 2:", "line 3: not a JSON object", 'line 4: no "instruction", "Instruction" or "prompt" field',
                     'line 5: "prompt" must be a non-empty string', 'line 6: "Instruction" must be a non-empty string'):
        assert expected in message
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(InstructionFileError, match="no instructions"):
        load_instructions(tmp_path / "empty.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes('{"prompt": "caf\xe9"}'.encode("latin-1"))
    with pytest.raises(InstructionFileError, match="not UTF-8"):
        load_instructions(tmp_path / "latin1.jsonl")


# -- the CLI ---------------------------------------------------------------------------------------


def _no_api() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_cli_local_on_the_fake_server(fake_llm, tmp_path):
    out = tmp_path / "eval-tlg"
    result = run(["eval", "tlg", "--local", "--per-target", "1", "--out", str(out)],
                 LLM_ENDPOINTS=fake_llm.base_url, LONGFORM_URL=_no_api())
    assert result.exit_code == 0, result.output
    assert "PM and FM by level" in result.stdout and "All Level" in result.stdout
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert list(summary) == ["prompt", "controlled"]
    assert all(set(v) == {"PM", "FM", "filter_pass"} and 0 <= v["FM"] <= 100 for v in summary.values())
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert len(report["items"]) == 18 and all(r["error"] is None for r in report["items"])
    assert report["set"]["targets"] == {t: 1 for t in TLG_TARGETS} and report["set"]["seed"] == 10
    records = [json.loads(line) for line in (out / "tlg.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(records) == 9 and set(records[0]) == {"id", "Instruction", "TargetLength", "prompt"}
    assert (out / "table.txt").read_text(encoding="utf-8").strip() and (out / "plot.png").stat().st_size > 0
    assert "[18/18]" in result.stderr and "18 runs in" in result.stderr
    rows = {(r["mode"], r["index"]): r for r in report["items"]}
    assert rows[("prompt", 0)]["calls"] == 1 and rows[("controlled", 0)]["calls"] >= 1
    # Prompt mode: the model got Ruler's prompt, its sentence once (the chat kind adds it).
    prompts = [str(r.get("prompt")) for r in fake_llm.requests()]
    for record in records:
        assert sum(p.endswith(record["prompt"]) or record["prompt"] + "\n" in p for p in prompts) >= 1
        assert not any(p.count(record["prompt"].split("\n")[-1]) > 1 for p in prompts)
    # The fake server's figures are plumbing: its lengths are its own constants.


def test_cli_bad_instruction_file_exits_2_with_the_line_number(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "fine"}\n{"question": "x"}\n', encoding="utf-8")
    result = run(["eval", "tlg", "--instructions", str(bad), "--local", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "line 2:" in result.output and not (tmp_path / "out").exists()
    result = run(["eval", "tlg", "--instructions", str(bad), "--per-target", "1", "--local", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "line 2:" in result.output


def test_cli_per_target_beyond_the_file_exits_2(tmp_path):
    own = tmp_path / "own.jsonl"
    own.write_text("".join(json.dumps({"prompt": f"q{i}"}) + "\n" for i in range(10)), encoding="utf-8")
    result = run(["eval", "tlg", "--instructions", str(own), "--per-target", "2", "--local", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "needs 18 instructions; the file has 10" in result.output


def test_cli_through_the_api(api_url, tmp_path):
    """Chat jobs through the API, with target_words, length_mode and the \\w+ counter."""
    from api.client import LongformClient

    out = tmp_path / "out"
    result = run(["eval", "tlg", "--limit", "2", "--mode", "prompt", "--mode", "controlled", "--out", str(out)],
                 LONGFORM_URL=api_url)
    assert result.exit_code == 0, result.output
    assert list(json.loads(result.stdout.strip().splitlines()[-1])) == ["prompt", "controlled"]
    client = LongformClient(api_url)
    jobs = [client.get_job(j["id"]) for j in client.list_jobs(kind="chat", limit=10)["items"]]
    assert len(jobs) == 4 and all(j["status"] == "succeeded" for j in jobs)
    items = build_set(load_instructions(BUNDLED_INSTRUCTIONS), limit=2)
    wanted = {(i.instruction, mode, i.target_words) for i in items for mode in ("prompt", "controlled")}
    assert {(j["params"]["messages"][0]["content"], j["params"]["length_mode"], j["params"]["target_words"])
            for j in jobs} == wanted
    assert all(j["params"]["counter"] == "runs" for j in jobs)


def test_cli_refuses_a_chat_kind_without_length_modes(tmp_path, monkeypatch):
    """An installation whose chat kind predates length_mode: exit 2 before any job runs."""
    import dataclasses

    from pydantic import BaseModel

    from agents import kinds

    class OldChatParams(BaseModel):
        messages: list

    real = kinds.get_kind
    monkeypatch.setattr(kinds, "get_kind", lambda name: dataclasses.replace(real(name), params=OldChatParams)
                        if name == "chat" else real(name))
    result = run(["eval", "tlg", "--local", "--limit", "1", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "needs a chat kind with target_words and length_mode" in result.output
