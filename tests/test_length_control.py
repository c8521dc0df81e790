"""The length controller (agents/length_control.py) and `chat`'s length modes: request shapes of
prompt / mlt / controlled, MLT stripping and self-chosen MLTs, the controller's strategies
against scripted models that overshoot, undershoot, stall and loop, PM/FM in results, and the
AgentWrite decisions the controller owns. One run through the fake server over HTTP."""
from __future__ import annotations

import itertools
import re

import pytest
from pydantic import ValidationError

from agents import agentwrite, chat
from agents import length_control as lc
from agents.chat import ChatParams
from agents.context import JobContext, MemoryStepStore
from agents.kinds import InvalidParams, validate_params
from agents.length_target import given_demand, make_demand
from agents.llm.types import GenOptions, LLMBadRequest, LLMResult
from agents.settings import Settings
from agents.text import count_word_runs, count_words

QUESTION = "Explain how rivers shape valleys."
_ASKED = re.compile(r"(\d+) (?:more )?words")


def _letters(i: int) -> str:
    out = ""
    while True:
        out = chr(ord("a") + i % 26) + out
        i //= 26
        if not i:
            return out


class Scripted:
    """A model whose lengths are scripted. Answers by request shape:
    - "answer": the user turn asks for N words: writes factor x N words;
    - "continue": a prefilled answer (continue_final_message): writes cont_factor x the
      missing words (the user turn's N minus what the prefill has);
    - "chat_continue": the chat fallback ("Continue your answer ... about M more words"): M words;
    - "shorten": the rewrite prompt: shorten_factor x N words;
    - "mlt": a prefilled "[MLT:...]": mlt_reply;
    - "expand": the Extender's stage 1.
    Every word is unique (no accidental repeated n-grams), in sentences of `sentence` words.
    `loop_after`: the answer writes that many words, then repeats one sentence until max_tokens.
    A token is a word; max_tokens cuts the text (finish "length")."""

    model_name = "scripted"

    def __init__(self, factor=1.0, cont_factor=1.0, shorten_factor=1.0, sentence=8, loop_after=None,
                 refuse_prefill=False, mlt_reply=None, answers=None, context_window=32768, cont_words=None):
        self.factor, self.cont_factor, self.shorten_factor = factor, cont_factor, shorten_factor
        self.sentence, self.loop_after, self.refuse_prefill = sentence, loop_after, refuse_prefill
        self.mlt_reply, self.answers, self.cont_words = mlt_reply, list(answers or []), cont_words
        self.context_window = context_window
        self.calls: list[tuple[str, list[dict], GenOptions]] = []
        self._ids = itertools.count()

    def words(self, n: int) -> str:
        out, sentence = [], []
        for _ in range(max(0, n)):
            sentence.append(f"w{_letters(next(self._ids))}")
            if len(sentence) == self.sentence:
                out.append(" ".join(sentence) + ".")
                sentence = []
        if sentence:
            out.append(" ".join(sentence) + ".")
        return " ".join(out)

    def kind(self, messages, options) -> str:
        extra = options.extra_body or {}
        last = messages[-1]["content"]
        if extra.get("continue_final_message"):
            return "mlt" if last.startswith("[MLT:") else "continue"
        if "Continue your answer" in last:
            return "chat_continue"
        if "Rewrite the answer shorter" in last:
            return "shorten"
        if "Original outline" in last:
            return "expand"
        return "answer"

    async def chat(self, messages, options=None):
        options = options or GenOptions()
        kind = self.kind(messages, options)
        self.calls.append((kind, [dict(m) for m in messages], options))
        users = [m["content"] for m in messages if m["role"] == "user"]
        found = _ASKED.findall(users[-1]) if users else []
        asked = int(found[-1]) if found else 100
        if kind == "continue" and self.refuse_prefill:
            raise LLMBadRequest("HTTP 400: continue_final_message is not supported", status=400)
        if kind == "answer" and self.answers:
            text = self.answers.pop(0)
        elif kind == "answer" and self.loop_after is not None:
            text = self.words(self.loop_after) + " " + " ".join(["The river cuts the valley deeper every year."] * 400)
        elif kind == "answer":
            text = self.words(round(asked * self.factor))
        elif kind == "continue":
            have = count_words(messages[-1]["content"])
            n = self.cont_words if self.cont_words is not None else round(max(0, asked - have) * self.cont_factor)
            text = (" " + self.words(n)) if n else ""
        elif kind == "chat_continue":
            text = self.words(asked)
        elif kind == "shorten":
            text = self.words(round(asked * self.shorten_factor))
        elif kind == "mlt":
            text = self.mlt_reply if self.mlt_reply is not None else self.words(100)
        else:  # the Extender's stage 1: an enriched first half
            text = "\n\n".join(self.words(40) for _ in range(3))
        finish = "stop"
        tokens = text.split()
        if options.max_tokens is not None and len(tokens) > options.max_tokens:
            text, finish = " ".join(tokens[:options.max_tokens]), "length"
        return LLMResult(text=text, finish_reason=finish, prompt_tokens=10, completion_tokens=len(text.split()),
                         latency_s=0.0, model=self.model_name)

    async def count_tokens(self, text):
        return len(text.split())

    def kinds(self):
        return [k for k, _, _ in self.calls]


