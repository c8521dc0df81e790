"""Ruler's D_MLT builds (the `dataset` recipe `ruler-mlt`): the pair reader and its rejected
lines, labelling at the window edges with the \\w+ counter (MLTs already in a response removed
first), the per-MLT cap in input order, the seeded shuffle, both export formats, the stats, the
recipe's params; then a build through the service (REST and CLI)."""
from __future__ import annotations

import json
import random

import httpx
import pytest

from agents import dataset_kind
from agents import ruler_mlt as rm
from agents.kinds import InvalidParams, validate_params
from agents.settings import Settings
from api.cli.batch import DATASET_FORMATS
from tests.api_server import running_api, wait_for_job
from tests.db_fixtures import sqlite_url
from tests.test_cli import clean_env, run  # noqa: F401  (clean_env: an autouse fixture)

NINE = ["[MLT:10]", "[MLT:30]", "[MLT:50]", "[MLT:80]", "[MLT:150]", "[MLT:300]", "[MLT:500]", "[MLT:700]",
        "[MLT:>800]"]


def words(n: int, word: str = "word") -> str:
    return " ".join([word] * n)


def jsonl(rows: list) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows)


def built(rows: list, cap: int = rm.DEFAULT_CAP, seed: int = 0) -> tuple[list[dict], dict]:
    """(ruler records in id order, stats) of a build of these JSONL rows."""
    pairs, rejected = rm.parse_pairs(jsonl(rows))
    out = rm.build(pairs, len(rejected), cap, seed)
    return list(rm.export_records(pairs, out["picks"], "ruler")), out["stats"]


# -- reading pairs ------------------------------------------------------------------------------------


def test_every_accepted_shape_reads_as_a_pair():
    rows = [
        {"instruction": "i1", "response": "r1"},
        {"Instruction": "i2", "output": "r2", "mlt": "[MLT:10]", "id": 7, "word_count": 1},  # our own ruler export
        {"prompt": "i3", "answer": "r3"},
        {"query": "i4", "response": "r4"},
        {"conversations": [{"from": "human", "value": "i5"}, {"from": "gpt", "value": "r5"}]},
        {"conversations": [{"from": "system", "value": "You are helpful."}, {"from": "human", "value": "i6"},
                           {"from": "gpt", "value": "r6"}]},
        {"conversations": [{"role": "user", "content": "i7"}, {"role": "assistant", "content": "r7"}]},
        {"messages": [{"role": "user", "content": "i8"}, {"role": "assistant", "content": "[MLT:150]r8"}]},
    ]
    pairs, rejected = rm.parse_pairs(jsonl(rows))
    assert rejected == []
    assert [(p["line"], p["instruction"], p["output"]) for p in pairs] == [
        (n, f"i{n}", f"r{n}") for n in range(1, 9)]
    assert [p["system_dropped"] for p in pairs] == [False] * 5 + [True] + [False] * 2  # the system turn is dropped
    assert [p["mlts_removed"] for p in pairs] == [False] * 7 + [True]


