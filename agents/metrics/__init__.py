"""Metrics, one module per benchmark. Each module says which word count it uses.

- `agents.metrics.longbench_write`: LongBench-Write length score S_l, the quality judge and S_q.
- `agents.metrics.longen`: LonGen's length-following score (Self-Lengthen's word count).
- `agents.metrics.ruler`: Ruler's MLT windows, TLG targets and levels, PM/FM intervals (`\\w+` runs).
"""