def _ctx(llm, store=None):
    return JobContext(llm, store=store or MemoryStepStore(), settings=Settings(max_target_words=50_000))


async def _chat(llm, store=None, **params):
    params.setdefault("messages", [{"role": "user", "content": QUESTION}])
    ctx = _ctx(llm, store)
    result = await chat.run(ctx, ChatParams.model_validate(params))
    chat.KIND.validate_result(result)  # the result model describes it
    return result, ctx


# -- request shapes ----------------------------------------------------------------------------------


async def test_prompt_mode_states_rulers_baseline_sentence_in_one_call():
    llm = Scripted()
    result, ctx = await _chat(llm, target_words=150, length_mode="prompt")
    (kind, messages, options), = llm.calls
    assert messages[-1]["content"] == f"{QUESTION}\nThe response should have a word count of 150 words."
    assert options.max_tokens == lc.BASELINE_MAX_TOKENS and options.extra_body is None
    assert set(ctx.store.outputs) == {"chat"}
    assert (result["strategy"], result["length_mode"], result["calls"]) == ("single", "prompt", 1)
    llm = Scripted()
    await _chat(llm, target_words=">800", protocol="paper")
    assert llm.calls[0][1][-1]["content"].endswith("a word count of more than 800 words.")


async def test_mlt_mode_prefills_the_token_stops_on_the_next_and_strips_every_mlt():
    llm = Scripted(mlt_reply="Rivers cut valleys. [MLT:>800] They widen them. [MLT:30]")
    result, _ = await _chat(llm, target_words=150, length_mode="mlt", counter="runs")
    (kind, messages, options), = llm.calls
    assert kind == "mlt" and messages[-1] == {"role": "assistant", "content": "[MLT:150]"}
    assert messages[-2]["content"] == QUESTION  # no length sentence: the MLT is the only signal
    assert options.extra_body == {**lc.PREFILL_FLAGS, "skip_special_tokens": False}
    assert options.stop == ["[MLT:"]
    assert result["text"] == "Rivers cut valleys.  They widen them." or "[MLT" not in result["text"]
    assert "[MLT" not in result["text"]
    assert (result["mlt"], result["mlt_source"], result["mlt_placed"], result["tlg_target"]) == (
        "150", "target", "prefill", "150")
    assert result["PM"] is False and result["word_count"] == count_word_runs(result["text"])


async def test_mlt_maps_targets_and_over_800():
    llm = Scripted()
    await _chat(llm, target_words=2000, length_mode="mlt")
    assert llm.calls[0][1][-1]["content"] == "[MLT:>800]"
    llm = Scripted()
    await _chat(llm, target_words=120, length_mode="mlt")
    assert llm.calls[0][1][-1]["content"] == "[MLT:150]"


async def test_without_a_target_the_model_chooses_its_mlt():
    body = " ".join(f"w{_letters(i)}" for i in range(900)) + "."
    llm = Scripted(answers=[f"[MLT:>800]{body}"])
    result, _ = await _chat(llm, length_mode="mlt", counter="runs")
    (kind, messages, options), = llm.calls
    assert kind == "answer" and messages[-1]["role"] == "user" and options.stop is None
    assert options.extra_body == {"skip_special_tokens": False}
    assert (result["mlt"], result["mlt_source"], result["tlg_target"]) == (">800", "model", ">800")
    assert result["text"] == body and result["PM"] is True and result["FM"] is True
    assert result["target_words"] is None and result["within_10pct"] is None


