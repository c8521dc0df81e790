"""The `solve` kind (CodeSteer): routing, turns, checkers and the transcript per method, with a
scripted in-process model and the real sandbox (skipped where it cannot run); resume without
re-running code; the sandbox missing; bad input; the symbolic checker and answer extraction."""
from __future__ import annotations

import asyncio
import json

import pytest

import sandbox
from agents import solve
from agents.codesteer.answers import extract_answer, extract_code
from agents.codesteer.symbolic import analyze
from agents.context import JobContext, MemoryStepStore
from agents.kinds import InvalidParams, get_kind, validate_params
from agents.llm.types import GenOptions, LLMResult
from agents.settings import Settings

SETTINGS = Settings()
STATUS = asyncio.run(sandbox.check_available(SETTINGS.sandbox_config()))
needs_sandbox = pytest.mark.skipif(not STATUS.available, reason=f"no sandbox here: {STATUS.reason}")

QUESTION = "What is 123456789 * 987654321? Give your final answer wrapped as <<<answer>>>."
PRODUCT = str(123456789 * 987654321)
GOOD_CODE = "I will compute it.\n```python\nresult = 123456789 * 987654321\nprint(f'<<<{result}>>>')\n```"
PRINT_ONLY = "```python\nprint('<<<42>>>')\n```"
TEXT_WRONG = "Step by step: roughly 1.2e17, so <<<121932631112635260>>>."
CHECKER_OK = "```python\nprint('Correct' if 123456789 * 987654321 == int('%s') else 'Wrong')\n```" % PRODUCT


def decision(action: str, mode: str = "code", guidance: str = "") -> str:
    return json.dumps({"action": action, "mode": mode, "guidance": guidance})


class Scripted:
    """Answers by request shape: the steerer's choice (schema with mode only), its decision
    (schema with action), the self-answer checker, the summary prompt, and task answers. Each
    list is used in order (the last entry repeats)."""

    model_name = "scripted"
    context_window = 32768

    def __init__(self, task=(), choice=None, decisions=(), checker=(CHECKER_OK,), summary=()):
        self.replies = {"task": list(task) or [GOOD_CODE],
                        "choice": [choice or json.dumps({"mode": "code", "guidance": "Compute it exactly."})],
                        "decision": list(decisions) or [decision("return_answer")], "checker": list(checker),
                        "summary": list(summary) or [GOOD_CODE]}
        self.used = {k: 0 for k in self.replies}
        self.calls: list[tuple[str, list[dict], GenOptions]] = []

    def kind(self, messages, options) -> str:
        if options.json_schema is not None:
            return "decision" if "action" in options.json_schema["properties"] else "choice"
        last = messages[-1]["content"]
        if "Write a Python program that checks" in last:
            return "checker"
        if "Two attempts were made" in last:
            return "summary"
        return "task"

    async def chat(self, messages, options=None):
        options = options or GenOptions()
        kind = self.kind(messages, options)
        self.calls.append((kind, [dict(m) for m in messages], options))
        replies = self.replies[kind]
        text = replies[min(self.used[kind], len(replies) - 1)]
        self.used[kind] += 1
        return LLMResult(text=text, finish_reason="stop", prompt_tokens=10, completion_tokens=5, latency_s=0.0,
                         model=self.model_name)

    async def count_tokens(self, text):
        return len(text.split())

    async def aclose(self):
        pass

    def of(self, kind):
        return [(m, o) for k, m, o in self.calls if k == kind]


async def _run(llm, store=None, **params):
    params.setdefault("question", QUESTION)
    model = validate_params("solve", params, SETTINGS)
    ctx = JobContext(llm, store=store or MemoryStepStore(), settings=SETTINGS, kind_version=solve.KIND.version)
    result = await solve.run(ctx, model)
    return solve.KIND.validate_result(result).model_dump(mode="json")


# -- pure parts ------------------------------------------------------------------------------------


