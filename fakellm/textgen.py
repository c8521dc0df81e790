"""Deterministic, readable filler text: sentences of varied length grouped into paragraphs.

`generate_text(rng, lang, topics, n_words)` writes exactly `n_words` words as counted by
agents.text.count_words (English words, or Chinese characters), which keeps the fake's
length behaviour exact and testable. Topic words taken from the prompt are woven in so
the text looks on-topic.
"""
from __future__ import annotations

import hashlib
import random
import re
from collections import Counter

from fakellm import words as W

_EN_WORD = re.compile(r"\b[A-Za-z]{4,}\b")
_CJK_RUN = re.compile(r"[\u4e00-\u9fff]+")
_ZH_STOP = re.compile("|".join(sorted(map(re.escape, W.ZH_STOP_PHRASES), key=len, reverse=True)))
_VOWEL_START = re.compile(r"^[aeiouAEIOU]")


def seed_from(*parts: object) -> int:
    """A stable 64-bit seed from any values (Python's hash() is salted per process)."""
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        h.update(repr(part).encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return int.from_bytes(h.digest(), "big")


def topic_words(text: str, lang: str, limit: int = 6) -> list[str]:
    """Content words of the prompt, most frequent first (first occurrence breaks ties)."""
    if len(text) > 20_000:  # instructions sit at the start or the end of long prompts
        text = text[:10_000] + "\n" + text[-10_000:]
    if lang == "zh":
        pieces: list[str] = []
        for run in _CJK_RUN.findall(text):
            for piece in _ZH_STOP.split(run):
                # Long runs are unsegmented phrases: keep two-character pieces of them.
                pieces.extend(piece[i:i + 2] for i in range(0, len(piece) - 1, 2))
        counts = Counter(p for p in pieces if len(p) == 2)
        return [w for w, _ in counts.most_common(limit)]
    seen: dict[str, list[str]] = {}
    for w in _EN_WORD.findall(text):
        low = w.lower()
        if low in W.EN_STOPWORDS:
            continue
        seen.setdefault(low, []).append(w)
    ranked = sorted(seen.items(), key=lambda kv: -len(kv[1]))[:limit]
    # Keep proper nouns capitalised ("Rome"), everything else lower case.
    return [forms[0] if all(f[0].isupper() for f in forms) else low for low, forms in ranked]


def generate_text(rng: random.Random, lang: str, topics: list[str], n_words: int) -> str:
    if n_words <= 0:
        return ""
    if lang == "zh":
        return _generate_zh(rng, topics, n_words)
    return _generate_en(rng, topics, n_words)


# -- English ---------------------------------------------------------------------------------

def _en_slot(rng: random.Random, slot: str, topics: list[str]) -> list[str]:
    choice = rng.choice
    if slot == "np":
        kind = rng.random()
        if kind < 0.4:
            return ["the", choice(W.EN["adj"]), choice(W.EN["noun"])]
        if kind < 0.6:
            adj = choice(W.EN["adj"])
            return ["an" if _VOWEL_START.match(adj) else "a", adj, choice(W.EN["noun"])]
        if kind < 0.8:
            return ["the", choice(W.EN["noun"])]
        return [choice(("their", "our", "this", "that")), choice(W.EN["noun"])]
    if slot == "nps":
        if rng.random() < 0.5:
            return [choice(W.EN["adj"]), choice(W.EN["nouns"])]
        return [choice(W.EN["nouns"])]
    if slot == "topic":
        if topics and rng.random() < 0.8:
            return [choice(topics)]
        return ["the", choice(W.EN["noun"])]
    return choice(W.EN[slot]).split()


def _en_sentence(rng: random.Random, topics: list[str]) -> list[str]:
    """One sentence as tokens: words, plus ',' '.' '?' as their own tokens."""
    template = rng.choice(W.EN_PARSED)
    out: list[str] = []
    for is_slot, text in template:
        if is_slot:
            out.extend(_en_slot(rng, text.lower(), topics))
        else:
            out.append(text)
    return out


def _en_join(tokens: list[str]) -> str:
    text = ""
    for tok in tokens:
        text += tok if tok in (",", ".", "?") or not text else " " + tok
    return text[:1].upper() + text[1:]


_FUNCTION_WORDS = frozenset("the a an of in to and but as their our this that each few some many "
                            "across within through beyond around beside under among toward is "
                            "does what when while because although since even though it why".split())
_ONE_WORD = ("Indeed", "Certainly", "Clearly", "Naturally", "Still")


def _en_cut(rng: random.Random, tokens: list[str], n: int) -> list[str]:
    """The first n words of a sentence, ended so it does not trail off on 'the' or 'of'."""
    if n == 1:
        return [rng.choice(_ONE_WORD), "."]
    kept, words = [], 0
    for t in tokens:
        if t in (",", ".", "?"):
            kept.append(t)
            continue
        if words == n:
            break
        kept.append(t)
        words += 1
    while kept[-1] in (",", ".", "?"):
        kept.pop()
    if kept[-1].lower() in _FUNCTION_WORDS:
        # Only the last word changes, so a shorter text stays a prefix of a longer one.
        prev = kept[-2].lower() if len(kept) > 1 else ""
        if prev in ("a", "an"):
            nouns = [w for w in W.EN["noun"] if bool(_VOWEL_START.match(w)) == (prev == "an")]
            kept[-1] = rng.choice(nouns)
        elif prev in ("each", "this", "that"):
            kept[-1] = rng.choice(W.EN["noun"])
        else:
            kept[-1] = rng.choice(W.EN["nouns"])
    return kept + ["."]


def title(rng: random.Random, lang: str, topics: list[str]) -> str:
    """A short heading-like phrase (for "title" or "name" fields)."""
    topic = rng.choice(topics) if topics else None
    if lang == "zh":
        noun = rng.choice(W.ZH["noun"])
        return f"{topic}的{noun}" if topic else f"{rng.choice(W.ZH['adj'])}{noun}"
    adj, noun = rng.choice(W.EN["adj"]), rng.choice(W.EN["noun"])
    phrase = f"The {adj} {noun} of {topic}" if topic else f"The {adj} {noun}"
    return phrase if rng.random() < 0.6 else f"{adj.capitalize()} {rng.choice(W.EN['nouns'])}"


def _generate_en(rng: random.Random, topics: list[str], n_words: int) -> str:
    paragraphs: list[str] = []
    left = n_words
    while left > 0:
        sentences: list[str] = []
        for _ in range(rng.randint(3, 7)):
            tokens = _en_sentence(rng, topics)
            count = sum(1 for t in tokens if t not in (",", ".", "?"))
            if count > left:  # the last sentence ends early, exactly on the budget
                tokens, count = _en_cut(rng, tokens, left), left
            sentences.append(_en_join(tokens))
            left -= count
            if left == 0:
                break
        paragraphs.append(" ".join(sentences))
    return "\n\n".join(paragraphs)


# -- Chinese ---------------------------------------------------------------------------------

def _zh_sentence(rng: random.Random, topics: list[str]) -> str:
    parts = []
    for is_slot, text in rng.choice(W.ZH_PARSED):
        if not is_slot:
            parts.append(text)
        elif text == "topic":
            parts.append(rng.choice(topics) if topics and rng.random() < 0.8 else rng.choice(W.ZH["noun"]))
        else:
            parts.append(rng.choice(W.ZH[text]))
    return "".join(parts)


def _cjk_len(text: str) -> int:
    return sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff")


def _cut_cjk(text: str, n: int) -> str:
    """The shortest prefix holding n CJK characters, closed with a full stop."""
    seen = 0
    for i, ch in enumerate(text):
        if "\u4e00" <= ch <= "\u9fff":
            seen += 1
            if seen == n:
                return text[:i + 1].rstrip("，") + "。"
    return text


def _generate_zh(rng: random.Random, topics: list[str], n_chars: int) -> str:
    paragraphs: list[str] = []
    left = n_chars
    while left > 0:
        sentences: list[str] = []
        for _ in range(rng.randint(3, 6)):
            sentence = _zh_sentence(rng, topics)
            count = _cjk_len(sentence)
            if count > left:
                sentence, count = _cut_cjk(sentence, left), left
            sentences.append(sentence)
            left -= count
            if left == 0:
                break
        paragraphs.append("".join(sentences))
    return "\n\n".join(paragraphs)