async def test_mlt_falls_back_to_stating_the_length_when_the_server_refuses_a_prefill():
    class Refusing(Scripted):
        async def chat(self, messages, options=None):
            if (options.extra_body or {}).get("continue_final_message"):
                raise LLMBadRequest("HTTP 400: no", status=400)
            return await super().chat(messages, options)

    llm = Refusing()
    result, _ = await _chat(llm, target_words=50, length_mode="mlt")
    assert result["mlt_placed"] == "prompt"
    assert llm.calls[-1][1][-1]["content"].endswith("a word count of 50 words.")


async def test_controlled_is_the_default_with_a_target_and_states_the_length():
    llm = Scripted()
    result, ctx = await _chat(llm, target_words=150)
    assert result["length_mode"] == "controlled" and result["strategy"] == "single"
    assert llm.calls[0][1][-1]["content"] == f"{QUESTION}\nThe response should have a word count of 150 words."
    assert set(ctx.store.outputs) == {"answer/1"}
    assert result["window"] == {"low": 131, "high": 170}  # the PM interval of a TLG target
    assert result["PM"] and result["FM"] and result["passes_filters"]
    assert result["filters"] == {"repeated_ngram": False, "ends_at_sentence_end": True}
    assert result["length_demand"]["source"] == "given" and result["target_source"] == "given"


# -- the controller's strategies ------------------------------------------------------------------


async def test_an_overshooting_model_is_cut_at_a_sentence_end():
    llm = Scripted(factor=2.0)
    result, _ = await _chat(llm, target_words=300)
    assert result["strategy"] == "trimmed" and result["calls"] == 1
    assert 281 <= result["word_count"] <= 320 and result["text"].endswith(".")
    # max_tokens bounded the overshoot: 1.25 x the aim, with headroom.
    assert llm.calls[0][2].max_tokens == lc.tokens_for_words(300 * lc.FIRST_ANSWER_SLACK, "en")


async def test_an_undershooting_model_is_continued_from_a_prefilled_answer():
    llm = Scripted(factor=0.5)
    result, ctx = await _chat(llm, target_words=500)
    assert llm.kinds() == ["answer", "continue"] and set(ctx.store.outputs) == {"answer/1", "continue/2"}
    kept = llm.calls[1][1][-1]
    assert kept["role"] == "assistant" and count_words(kept["content"]) == 250 and kept["content"].endswith(".\n\n")
    assert llm.calls[1][2].extra_body == lc.PREFILL_FLAGS
    assert result["strategy"] == "continued" and 450 <= result["word_count"] <= 550
    assert [a["action"] for a in result["attempts"]] == ["answer", "continue"]


async def test_continuing_asks_by_chat_when_the_server_refuses_a_prefill():
    llm = Scripted(factor=0.5, refuse_prefill=True)
    result, _ = await _chat(llm, target_words=500)
    assert llm.kinds() == ["answer", "continue", "chat_continue"]
    assert "about 250 more words" in llm.calls[-1][1][-1]["content"]
    assert result["strategy"] == "continued" and result["within_10pct"]


async def test_a_continuation_that_overshoots_is_cut():
    llm = Scripted(factor=0.5, cont_factor=2.0)
    result, _ = await _chat(llm, target_words=400)
    assert result["strategy"] == "trimmed" and result["within_10pct"] and result["calls"] == 2


async def test_short_targets_rewrite_when_no_sentence_end_lands_in_the_window():
    # 25-word sentences: no cut of a 40-word answer lands in (0, 20] for a 10-word target.
    llm = Scripted(factor=4.0, sentence=25, shorten_factor=1.0)
    result, ctx = await _chat(llm, target_words=10, counter="runs")
    assert llm.kinds() == ["answer", "shorten"] and "shorten/2" in ctx.store.outputs
    assert result["strategy"] == "rewritten" and result["PM"] and result["word_count"] == 10


