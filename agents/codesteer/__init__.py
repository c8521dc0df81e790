"""CodeSteer-style code/text routing: answer formats, the symbolic checker and SymBench-like
task suites. The `solve` job kind (agents/solve.py) runs the methods; this package holds the
pure parts (no model, no sandbox)."""
