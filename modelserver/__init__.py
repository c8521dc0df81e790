"""The embedded model's own process: a GGUF model behind a small OpenAI-compatible server.

The service never loads llama.cpp in its own processes. `agents.llm.embedded_process`
starts this package as a child (`python -m modelserver ...`), waits for its self-test,
restarts it when it dies, and talks to it through the same endpoint pool as any vLLM
server. A native crash (llama.cpp segfaults on some CPUs) ends this process only.
"""
