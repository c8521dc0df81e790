"""A fake OpenAI-compatible, vLLM-like model server for tests and benchmarks.

Real HTTP on loopback: /v1/chat/completions, /v1/completions, /v1/models, /tokenize, /health,
/metrics (vLLM metric names), plus /admin/* for tests. Deterministic filler text whose length
behaves like a real model's (aims at the asked length with noise, but stops at a natural
length of 600-1,500 words), JSON valid under a schema, a vLLM timing model (TTFT, per-token
decode, max_num_seqs continuous batching), a prefix cache, and injected faults.

    from fakellm.runner import FakeServer
    with FakeServer(timing=True, max_num_seqs=8) as server:
        ...  # point an OpenAI client at server.base_url

Standalone: `longform fake-llm --port 8000` or `python -m fakellm --port 8000`.
Modules: config (FakeConfig), engine (what to write), textgen/words (filler text), lengths
(asked length), schema_gen (JSON from a schema), scheduler, prefix_cache, state (counters,
metrics), app (routes), server (uvicorn), runner (subprocess), cli.
"""
