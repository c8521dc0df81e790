"""Server state shared by the routes: config, scheduler, prefix cache, counters, request log."""
from __future__ import annotations

import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from fakellm.config import FakeConfig
from fakellm.prefix_cache import PrefixCache
from fakellm.scheduler import Scheduler

LOG_LIMIT = 50_000


@dataclass
class Counters:
    requests_by_path: Counter = field(default_factory=Counter)
    status_counts: Counter = field(default_factory=Counter)
    finished: Counter = field(default_factory=Counter)  # finish_reason -> successful requests
    faults: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0
    generation_tokens: int = 0
    generation_requests: int = 0  # chat + completions, counted on arrival (for die_after)


class FakeState:
    def __init__(self, config: FakeConfig):
        config.validate()
        self.initial = FakeConfig(**config.to_dict())
        self.config = config
        self.scheduler = Scheduler(config.max_num_seqs, config.scheduling_policy)
        self.cache = PrefixCache(config.block_size, config.prefix_cache_blocks)
        self.counters = Counters()
        self.log: deque[dict[str, Any]] = deque(maxlen=LOG_LIMIT)
        self.fault_rng = random.Random(config.seed)
        self.started = time.time()
        self._ids = 0

    def next_id(self) -> int:
        self._ids += 1
        return self._ids

    def update_config(self, changes: dict[str, Any]) -> None:
        self.config.update(changes)
        cfg = self.config
        self.scheduler.resize(cfg.max_num_seqs, cfg.scheduling_policy)
        if cfg.block_size != self.cache.block_size:
            self.cache = PrefixCache(cfg.block_size, cfg.prefix_cache_blocks)
        self.cache.capacity_blocks = cfg.prefix_cache_blocks
        if "seed" in changes:
            self.fault_rng = random.Random(cfg.seed)

    def reset(self, restore_config: bool = False) -> None:
        if restore_config:
            self.config.update(self.initial.to_dict())
            self.scheduler.resize(self.config.max_num_seqs, self.config.scheduling_policy)
            self.cache = PrefixCache(self.config.block_size, self.config.prefix_cache_blocks)
        self.cache.clear()
        self.counters = Counters()
        self.log.clear()
        self.scheduler.reset_peaks()
        self.fault_rng = random.Random(self.config.seed)

    def draw_faults(self) -> set[str]:
        """Faults for one request from the per-server rates (independent draws)."""
        cfg, rng = self.config, self.fault_rng
        drawn = set()
        for name, rate in (("500", cfg.error_rate), ("429", cfg.rate_limit_rate), ("hang", cfg.hang_rate),
                           ("truncate", cfg.truncate_rate), ("malformed_json", cfg.malformed_json_rate)):
            if rate > 0 and rng.random() < rate:
                drawn.add(name)
        return drawn

    def stats(self) -> dict[str, Any]:
        c, cfg = self.counters, self.config
        return {
            "uptime_s": round(time.time() - self.started, 3),
            "requests_by_path": dict(c.requests_by_path),
            "requests_total": sum(c.requests_by_path.values()),
            "generation_requests": c.generation_requests,
            "status_counts": {str(k): v for k, v in c.status_counts.items()},
            "finished": dict(c.finished),
            "faults": dict(c.faults),
            "prompt_tokens": c.prompt_tokens,
            "generation_tokens": c.generation_tokens,
            "prefix_cache_queries": self.cache.queries,
            "prefix_cache_hits": self.cache.hits,
            "prefix_hit_ratio": (self.cache.hits / self.cache.queries) if self.cache.queries else 0.0,
            "running": self.scheduler.running,
            "waiting": self.scheduler.waiting,
            "max_running_observed": self.scheduler.max_running_seen,
            "max_waiting_observed": self.scheduler.max_waiting_seen,
            "capacity_tokens_per_s": cfg.capacity_tokens_per_s,
            "config": cfg.to_dict(),
        }

    def metrics_text(self) -> str:
        """Prometheus exposition with vLLM's metric names and its model_name label."""
        label = 'model_name="%s"' % self.config.model.replace("\\", "\\\\").replace('"', '\\"')
        c = self.counters
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            for suffix_labels, value in samples:
                lines.append(f"{suffix_labels} {float(value)}")

        metric("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.",
               [(f"vllm:num_requests_running{{{label}}}", self.scheduler.running)])
        metric("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.",
               [(f"vllm:num_requests_waiting{{{label}}}", self.scheduler.waiting)])
        metric("vllm:prompt_tokens", "counter", "Number of prefill tokens processed.",
               [(f"vllm:prompt_tokens_total{{{label}}}", c.prompt_tokens)])
        metric("vllm:generation_tokens", "counter", "Number of generation tokens processed.",
               [(f"vllm:generation_tokens_total{{{label}}}", c.generation_tokens)])
        metric("vllm:prefix_cache_queries", "counter", "Prefix cache queries, in terms of number of queried tokens.",
               [(f"vllm:prefix_cache_queries_total{{{label}}}", self.cache.queries)])
        metric("vllm:prefix_cache_hits", "counter", "Prefix cache hits, in terms of number of cached tokens.",
               [(f"vllm:prefix_cache_hits_total{{{label}}}", self.cache.hits)])
        reasons = sorted(set(c.finished) | {"stop", "length"})
        metric("vllm:request_success", "counter", "Count of successfully processed requests.",
               [(f'vllm:request_success_total{{finished_reason="{r}",{label}}}', c.finished.get(r, 0))
                for r in reasons])
        return "\n".join(lines) + "\n"
