"""SymBench-like tasks (generators, exact checkers, a user's file), the report (success, costs,
the average normalized score), the ShareGPT export and `longform eval symbench` on the fake
server."""
from __future__ import annotations

import json

import pytest

from agents.codesteer import symbench as sb
from agents.codesteer import tasks as tk
from tests.api_server import free_port
from tests.test_cli import api_settings, api_url, run  # noqa: F401  (fixtures)
from tests.test_solve import GOOD_CODE, STATUS, Scripted, decision


def test_every_task_and_level_is_seeded_and_its_gold_answer_passes():
    items = tk.build_set(list(tk.TASKS), list(tk.LEVELS), 2, seed=3)
    assert len(items) == len(tk.TASKS) * len(tk.LEVELS) * 2
    assert [i.task for i in items[:6]] == list(tk.TASKS)  # interleaved: a limit keeps every task
    assert all(tk.check(i, i.answer) and "<<<answer>>>" in i.question for i in items)
    again = tk.build_set(list(tk.TASKS), list(tk.LEVELS), 2, seed=3)
    assert [i.question for i in items] == [i.question for i in again]
    assert [i.question for i in tk.build_set(["sort"], [1], 2, seed=4)] != [i.question for i in items if i.task == "sort"][:2]
    assert len(tk.build_set(list(tk.TASKS), [1, 2], 3, limit=10)) == 10
    # Harder levels are bigger.
    small, big = tk.generate("multiply", 1, 0), tk.generate("multiply", 5, 0)
    assert len(big.answer.lstrip("-")) > 30 > len(small.answer.lstrip("-"))
    with pytest.raises(ValueError, match="unknown task"):
        tk.build_set(["chess"], [1], 1)
    with pytest.raises(ValueError, match="level"):
        tk.build_set(["sort"], [9], 1)


def test_exact_checkers():
    g = tk.TaskItem(0, "game24", 1, "q", "(1 + 2 + 3) * 4", "game24", {"numbers": [1, 2, 3, 4], "target": 24})
    assert tk.check(g, "4 * (3 + 2 + 1)") and tk.check(g, "(1+2+3)*4 = 24")
    assert not tk.check(g, "24") and not tk.check(g, "6 * 4") and not tk.check(g, "(1 + 2 + 3) * 4 + 0")
    assert not tk.check(g, "__import__('os')") and not tk.check(g, "1 / 0 + 2 + 3 + 4")
    assert tk.check(tk.TaskItem(0, "game24", 1, "q", "x", "game24", {"numbers": [3, 3, 8, 8]}), "8 / (3 - 8 / 3)")
    n = tk.TaskItem(0, "multiply", 1, "q", "-123456", "integer")
    assert tk.check(n, "-123,456") and tk.check(n, " -123456 ") and not tk.check(n, "-123457") and not tk.check(n, "x")
    s = tk.TaskItem(0, "sort", 1, "q", "[-3, 1, 2]", "int_list")
    assert tk.check(s, "[-3, 1, 2]") and tk.check(s, "-3, 1, 2") and not tk.check(s, "[1, -3, 2]")
    t = tk.TaskItem(0, "transform", 1, "q", "AbC", "exact")
    assert tk.check(t, "AbC") and tk.check(t, "'AbC'") and not tk.check(t, "abc") and not tk.check(t, None)
    assert tk.check(tk.TaskItem(0, "c", 1, "q", "AbC", "exact_ci"), "abc")
    assert tk.check(tk.TaskItem(0, "c", 1, "q", "0.5", "number"), "0.5000000001")


def test_path_answers_are_shortest_paths():
    item = tk.generate("path", 3, 1, seed=0)
    grid = item.data["grid"]
    assert tk._shortest_path(grid) == int(item.answer)
    assert tk._shortest_path(["S#G"]) is None and tk._shortest_path(["S.G"]) == 2


def test_a_users_task_file(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join([
        json.dumps({"question": "2+2?", "answer": 4, "checker": "integer", "task": "add"}),
        json.dumps({"question": "Make 24", "answer": "x", "checker": "game24", "numbers": [4, 6, 1, 1]}),
        "",
    ]), encoding="utf-8")
    first, second = tk.load_task_file(path)
    assert (first.task, first.answer, first.checker) == ("add", "4", "integer") and tk.check(first, "4")
    assert second.task == "custom" and tk.check(second, "4 * 6 * 1 * 1")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "a", "checker": "regex"}\n{"answer": "a"}\n', encoding="utf-8")
    with pytest.raises(tk.TaskFileError) as err:
        tk.load_task_file(bad)
    assert "line 1:" in str(err.value) and "line 2:" in str(err.value)


def _row(task, method, success, index=0):
    item = tk.TaskItem(index, task, 1, "q", "1", "integer")
    return sb.outcome_from_result(item, method, {"answer": "1" if success else "2", "candidates": [],
                                                 "usage": {"prompt_tokens": 10, "completion_tokens": 5, "model_calls": 2,
                                                           "code_runs": 1}, "turns": [{}], "_wall_s": 0.5})


