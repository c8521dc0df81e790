"""Dataset builds: instruction JSONL input, instruction generation, quality gates, exports, stats."""
from __future__ import annotations

import json
import random

import pytest

from agents.context import JobContext, MemoryStepStore
from agents.dataset import (
    GATES,
    GateSettings,
    Sample,
    apply_gates,
    dataset_stats,
    export_records,
    generate_instructions,
    length_histogram,
    parse_instruction_jsonl,
    repetition,
    to_jsonl,
)
from agents.llm.types import GenOptions, LLMResult
from agents.text import count_words
from fakellm.textgen import generate_text


def test_jsonl_bad_lines_are_reported_and_good_lines_kept():
    data = "\n".join([
        json.dumps({"prompt": "Write a travel guide to Kyoto, about 3000 words", "type": "x", "length": 3000}),
        "{not json",
        "",
        json.dumps({"instruction": "  写一篇两千字的散文  "}),
        json.dumps(["a list"]),
        json.dumps({"instruction": "   "}),
        json.dumps({"instruction": "Write", "target_words": 0}),
        json.dumps({"instruction": "Write", "target_words": "900"}),
        json.dumps({"messages": [{"role": "user", "content": "Write a story"}, {"role": "assistant", "content": "..."}]}),
        json.dumps({"instruction": "Write", "target_words": 10**7}),
    ]).encode("utf-8") + b"\n\xff\xfe{}\n" + json.dumps({"instruction": "Last one", "target_words": 500}).encode()
    items, rejected = parse_instruction_jsonl(data)
    assert [(i["line"], i["instruction"], i["target_words"]) for i in items] == [
        (1, "Write a travel guide to Kyoto, about 3000 words", 3000),
        (4, "写一篇两千字的散文", None),
        (9, "Write a story", None),
        (12, "Last one", 500),
    ]
    assert [r["line"] for r in rejected] == [2, 5, 6, 7, 8, 10, 11]
    errors = {r["line"]: r["error"] for r in rejected}
    assert "invalid JSON" in errors[2] and "JSON object" in errors[5] and "missing instruction" in errors[6]
    assert "between 1 and 100000" in errors[7] and "integer" in errors[8] and "UTF-8" in errors[11]
    assert parse_instruction_jsonl("", max_target_words=10) == ([], [])


def _text(seed: int, words: int, lang: str = "en") -> str:
    return generate_text(random.Random(seed), lang, ["rivers", "history"] if lang == "en" else ["河流", "历史"], words)


def _sample(text: str, target: int | None = None, status: str = "succeeded", truncated: bool = False, instruction="Write") -> Sample:
    words = count_words(text)
    return Sample(instruction=instruction, status=status, text=text, target_words=target or words,
                  word_count=words, truncated=truncated, language="en")


def test_repetition_measure():
    good = _text(1, 3000)
    assert repetition(good)["8gram"] < 0.02 and repetition(good)["4gram"] < 0.1
    assert repetition(_text(2, 3000, "zh"))["8gram"] < 0.02
    looped = _text(3, 1000) + "\n\n" + _text(3, 1000)
    assert repetition(looped)["8gram"] > 0.4
    assert repetition("too short") == {"4gram": 0.0, "8gram": 0.0}


def test_gates_in_order_with_counts():
    base = [_text(i, 1500) for i in range(10)]
    near = base[0].replace("the", "a", 5)  # a few words changed: still a near copy
    samples = [
        _sample(base[0]),                                     # kept
        _sample(base[1], status="failed"),                    # failed
        _sample("", status="succeeded"),                      # failed (no text)
        _sample(base[2], truncated=True),                     # truncated
        _sample(base[3] + "\n\n" + base[3]),                  # repetitive
        _sample(base[4], target=3000),                        # length: 1500 of 3000
        _sample(base[0].upper()),                             # duplicate (normalized)
        _sample(near),                                        # near duplicate
        _sample(base[5], target=1400),                        # kept (7% over)
        _sample(base[6], status="cancelled"),                 # failed
        _sample(base[1] + "\n\n" + base[1], status="failed"),  # failed first, though also repetitive
        _sample(base[7], target=1800),                        # kept (17% under)
    ]
    kept, counts = apply_gates(samples, GateSettings())
    assert list(counts) == list(GATES)
    assert counts == {"failed": 4, "truncated": 1, "refusal": 0, "repetitive": 1, "length": 1, "duplicate": 1,
                      "near_duplicate": 1}
    assert [samples.index(s) for s in kept] == [0, 8, 11]
    assert samples[7].dropped_by == "near_duplicate" and samples[10].dropped_by == "failed"
    # Gates can be relaxed.
    loose = GateSettings(drop_truncated=False, length_tolerance=None, max_repeated_4gram_share=1.0,
                         max_repeated_8gram_share=1.0, drop_duplicates=False, near_duplicate_threshold=None)
    kept, counts = apply_gates(samples, loose)
    assert counts["failed"] == 4 and sum(counts.values()) == 4 and len(kept) == 8
    # The S_l filter (ModelScope used 80) drops what the tolerance lets through.
    kept, counts = apply_gates([_sample(base[8], target=2500)], GateSettings(length_tolerance=None, min_length_score=80))
    assert counts["length"] == 1


