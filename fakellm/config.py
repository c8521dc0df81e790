"""Settings of the fake vLLM server: model limits, length behaviour, timing model, faults."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any


@dataclass
class FakeConfig:
    # What the server claims to be.
    model: str = "fake-model"
    max_model_len: int = 8192
    strict_model: bool = True  # like vLLM: an unknown `model` gets a 404
    # The model's tokenizer: this many tokens per cl100k_base token (>= 1; 1.0 is cl100k
    # itself). A less efficient tokenizer (e.g. 1.5: about 1.9 tokens per English word)
    # makes prompts, answers, max_tokens and /tokenize counts longer by that factor.
    token_scale: float = 1.0

    # Length behaviour. Asked for N words, the model aims at N * (1 +- length_noise), but never
    # writes past its natural length, drawn per prompt from [natural_min_words, natural_max_words].
    natural_min_words: int = 600
    natural_max_words: int = 1500
    default_min_words: int = 150  # when the prompt asks for no length
    default_max_words: int = 400
    length_noise: float = 0.3

    # vLLM timing model (off by default: answers come back at once).
    timing: bool = False
    ttft_s: float = 0.02  # base time to first token
    prefill_s_per_token: float = 0.00005  # per prompt token not found in the prefix cache
    decode_s_per_token: float = 0.002
    max_num_seqs: int = 64  # sequences decoding at once; the rest wait (continuous batching)
    scheduling_policy: str = "fcfs"  # or "priority" (lower `priority` first, like vLLM)

    # Prefix cache (automatic prefix caching).
    prefix_cache: bool = True
    block_size: int = 16
    prefix_cache_blocks: int = 500_000

    # Faults drawn per request from a seeded generator.
    error_rate: float = 0.0  # HTTP 500
    rate_limit_rate: float = 0.0  # HTTP 429
    hang_rate: float = 0.0  # no answer for hang_s seconds
    hang_s: float = 3600.0
    truncate_rate: float = 0.0  # output cut short with finish_reason "length"
    malformed_json_rate: float = 0.0  # broken JSON when a schema is asked for
    die_after: int | None = None  # the process exits abruptly at this many generation requests

    seed: int = 0

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a partial update, coercing values to each field's type; unknown names raise."""
        known = {f.name: f for f in fields(self)}
        coerced: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown FakeConfig field: {name!r}")
            coerced[name] = _coerce(name, known[name].type, value)
        candidate = dataclasses.replace(self, **coerced)
        candidate.validate()
        for name, value in coerced.items():
            setattr(self, name, value)

    def validate(self) -> None:
        if self.natural_min_words > self.natural_max_words:
            raise ValueError("natural_min_words must not exceed natural_max_words")
        if self.default_min_words > self.default_max_words:
            raise ValueError("default_min_words must not exceed default_max_words")
        if self.max_num_seqs < 1 or self.block_size < 1 or self.max_model_len < 1:
            raise ValueError("max_num_seqs, block_size and max_model_len must be positive")
        if not 1.0 <= self.token_scale <= 16.0:
            raise ValueError("token_scale must be within [1, 16]")
        if self.scheduling_policy not in ("fcfs", "priority"):
            raise ValueError("scheduling_policy is 'fcfs' or 'priority'")
        for name in ("error_rate", "rate_limit_rate", "hang_rate", "truncate_rate", "malformed_json_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")

    @property
    def capacity_tokens_per_s(self) -> float | None:
        """Decode capacity of the timing model (all slots busy); None when timing is off."""
        if not self.timing or self.decode_s_per_token <= 0:
            return None
        return self.max_num_seqs / self.decode_s_per_token

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(name: str, type_name: Any, value: Any) -> Any:
    # Field types are strings under `from __future__ import annotations`.
    type_name = str(type_name)
    if value is None:
        if "None" in type_name:
            return None
        raise ValueError(f"{name} cannot be null")
    if type_name.startswith("bool"):
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)
    if type_name.startswith("int"):
        return int(value)
    if type_name.startswith("float"):
        return float(value)
    return str(value)
