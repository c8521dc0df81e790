"""Self-Lengthen (`lengthen`): the split, the two stages, the filters, acceptance, the paper gate,
controlled length, resume and bad input (scripted in-process model), then one run through the
fake vLLM server over HTTP (its figures are plumbing: its lengths are its own constants)."""
from __future__ import annotations

import pytest

from agents import length_control as lc
from agents import selflengthen
from agents.context import JobContext, MemoryStepStore
from agents.kinds import InvalidParams, validate_params
from agents.llm.types import GenOptions, LLMBadRequest, LLMResult
from agents.selflengthen import LengthenParams
from agents.settings import Settings
from agents.text import count_words

INSTRUCTION = "Write an essay about rivers."


def _letters(i: int) -> str:
    out = ""
    while True:
        out = chr(ord("a") + i % 26) + out
        i //= 26
        if not i:
            return out


def para(n: int, tag: str, end: str = ".") -> str:
    """A paragraph of `n` distinct words (letters only, so both counters see n) ending in `end`."""
    return " ".join(f"{tag}{_letters(i)}" for i in range(n)) + end


def paras(sizes: list[int], tag: str) -> str:
    return "\n\n".join(para(n, f"{tag}{_letters(k)}x") for k, n in enumerate(sizes))


class Scripted:
    """Answers by request shape: the instruction alone (Generator), the extend prompt (Stage 1),
    a prefilled answer (Stage 2, continue_final_message), or the chat fallback's last user turn.
    Each kind's replies come from a list (the last one repeats); `fail_at` raises on that call."""

    model_name = "scripted"

    def __init__(self, initial=None, expand=None, cont=None, chat=None, context_window=32768, fail_at=None,
                 refuse_prefill=False, models=("scripted",), answer_as=None):
        self.replies = {"initial": list(initial or [paras([30, 30, 30, 30], "ini")]),
                        "expand": list(expand or [paras([40, 40, 40], "exp")]),
                        "continue": list(cont or [paras([60, 60], "con")]),
                        "chat": list(chat or [paras([60, 60], "cht")])}
        self.context_window = context_window
        self.fail_at = fail_at
        self.refuse_prefill = refuse_prefill
        self.models = set(models)
        self.answer_as = answer_as
        self.calls: list[tuple[str, list[dict], GenOptions]] = []
        self.used = {k: 0 for k in self.replies}

    def kind(self, messages, options) -> str:
        if (options.extra_body or {}).get("continue_final_message"):
            return "continue"
        if messages[-1]["role"] == "user" and len(messages) > 1:
            return "chat"
        prompt = messages[-1]["content"]
        return "expand" if "Original outline" in prompt or "原始大纲" in prompt else "initial"

    async def chat(self, messages, options=None):
        options = options or GenOptions()
        if options.model and options.model not in self.models:
            raise LLMBadRequest(f"HTTP 404: The model `{options.model}` does not exist.", status=404)
        if options.max_tokens == 1:  # a model check
            return LLMResult(text="H", finish_reason="length", prompt_tokens=1, completion_tokens=1, latency_s=0.0,
                             model=self.answer_as or options.model or self.model_name)
        kind = self.kind(messages, options)
        self.calls.append((kind, [dict(m) for m in messages], options))
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise RuntimeError("the worker died")
        if kind == "continue" and self.refuse_prefill:
            raise LLMBadRequest("HTTP 400: Unrecognized request argument supplied: continue_final_message", status=400)
        replies = self.replies[kind]
        text = replies[min(self.used[kind], len(replies) - 1)]
        self.used[kind] += 1
        return LLMResult(text=text, finish_reason="stop", prompt_tokens=10, completion_tokens=len(text.split()),
                         latency_s=0.0, model=self.model_name)

    async def count_tokens(self, text):
        return len(text.split())

    async def aclose(self):
        pass

    def of(self, kind):
        return [(messages, options) for k, messages, options in self.calls if k == kind]


def _ctx(llm, store=None, **settings):
    return JobContext(llm, store=store or MemoryStepStore(), settings=Settings(max_target_words=50_000, **settings))


async def _run(llm, store=None, **params):
    params.setdefault("instruction", INSTRUCTION)
    result = await selflengthen.run(_ctx(llm, store), LengthenParams(**params))
    selflengthen.KIND.validate_result(result)
    return result