def test_bad_lines_are_reported_by_number_and_the_rest_kept():
    rows = [
        {"instruction": "fine", "response": words(10)},
        "not json",
        "",  # blank: skipped, still numbered
        "[1, 2]",
        {"instruction": "no answer"},
        {"response": "no question"},
        {"instruction": "  ", "response": words(10)},
        {"instruction": "only a token", "response": " [MLT:30] "},
        {"instruction": 5, "response": words(10)},
        {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"},
                           {"from": "human", "value": "c"}, {"from": "gpt", "value": "d"}]},
        {"conversations": [{"from": "gpt", "value": "b"}, {"from": "human", "value": "a"}]},
        {"conversations": "a chat"},
        {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": None}]},
    ]
    pairs, rejected = rm.parse_pairs(jsonl(rows))
    assert [p["line"] for p in pairs] == [1]
    errors = {r["line"]: r["error"] for r in rejected}
    assert sorted(errors) == [2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    assert errors[2].startswith("invalid JSON")
    assert errors[4] == "each line must be a JSON object"
    assert errors[5].startswith("missing response") and errors[6].startswith("missing instruction")
    assert errors[7] == "empty instruction" and errors[8] == "empty response once its MLTs are removed"
    assert errors[9] == '"instruction" must be a string, got int'
    assert errors[10].startswith("multi-turn conversation (4 turns)")
    assert "a user turn then an assistant turn" in errors[11] and "list of turns" in errors[12]
    assert "as a string" in errors[13]
    assert rm.parse_pairs("") == ([], []) and rm.parse_pairs(b"\xff\n")[1][0]["error"].startswith("not UTF-8")


# -- labelling, cap, shuffle ------------------------------------------------------------------------------


@pytest.mark.parametrize("n, mlt", [
    (5, None), (6, "[MLT:10]"), (15, "[MLT:10]"), (16, None),  # lo excluded, hi included
    (25, None), (26, "[MLT:30]"), (35, "[MLT:30]"), (36, None),
    (45, None), (46, "[MLT:50]"), (55, "[MLT:50]"),
    (75, None), (80, "[MLT:80]"), (85, "[MLT:80]"), (86, None),
    (135, None), (136, "[MLT:150]"), (155, "[MLT:150]"), (156, None),  # the asymmetric window
    (295, None), (300, "[MLT:300]"), (305, "[MLT:300]"),
    (495, None), (505, "[MLT:500]"), (506, None),
    (695, None), (700, "[MLT:700]"), (705, "[MLT:700]"), (706, None),
    (800, None), (801, "[MLT:>800]"), (5000, "[MLT:>800]"),  # 800 is in no window; >800 is (800, inf)
])
def test_labels_at_the_window_edges(n, mlt):
    records, stats = built([{"instruction": "q", "response": words(n)}])
    assert [r["mlt"] for r in records] == ([mlt] if mlt else [])
    assert stats["dropped"]["outside_windows"] == (0 if mlt else 1)


def test_words_are_w_runs_and_word_count_is_the_count_the_label_used():
    # "don't" is two \w+ runs: 7 runs (a [MLT:10]) where a whitespace split sees 4 words (no window).
    records, _ = built([{"instruction": "q", "response": "Don't, don't stop-it now!"}])
    assert records[0]["mlt"] == "[MLT:10]" and records[0]["word_count"] == 7


def test_an_mlt_already_in_a_response_is_removed_before_counting():
    rows = [{"instruction": "a", "response": "[MLT:>800]" + words(10)},  # [MLT:>800] and a word each: 12 runs
            {"instruction": "b", "response": "[MLT:30] " + words(26)},  # as is: 28 runs, [MLT:30]
            {"instruction": "c", "response": words(13) + " [MLT:150] " + words(13)}]  # 28 runs as is
    records, stats = built(rows)
    by_instruction = {r["Instruction"]: r for r in records}
    assert by_instruction["a"] == {"Instruction": "a", "word_count": 10, "output": words(10), "mlt": "[MLT:10]",
                                   "id": by_instruction["a"]["id"]}
    assert by_instruction["b"]["word_count"] == 26 and by_instruction["b"]["output"] == words(26)
    assert by_instruction["c"]["word_count"] == 26 and "MLT" not in by_instruction["c"]["output"]
    assert stats["mlts_removed"] == 3


def test_the_cap_keeps_each_mlts_first_pairs_in_input_order():
    rows = [{"instruction": f"short {i}", "response": words(10)} for i in range(5)]
    rows.insert(2, {"instruction": "long", "response": words(900)})
    records, stats = built(rows, cap=2)
    assert sorted(r["Instruction"] for r in records) == ["long", "short 0", "short 1"]
    assert stats["dropped"] == {"invalid": 0, "outside_windows": 0, "over_cap": 3}
    assert stats["per_mlt"]["[MLT:10]"] == 2 and stats["labelled_per_mlt"]["[MLT:10]"] == 5
    assert stats["per_mlt"]["[MLT:>800]"] == 1 and stats["mlt_cap"] == 2


def test_the_shuffle_is_seeded():
    rows = [{"instruction": f"q{i}", "response": words(10 + i % 5)} for i in range(40)]
    first, _ = built(rows, seed=7)
    again, _ = built(rows, seed=7)
    other, _ = built(rows, seed=8)
    assert first == again and [r["id"] for r in first] == list(range(40))
    assert [r["Instruction"] for r in other] != [r["Instruction"] for r in first]
    expected = [f"q{i}" for i in range(40)]
    random.Random(7).shuffle(expected)  # the kept records in input order, shuffled once with Random(seed)
    assert [r["Instruction"] for r in first] == expected


# -- exports and stats ------------------------------------------------------------------------------------


def test_both_export_formats_exactly():
    pairs, rejected = rm.parse_pairs(jsonl([{"instruction": "Describe a heron.", "response": words(150)}]))
    picks = rm.build(pairs, len(rejected))["picks"]
    (ruler,) = rm.export_records(pairs, picks, "ruler")
    assert list(ruler) == ["Instruction", "word_count", "output", "mlt", "id"]  # the reference's field order
    assert ruler == {"Instruction": "Describe a heron.", "word_count": 150, "output": words(150), "mlt": "[MLT:150]",
                     "id": 0}
    (chat,) = rm.export_records(pairs, picks, "chat-mlt")
    assert chat == {"messages": [{"role": "user", "content": "Describe a heron."},  # states no length
                                 {"role": "assistant", "content": "[MLT:150]" + words(150)}]}  # no separator
    with pytest.raises(ValueError, match="unknown export format 'long'"):
        rm.export_records(pairs, picks, "long")


def test_stats_count_every_drop_and_every_mlt():
    rows = [{"instruction": "a", "response": words(10)}, {"instruction": "b", "response": words(10)},
            {"instruction": "c", "response": words(20)}, "oops",
            {"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "d"},
                               {"from": "gpt", "value": words(300)}]}]
    _, stats = built(rows, cap=1, seed=3)
    assert stats["recipe"] == "ruler-mlt" and stats["built"] is True
    assert (stats["items"], stats["pairs"], stats["kept"]) == (5, 4, 2)
    assert stats["dropped"] == {"invalid": 1, "outside_windows": 1, "over_cap": 1}
    assert list(stats["per_mlt"]) == NINE and list(stats["labelled_per_mlt"]) == NINE
    assert stats["per_mlt"] == {m: int(m in ("[MLT:10]", "[MLT:300]")) for m in NINE}
    assert stats["labelled_per_mlt"]["[MLT:10]"] == 2
    assert stats["windows"]["[MLT:150]"] == [135, 155] and stats["windows"]["[MLT:>800]"] == [800, None]
    assert (stats["mlt_cap"], stats["seed"], stats["system_turns_dropped"]) == (1, 3, 1)
    assert stats["formats"] == {"ruler": 2, "chat-mlt": 2} and stats["differs_from_reference"]
    json.dumps(stats, allow_nan=False)  # storable as strict JSON (no Infinity)