def test_answer_and_code_extraction():
    assert extract_answer("a <<<1>>> then <<< 2 >>>") == "2"
    assert extract_answer("say it as <<<...>>>") is None and extract_answer(None) is None
    assert extract_answer(r"so \boxed{\frac{1}{2}}", "boxed") == r"\frac{1}{2}"
    assert extract_code("x\n```python\nprint(1)\n```\n```python\nprint(2)\n```") == "print(1)\n"
    assert extract_code("```\nprint(3)\n```") == "print(3)\n" and extract_code("no code") is None


def test_symbolic_checker_counts_syntax_not_substrings():
    printed = analyze("print('<<<42>>>')  # for while if elif format information")
    assert printed["score"] == 0 and printed["too_simple"] and "not be complex enough" in printed["summary"]
    # The reference counts "format" as a loop, "elif" twice and f-strings as symbolic; here none.
    fmt = analyze("x = 'for while'\nif x:\n    y = 1\nelif x == 2:\n    y = 2\nelse:\n    y = 3\nprint(f'{y}'.format())")
    assert (fmt["loops"], fmt["branches"]) == (0, 2) and not fmt["flags"]["symbolic"]
    search = analyze("import itertools\nfor p in itertools.permutations([1, 2, 3]):\n"
                     "    if p[0] + p[1] * p[2] == 7:\n        print(p)\n")
    assert search["loops"] == 1 and search["branches"] == 1 and search["binary_ops"] == 2
    assert search["score"] == 2.5 and not search["too_simple"] and search["flags"]["searching"]
    sym = analyze("import sympy\ntry:\n    v = eval('2+3')\nexcept Exception:\n    v = 0\n[i * 2 for i in range(3)]")
    assert sym["flags"]["symbolic"] and sym["exception_handling"] == 2 and sym["loops"] == 1
    rec = analyze("def f(n):\n    return 1 if n < 2 else n * f(n - 1)\n")
    assert rec["flags"]["recursion"] and rec["branches"] == 1
    assert analyze("def (:")["parses"] is False


# -- methods ---------------------------------------------------------------------------------------


async def test_text_method_answers_once_and_runs_no_code():
    llm = Scripted(task=[TEXT_WRONG + "\n```python\nprint(1)\n```"])
    result = await _run(llm, method="text")
    [(messages, options)] = llm.of("task")
    assert "Do not write or use any code" in messages[-1]["content"] and QUESTION in messages[-1]["content"]
    assert options.temperature == 0.0 and options.max_tokens == 2000
    [turn] = result["turns"]
    assert turn["code"] is None and turn["execution"] is None and result["usage"]["code_runs"] == 0
    assert result["answer"] == "121932631112635260" and result["answer_source"] == "response"
    assert result["stopped"] == "single" and result["usage"]["model_calls"] == 1


@needs_sandbox
async def test_code_method_runs_the_code_in_the_sandbox():
    result = await _run(Scripted(), method="code")
    [turn] = result["turns"]
    assert turn["execution"]["stdout"].strip() == f"<<<{PRODUCT}>>>" and turn["execution"]["exit_code"] == 0
    assert turn["execution"]["sandbox"] == SETTINGS.sandbox and turn["execution"]["wall_ms"] > 0
    assert result["answer"] == PRODUCT and result["answer_source"] == "stdout"
    assert turn["symbolic"]["too_simple"]  # one multiplication and a print
    assert result["usage"] == {"model_calls": 1, "prompt_tokens": 10, "completion_tokens": 5, "code_runs": 1,
                               "code_wall_ms": round(turn["execution"]["wall_ms"], 1)}
    assert result["protocol"]["prompts"] == {"solve/code.j2": "bundled"}


@needs_sandbox
async def test_code_text_sum_sees_both_attempts_and_the_output():
    llm = Scripted(task=[TEXT_WRONG, GOOD_CODE], summary=[f"The code is right: <<<{PRODUCT}>>>"])
    result = await _run(llm, method="code_text_sum")
    assert [t["stage"] for t in result["turns"]] == ["text_attempt", "code_attempt", "summary"]
    [(messages, _)] = llm.of("summary")
    prompt = messages[-1]["content"]
    assert TEXT_WRONG in prompt and GOOD_CODE in prompt and f"<<<{PRODUCT}>>>" in prompt  # the code's output
    assert result["answer"] == PRODUCT and result["usage"]["model_calls"] == 3 and result["usage"]["code_runs"] == 1