# -- the pieces ----------------------------------------------------------------------------------------


def test_split_on_blank_lines_else_on_single_newlines():
    assert lc.split_pieces("a\n\nb\n\nc") == (["a", "b", "c"], "blank_lines")
    # Two blank-line pieces or fewer: single newlines (the reference's rule, empty pieces and all).
    assert lc.split_pieces("a\n\nb") == (["a", "", "b"], "lines")
    assert lc.split_pieces("one\ntwo\nthree\nfour") == (["one", "two", "three", "four"], "lines")
    assert lc.keep_two_thirds("p1\n\np2\n\np3\n\np4\n\np5") == ("p1\n\np2\n\np3", 3, 5)
    assert lc.keep_two_thirds("only one") == ("", 0, 1)


def test_filters_per_language():
    ok = paras([20, 20], "ok")
    assert lc.failing_filter(ok, "en") is None
    assert lc.failing_filter("   ", "en") == "empty"
    assert lc.failing_filter(para(20, "cut", end=""), "en") == "terminal_punctuation"
    assert lc.failing_filter(para(20, "q", end='"'), "en") is None  # a closing quote ends it
    # Meta-talk only in the first 2 or last 3 lines.
    assert lc.failing_filter("Here is the revised text.\n\n" + ok, "en") == "meta_talk"
    assert lc.failing_filter(ok + "\n\nI hope this version helps.", "en") == "meta_talk"
    middle = "\n\n".join([para(20, "aa"), para(20, "bb"), "This response is good.", para(20, "cc"), para(20, "dd")])
    assert lc.failing_filter(middle, "en") is None
    # A 10-word n-gram seen twice.
    loop = " ".join(["the river runs to the sea and back again today"] * 2) + " more."
    assert lc.failing_filter(loop, "en") == "repetition"
    nine = "one two three four five six seven eight nine"
    assert lc.failing_filter(f"{nine} alpha. {nine} beta.", "en") is None
    # Chinese: Chinese terminal marks; 13 tokens of the CJK-aware tokenization.
    assert lc.cjk_tokens("中文abc def中。") == ["中", "文", "abc def", "中", "。"]
    assert lc.failing_filter("河流穿过城市。", "zh") is None
    assert lc.failing_filter("河流穿过城市.", "zh") == "terminal_punctuation"
    assert lc.failing_filter("河流穿过城市，一直流到大海边上。" * 2, "zh") == "repetition"
    assert lc.failing_filter("这份修改后的response很好。", "zh") is None  # no meta-talk check in Chinese


def test_cutting_tools_moved_to_the_controller():
    from agents import agentwrite

    assert agentwrite.trim_to_budget is lc.trim_to_budget and agentwrite.cut_to_sentence_end is lc.cut_to_sentence_end
    text = paras([100, 100, 100, 100], "t")
    assert count_words(lc.trim_to_target(text, 210)) == 200  # a paragraph end within 10%
    one = " ".join(para(10, f"s{_letters(k)}x") for k in range(30))  # one paragraph of 30 sentences
    assert count_words(lc.trim_to_target(one, 97)) == 100  # the nearest sentence end
    assert lc.trim_to_target(text, 380) == text  # not over by more than 10%
    assert lc.length_report(108, 100) == {"within_10pct": True, "within_20pct": True}
    assert lc.length_report(85, 100) == {"within_10pct": False, "within_20pct": True}


# -- one micro-iteration ---------------------------------------------------------------------------