# -- the recipe's params -----------------------------------------------------------------------------------


def _settings() -> Settings:
    return Settings(max_target_words=50_000)


PAIRS = jsonl([{"instruction": "q", "response": words(10)}])


def test_recipe_defaults():
    params = validate_params("dataset", {"recipe": "ruler-mlt", "jsonl": PAIRS}, _settings())
    assert params.formats == ["ruler", "chat-mlt"] and params.mlt_cap == 20_000 and params.seed == 0
    assert validate_params("dataset", {"items": [{"instruction": "x"}]}, _settings()).mlt_cap is None
    assert DATASET_FORMATS == list(dataset_kind.FORMATS)  # the CLI offers every format


@pytest.mark.parametrize("body, message", [
    ({"items": [{"instruction": "x"}]}, "give jsonl or document_id, not items"),
    ({"seeds": ["x"], "count": 2}, "give jsonl or document_id, not seeds"),
    ({"jsonl": PAIRS, "count": 3}, "count does not apply to recipe 'ruler-mlt'"),
    ({"jsonl": PAIRS, "child_priority": 2}, "child_priority does not apply"),
    ({"jsonl": PAIRS, "write": {"method": "single"}}, "write applies to the longwriter recipe, not to recipe 'ruler-mlt'"),
    ({"jsonl": PAIRS, "gates": {"drop_refusals": False}}, "gates applies to the longwriter recipe"),
    ({"jsonl": PAIRS, "state_length": False}, "state_length applies to the longwriter recipe"),
    ({"jsonl": PAIRS, "protocol": "paper"}, "protocol applies to the selflengthen recipe"),
    ({"jsonl": PAIRS, "lengthen": {"micro_iterations": 2}}, "lengthen applies to the selflengthen recipe"),
    ({"jsonl": PAIRS, "formats": ["long"]}, "format 'long' is not one of recipe 'ruler-mlt''s: ruler, chat-mlt"),
    ({"jsonl": PAIRS, "mlt_cap": 0}, "mlt_cap"),
])
def test_other_recipes_params_are_refused(body, message):
    with pytest.raises(InvalidParams) as caught:
        validate_params("dataset", {"recipe": "ruler-mlt", **body}, _settings())
    assert message in str(caught.value)