@needs_sandbox
async def test_steer_routes_checks_and_returns():
    llm = Scripted(task=[PRINT_ONLY, GOOD_CODE],
                   decisions=[decision("continue", "code", "Compute the product in the code; do not print a guess."),
                              decision("return_answer")])
    result = await _run(llm, method="steer")
    assert result["initial_mode"] == "code" and result["stopped"] == "returned"
    first, second = result["turns"]
    assert first["symbolic"]["too_simple"] and first["answer"] == "42"
    assert first["self_check"]["verdict"] == "correct"  # the scripted checker always checks the product
    assert first["decision"] == {"action": "continue", "mode": "code",
                                 "guidance": "Compute the product in the code; do not print a guess."}
    assert second["guidance"] == first["decision"]["guidance"] and second["answer"] == PRODUCT
    assert result["answer"] == PRODUCT and result["candidates"] == [PRODUCT]
    # The task model keeps the conversation: its first answer with the output, then the guidance.
    (_, _), (messages, _) = llm.of("task")
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert "Code output:\n<<<42>>>" in messages[1]["content"]
    assert messages[2]["content"] == first["decision"]["guidance"]
    # The steerer saw the execution, the complexity and the self-check.
    (_, _), (steer_msgs, _) = llm.of("decision")
    seen = steer_msgs[-1]["content"]
    assert "exit 0" in seen and "not be complex enough" in seen and "Self-check: correct" in seen
    assert [s["key"] for s in result["steering"]] == ["steer/0", "steer/1", "steer/2"]
    # Costs: choice + 2 answers + 2 checker calls + 2 decisions; 2 answer runs + 2 checker runs.
    assert result["usage"]["model_calls"] == 7 and result["usage"]["code_runs"] == 4
    assert result["models"] == {"task": "scripted", "steer": "scripted", "checker": "scripted"}


@needs_sandbox
async def test_steer_switches_mode_and_stops_at_the_turn_limit():
    llm = Scripted(task=["```python\nraise SystemExit(3)\n```", TEXT_WRONG],
                   decisions=[decision("switch", "text", "Reason in text instead.")])
    result = await _run(llm, method="steer", max_turns=1)
    first, second = result["turns"]
    assert first["execution"]["exit_code"] == 3 and first["decision"]["action"] == "switch"
    assert second["mode"] == "text" and result["stopped"] == "max_turns"
    (_, _), (messages, _) = llm.of("task")
    assert "Do not write or use any code" in messages[-1]["content"] and "Guidance: Reason in text" in messages[-1]["content"]
    assert "self_check" not in second and "decision" not in second  # the last turn is not reviewed


@needs_sandbox
async def test_steer_decisions_are_structured_not_substrings():
    """Guidance that merely mentions "Terminate" or "Return Answer" does not end the loop."""
    llm = Scripted(task=[PRINT_ONLY, GOOD_CODE],
                   decisions=[decision("continue", "code", "Do not Terminate; Return Answer only when computed."),
                              decision("stop", "code", "")])
    result = await _run(llm, method="steer", self_check=False)
    assert len(result["turns"]) == 2 and result["stopped"] == "stopped" and result["answer"] == PRODUCT
    assert all("self_check" not in t for t in result["turns"]) and not llm.of("checker")


@needs_sandbox
async def test_steering_replies_are_stored_as_the_decision_not_the_prose_around_it():
    """A reply the parser accepts may wrap the JSON in chatter and a fence; the stored reply (the
    steering SFT data) is the decision alone."""
    choice = {"mode": "code", "guidance": "Compute it exactly."}
    llm = Scripted(choice="Sure! Here is the JSON you asked for:\n```json\n" + json.dumps(choice) + "\n```")
    result = await _run(llm, method="steer", self_check=False)
    assert json.loads(result["steering"][0]["reply"]) == choice
    assert "Sure" not in result["steering"][0]["reply"] and result["initial_mode"] == "code"