async def test_micro_iteration_expands_the_first_half_and_continues_from_the_kept_part():
    initial = paras([30, 31, 32, 33, 34], "ini")  # 5 paragraphs: first half = 2
    expansion = paras([40, 41, 42, 43, 44, 45], "exp")  # 6 paragraphs: keep 4
    llm = Scripted(expand=[expansion], cont=[paras([100, 100], "con")])
    result = await _run(llm, text=initial, micro_iterations=1)

    [(stage1, options1)] = llm.of("expand")
    prompt = stage1[-1]["content"]
    pieces = initial.split("\n\n")
    assert INSTRUCTION in prompt and pieces[0] in prompt and pieces[1] in prompt
    assert not any(p in prompt for p in pieces[2:])  # only the first half
    [(stage2, options2)] = llm.of("continue")
    kept = "\n\n".join(expansion.split("\n\n")[:4])
    assert stage2[-1] == {"role": "assistant", "content": kept}  # the answer's start
    assert stage2[0]["role"] == "user" and initial in stage2[0]["content"]  # the whole current text
    assert options2.extra_body == {"continue_final_message": True, "add_generation_prompt": False}
    it = result["iterations"][0]
    assert it["candidate"] == kept + "\n\n" + paras([100, 100], "con")
    assert (it["pieces"], it["first_half_pieces"], it["expansion_paragraphs"], it["kept_paragraphs"]) == (5, 2, 6, 4)
    assert it["kept_words"] == 40 + 41 + 42 + 43 and it["words"] == it["kept_words"] + 200
    assert it["accepted"] and it["reason"] is None and it["continued_with"] == "prefill"
    assert result["text"] == it["candidate"] and result["continuation"] == "prefill"
    # The reference's sampling; controlled: no stop strings, max_tokens what the context leaves.
    for o in (options1, options2):
        assert (o.temperature, o.top_p, o.top_k, o.repetition_penalty, o.stop) == (0.7, 0.8, 20, 1.1, None)
        assert o.max_tokens > 16384


async def test_stage_two_falls_back_to_chat_when_the_server_refuses_a_prefill():
    llm = Scripted(refuse_prefill=True)
    result = await _run(llm, text=paras([30] * 4, "ini"), micro_iterations=1)
    [(messages, options)] = llm.of("chat")
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert "Go on with the enriched text" in messages[-1]["content"] and options.extra_body is None
    it = result["iterations"][0]
    assert it["continued_with"] == "chat" and "continue_final_message" in it["fallback_reason"]
    assert result["continuation"] == "chat"
    assert any(d.startswith("stage 2: the remainder asked for by chat") for d in result["protocol"]["differs_from_paper"])
    assert "selflengthen/continue.j2" in result["protocol"]["prompts"]
    with pytest.raises(LLMBadRequest):  # asked for a prefill only: no fallback
        await _run(Scripted(refuse_prefill=True), text=paras([30] * 4, "ini"), micro_iterations=1,
                   continuation="prefill")


# -- acceptance ---------------------------------------------------------------------------------------


async def test_candidates_are_rejected_by_each_filter_and_when_not_longer():
    initial = paras([30, 30, 30, 30], "ini")  # 120 words
    kept = paras([40, 40], "exp")  # 2 of the 3 expansion paragraphs: 80 words
    loop = " ".join(["the river runs to the sea and back again today"] * 3) + "."
    llm = Scripted(cont=[
        para(60, "noend", end=""),  # terminal_punctuation
        "Here is the revised and longer text, paragraph by paragraph.\n\n" + paras([60], "meta"),  # meta_talk
        loop,  # repetition
        para(20, "short"),  # 80 + 20 = 100 < 120: not longer
        paras([60, 60], "good"),  # accepted: 200
    ])
    result = await _run(llm, text=initial, micro_iterations=5)
    reasons = [it["reason"] for it in result["iterations"]]
    assert reasons == ["terminal_punctuation", "meta_talk", "repetition", "not longer", None]
    assert [it["accepted"] for it in result["iterations"]] == [False, False, False, False, True]
    assert result["words_per_iteration"] == [120, 120, 120, 120, 120, 200]
    # A rejected candidate leaves the current text as it was: each round extends the initial.
    assert all(initial in messages[0]["content"] for messages, _ in llm.of("continue"))
    assert result["text"] == kept + "\n\n" + paras([60, 60], "good")
    assert result["gate"] == {"required_ratio": 1.2, "ratio": round(200 / 120, 4), "passed": True, "enforced": False,
                              "attempts": 1}


async def test_an_accepted_candidate_is_the_next_text_to_extend():
    initial = paras([30, 30, 30, 30], "ini")
    llm = Scripted(cont=[paras([60, 60], "one"), paras([90, 90], "two")])
    result = await _run(llm, text=initial, micro_iterations=2)
    first = result["iterations"][0]["candidate"]
    second_call = llm.of("continue")[1][0]
    assert first in second_call[0]["content"] and initial not in second_call[0]["content"]
    assert result["words_per_iteration"] == [120, 200, 260]