@pytest.mark.parametrize("body, message", [
    ({"items": [{"instruction": "x"}], "mlt_cap": 5}, "mlt_cap applies to the ruler-mlt recipe, not to recipe 'longwriter'"),
    ({"recipe": "selflengthen", "items": [{"instruction": "x"}], "mlt_cap": 20_000}, "mlt_cap applies to the ruler-mlt"),
    ({"items": [{"instruction": "x"}], "formats": ["chat-mlt"]}, "format 'chat-mlt' is not one of recipe 'longwriter'"),
])
def test_its_params_are_refused_for_other_recipes(body, message):
    with pytest.raises(InvalidParams) as caught:
        validate_params("dataset", body, _settings())
    assert message in str(caught.value)


# -- through the service -----------------------------------------------------------------------------------


@pytest.fixture
def api(tmp_path, fake_llm):
    settings = Settings(longform_data_dir=str(tmp_path), database_url=sqlite_url(tmp_path), llm_endpoints=fake_llm.base_url)
    with running_api(settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


SOURCE = [{"instruction": f"Say something about bird {i}.", "response": words(n)}
          for i, n in enumerate([10, 12, 14, 30, 150, 20, 900, 11])] + ["not json"]


def _rows(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_a_build_through_the_service(api, fake_llm):
    created = api.post("/v1/datasets", json={"recipe": "ruler-mlt", "jsonl": jsonl(SOURCE), "mlt_cap": 2, "seed": 5})
    assert created.status_code == 202, created.text
    assert created.json()["rejected_lines"] == [{"line": 9, "error": "invalid JSON: Expecting value (column 1)"}]
    job = wait_for_job(api, created.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    result, stats = job["result"], job["result"]["stats"]
    assert result["recipe"] == "ruler-mlt" and result["kept"] == 5 and result["items"] == 9
    assert result["rejected_lines"] == [{"line": 9, "error": "invalid JSON: Expecting value (column 1)"}]
    assert stats["dropped"] == {"invalid": 1, "outside_windows": 1, "over_cap": 2}
    assert stats["per_mlt"] == {**{m: 0 for m in NINE}, "[MLT:10]": 2, "[MLT:30]": 1, "[MLT:150]": 1, "[MLT:>800]": 1}
    assert (stats["mlt_cap"], stats["seed"]) == (2, 5)
    assert sorted(result["files"]) == ["chat-mlt", "ruler", "stats"]
    exported = {}
    for fmt in rm.FORMATS:
        response = api.get(f"/v1/datasets/{job['id']}/export", params={"format": fmt})
        assert response.status_code == 200
        assert response.text == open(result["files"][fmt], encoding="utf-8").read()  # what the job wrote
        exported[fmt] = _rows(response.text)
    ruler = exported["ruler"]
    assert [r["id"] for r in ruler] == list(range(5))
    assert {r["Instruction"] for r in ruler if r["mlt"] == "[MLT:10]"} == {"Say something about bird 0.",
                                                                          "Say something about bird 1."}
    assert exported["chat-mlt"] == [{"messages": [{"role": "user", "content": r["Instruction"]},
                                                  {"role": "assistant", "content": r["mlt"] + r["output"]}]}
                                    for r in ruler]
    default = api.get(f"/v1/datasets/{job['id']}/export")
    assert default.text == open(result["files"]["ruler"], encoding="utf-8").read()  # the default format: ruler
    assert api.get(f"/v1/datasets/{job['id']}/stats").json() == stats
    assert json.load(open(result["files"]["stats"], encoding="utf-8")) == stats
    wrong = api.get(f"/v1/datasets/{job['id']}/export", params={"format": "sharegpt"})
    assert wrong.status_code == 422 and "ruler-mlt" in wrong.json()["detail"]
    steps = api.get(f"/v1/jobs/{job['id']}/steps").json()["items"]
    assert [s["key"] for s in steps] == ["mlt"]
    assert not [r for r in fake_llm.requests() if "completions" in str(r.get("path"))]  # no model calls


def test_a_build_from_a_document_and_the_refusals(api):
    text = jsonl(SOURCE)
    doc = api.post("/v1/documents", content=text.encode(), headers={"Content-Type": "text/plain"}).json()
    created = api.post("/v1/datasets", json={"recipe": "ruler-mlt", "document_id": doc["id"], "formats": ["chat-mlt"]})
    assert created.status_code == 202, created.text
    assert [r["line"] for r in created.json()["rejected_lines"]] == [9]
    job = wait_for_job(api, created.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert sorted(job["result"]["files"]) == ["chat-mlt", "stats"] and job["result"]["kept"] == 7
    exported = api.get(f"/v1/datasets/{job['id']}/export", params={"format": "chat-mlt"})
    assert exported.text == open(job["result"]["files"]["chat-mlt"], encoding="utf-8").read()
    assert len(_rows(exported.text)) == 7
    before = api.get("/v1/jobs").json()["total"]
    for body in ({"jsonl": "not json\n\n[1]\n"}, {"jsonl": ""}):
        refused = api.post("/v1/datasets", json={"recipe": "ruler-mlt", **body})
        assert refused.status_code == 422
        assert refused.json()["detail"]["message"] == "no valid (instruction, response) lines"
    assert [r["line"] for r in api.post("/v1/datasets", json={"recipe": "ruler-mlt", "jsonl": "not json\n\n[1]\n"})
            .json()["detail"]["rejected_lines"]] == [1, 3]
    bad_doc = api.post("/v1/documents", content=b"no pairs here", headers={"Content-Type": "text/plain"}).json()
    refused = api.post("/v1/datasets", json={"recipe": "ruler-mlt", "document_id": bad_doc["id"]})
    assert refused.status_code == 422 and refused.json()["detail"]["rejected_lines"][0]["line"] == 1
    missing = api.post("/v1/datasets", json={"recipe": "ruler-mlt", "document_id": "0" * 32})
    assert missing.status_code == 404
    refused = api.post("/v1/datasets", json={"recipe": "ruler-mlt", "jsonl": text, "gates": {"drop_refusals": False}})
    assert refused.status_code == 422 and "gates applies to the longwriter recipe" in refused.json()["detail"]
    assert api.get("/v1/jobs").json()["total"] == before  # nothing stored


def test_the_cli_builds_and_exports_with_the_recipe(api, tmp_path):
    url = str(api.base_url)
    source = tmp_path / "pairs.jsonl"
    source.write_text(jsonl(SOURCE), encoding="utf-8")
    out = tmp_path / "chat.jsonl"
    built = run(["dataset", "build", "--recipe", "ruler-mlt", str(source), "--mlt-cap", "1", "--seed", "3",
                 "--format", "chat-mlt", "--format", "ruler", "--out", str(out)], LONGFORM_URL=url)
    assert built.exit_code == 0, built.output
    assert f"{source}:9: skipped: invalid JSON" in built.stderr and '"per_mlt"' in built.stderr
    dataset_id = built.stdout.strip().splitlines()[-1]
    job = api.get(f"/v1/jobs/{dataset_id}").json()
    assert job["params"]["recipe"] == "ruler-mlt" and job["params"]["mlt_cap"] == 1 and job["params"]["seed"] == 3
    assert job["params"]["formats"] == ["chat-mlt", "ruler"]
    rows = _rows(out.read_text(encoding="utf-8"))  # --out writes the first --format
    assert len(rows) == job["result"]["kept"] == 4 and all(set(r) == {"messages"} for r in rows)
    exported = run(["dataset", "export", dataset_id, "--format", "ruler"], LONGFORM_URL=url)
    assert exported.exit_code == 0 and [r["id"] for r in _rows(exported.stdout)] == [0, 1, 2, 3]
    for args, message in (
        (["--seed", "three"], "--seed is the shuffle seed: one integer"),
        (["--seed", "1", "--seed", "2"], "--seed is the shuffle seed: one integer"),
        (["--count", "3"], "--count does not apply to --recipe ruler-mlt"),
        (["--length-seed", "3"], "its shuffle seed is --seed N"),
        (["--method", "single"], "--method does not apply to --recipe ruler-mlt"),
    ):
        refused = run(["dataset", "build", "--recipe", "ruler-mlt", str(source), *args], LONGFORM_URL=url)
        assert refused.exit_code == 2 and message in refused.stderr, refused.output
    refused = run(["dataset", "build", "--recipe", "ruler-mlt", "--seed", "1"], LONGFORM_URL=url)
    assert refused.exit_code == 2 and "needs a JSONL file of (instruction, response) pairs" in refused.stderr
    refused = run(["dataset", "build", "--recipe", "ruler-mlt", str(source), "--gate", "drop_refusals=false"],
                  LONGFORM_URL=url)
    assert refused.exit_code != 0 and "gates applies to the longwriter recipe" in refused.stderr
    refused = run(["dataset", "build", str(source), "--mlt-cap", "5"], LONGFORM_URL=url)
    assert refused.exit_code != 0 and "mlt_cap applies to the ruler-mlt recipe" in refused.stderr
