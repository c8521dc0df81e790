from fakellm.cli import fake_llm

fake_llm(prog_name="python -m fakellm")