async def test_the_generator_answers_again_while_its_answer_fails_the_filters():
    llm = Scripted(initial=[para(50, "a", end=""), "Sure! Here is my response.\n\n" + paras([50], "b"),
                            paras([40, 40, 40], "c")])
    result = await _run(llm, micro_iterations=1)
    [first] = llm.of("initial")[:1]
    assert first[0] == [{"role": "user", "content": INSTRUCTION}]  # the instruction alone
    assert [(a["attempt"], a["passed"], a["reason"]) for a in result["initial"]["attempts"]] == [
        (1, False, "terminal_punctuation"), (2, False, "meta_talk"), (3, True, None)]
    assert result["initial"]["source"] == "generator" and result["initial"]["words"] == 120

    store = MemoryStepStore()
    with pytest.raises(ValueError, match="failed the quality filters 3 times"):
        await _run(Scripted(initial=[para(50, "a", end="")]), store=store, max_initial_attempts=3)
    assert sorted(store.outputs) == ["initial/1", "initial/2", "initial/3"]


# -- protocols -----------------------------------------------------------------------------------------


async def test_paper_runs_three_rounds_with_the_references_settings_and_passes_the_gate():
    llm = Scripted(context_window=100_000)
    result = await _run(llm, protocol="paper")
    assert len(llm.of("expand")) == len(llm.of("continue")) == 3
    assert result["counter"] == "selflengthen" and result["gate"]["enforced"] and result["gate"]["passed"]
    for _, _, o in llm.calls:
        assert o.max_tokens == 16384 and o.stop[:6] == lc.PAPER_STOP
    assert llm.of("continue")[0][1].stop == lc.PAPER_COMPLETION_STOP
    record = result["protocol"]
    assert record["name"] == "paper" and record["differs_from_paper"] == []
    assert record["prompts"] == {"selflengthen/extend_response.txt": "bundled"}
    assert record["comparable_to_paper"] is False  # Longform's wording, not the reference's file


async def test_paper_retries_a_failed_gate_with_fresh_rounds_from_the_initial_answer():
    # Attempt 1's three candidates are too short; attempt 2 starts again from the initial answer.
    initial = paras([30, 30, 30, 30], "ini")
    llm = Scripted(cont=[para(30, "short")] * 3 + [paras([60, 60], "good")])
    result = await _run(llm, protocol="paper", text=initial, seed=7)
    assert result["gate"]["passed"] and result["gate"]["attempts"] == 2
    assert [(it["attempt"], it["iteration"], it["accepted"]) for it in result["iterations"]][2:5] == [
        (1, 3, False), (2, 1, True), (2, 2, False)]  # the same reply again: not longer
    assert initial in llm.of("continue")[3][0][0]["content"]  # attempt 2 extends the initial answer again
    seeds = [o.seed for _, o in llm.of("continue")]
    assert len(set(seeds)) == len(seeds)  # fresh samples: every step its own seed
    assert result["words_per_iteration"][0] == 120 and len(result["words_per_iteration"]) == 4
    assert "extension_attempts" not in " ".join(result["protocol"]["differs_from_paper"])


async def test_paper_fills_an_overlaid_reference_prompt_file_as_the_reference_does(tmp_path):
    (tmp_path / "selflengthen").mkdir()
    (tmp_path / "selflengthen" / "extend_response.txt").write_text("ENRICH {prompt} Original outline: {response}")
    llm = Scripted()
    text = paras([30, 30, 30, 30], "ini")
    ctx = JobContext(llm, store=MemoryStepStore(), settings=Settings(prompts_dir=str(tmp_path)))
    result = await selflengthen.run(ctx, LengthenParams(instruction="Braces {x} stay.", text=text, protocol="paper"))
    first_half = "\n\n".join(text.split("\n\n")[:2])
    assert llm.of("expand")[0][0][-1]["content"] == f"ENRICH Braces {{x}} stay. Original outline: {first_half}"
    assert llm.of("continue")[0][0][0]["content"] == f"ENRICH Braces {{x}} stay. Original outline: {text}"
    record = result["protocol"]
    assert record["prompts"] == {"selflengthen/extend_response.txt": "PROMPTS_DIR"}
    # A given initial answer is a difference: the paper's come from its filtered Generator.
    assert [d.split(":")[0] for d in record["differs_from_paper"]] == ["initial answer"]
    assert record["comparable_to_paper"] is False