@needs_sandbox
async def test_paper_protocol_uses_the_reference_settings():
    llm = Scripted(choice=json.dumps({"mode": "text", "guidance": "Think hard."}), task=[TEXT_WRONG])
    result = await _run(llm, method="steer", protocol="paper")
    (messages, _), = llm.of("task")
    assert "Guidance" not in messages[-1]["content"]  # the canned instruction alone
    (_, choice_options), = llm.of("choice")
    assert (choice_options.temperature, choice_options.top_p, choice_options.top_k, choice_options.max_tokens) == \
        (0.95, 0.7, 50, 1024)
    assert result["settings"]["code_timeout_s"] == 10.0 and result["settings"]["max_turns"] == 5
    assert result["protocol"]["name"] == "paper" and not result["protocol"]["comparable_to_paper"]
    assert not any(d.startswith(("max_turns", "temperature", "code_timeout")) for d in result["protocol"]["differs_from_paper"])
    changed = await _run(Scripted(task=[TEXT_WRONG]), method="text", protocol="paper", code_timeout_s=3)
    assert "code_timeout_s: 3.0 (paper: 10.0)" in changed["protocol"]["differs_from_paper"]


@needs_sandbox
async def test_resume_replays_finished_code_runs(monkeypatch):
    llm = Scripted(task=[PRINT_ONLY, GOOD_CODE],
                   decisions=[decision("continue", "code", "Compute it."), decision("return_answer")])
    store = MemoryStepStore()
    real = sandbox.run_python
    runs: list[str] = []

    async def counting(code, limits=None, **kw):
        runs.append(code)
        if len(runs) == 3:  # the crash: during the second answer's run
            raise RuntimeError("the worker died")
        return await real(code, limits, **kw)

    monkeypatch.setattr(sandbox, "run_python", counting)
    with pytest.raises(RuntimeError, match="worker died"):
        await _run(llm, store=store, method="steer")
    assert {"run/0", "check/0/run", "answer/1"} <= set(store.outputs) and "run/1" not in store.outputs
    before = len(runs)
    result = await _run(llm, store=store, method="steer")
    assert runs[before:] == [GOOD_CODE.split("```python\n")[1].split("```")[0], CHECKER_OK.split("```python\n")[1].split("```")[0]]
    assert result["answer"] == PRODUCT and len(result["turns"]) == 2
    # Nothing finished was asked again of the model either.
    assert len(llm.of("task")) == 2 and len(llm.of("choice")) == 1


async def test_a_code_run_without_a_sandbox_fails_the_job_with_the_reason(monkeypatch):
    async def unavailable(*args, **kwargs):
        raise sandbox.SandboxUnavailable("the sandbox Python is missing at /nowhere")

    monkeypatch.setattr(sandbox, "run_python", unavailable)
    store = MemoryStepStore()
    with pytest.raises(solve.CodeRunUnavailable, match="code runs need the sandbox.*missing at /nowhere"):
        await _run(Scripted(), store=store, method="code")
    assert "run/0" in store.errors and "run/0" not in store.outputs
    # Text needs no sandbox.
    assert (await _run(Scripted(task=[TEXT_WRONG]), method="text"))["answer"]


# -- input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("params, message", [
    ({"question": "   "}, "question must not be empty"),
    ({"question": "q", "method": "guess"}, "method"),
    ({"question": "q", "max_turns": 0}, "max_turns"),
    ({"question": "q", "max_turns": 11}, "max_turns"),
    ({"question": "q", "code_timeout_s": 0}, "code_timeout_s"),
    ({"question": "q", "code_timeout_s": 1000}, "code_timeout_s"),
    ({"question": "q", "method": "code", "max_turns": 3}, "only apply to method steer"),
    ({"question": "q", "answer_format": "xml"}, "answer_format"),
    ({"question": "q", "colour": "red"}, "colour"),
])
def test_bad_params(params, message):
    with pytest.raises(InvalidParams, match=message):
        validate_params("solve", params, SETTINGS)


def test_the_kind_is_registered_with_its_view():
    kind = get_kind("solve")
    assert kind.view.text == "answer" and kind.view.transcript == "turns"
    assert set(kind.describe()["params_schema"]["properties"]) >= {
        "question", "method", "task_model", "steer_model", "checker_model", "max_turns", "answer_format", "protocol"}
