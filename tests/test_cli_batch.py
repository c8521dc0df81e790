"""`longform eval longbench-write` and `longform dataset build|export` through CliRunner,
against a real API server (embedded worker, fake model server) or, with `eval --local`,
in-process on the fake model server; and both stopping at once when the API does not answer."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from api.client import ApiUnreachable, LongformClient
from tests.api_server import free_port
from tests.test_cli import api_settings, api_url, clean_env, run  # noqa: F401  (fixtures)

UNREACHABLE = "cannot reach the Longform API at {url}: is `longform serve` running?"


def last_json_line(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def check_report(out: Path, arms: list[str], items: int) -> dict:
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert list(report["methods"]) == arms
    assert len(report["items"]) == items * len(arms)
    assert (out / "table.txt").read_text(encoding="utf-8").strip()
    assert (out / "plot.png").stat().st_size > 0
    return report


# ---- eval ----------------------------------------------------------------------------------


def test_eval_runs_write_jobs_through_the_api(api_url, tmp_path):
    """By default the jobs get only the prompt text; --protocol runs both side by side."""
    out = tmp_path / "eval"
    result = run(["eval", "longbench-write", "--limit", "2", "--protocol", "controlled,paper", "--out", str(out)],
                 LONGFORM_URL=api_url)
    assert result.exit_code == 0, result.output
    arms = ["agentwrite/controlled", "agentwrite/paper", "single/controlled", "single/paper"]
    report = check_report(out, arms, 2)
    assert all(row["error"] is None and row["word_count"] > 0 for row in report["items"]), report["items"]
    assert report["given_length"] is False and report["protocols"] == ["controlled", "paper"]
    summary = last_json_line(result.stdout)
    assert set(summary) == {"agentwrite", "single"}
    for figures in summary.values():
        assert figures["protocol"] == "controlled" and 0 < figures["S_l"] <= 100
        assert set(figures["paper"]) == {"S_l"} and 0 < figures["paper"]["S_l"] <= 100
    assert "[8/8]" in result.stderr and "8 runs in" in result.stderr
    assert "the model got: prompt text only" in (out / "table.txt").read_text(encoding="utf-8")

    jobs = json.loads(run(["jobs", "--kind", "write", "--json", "--limit", "50"], LONGFORM_URL=api_url).stdout)
    assert jobs["total"] == 8 and {j["status"] for j in jobs["items"]} == {"succeeded"}
    client = LongformClient(api_url)
    details = [client.get_job(j["id"]) for j in jobs["items"]]
    assert all(d["params"].get("target_words") is None for d in details)
    assert sorted(d["result"]["protocol"]["name"] for d in details) == ["controlled"] * 4 + ["paper"] * 4


def test_eval_given_length_passes_the_annotated_length(fake_llm, tmp_path):
    out = tmp_path / "eval-given"
    result = run(["eval", "longbench-write", "--local", "--limit", "2", "--method", "single", "--given-length",
                  "--out", str(out)], LLM_ENDPOINTS=fake_llm.base_url, LONGFORM_URL=f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 0, result.output
    report = check_report(out, ["single/controlled"], 2)
    assert report["given_length"] is True
    assert [(r["target_words"], r["target_source"]) for r in report["items"]] == [(r["length"], "given") for r in report["items"]]


def test_eval_refuses_an_unknown_protocol(tmp_path):
    result = run(["eval", "longbench-write", "--local", "--protocol", "paper,fancy", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--protocol takes a comma-separated list of controlled, paper" in result.output


def test_eval_local_runs_in_process_on_the_configured_model(fake_llm, tmp_path):
    out = tmp_path / "eval-local"
    # No API at LONGFORM_URL: --local must not need one.
    result = run(["eval", "longbench-write", "--local", "--limit", "2", "--method", "single", "--out", str(out)],
                 LLM_ENDPOINTS=fake_llm.base_url, LONGFORM_URL=f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 0, result.output
    report = check_report(out, ["single/controlled"], 2)
    assert all(row["error"] is None and row["word_count"] > 0 for row in report["items"]), report["items"]
    assert last_json_line(result.stdout)["single"]["S_l"] > 0


def test_eval_refuses_to_start_without_the_api(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    out = tmp_path / "eval"
    result = run(["eval", "longbench-write", "--limit", "2", "--out", str(out)], LONGFORM_URL=url)
    assert result.exit_code == 2, result.output
    assert UNREACHABLE.format(url=url) in result.stderr
    assert result.stdout == "" and "[1/" not in result.stderr and not out.exists()


def test_eval_stops_when_the_api_goes_away_mid_run(api_url, tmp_path, monkeypatch):
    """The first job runs; then the API stops answering: the eval ends there with exit 2
    instead of recording every remaining prompt as a failure."""
    submitted = []
    real_submit = LongformClient.submit_job

    def submit_then_vanish(self, kind, params, **kwargs):
        submitted.append(params["instruction"])
        if len(submitted) > 1:
            raise ApiUnreachable(self.base_url)
        return real_submit(self, kind, params, **kwargs)

    monkeypatch.setattr(LongformClient, "submit_job", submit_then_vanish)
    out = tmp_path / "eval"
    result = run(["eval", "longbench-write", "--limit", "5", "--method", "single", "--concurrency", "1", "--out", str(out)],
                 LONGFORM_URL=api_url)
    assert result.exit_code == 2, result.output
    assert UNREACHABLE.format(url=api_url) in result.stderr
    assert "stopped after 1 of 5 runs: the API no longer answers" in result.stderr
    assert len(submitted) == 2 and not out.exists()


# ---- dataset -------------------------------------------------------------------------------


def instructions_file(tmp_path: Path) -> Path:
    path = tmp_path / "instructions.jsonl"
    rows = [
        {"instruction": "Write a short note about lighthouses.", "target_words": 120},
        {"prompt": "Write a short note about urban beekeeping.", "length": 120},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n", encoding="utf-8")
    return path


def test_dataset_build_then_export(api_url, tmp_path):
    source = instructions_file(tmp_path)
    export = tmp_path / "export.jsonl"
    built = run(["dataset", "build", str(source), "--method", "single", "--gate", "length_tolerance=null",
                 "--out", str(export)], LONGFORM_URL=api_url)
    assert built.exit_code == 0, built.output
    assert f"{source}:3: skipped: invalid JSON" in built.stderr
    dataset_id = built.stdout.strip()
    assert f"dataset job {dataset_id}: " in built.stderr and f"job {dataset_id} succeeded" in built.stderr
    assert f"records written to {export}" in built.stderr
    records = [json.loads(line) for line in export.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 2
    assert {r["messages"][0]["content"] for r in records} == {  # the target the answer was written to
        "Write a short note about lighthouses. (about 120 words)", "Write a short note about urban beekeeping. (about 120 words)",
    }
    assert all(r["messages"][1]["role"] == "assistant" and r["messages"][1]["content"].strip() for r in records)

    children = json.loads(run(["jobs", "--parent", dataset_id, "--json"], LONGFORM_URL=api_url).stdout)
    assert children["total"] == 2
    shown = run(["result", dataset_id], LONGFORM_URL=api_url)  # the dataset kind has no main text: JSON
    assert shown.exit_code == 0 and json.loads(shown.stdout)["stats"]["kept"] == 2

    exported = run(["dataset", "export", dataset_id], LONGFORM_URL=api_url)
    assert exported.exit_code == 0, exported.output
    assert exported.stdout == export.read_text(encoding="utf-8")
    alpaca = run(["dataset", "export", dataset_id, "--format", "alpaca", "--out", str(tmp_path / "a.jsonl")],
                 LONGFORM_URL=api_url)
    assert alpaca.exit_code == 0, alpaca.output
    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 2 and all(row["output"].strip() for row in rows)
    plain = run(["dataset", "export", dataset_id, "--no-state-length"], LONGFORM_URL=api_url)
    assert plain.exit_code == 0, plain.output
    assert {json.loads(line)["messages"][0]["content"] for line in plain.stdout.splitlines()} == {
        "Write a short note about lighthouses.", "Write a short note about urban beekeeping.",
    }


def test_dataset_build_no_watch_and_a_file_without_instructions(api_url, tmp_path):
    source = instructions_file(tmp_path)
    queued = run(["dataset", "build", str(source), "--method", "single", "--no-watch"], LONGFORM_URL=api_url)
    assert queued.exit_code == 0, queued.output
    job = json.loads(run(["status", queued.stdout.strip(), "--json"], LONGFORM_URL=api_url).stdout)
    assert job["kind"] == "dataset"

    empty = tmp_path / "bad.jsonl"
    empty.write_text('{"instruction": ""}\n', encoding="utf-8")
    refused = run(["dataset", "build", str(empty)], LONGFORM_URL=api_url)
    assert refused.exit_code == 1, refused.output
    assert f"{empty}:1: skipped: " in refused.stderr and "no valid instruction lines (HTTP 422)" in refused.stderr


@pytest.mark.parametrize("args", [["dataset", "build", "SOURCE"], ["dataset", "export", "0" * 32]])
def test_dataset_commands_refuse_to_start_without_the_api(tmp_path, args):
    url = f"http://127.0.0.1:{free_port()}"
    args = [str(instructions_file(tmp_path)) if a == "SOURCE" else a for a in args]
    result = run(args, LONGFORM_URL=url)
    assert result.exit_code == 2, result.output
    assert UNREACHABLE.format(url=url) in result.stderr
    assert result.stdout == "" and "dataset job" not in result.stderr