async def test_paper_fails_the_job_when_the_final_gate_is_not_passed():
    # Every candidate is 80 kept + 30 = 110 words, not longer than the 120-word initial answer.
    llm = Scripted(cont=[para(30, "short")])
    store = MemoryStepStore()
    with pytest.raises(ValueError, match=r"final gate failed: the best text has 120 words, not more than 1.2 x "
                                         r"the initial answer's 120 \(1.00x; 2 attempts of 3 micro-iterations, "
                                         r"0 of 6 candidates accepted\)"):
        await _run(llm, store=store, protocol="paper", text=paras([30, 30, 30, 30], "ini"), extension_attempts=2)
    assert len(llm.of("continue")) == 6
    assert sorted(k for k in store.outputs if k.startswith("attempt/")) == [
        f"attempt/2/{stage}/{i}" for stage in ("continue", "expand") for i in (1, 2, 3)]
    # Controlled without a target: the same rounds, the gate reported and not enforced.
    result = await _run(Scripted(cont=[para(30, "short")]), text=paras([30, 30, 30, 30], "ini"))
    assert result["gate"]["passed"] is False and result["gate"]["enforced"] is False
    assert result["text"] == paras([30, 30, 30, 30], "ini") and result["stopped"] == "rounds"
    assert "within_10pct" not in result


async def test_controlled_extends_until_the_target_then_trims_at_a_sentence_end():
    # 120 -> 80 kept + 240 = 320 -> 80 kept + 800 = 880: over 700 by more than 10%, cut back.
    llm = Scripted(cont=[paras([80, 80, 80], "one"), paras([200, 200, 200, 200], "two")])
    result = await _run(llm, text=paras([30, 30, 30, 30], "ini"), target_words=700)
    assert [it["accepted"] for it in result["iterations"]] == [True, True]
    assert result["words_per_iteration"][-1] > 770  # over by more than 10% ...
    assert result["trimmed"] and abs(result["word_count"] - 700) <= 70  # ... so trimmed
    assert result["within_10pct"] and result["within_20pct"] and result["stopped"] == "target_reached"
    assert result["text"].endswith(".") and result["final_filter"] is None
    assert any(d.startswith("length control: rounds until within 10%") for d in result["protocol"]["differs_from_paper"])


async def test_controlled_stops_at_the_iteration_limit_and_trims_a_long_initial_answer():
    llm = Scripted(cont=[para(30, "short")])  # never longer
    result = await _run(llm, text=paras([30, 30, 30, 30], "ini"), target_words=1000, max_iterations=4)
    assert len(result["iterations"]) == 4 and result["stopped"] == "max_iterations"
    assert result["within_10pct"] is False and not result["trimmed"]

    llm = Scripted()
    result = await _run(llm, text=paras([100] * 6, "long"), target_words=300)
    assert llm.calls == [] and result["iterations"] == [] and result["stopped"] == "target_reached"
    assert result["trimmed"] and result["word_count"] == 300 and result["within_10pct"]


async def test_controlled_stops_when_the_text_outgrows_the_context():
    llm = Scripted(context_window=520, cont=[paras([150, 150], "big")])
    result = await _run(llm, text=paras([30, 30, 30, 30], "ini"), target_words=2000)
    assert result["stopped"] == "context_full" and len(result["iterations"]) >= 1
    with pytest.raises(LLMBadRequest, match="no longer leaves room"):
        await _run(Scripted(context_window=520, cont=[paras([150, 150], "big")]), protocol="paper",
                   text=paras([30, 30, 30, 30], "ini"))


async def test_chinese_uses_chinese_prompts():
    initial = "\n\n".join(["河流穿过城市，养育了两岸的人们。", "春天的时候，河水上涨，渔船出港。", "秋天河水清澈，孩子们在岸边玩耍。"])
    llm = Scripted(expand=["第一段扩写的内容很丰富。\n\n第二段扩写补充了细节。\n\n第三段是总结。"],
                   cont=["\n\n夏天雷雨很多，河面宽阔，货船往来不断，码头上非常热闹。\n\n冬天河面结冰，人们在冰上行走。"])
    result = await _run(llm, instruction="写一篇关于河流的散文。", text=initial, micro_iterations=1)
    assert result["language"] == "zh" and "原始大纲" in llm.of("expand")[0][0][-1]["content"]
    assert result["iterations"][0]["accepted"] and result["protocol"]["prompts"] == {"selflengthen/extend_zh.j2": "bundled"}