async def test_a_loop_is_cut_away_and_the_rest_continued():
    llm = Scripted(loop_after=120)
    result, _ = await _chat(llm, target_words=300)
    first = result["attempts"][0]
    assert first["looped"] and first["words"] <= 120 + 8  # one round of the loop is kept, no repetition
    assert llm.kinds()[:2] == ["answer", "continue"]
    assert llm.calls[1][2].repetition_penalty == lc.LOOP_REPETITION_PENALTY  # after a loop
    assert result["passes_filters"] and not result["filters"]["repeated_ngram"]
    assert 281 <= result["word_count"] <= 320


async def test_a_loop_that_leaves_too_little_is_regenerated():
    looped = "Rivers flow. " + " ".join(["The river cuts the valley deeper every single year."] * 100)
    llm = Scripted(answers=[looped])
    result, ctx = await _chat(llm, target_words=150, temperature=0.0)
    assert llm.kinds()[:2] == ["answer", "answer"] and "answer/2" in ctx.store.outputs
    regenerated = llm.calls[1][2]
    assert regenerated.temperature >= 0.7 and regenerated.repetition_penalty == lc.LOOP_REPETITION_PENALTY
    assert result["passes_filters"] and result["PM"]


async def test_stalled_continuations_harden_then_ask_anew_then_extend():
    words = Scripted(sentence=10).words
    llm = Scripted(answers=[words(150), words(100)], cont_words=0)
    result, ctx = await _chat(llm, target_words=500, max_attempts=7)
    assert llm.kinds()[:4] == ["answer", "continue", "continue", "answer"]
    # Each continuation opens a new paragraph after the draft; the second is hardened.
    assert all(llm.calls[i][1][-1]["content"].endswith(".\n\n") for i in (1, 2))
    assert llm.calls[1][2].repetition_penalty is None
    assert llm.calls[2][2].repetition_penalty == lc.LOOP_REPETITION_PENALTY and llm.calls[2][2].temperature >= 0.7
    # Asked anew for more, in the ratio the draft fell short by (500 x 500 / 150), at most 3x.
    assert llm.calls[3][1][-1]["content"].endswith("a word count of 1500 words.") and "reask/4" in ctx.store.outputs
    assert "extend/expand/5" in ctx.store.outputs and "extend/continue/5" in ctx.store.outputs
    assert [a["action"] for a in result["attempts"]] == ["answer", "continue", "continue", "reask", "extend"]
    assert result["calls"] <= 7


async def test_asking_anew_for_more_gets_a_small_model_there():
    words = Scripted(sentence=10).words
    llm = Scripted(answers=[words(50), words(130)], cont_words=0)
    result, _ = await _chat(llm, target_words=80)
    assert [a["action"] for a in result["attempts"]] == ["answer", "continue", "continue", "reask"]
    assert llm.calls[3][1][-1]["content"].endswith("a word count of 128 words.")
    assert result["strategy"] == "trimmed" and result["PM"]


async def test_the_number_of_calls_is_bounded():
    llm = Scripted(factor=0.1, cont_words=1)
    result, _ = await _chat(llm, target_words=700, max_attempts=4)
    assert result["calls"] <= 4 and len(llm.calls) <= 5  # an extension is two calls
    assert result["within_20pct"] is False  # reported, not hidden


async def test_beyond_one_call_it_plans_sections():
    from tests.test_agentwrite import ScriptedWriter

    llm = ScriptedWriter(plan_words=(700, 700, 600))
    result, ctx = await _chat(llm, target_words=2000, single_call_words=1500)
    assert result["strategy"] == "sections" and result["sections"] == 3
    assert {"plan", "section/1", "section/2", "section/3"} <= set(ctx.store.outputs)
    assert result["within_10pct"] and result["tlg_target"] == ">800" and result["PM"]


async def test_a_resumed_answer_replays_exactly():
    llm = Scripted(factor=0.5)
    first, ctx = await _chat(llm, target_words=500)
    calls = len(llm.calls)
    again, _ = await _chat(llm, store=ctx.store, target_words=500)
    assert again == first and len(llm.calls) == calls


# -- results ------------------------------------------------------------------------------------------