def test_normalized_score_leaves_out_tasks_no_method_solves():
    rows = [_row("a", "text", True, 0), _row("a", "text", False, 1), _row("a", "code", True, 0), _row("a", "code", True, 1),
            _row("b", "text", True, 2), _row("b", "code", False, 2), _row("c", "text", False, 3), _row("c", "code", False, 3)]
    report = sb.build_report(rows, ["text", "code"], ["controlled"])
    # a: text 50 / best 100, code 100; b: text 100, code 0; c: nobody -> left out.
    assert report["unsolved_tasks"] == ["c"]
    assert report["arms"]["text"]["normalized"] == pytest.approx(75.0)
    assert report["arms"]["code"]["normalized"] == pytest.approx(50.0)
    assert report["arms"]["text"]["overall"]["success"] == pytest.approx(50.0)
    o = report["arms"]["code"]["overall"]
    assert (o["tokens"], o["model_calls"], o["code_runs"], o["wall_s"]) == (15, 2, 1, 0.5)
    assert json.loads(sb.summary_line(report)) == {"text": {"success": 50.0, "normalized": 75.0},
                                                   "code": {"success": 50.0, "normalized": 50.0}}
    assert "solved by no method: c" in sb.render_table(report)
    failed = sb.failed_outcome(tk.TaskItem(9, "a", 1, "q", "1", "integer"), "text", "boom")
    assert not failed["success"] and failed["error"] == "boom"


@pytest.mark.skipif(not STATUS.available, reason="no sandbox here")
async def test_run_symbench_with_a_scripted_model_and_the_export(tmp_path):
    items = [tk.TaskItem(0, "multiply", 1, "What is 123456789 * 987654321? <<<answer>>>",
                         str(123456789 * 987654321), "integer")]
    llm = Scripted(task=[GOOD_CODE], decisions=[decision("return_answer")])
    run_item = sb.local_runner(llm)
    report = await sb.run_symbench(items, run_item, ["text", "code", "steer"])
    arms = report["arms"]
    assert arms["code"]["overall"]["success"] == 100.0 and arms["steer"]["overall"]["success"] == 100.0
    assert arms["text"]["overall"]["success"] == 0.0  # the text answer is in a code block: no answer
    assert arms["steer"]["overall"]["model_calls"] == 4 and arms["code"]["overall"]["code_runs"] == 1
    records = sb.sharegpt_records(report)
    [record] = records
    assert [m["from"] for m in record["conversations"]] == ["human", "gpt", "human", "gpt"]
    assert json.loads(record["conversations"][-1]["value"])["action"] == "return_answer" and record["correct"]
    sb.write_plot(report, tmp_path / "plot.png")


def test_cli_local_on_the_fake_server(fake_llm, tmp_path):
    out = tmp_path / "eval"
    export = tmp_path / "steer.jsonl"
    result = run(["eval", "symbench", "--local", "--methods", "text,code,steer", "--tasks", "multiply,letters",
                  "--levels", "1", "--per-level", "1", "-p", "max_turns=1", "--out", str(out),
                  "--export-sharegpt", str(export)],
                 LLM_ENDPOINTS=fake_llm.base_url, LONGFORM_URL=f"http://127.0.0.1:{free_port()}",
                 SANDBOX="bwrap" if STATUS.available else "unsafe")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert list(summary) == ["text", "code", "steer"] and all(set(v) == {"success", "normalized"} for v in summary.values())
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert len(report["items"]) == 6 and all(r["error"] is None for r in report["items"])
    assert report["unsolved_tasks"] == ["multiply", "letters"] or report["unsolved_tasks"] is not None
    assert (out / "plot.png").stat().st_size > 0 and len((out / "tasks.jsonl").read_text().splitlines()) == 2
    assert "[6/6]" in result.stderr and "Success % by task" in result.stdout
    lines = export.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and all(json.loads(line)["conversations"][0]["from"] == "human" for line in lines)
    steer_rows = [r for r in report["items"] if r["method"] == "steer"]
    assert all(r["model_calls"] >= 2 for r in steer_rows)  # the choice and at least one answer


@pytest.mark.parametrize("args, message", [
    (["--methods", "text,guess"], "unknown 'guess'"),
    (["--tasks", "chess"], "unknown 'chess'"),
    (["--levels", "1,x"], "--levels takes integers"),
    (["--levels", "7"], "level must be one of"),
])
def test_cli_bad_input_exits_2(tmp_path, args, message):
    result = run(["eval", "symbench", "--local", "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2 and message in result.output


def test_submit_a_steer_job_through_the_api(api_url):
    """`longform submit solve` on the worker with the fake server: structured steering decisions
    over HTTP (the fake model writes prose, so no code runs)."""
    from api.client import LongformClient

    submitted = run(["submit", "solve", "-p", "question=What is 17 * 23?", "-p", "method=steer", "-p", "max_turns=1",
                     "--wait"], LONGFORM_URL=api_url)
    assert submitted.exit_code == 0, submitted.output
    job = LongformClient(api_url).get_job(submitted.stdout.split("\n", 1)[0])
    result = job["result"]
    assert job["status"] == "succeeded" and result["method"] == "steer" and result["initial_mode"] in ("code", "text")
    assert 1 <= len(result["turns"]) <= 2 and result["steering"][0]["key"] == "steer/0"
    assert result["usage"]["model_calls"] >= 2 and result["protocol"]["name"] == "controlled"