# -- resume -----------------------------------------------------------------------------------------------


async def test_a_resumed_job_runs_only_the_missing_steps_and_replays_exactly():
    script = dict(initial=[para(50, "bad", end=""), paras([30, 30, 30, 30], "ini")],
                  cont=[paras([60, 60], "one"), para(10, "x"), paras([90, 90], "two")])
    reference = await _run(Scripted(**script))

    store = MemoryStepStore()
    crashing = Scripted(**script, fail_at=6)  # initial x2, expand/1, continue/1, expand/2, then dies
    with pytest.raises(RuntimeError):
        await _run(crashing, store=store)
    assert sorted(store.outputs) == ["continue/1", "expand/1", "expand/2", "initial/1", "initial/2"]

    resumed = Scripted(**script)
    resumed.used = dict(crashing.used)  # the model's later samples, as if it had gone on
    ctx = _ctx(resumed, store)
    result = await selflengthen.run(ctx, LengthenParams(instruction=INSTRUCTION))
    assert [k for k, _, _ in resumed.calls] == ["continue", "expand", "continue"]  # continue/2, expand/3, continue/3
    assert ctx.steps_run == 3
    assert result == reference


# -- bad input ------------------------------------------------------------------------------------------


def test_bad_params_name_their_field():
    settings = Settings(max_document_bytes=1000)
    with pytest.raises(InvalidParams) as err:
        validate_params("lengthen", {"instruction": "   "}, settings)
    assert err.value.errors[0]["loc"] == ["instruction"] and "must not be empty" in str(err.value)
    with pytest.raises(InvalidParams) as err:
        validate_params("lengthen", {"instruction": "Write.", "text": "word " * 300}, settings)
    assert err.value.errors[0]["loc"] == ["text"] and "1,500 bytes; the document limit is 1,000" in str(err.value)
    with pytest.raises(InvalidParams) as err:
        validate_params("lengthen", {"instruction": "Write.", "target_words": 10**9}, settings)
    assert err.value.errors[0]["loc"] == ["target_words"]
    with pytest.raises(InvalidParams):
        validate_params("lengthen", {"instruction": "Write.", "protocol": "fast"}, settings)
    assert validate_params("lengthen", {"instruction": " Write. ", "text": "A text."}, settings).instruction == "Write."


async def test_a_model_the_server_does_not_serve_fails_the_run_at_the_start_naming_the_field():
    store = MemoryStepStore()
    llm = Scripted(models=("scripted", "ext_sft"))
    with pytest.raises(ValueError, match=r"generator_model: the model server does not serve 'gen_sft'"):
        await _run(llm, store=store, generator_model="gen_sft", extender_model="ext_sft")
    assert store.outputs == {} and llm.calls == []
    # A server that ignores the name (the embedded model) answers as its own model.
    llm = Scripted(models=("scripted", "ext_sft"), answer_as="SmolLM2")
    with pytest.raises(ValueError, match=r"extender_model: the model server answered as 'SmolLM2', not 'ext_sft'"):
        await _run(llm, extender_model="ext_sft")
    # Served adapters are used by their role.
    llm = Scripted(models=("scripted", "gen_sft", "ext_sft"))
    result = await _run(llm, generator_model="gen_sft", extender_model="ext_sft", micro_iterations=1)
    assert {o.model for k, _, o in llm.calls if k == "initial"} == {"gen_sft"}
    assert {o.model for k, _, o in llm.calls if k != "initial"} == {"ext_sft"}
    assert result["models"] == {"generator": "gen_sft", "extender": "ext_sft"}


# -- through the fake vLLM server ---------------------------------------------------------------------------


