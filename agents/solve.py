"""Job kind `solve`: answer a question by text reasoning, by code run in the sandbox, or with a
steering model that routes between the two over several turns (CodeSteer, spec part B).

Methods (`method`):
- `text`: one answer, reasoned step by step in text (no code is run).
- `code`: one answer as a Python program; the program runs in the sandbox and its printed
  `<<<answer>>>` is the answer (else the answer the reply itself states).
- `code_text_sum` (paper 1's Code + Text + Sum.): a text attempt and a code attempt (run), then
  a third call sees both and the code's output and gives the final answer; code it writes runs too.
- `steer` (CodeSteer): the steering model picks code or text (step `steer/0`, structured output
  {"mode", "guidance"}); the task model answers (`answer/{t}`); code in the answer runs in the
  sandbox (`run/{t}`); the symbolic checker scores the code (`symbolic/{t}`); the self-answer
  checker (checker model) writes verification code (`check/{t}/write/{a}`) that runs in the
  same sandbox (`check/{t}/run`); the steering model decides (`steer/{t+1}`, structured output
  {"action": continue | switch | return_answer | stop, "mode", "guidance"}). At most
  `max_turns` decisions after the first answer (the reference's 5: up to 6 answers). The task
  model keeps the whole conversation: each answer with its execution output appended, each
  guidance as the next user turn. The final answer is that of the last answer.

Every model call, code run and checker result is a step, so a resumed job replays finished
code runs from their stored output and never runs them again. Code runs need the sandbox
(`sandbox.run_python`, configured by Settings.sandbox_config/sandbox_limits); where it cannot
run, the job fails with the reason (CodeRunUnavailable).

`protocol: paper` fixes the reference's loop: 5 turns, the canned code/text instructions alone
on the initial choice (the steerer's guidance is not added), task temperature 0 and max_tokens
2000, the steerer's sampling (T 0.95, top_p 0.7, top_k 50, 1024 tokens), up to 5 tries of the
checker for code, a 10 s limit per run, and output over 2,000 tokens (8,000 characters here)
replaced by "too long to be displayed". It keeps the sandbox and the structured decision.
`controlled` (the default) adds the steerer's guidance to the canned instruction, decides at
temperature 0, truncates long output instead, and takes the sandbox's configured wall clock.
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

import sandbox
from agents.codesteer.answers import AnswerFormat, extract_answer, extract_code, format_hint, without_code
from agents.codesteer.symbolic import analyze
from agents.context import JobContext, current_step_usage
from agents.kinds import AbsentStaysAbsent, JobKind, ModelName, ResultView, Score
from agents.llm.structured import chat_json
from agents.llm.types import GenOptions
from agents.protocol import Protocol, ProtocolRecord, protocol_record

METHODS = ("text", "code", "code_text_sum", "steer")
Method = Literal["text", "code", "code_text_sum", "steer"]
Mode = Literal["code", "text"]
MAX_QUESTION_CHARS = 50_000
OUTPUT_SHOWN_CHARS = 8000  # about the reference's 2,000 tokens

# The reference's settings (spec B.2), the paper protocol's defaults.
PAPER = {"max_turns": 5, "temperature": 0.0, "max_tokens": 2000, "code_timeout_s": 10.0, "check_attempts": 5,
         "steer_temperature": 0.95, "steer_top_p": 0.7, "steer_top_k": 50, "steer_max_tokens": 1024}
CONTROLLED = {"max_turns": 5, "temperature": 0.0, "max_tokens": 2000, "check_attempts": 2,
              "steer_temperature": 0.0, "steer_max_tokens": 512}
TEMPLATES = {"code": "solve/code.j2", "text": "solve/text.j2"}
# Every template a method may render (the protocol record lists them, replayed or not).
METHOD_TEMPLATES = {
    "text": ["solve/text.j2"],
    "code": ["solve/code.j2"],
    "code_text_sum": ["solve/text.j2", "solve/code.j2", "solve/summarize.j2"],
    "steer": ["solve/choose.j2", "solve/decide.j2", "solve/code.j2", "solve/text.j2", "solve/selfcheck.j2"],
}

CHOICE_SCHEMA = {
    "type": "object",
    "properties": {"mode": {"type": "string", "enum": ["code", "text"]}, "guidance": {"type": "string"}},
    "required": ["mode", "guidance"],
}
DECISION_SCHEMA = {
    "type": "object",
    "properties": {
        "action": {"type": "string", "enum": ["continue", "switch", "return_answer", "stop"]},
        "mode": {"type": "string", "enum": ["code", "text"]},
        "guidance": {"type": "string"},
    },
    "required": ["action", "mode", "guidance"],
}


class CodeRunUnavailable(RuntimeError):
    """A code run was needed and the sandbox cannot run here."""


# -- params ------------------------------------------------------------------------------------------


class SolveParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(description="the question to answer")
    method: Method = Field("steer", description="text, code, code_text_sum or steer (CodeSteer's loop)")
    task_model: ModelName = Field(None, description="the model that answers; default: the server's")
    steer_model: ModelName = Field(None, description="steer: the model that routes and reviews; default: the server's")
    checker_model: ModelName = Field(None, description="steer: the self-answer checker's model; default: the server's")
    max_turns: int | None = Field(None, ge=1, le=10, description="steer: decisions after the first answer (default 5)")
    answer_format: AnswerFormat = Field("angle", description="angle: <<<answer>>> (the reference's); boxed: \\boxed{}")
    protocol: Protocol = Field("controlled", description="paper: the reference's loop and defaults (sandbox and "
                               "structured decisions kept); controlled: Longform's")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="the task model's (default 0)")
    max_tokens: int | None = Field(None, ge=16, le=32768, description="per task-model answer (default 2000)")
    code_timeout_s: float | None = Field(None, gt=0, le=120, description="wall clock per code run (paper: 10 s; "
                                         "controlled: SANDBOX_WALL_SECONDS)")
    self_check: bool = Field(True, description="steer: run the self-answer checker every turn")
    check_attempts: int | None = Field(None, ge=1, le=5, description="checker replies tried for code (paper 5)")
    seed: int | None = None

    @field_validator("question")
    @classmethod
    def _question(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("question must not be empty")
        if len(value) > MAX_QUESTION_CHARS:
            raise ValueError(f"question is {len(value):,} characters; at most {MAX_QUESTION_CHARS:,}")
        return value

    @model_validator(mode="after")
    def _steer_only(self) -> "SolveParams":
        if self.method != "steer":
            given = [f for f in ("max_turns", "steer_model", "checker_model", "check_attempts")
                     if getattr(self, f) is not None]
            if given:
                raise ValueError(f"{', '.join(given)} only apply to method steer (method is {self.method})")
        return self


@dataclasses.dataclass(frozen=True)
class Resolved:
    max_turns: int
    temperature: float
    max_tokens: int
    code_timeout_s: float
    check_attempts: int
    steer_options: dict[str, Any]


def resolve(params: SolveParams, settings) -> tuple[Resolved, list[str]]:
    """The run's settings, and under paper each knob set away from the reference's."""
    base = PAPER if params.protocol == "paper" else CONTROLLED
    timeout = params.code_timeout_s or (PAPER["code_timeout_s"] if params.protocol == "paper"
                                        else settings.sandbox_wall_seconds)
    steer = {"temperature": base["steer_temperature"], "max_tokens": base["steer_max_tokens"]}
    if params.protocol == "paper":
        steer.update(top_p=PAPER["steer_top_p"], top_k=PAPER["steer_top_k"])
    r = Resolved(
        max_turns=params.max_turns or base["max_turns"],
        temperature=base["temperature"] if params.temperature is None else params.temperature,
        max_tokens=params.max_tokens or base["max_tokens"],
        code_timeout_s=timeout,
        check_attempts=params.check_attempts or base["check_attempts"],
        steer_options=steer,
    )
    differs = []
    if params.protocol == "paper":
        for knob, ours in (("max_turns", r.max_turns), ("temperature", r.temperature), ("max_tokens", r.max_tokens),
                           ("code_timeout_s", r.code_timeout_s), ("check_attempts", r.check_attempts)):
            if ours != PAPER[knob] and (knob != "max_turns" or params.method == "steer"):
                differs.append(f"{knob}: {ours} (paper: {PAPER[knob]})")
        if params.answer_format != "angle":
            differs.append(f"answer_format: {params.answer_format} (paper: angle, <<<answer>>>)")
        if params.method == "steer" and not params.self_check:
            differs.append("self_check: off (paper: on)")
        if params.method == "steer":
            differs.append("steering history: every turn summarized in one message (paper: the steerer's chat history)")
    return r, differs


# -- result ------------------------------------------------------------------------------------------


class CodeRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stdout: str
    stderr: str
    exit_code: int | None
    signal: int | None
    timed_out: bool
    killed_reason: str | None
    stdout_truncated: bool
    stderr_truncated: bool
    wall_ms: float
    sandbox: str
    ok: bool


class SymbolicCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    parses: bool
    score: float
    loops: int
    branches: int
    exception_handling: int
    binary_ops: int
    flags: dict[str, bool]
    too_simple: bool
    summary: str


class SelfCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdict: Literal["correct", "wrong", "error", "no_code", "unusable"]
    attempts: int = Field(description="checker replies asked for")
    code: str | None
    output: str | None
    run: CodeRun | None


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["continue", "switch", "return_answer", "stop"]
    mode: Mode = Field(description="the next turn's mode")
    guidance: str


class Turn(AbsentStaysAbsent):
    model_config = ConfigDict(extra="forbid")

    index: int
    stage: Literal["answer", "text_attempt", "code_attempt", "summary"]
    mode: Mode
    guidance: str | None = Field(description="what the steerer told the task model for this turn")
    response: str
    finish_reason: str
    answer: str | None = Field(description="the answer of this turn (the code's printed one first)")
    answer_source: Literal["stdout", "response"] | None
    code: str | None
    execution: CodeRun | None
    symbolic: SymbolicCheck | None
    self_check: SelfCheck | None = None
    decision: Decision | None = None
    prompt_tokens: int
    completion_tokens: int
    latency_s: float


class SteerExchange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str
    prompt: str
    reply: str = Field(description="the steerer's decision as JSON (without prose or fences the model put around it)")


class SolveUsage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_calls: int
    prompt_tokens: int
    completion_tokens: int
    code_runs: int
    code_wall_ms: float


class SolveResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str
    method: Method
    answer: str | None = Field(description="the final answer, extracted")
    answer_source: Literal["stdout", "response"] | None
    candidates: list[str] = Field(description="every answer the last turn gave (its code's output, its text)")
    text: str = Field(description="the final response")
    initial_mode: Mode | None = Field(description="steer: the steerer's first choice")
    stopped: Literal["single", "returned", "stopped", "max_turns"]
    turns: list[Turn]
    steering: list[SteerExchange] = Field(description="steer: each steering prompt and reply, in order")
    usage: SolveUsage
    models: dict[str, str]
    settings: dict[str, Any]
    protocol: ProtocolRecord


# -- pieces ------------------------------------------------------------------------------------------


def _usage_now() -> dict[str, Any]:
    """The running step's usage so far (every call of a structured reply's retries)."""
    u = current_step_usage()
    return {"calls": u.calls if u else 0, "prompt_tokens": u.prompt_tokens if u else 0,
            "completion_tokens": u.completion_tokens if u else 0, "latency_s": round(u.latency_s, 3) if u else 0.0}


async def run_code(ctx: JobContext, key: str, code: str, timeout_s: float) -> dict[str, Any]:
    """Run `code` in the sandbox as step `key` (a replay returns the stored run)."""

    async def execute() -> dict[str, Any]:
        limits = ctx.settings.sandbox_limits()
        limits = dataclasses.replace(limits, wall_seconds=timeout_s, cpu_seconds=min(limits.cpu_seconds, timeout_s))
        try:
            result = await sandbox.run_python(code, limits, config=ctx.settings.sandbox_config())
        except sandbox.SandboxUnavailable as exc:
            raise CodeRunUnavailable(f"code runs need the sandbox, which cannot run here: {exc}") from None
        return {"stdout": result.stdout, "stderr": result.stderr, "exit_code": result.exit_code,
                "signal": result.signal, "timed_out": result.timed_out, "killed_reason": result.killed_reason,
                "stdout_truncated": result.stdout_truncated, "stderr_truncated": result.stderr_truncated,
                "wall_ms": result.wall_ms, "sandbox": result.sandbox, "ok": result.ok}

    return await ctx.step(key, execute)


def _shown(text: str, paper: bool, limit: int = OUTPUT_SHOWN_CHARS) -> str:
    if len(text) <= limit:
        return text
    if paper:
        return "The output is too long to be displayed."
    half = limit // 2
    return f"{text[:half]}\n... [{len(text) - limit} characters left out] ...\n{text[-half:]}"


def execution_feedback(run: dict[str, Any], paper: bool) -> str:
    """What the task model is shown after its code ran (appended to its answer)."""
    parts = []
    if run["stdout"].strip():
        parts.append("Code output:\n" + _shown(run["stdout"].rstrip(), paper))
    if run["stderr"].strip():
        parts.append("Errors:\n" + _shown(run["stderr"].rstrip(), paper))
    if run["timed_out"]:
        parts.append(f"The run was stopped by the time limit ({run['wall_ms'] / 1000:.1f} s).")
    elif run["killed_reason"]:
        parts.append(f"The run was stopped: it hit the {run['killed_reason']} limit.")
    if not parts:
        parts.append("The code printed nothing.")
    return "\n".join(parts)


def _run_line(run: dict[str, Any]) -> str:
    status = "timed out" if run["timed_out"] else (f"stopped ({run['killed_reason']})" if run["killed_reason"]
                                                   else f"exit {run['exit_code']}")
    text = f"{status}, {run['wall_ms']:.0f} ms"
    if run["stdout"].strip():
        text += f"; stdout: {_shown(run['stdout'].strip(), False, 1500)}"
    if run["stderr"].strip():
        text += f"; stderr: {_shown(run['stderr'].strip(), False, 1500)}"
    return text


class Solver:
    def __init__(self, ctx: JobContext, params: SolveParams):
        self.ctx, self.params = ctx, params
        self.settings, self.differs = resolve(params, ctx.settings)
        self.paper = params.protocol == "paper"
        self.wrap = format_hint(params.answer_format)
        self.code_runs: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []

    def render(self, template: str, **variables: Any) -> str:
        return self.ctx.render(template, question=self.params.question, wrap=self.wrap, **variables)

    def task_options(self, key: str) -> GenOptions:
        return GenOptions(max_tokens=self.settings.max_tokens, temperature=self.settings.temperature,
                          seed=self.params.seed,
                          model=self.params.task_model)

    async def ask(self, key: str, history: list[dict[str, str]], build_prompt: Callable[[], str]) -> dict[str, Any]:
        """The task model's answer to `history` + the user turn `build_prompt()` (step `key`)."""

        async def call() -> dict[str, Any]:
            prompt = build_prompt()
            result = await self.ctx.llm.chat([*history, {"role": "user", "content": prompt}], self.task_options(key))
            return {"prompt": prompt, "text": result.text, "finish_reason": result.finish_reason,
                    "model": result.model, **_usage_now()}

        out = await self.ctx.step(key, call)
        self.calls.append(out)
        return out

    async def run(self, key: str, code: str) -> dict[str, Any]:
        out = await run_code(self.ctx, key, code, self.settings.code_timeout_s)
        self.code_runs.append(out)
        return out

    async def symbolic(self, key: str, code: str) -> dict[str, Any]:
        async def check() -> dict[str, Any]:
            return analyze(code)

        return await self.ctx.step(key, check)

    async def turn(self, index: int, stage: str, mode: str, guidance: str | None, history: list[dict[str, str]],
                   build_prompt: Callable[[], str], key: str, run_code_in: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        """One task-model answer, its code run and scored; (turn record, the raw answer step)."""
        out = await self.ask(key, history, build_prompt)
        code = extract_code(out["text"]) if run_code_in else None
        suffix = key.split("/", 1)[1]
        execution = await self.run(f"run/{suffix}", code) if code else None
        symbolic = await self.symbolic(f"symbolic/{suffix}", code) if code else None
        stdout_answer = extract_answer(execution["stdout"], self.params.answer_format) if execution else None
        text_answer = extract_answer(without_code(out["text"]), self.params.answer_format)
        answer, source = (stdout_answer, "stdout") if stdout_answer is not None else \
            (text_answer, "response" if text_answer is not None else None)
        record = {"index": index, "stage": stage, "mode": mode, "guidance": guidance, "response": out["text"],
                  "finish_reason": out["finish_reason"], "answer": answer, "answer_source": source, "code": code,
                  "execution": execution, "symbolic": symbolic, "prompt_tokens": out["prompt_tokens"],
                  "completion_tokens": out["completion_tokens"], "latency_s": out["latency_s"],
                  "_candidates": [a for a in (stdout_answer, text_answer) if a is not None]}
        return record, out

    def history_after(self, out: dict[str, Any], record: dict[str, Any]) -> list[dict[str, str]]:
        reply = out["text"]
        if record["execution"] is not None:
            reply += "\n\n" + execution_feedback(record["execution"], self.paper)
        return [{"role": "user", "content": out["prompt"]}, {"role": "assistant", "content": reply}]

    # -- steering ------------------------------------------------------------------------------------

    async def steer(self, key: str, build_prompt: Callable[[], str], schema: dict[str, Any]) -> dict[str, Any]:
        async def call() -> dict[str, Any]:
            prompt = build_prompt()
            options = GenOptions(model=self.params.steer_model, seed=self.params.seed, **self.settings.steer_options)
            value, result = await chat_json(self.ctx.llm, [{"role": "user", "content": prompt}], schema, options)
            # The decision as JSON, not the raw text: a reply the parser accepted may wrap it in
            # prose or a fence, and the steering SFT export trains on this field.
            reply = json.dumps(value, ensure_ascii=False)
            return {"prompt": prompt, "reply": reply, "value": value, "model": result.model, **_usage_now()}

        out = await self.ctx.step(key, call)
        self.calls.append(out)
        return out

    async def self_check(self, t: int, record: dict[str, Any]) -> dict[str, Any]:
        answer = record["answer"] if record["answer"] is not None else _shown(record["response"], False, 6000)
        code, attempts = None, 0
        for a in range(1, self.settings.check_attempts + 1):
            attempts = a

            async def write() -> dict[str, Any]:
                prompt = self.render("solve/selfcheck.j2", answer=answer)
                result = await self.ctx.llm.chat([{"role": "user", "content": prompt}], GenOptions(
                    max_tokens=self.settings.max_tokens, temperature=0.0, model=self.params.checker_model))
                return {"text": result.text, "model": result.model, **_usage_now()}

            out = await self.ctx.step(f"check/{t}/write/{a}", write)
            self.calls.append(out)
            code = extract_code(out["text"])
            if code:
                break
        if not code:
            return {"verdict": "no_code", "attempts": attempts, "code": None, "output": None, "run": None}
        run = await self.run(f"check/{t}/run", code)
        output = (run["stdout"] + ("\n" + run["stderr"] if run["stderr"].strip() else "")).strip()
        if run["timed_out"] or run["killed_reason"] or (run["exit_code"] != 0 and not run["stdout"].strip()):
            verdict = "error"
        elif len(output) > OUTPUT_SHOWN_CHARS:
            verdict = "unusable"  # the reference: "Check function does not work this round"
        elif re.search(r"\bcorrect\b", run["stdout"], re.I) and not re.search(
                r"\b(incorrect|not correct|wrong|fails?|invalid)\b", run["stdout"], re.I):
            verdict = "correct"
        else:
            verdict = "wrong"
        return {"verdict": verdict, "attempts": attempts, "code": code, "output": _shown(output, False, 4000), "run": run}

    def decision_turns(self, turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
        shown = []
        for n, t in enumerate(turns):
            check = t.get("self_check")
            shown.append({
                "index": t["index"], "mode": t["mode"], "guidance": t["guidance"], "answer": t["answer"],
                "is_last": n == len(turns) - 1, "response": _shown(t["response"], False, 6000),
                "execution": _run_line(t["execution"]) if t["execution"] else None,
                "symbolic": t["symbolic"]["summary"] if t["symbolic"] else None,
                "self_check": f"{check['verdict']}; checker output: {check['output'] or '(none)'}" if check else None,
            })
        return shown

    def instruction(self, mode: str, guidance: str) -> str:
        text = self.render(TEMPLATES[mode])
        return f"{text}\n\nGuidance: {guidance}" if guidance else text


# -- methods -----------------------------------------------------------------------------------------


async def _single(s: Solver, mode: str) -> dict[str, Any]:
    record, _ = await s.turn(0, "answer", mode, None, [], lambda: s.render(TEMPLATES[mode]), "answer/0",
                             run_code_in=mode == "code")
    return {"turns": [record], "stopped": "single", "steering": [], "initial_mode": None}


async def _code_text_sum(s: Solver) -> dict[str, Any]:
    text, _ = await s.turn(0, "text_attempt", "text", None, [], lambda: s.render(TEMPLATES["text"]), "answer/text",
                           run_code_in=False)
    code, _ = await s.turn(1, "code_attempt", "code", None, [], lambda: s.render(TEMPLATES["code"]), "answer/code",
                           run_code_in=True)
    code_output = execution_feedback(code["execution"], s.paper) if code["execution"] else "(the attempt had no code)"
    summary, _ = await s.turn(
        2, "summary", "code", None, [],
        lambda: s.render("solve/summarize.j2", text_response=text["response"], code_response=code["response"],
                         code_output=code_output),
        "answer/sum", run_code_in=True)
    return {"turns": [text, code, summary], "stopped": "single", "steering": [], "initial_mode": None}


async def _steer(s: Solver) -> dict[str, Any]:
    p = s.params
    choice = await s.steer("steer/0", lambda: s.render("solve/choose.j2"), CHOICE_SCHEMA)
    steering = [{"key": "steer/0", "prompt": choice["prompt"], "reply": choice["reply"]}]
    mode, initial = choice["value"]["mode"], choice["value"]["mode"]
    guidance = "" if s.paper else choice["value"]["guidance"].strip()
    user = lambda mode=mode, guidance=guidance: s.instruction(mode, guidance)  # noqa: E731
    history: list[dict[str, str]] = []
    turns: list[dict[str, Any]] = []
    stopped = "max_turns"
    for t in range(s.settings.max_turns + 1):
        await s.ctx.progress(t, s.settings.max_turns + 1, mode=mode)
        record, out = await s.turn(t, "answer", mode, guidance or None, history, user, f"answer/{t}", run_code_in=True)
        turns.append(record)
        history = [*history, *s.history_after(out, record)]
        if t == s.settings.max_turns:
            break
        if p.self_check:
            record["self_check"] = await s.self_check(t, record)
        other = "text" if mode == "code" else "code"
        shown = s.decision_turns(turns)
        decided = await s.steer(f"steer/{t + 1}", lambda: s.render(
            "solve/decide.j2", turns=shown, mode=mode, other=other, turns_left=s.settings.max_turns - t - 1),
            DECISION_SCHEMA)
        steering.append({"key": f"steer/{t + 1}", "prompt": decided["prompt"], "reply": decided["reply"]})
        value = decided["value"]
        action, guidance = value["action"], value["guidance"].strip()
        if action == "switch":
            mode = other
        record["decision"] = {"action": action, "mode": mode, "guidance": guidance}
        if action in ("return_answer", "stop"):
            stopped = "returned" if action == "return_answer" else "stopped"
            break
        if action == "switch":
            user = lambda mode=mode, guidance=guidance: s.instruction(mode, guidance)  # noqa: E731
        else:
            text = guidance or "Check your previous answer, correct any mistake and give the final answer again."
            user = lambda text=text: text  # noqa: E731
    return {"turns": turns, "stopped": stopped, "steering": steering, "initial_mode": initial}


async def run(ctx: JobContext, params: SolveParams) -> dict[str, Any]:
    if not isinstance(params, SolveParams):
        params = SolveParams.model_validate(params)
    s = Solver(ctx, params)
    if params.method in ("text", "code"):
        out = await _single(s, params.method)
    elif params.method == "code_text_sum":
        out = await _code_text_sum(s)
    else:
        out = await _steer(s)
    last = out["turns"][-1]
    candidates = last.get("_candidates", [])
    for t in out["turns"]:
        t.pop("_candidates", None)
    default = ctx.llm.model_name or "server default"
    models = {"task": params.task_model or default}
    if params.method == "steer":
        models.update(steer=params.steer_model or default, checker=params.checker_model or default)
    r = s.settings
    return {
        "question": params.question, "method": params.method, "answer": last["answer"],
        "answer_source": last["answer_source"], "candidates": candidates, "text": last["response"],
        "initial_mode": out["initial_mode"], "stopped": out["stopped"], "turns": out["turns"],
        "steering": out["steering"],
        "usage": {"model_calls": sum(c["calls"] for c in s.calls),
                  "prompt_tokens": sum(c["prompt_tokens"] for c in s.calls),
                  "completion_tokens": sum(c["completion_tokens"] for c in s.calls),
                  "code_runs": len(s.code_runs), "code_wall_ms": round(sum(c["wall_ms"] for c in s.code_runs), 1)},
        "models": models,
        "settings": {"max_turns": r.max_turns if params.method == "steer" else None, "temperature": r.temperature,
                     "max_tokens": r.max_tokens, "code_timeout_s": r.code_timeout_s, "answer_format": params.answer_format,
                     "check_attempts": r.check_attempts if params.method == "steer" else None},
        "protocol": protocol_record(ctx, params.protocol, s.differs, METHOD_TEMPLATES[params.method]),
    }


def result_scores(result: SolveResult) -> list[Score]:
    return [Score("answered", 1.0 if result.answer is not None else 0.0, {"turns": len(result.turns)})]


KIND = JobKind(
    name="solve",
    description="answer a question by text, by code run in the sandbox, or steered between them (CodeSteer)",
    params=SolveParams,
    result=SolveResult,
    run=run,
    version=1,
    view=ResultView(text="answer", transcript="turns"),
    scores=result_scores,
)
