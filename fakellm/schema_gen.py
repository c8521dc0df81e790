"""Produce a JSON value that is valid under a JSON schema (the subset LLM servers enforce).

Supported: objects (properties/required, all properties are filled), arrays (items, prefixItems,
minItems/maxItems, uniqueItems), strings (enum/const, minLength/maxLength, a few formats),
integers and numbers (minimum/maximum, exclusive bounds, multipleOf), booleans, null, nested
schemas, anyOf/oneOf (first branch that is not null), allOf (merged), and $ref into $defs /
definitions (pydantic emits them). `pattern` is not interpreted.

Planning heuristic: when the prompt asks for a document of N words and the schema holds an
array of objects with an integer property whose name mentions words (word_count, words...),
the array gets about N/500 items whose word counts add up to about N, with some noise.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from typing import Any

from fakellm.textgen import generate_text, title

WORDS_PER_PLAN_ITEM = 500
_SHORT_NAMES = ("title", "name", "heading", "label", "topic", "keyword", "tag", "id", "type", "category")


class SchemaError(ValueError):
    """The schema cannot be satisfied or uses something this generator cannot read."""


@dataclass
class _Ctx:
    root: dict[str, Any]
    rng: random.Random
    lang: str
    topics: list[str]
    total_words: int | None
    depth: int = 0


def generate_json(schema: dict[str, Any], rng: random.Random, *, lang: str = "en",
                  topics: list[str] | None = None, total_words: int | None = None) -> Any:
    if not isinstance(schema, dict):
        raise SchemaError("a JSON schema must be an object")
    ctx = _Ctx(root=schema, rng=rng, lang=lang, topics=topics or [], total_words=total_words)
    return _value(ctx, schema, name="")


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _resolve(ctx: _Ctx, schema: dict[str, Any]) -> dict[str, Any]:
    """Follow $ref and merge allOf until a plain schema is left."""
    seen = 0
    while True:
        if "$ref" in schema:
            seen += 1
            if seen > 50:
                raise SchemaError("$ref chain too deep")
            target = _lookup(ctx.root, schema["$ref"])
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **rest}
            continue
        if "allOf" in schema:
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                part = _resolve(ctx, part)
                for key, val in part.items():
                    if key == "properties":
                        merged["properties"] = {**merged.get("properties", {}), **val}
                    elif key == "required":
                        merged["required"] = list(dict.fromkeys([*merged.get("required", []), *val]))
                    else:
                        merged.setdefault(key, val)
            schema = merged
            continue
        return schema


def _lookup(root: dict[str, Any], ref: str) -> dict[str, Any]:
    if not ref.startswith("#"):
        raise SchemaError(f"only local $ref are supported: {ref}")
    node: Any = root
    for part in ref.lstrip("#").strip("/").split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise SchemaError(f"unresolvable $ref: {ref}")
        node = node[part]
    return node


def _type_of(schema: dict[str, Any]) -> str:
    t = schema.get("type")
    if isinstance(t, list):
        non_null = [x for x in t if x != "null"]
        return non_null[0] if non_null else "null"
    if t:
        return t
    if "properties" in schema or "required" in schema or "additionalProperties" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return "string"


def _value(ctx: _Ctx, schema: Any, name: str, override: Any = None) -> Any:
    if schema is True or schema == {}:
        schema = {"type": "string"}
    if not isinstance(schema, dict):
        raise SchemaError(f"unsupported schema at {name or 'root'}: {schema!r}")
    schema = _resolve(ctx, schema)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return ctx.rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [_resolve(ctx, o) for o in schema[key]]
            chosen = next((o for o in options if _type_of(o) != "null"), options[0])
            base = {k: v for k, v in schema.items() if k != key}
            return _value(ctx, {**base, **chosen}, name, override)
    if ctx.depth > 20:
        raise SchemaError("schema nesting too deep")
    kind = _type_of(schema)
    if override is not None and kind in ("integer", "number"):
        return _number(ctx, schema, kind, name, preferred=override)
    if kind == "object":
        return _object(ctx, schema)
    if kind == "array":
        return _array(ctx, schema, name)
    if kind == "string":
        return _string(ctx, schema, name)
    if kind in ("integer", "number"):
        return _number(ctx, schema, kind, name)
    if kind == "boolean":
        return ctx.rng.random() < 0.5
    if kind == "null":
        return None
    raise SchemaError(f"unsupported type {kind!r}")


def _object(ctx: _Ctx, schema: dict[str, Any], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    props: dict[str, Any] = schema.get("properties", {})
    out: dict[str, Any] = {}
    ctx.depth += 1
    try:
        for key, sub in props.items():
            out[key] = _value(ctx, sub, key, (overrides or {}).get(key))
        for key in schema.get("required", []):
            if key not in out:  # required but undescribed: any string will do
                out[key] = _string(ctx, {}, key)
        extra = schema.get("additionalProperties")
        want = int(schema.get("minProperties", 0))
        i = 1
        while len(out) < want:
            if extra is False:
                raise SchemaError("minProperties cannot be met without additionalProperties")
            sub = extra if isinstance(extra, dict) else {"type": "string"}
            out[f"key{i}"] = _value(ctx, sub, f"key{i}")
            i += 1
    finally:
        ctx.depth -= 1
    return out


def _word_property(ctx: _Ctx, item_schema: Any) -> str | None:
    """The integer property of an object item schema that holds a word budget, if any."""
    if not isinstance(item_schema, dict):
        return None
    item = _resolve(ctx, item_schema)
    if _type_of(item) != "object":
        return None
    for key, sub in item.get("properties", {}).items():
        sub = _resolve(ctx, sub) if isinstance(sub, dict) else {}
        types = sub.get("type")
        if ("word" in key.lower() or "字" in key) and (types in ("integer", "number") or
                                                        (isinstance(types, list) and "integer" in types)):
            return key
    return None


def _array(ctx: _Ctx, schema: dict[str, Any], name: str) -> list[Any]:
    lo = int(schema.get("minItems", 0))
    hi = schema.get("maxItems")
    hi = int(hi) if hi is not None else None
    prefix = schema.get("prefixItems") or []
    items = schema.get("items", {} if not prefix else False)
    word_key = _word_property(ctx, items)

    if word_key and ctx.total_words:
        count = max(1, round(ctx.total_words / WORDS_PER_PLAN_ITEM))
    elif word_key:
        count = ctx.rng.randint(3, 6)
    else:
        count = ctx.rng.randint(2, 4)
    count = max(count, lo, len(prefix) if items is False else 0)
    if hi is not None:
        count = min(count, hi)
    if items is False:
        count = min(count, len(prefix))
    if count < lo:
        raise SchemaError(f"array {name or 'root'}: minItems {lo} cannot be met")

    budgets: list[int | None] = [None] * count
    if word_key and ctx.total_words and count:
        share = ctx.total_words / count
        budgets = [max(1, round(share * ctx.rng.uniform(0.85, 1.15))) for _ in range(count)]
    elif word_key:
        budgets = [ctx.rng.randrange(200, 801, 50) for _ in range(count)]

    out: list[Any] = []
    ctx.depth += 1
    try:
        for i in range(count):
            sub = prefix[i] if i < len(prefix) else items
            override = {word_key: budgets[i]} if word_key and i >= len(prefix) else None
            value = None
            for _attempt in range(8 if schema.get("uniqueItems") else 1):
                if override:
                    value = _object(ctx, _resolve(ctx, sub), override)
                else:
                    value = _value(ctx, sub, name)
                if value not in out:
                    break
            if schema.get("uniqueItems") and value in out:
                raise SchemaError(f"array {name or 'root'}: cannot find {count} unique items")
            out.append(value)
    finally:
        ctx.depth -= 1
    return out


def _string(ctx: _Ctx, schema: dict[str, Any], name: str) -> str:
    fmt = schema.get("format")
    if fmt == "date":
        return f"20{ctx.rng.randint(10, 29)}-{ctx.rng.randint(1, 12):02d}-{ctx.rng.randint(1, 28):02d}"
    if fmt == "date-time":
        return f"20{ctx.rng.randint(10, 29)}-{ctx.rng.randint(1, 12):02d}-{ctx.rng.randint(1, 28):02d}T12:00:00Z"
    if fmt == "email":
        return f"user{ctx.rng.randint(1, 999)}@example.com"
    if fmt in ("uri", "url"):
        return f"https://example.com/{ctx.rng.randint(1, 999)}"
    if fmt == "uuid":
        return "%08x-0000-4000-8000-%012x" % (ctx.rng.getrandbits(32), ctx.rng.getrandbits(48))
    low = name.lower()
    short = any(s in low for s in _SHORT_NAMES)
    if short:
        text = title(ctx.rng, ctx.lang, ctx.topics)
    else:
        text = generate_text(ctx.rng, ctx.lang, ctx.topics, ctx.rng.randint(10, 30))
    min_len = int(schema.get("minLength", 0))
    max_len = schema.get("maxLength")
    while len(text) < min_len:
        text += " " + generate_text(ctx.rng, ctx.lang, ctx.topics, 12)
    if max_len is not None and len(text) > int(max_len):
        text = text[: int(max_len)].rstrip()
        text = text if len(text) >= min_len else text.ljust(min_len, "x")
    return text


def _number(ctx: _Ctx, schema: dict[str, Any], kind: str, name: str, preferred: float | None = None):
    lo = schema.get("minimum")
    hi = schema.get("maximum")
    ex_lo = schema.get("exclusiveMinimum")
    ex_hi = schema.get("exclusiveMaximum")
    step = 1 if kind == "integer" else 0.01
    if isinstance(ex_lo, (int, float)) and not isinstance(ex_lo, bool):
        lo = max(lo, ex_lo + step) if lo is not None else ex_lo + step
    if isinstance(ex_hi, (int, float)) and not isinstance(ex_hi, bool):
        hi = min(hi, ex_hi - step) if hi is not None else ex_hi - step
    if kind == "integer":
        lo = math.ceil(lo) if lo is not None else None
        hi = math.floor(hi) if hi is not None else None
    if lo is not None and hi is not None and lo > hi:
        raise SchemaError(f"{name or 'number'}: empty range [{lo}, {hi}]")

    if preferred is None:
        if "word" in name.lower():
            dlo, dhi = 200, 800
        elif any(s in name.lower() for s in ("score", "rating")):
            dlo, dhi = 1, 10
        else:
            dlo, dhi = 1, 100
        span = dhi - dlo
        lo_b = lo if lo is not None else (dlo if hi is None or hi >= dhi else hi - span)
        hi_b = hi if hi is not None else max(dhi, lo_b + span)
        # Prefer the usual window where it overlaps the allowed range.
        a, b = max(lo_b, dlo), min(hi_b, dhi)
        value = ctx.rng.uniform(a, b) if a < b else ctx.rng.uniform(lo_b, hi_b)
    else:
        value = float(preferred)
    if lo is not None:
        value = max(value, lo)
    if hi is not None:
        value = min(value, hi)
    mult = schema.get("multipleOf")
    if mult:
        candidate = round(value / mult) * mult
        if lo is not None and candidate < lo:
            candidate += mult
        if hi is not None and candidate > hi:
            candidate -= mult
        value = candidate
    if kind == "integer":
        return int(round(value))
    if not mult:
        value = round(value, 2)
        if lo is not None and value < lo or hi is not None and value > hi:
            value = float(lo if lo is not None else hi)
    return value