def test_the_fake_server_continues_a_prefilled_answer(fake_llm):
    import httpx

    url = f"{fake_llm.base_url}/chat/completions"
    messages = [{"role": "user", "content": "Write about rivers."},
                {"role": "assistant", "content": "Rivers shape the towns along them."}]
    body = {"model": fake_llm.model, "messages": messages, "max_tokens": 200}
    refused = httpx.post(url, json={**body, "continue_final_message": True})
    assert refused.status_code == 400 and "add_generation_prompt" in refused.text
    last_user = httpx.post(url, json={**body, "messages": messages[:1], "continue_final_message": True,
                                      "add_generation_prompt": False})
    assert last_user.status_code == 400
    answer = httpx.post(url, json={**body, "continue_final_message": True, "add_generation_prompt": False})
    text = answer.json()["choices"][0]["message"]["content"]
    assert answer.status_code == 200 and text.startswith("\n\n") and text.strip()


async def test_end_to_end_through_the_fake_server(fake_llm):
    from agents.llm.openai_pool import OpenAIPool

    pool = OpenAIPool([fake_llm.base_url], context_window=8192)
    try:
        store = MemoryStepStore()
        ctx = JobContext(pool, store=store, job_id="lengthen-e2e")
        result = await selflengthen.run(ctx, LengthenParams(
            instruction="Write a 1500-word essay about rivers and the towns along them.", protocol="paper"))
        selflengthen.KIND.validate_result(result)
        assert set(store.outputs) == {"initial/1", "expand/1", "continue/1", "expand/2", "continue/2",
                                      "expand/3", "continue/3"}
        assert result["continuation"] == "prefill" and result["gate"]["passed"]
        assert result["words_per_iteration"][-1] == result["word_count"] > result["initial"]["words"]
        continued = [r for r in fake_llm.requests() if r["path"].endswith("/chat/completions")]
        assert len(continued) == 7 and all(r["status"] == 200 for r in continued)

        store = MemoryStepStore()
        with pytest.raises(ValueError, match="generator_model: the model server does not serve 'gen_sft'"):
            await selflengthen.run(JobContext(pool, store=store), LengthenParams(
                instruction="Write about rivers.", generator_model="gen_sft"))
        assert store.outputs == {}
    finally:
        await pool.aclose()


def test_lengthen_jobs_over_the_api(tmp_path, fake_llm):
    from db.models import Job, Step
    from db.session import Database
    from tests.api_server import running_api, wait_for_job
    from tests.db_fixtures import sqlite_url

    settings = Settings(longform_data_dir=str(tmp_path), database_url=sqlite_url(tmp_path),
                        llm_endpoints=fake_llm.base_url, max_document_bytes=2000)

    def rows(model) -> int:
        with Database(settings.database_url).session() as s:
            return s.query(model).count()

    import httpx

    with running_api(settings) as url, httpx.Client(base_url=url, timeout=30) as api:
        for params, field in (({"instruction": " "}, "instruction"),
                              ({"instruction": "Write.", "text": "word " * 500}, "text")):
            response = api.post("/v1/jobs", json={"kind": "lengthen", "params": params})
            assert response.status_code == 422 and f"{field}:" in response.json()["detail"], response.text
        assert rows(Job) == 0

        # A model the server does not list is refused at submit, naming the field.
        response = api.post("/v1/jobs", json={"kind": "lengthen", "params": {
            "instruction": "Write a 1500-word essay about rivers.", "generator_model": "gen_sft"}})
        assert response.status_code == 422 and "params.generator_model" in response.json()["detail"]
        assert "gen_sft" in response.json()["detail"] and rows(Job) == 0 and rows(Step) == 0

        job_id = api.post("/v1/jobs", json={"kind": "lengthen", "params": {
            "instruction": "Write a 1500-word essay about rivers.", "target_words": 1800}}).json()["id"]
        job = wait_for_job(api, job_id)
        assert job["status"] == "succeeded", job
        result = job["result"]
        assert result["target_words"] == 1800 and "within_10pct" in result and result["iterations"]
        assert result["protocol"]["name"] == "controlled" and result["continuation"] == "prefill"



async def test_controlled_reads_the_length_the_instruction_states():
    result = await _run(Scripted(), instruction="Write about 300 words on tea.", text=paras([100] * 6, "long"))
    assert result["target_words"] == 300 and result["target_source"] == "instruction" and result["trimmed"]
    paper = await _run(Scripted(), instruction="Write about 300 words on tea.", protocol="paper")
    assert paper["target_words"] is None and paper["target_source"] is None