def test_goals_and_windows():
    assert lc.goal_for(given_demand(150), "150") == lc.Goal(150, 131, 170, "150")
    assert lc.goal_for(given_demand(120)) == lc.Goal(120, 108, 132, None)
    over = lc.goal_for(make_demand("at_least", 800), ">800")
    assert (over.aim, over.low, over.high) == (889, 801, 977)
    assert lc.goal_for(given_demand(1000), ">800") == lc.Goal(1000, 900, 1100, ">800")


def test_length_outcome_reports_pm_fm_and_filters():
    text = " ".join(f"w{_letters(i)}" for i in range(160)) + "."
    out = lc.length_outcome(text, "runs", "en", 150, "150")
    assert (out["word_count"], out["PM"], out["FM"], out["within_10pct"]) == (160, True, True, True)
    out = lc.length_outcome(text, "words", "en", 100, None)
    assert out["PM"] is None and out["within_20pct"] is False
    looped = " ".join(["one two three four five six seven eight nine ten."] * 3)
    out = lc.length_outcome(looped, "words", "en", 30, "30")
    assert out["passes_filters"] is False and out["filters"]["repeated_ngram"]
    assert lc.length_outcome("It was", "words", "en", 2, None)["filters"]["ends_at_sentence_end"] is False


def test_loops_are_found_and_cut_away():
    text = "Rivers flow downhill. They carve valleys. " + " ".join(["The river cuts the valley deeper every year."] * 5)
    head, looped = lc.without_loop(text, "en")
    assert looped and head.startswith("Rivers flow downhill.") and head.endswith(".")
    assert head.count("The river cuts") == 1
    assert lc.without_loop("No loop here.", "en") == ("No loop here.", False)
    zh = "河流冲刷山谷。" + "河水每年都把山谷冲得更深一些。" * 4
    head, looped = lc.without_loop(zh, "zh")
    assert looped and head.endswith("。") and head.count("河水") == 1


def test_clause_cuts_for_sentences_longer_than_the_window():
    text = ("It began with the first bicycle in 1817, but it was not until the safety bicycle of the 1880s, "
            "with its chain and equal wheels, that cycling spread.")
    assert lc.cut_into_window(text, 1, 7, 5) is None
    assert lc.cut_at_clause(text, 1, 10, 10) == "It began with the first bicycle in 1817."
    assert lc.cut_at_clause(text, 30, 40, 35) is None
    assert lc.cut_at_clause("河流冲刷山谷，形成了深深的峡谷，然后流向大海。", 3, 8, 6, "zh") == "河流冲刷山谷。"


def test_default_attempts_grow_with_the_aim():
    assert [lc.max_attempts_for(a) for a in (10, 300, 500, 700, 1500)] == [6, 6, 8, 9, 14]


def test_cut_into_window():
    text = " ".join(f"w{i}" if i % 10 else f"w{i}." for i in range(1, 101))  # 10-word sentences
    cut = lc.cut_into_window(text, 41, 60, 50, count_word_runs)
    assert cut.endswith("w50.") and count_word_runs(cut) == 50
    assert lc.cut_into_window(text, 41, 49, 45, count_word_runs) is None


# -- params -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("params,field", [
    ({"target_words": 150, "protocol": "paper", "length_mode": "controlled"}, "paper"),
    ({"target_words": 150, "json_schema": {"type": "object"}}, "json_schema"),
    ({"length_mode": "controlled"}, "target_words"),
    ({"target_words": 0}, "target_words"),
    ({"target_words": "about 800"}, "target_words"),
    ({"counter": "tokens", "target_words": 10}, "counter"),
])
def test_bad_length_params(params, field):
    body = {"messages": [{"role": "user", "content": QUESTION}], **params}
    with pytest.raises(InvalidParams) as err:
        validate_params("chat", body, Settings())
    assert field in str(err.value)


def test_modes_resolve():
    def mode(**p):
        return ChatParams(messages=[{"role": "user", "content": QUESTION + " In about 100 words."}], **p) \
            .resolved_length_mode

    assert mode() is None and mode(target_words=10) == "controlled" and mode(length_mode="mlt") == "mlt"
    assert mode(target_words=10, protocol="paper") == "prompt" and mode(length_mode="controlled") == "controlled"
    with pytest.raises(ValidationError):
        ChatParams(messages=[{"role": "user", "content": QUESTION}], target_words=10, protocol="paper",
                   length_mode="mlt")