def test_near_duplicates_are_deterministic_and_spare_different_texts():
    texts = [_text(100 + i, 800) for i in range(40)]
    samples = [_sample(t) for t in texts] + [_sample(texts[5] + " One more closing sentence here.")]
    kept1, counts1 = apply_gates(samples)
    kept2, counts2 = apply_gates([_sample(s.text) for s in samples])
    assert counts1 == counts2 and counts1["near_duplicate"] == 1 and len(kept1) == 40
    assert [s.text for s in kept1] == [s.text for s in kept2]


def test_sample_from_write_job():
    result = {"text": "Hello there world.", "word_count": 3, "target_words": 3, "language": "en", "method": "agentwrite",
              "truncated": False, "sections": [{"title": "a", "truncated": False, "finish_reason": "length"}]}
    s = Sample.from_write_job("succeeded", {"instruction": "Say hi", "target_words": 3}, result)
    assert (s.instruction, s.text, s.word_count, s.truncated, s.target_words) == ("Say hi", "Hello there world.", 3, True, 3)
    failed = Sample.from_write_job("failed", {"instruction": "Say hi"}, None)
    assert failed.text == "" and failed.word_count == 0
    assert apply_gates([failed])[1]["failed"] == 1


def test_exports_and_stats():
    kept = [_sample("第一篇。" * 300, instruction="写一篇文章"), _sample(_text(9, 2500), instruction="Write about rivers")]
    lw = export_records(kept, "longwriter", state_length=False)  # stated lengths: tests/test_dataset_lengths.py
    assert lw[0] == {"messages": [{"role": "user", "content": "写一篇文章"}, {"role": "assistant", "content": "第一篇。" * 300}]}
    assert export_records(kept, "alpaca", state_length=False)[1] == {"instruction": "Write about rivers", "input": "", "output": kept[1].text}
    assert export_records(kept, "sharegpt", state_length=False)[1]["conversations"][0] == {"from": "human", "value": "Write about rivers"}
    with pytest.raises(ValueError, match="unknown export format"):
        export_records(kept, "csv")
    lines = to_jsonl(lw).splitlines()
    assert len(lines) == 2 and "写一篇文章" in lines[0]  # UTF-8, not \u escapes
    failed = _sample("x", status="failed")
    stats = dataset_stats([*kept, failed], kept, {"failed": 1, "truncated": 0})
    assert stats["items"] == 3 and stats["kept"] == 2 and stats["dropped"] == 1
    assert stats["statuses"] == {"succeeded": 2, "failed": 1}
    assert stats["length_histogram"]["0-500"] == 0 and stats["length_histogram"]["500-1000"] == 1
    assert stats["length_histogram"]["2000-4000"] == 1 and stats["words"]["max"] == 2500
    json.dumps(stats)
    assert length_histogram([0, 499, 500, 40000]) == {"0-500": 2, "500-1000": 1, "1000-2000": 0, "2000-4000": 0,
                                                      "4000-8000": 0, "8000-16000": 0, "16000-32000": 0, "32000+": 1}


class InstructionWriter:
    model_name = "gen"
    context_window = 8192

    def __init__(self):
        self.prompts = []

    async def chat(self, messages, options: GenOptions | None = None):
        prompt = messages[-1]["content"]
        self.prompts.append(prompt)
        k = len(self.prompts)
        items = [
            {"instruction": "Write a guide to tea", "target_words": 50},          # repeated in every batch
            {"instruction": f"Write story number {k} about ships", "target_words": 3000},
            {"instruction": f"写第{k}篇关于山的散文，八千字", "target_words": 100},  # stated length wins
            {"instruction": "  ", "target_words": 2000},                          # empty: skipped
        ]
        return LLMResult(text=json.dumps({"instructions": items}), finish_reason="stop", prompt_tokens=1,
                         completion_tokens=1, latency_s=0)

    async def count_tokens(self, text):
        return len(text.split())


async def test_generate_instructions_from_seeds():
    llm = InstructionWriter()
    store = MemoryStepStore()
    ctx = JobContext(llm, store=store)
    out = await generate_instructions(ctx, ["Write a 5000-word history of Rome", "写一篇三千字的游记"], 7, per_call=3)
    assert len(out) == 7
    assert out[0] == {"instruction": "Write a guide to tea", "target_words": 1000, "seed": 0}  # clamped up
    assert sum(1 for o in out if o["instruction"] == "Write a guide to tea") == 1
    zh = [o for o in out if "散文" in o["instruction"]]
    assert zh and all(o["target_words"] == 8000 for o in zh)
    assert "Write a 5000-word history of Rome" in llm.prompts[0] and "写一篇三千字的游记" in llm.prompts[1]
    assert "in Chinese" in llm.prompts[1]
    assert sorted(store.outputs) == [f"instructions/{k}" for k in range(len(llm.prompts))]
    # Replay: no model calls, the same instructions.
    llm2 = InstructionWriter()
    again = await generate_instructions(JobContext(llm2, store=store), ["Write a 5000-word history of Rome", "写一篇三千字的游记"], 7, per_call=3)
    assert again == out and llm2.prompts == []
    with pytest.raises(ValueError):
        await generate_instructions(ctx, ["  "], 3)