async def test_a_length_the_message_states_is_read_as_a_demand():
    llm = Scripted()
    result, _ = await _chat(llm, messages=[{"role": "user", "content": "Describe rivers in less than 200 words."}],
                            length_mode="controlled")
    assert result["target_source"] == "message" and result["target_words"] == 200
    assert result["length_demand"]["kind"] == "at_most" and result["aim"] == 181
    assert result["window"]["high"] <= 200 and result["within_10pct"]


# -- AgentWrite's section decisions are the controller's -----------------------------------------------


def test_agentwrite_uses_the_controllers_decisions():
    assert (agentwrite.CONTINUE_BELOW, agentwrite.TRIM_ABOVE, agentwrite.TRIM_CUT_ABOVE) == (0.9, 1.5, 1.1)
    assert agentwrite.CONTINUE_BELOW is lc.CONTINUE_BELOW and agentwrite.TOKENS_PER_UNIT is lc.TOKENS_PER_UNIT
    assert lc.should_continue(89, 100) and not lc.should_continue(90, 100)
    assert lc.should_trim(151, 100) and not lc.should_trim(150, 100)
    assert lc.should_trim(111, 100, truncated=True) and not lc.should_trim(110, 100, truncated=True)


async def test_grow_is_agentwrites_section_loop(monkeypatch):
    from tests.test_agentwrite import ScriptedWriter

    seen = []
    real = lc.grow

    async def spy(call, budget, **kw):
        grown = await real(call, budget, **kw)
        seen.append((budget, grown.calls))
        return grown

    monkeypatch.setattr(lc, "grow", spy)
    llm = ScriptedWriter(plan_words=(1000, 1000), natural=600)
    result = await agentwrite.run(_ctx(llm), agentwrite.WriteParams(instruction="Write", target_words=2000))
    assert seen == [(1000, 2), (1000, 2)] and result["word_count"] == 2000


# -- over HTTP --------------------------------------------------------------------------------------------


async def test_every_mode_through_the_fake_server(fake_llm):
    from agents.llm.openai_pool import OpenAIPool

    pool = OpenAIPool([fake_llm.base_url], context_window=8192)
    try:
        for mode in ("prompt", "mlt", "controlled"):
            params = ChatParams(messages=[{"role": "user", "content": QUESTION}], target_words=300,
                                length_mode=mode, counter="runs", temperature=0.0)
            result = await chat.run(JobContext(pool), params)
            chat.KIND.validate_result(result)
            assert result["length_mode"] == mode and "[MLT" not in result["text"]
            if mode == "controlled":
                assert result["PM"] and result["passes_filters"]
    finally:
        await pool.aclose()


def test_a_chat_job_with_target_words_reports_pm_and_fm_over_the_api(tmp_path, fake_llm):
    import httpx

    from tests.api_server import running_api, wait_for_job
    from tests.db_fixtures import sqlite_url

    settings = Settings(longform_data_dir=str(tmp_path), database_url=sqlite_url(tmp_path),
                        llm_endpoints=fake_llm.base_url)
    with running_api(settings) as url, httpx.Client(base_url=url, timeout=30) as api:
        body = {"kind": "chat", "params": {"messages": [{"role": "user", "content": QUESTION}], "target_words": 150,
                                           "counter": "runs"}}
        job = wait_for_job(api, api.post("/v1/jobs", json=body).json()["id"])
        assert job["status"] == "succeeded", job
        result = job["result"]
        assert result["length_mode"] == "controlled" and result["tlg_target"] == "150"
        assert result["PM"] is not None and result["FM"] is not None and result["counter"] == "runs"
        steps = api.get(f"/v1/jobs/{job['id']}/steps").json()["items"]
        assert [s["key"] for s in steps][0] == "answer/1"


async def test_a_short_target_is_cut_at_a_clause_when_no_sentence_end_fits():
    answer = ("The bicycle began as a wooden running machine in 1817, and decades of tinkering with cranks, "
              "chains and tyres turned it into the safety bicycle that spread across the world by 1890.")
    llm = Scripted(answers=[answer])
    result, _ = await _chat(llm, target_words=10, counter="runs")
    assert result["text"] == "The bicycle began as a wooden running machine in 1817."
    assert result["strategy"] == "trimmed" and result["calls"] == 1 and result["PM"]
