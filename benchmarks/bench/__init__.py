"""The pieces ``run.py`` drives: harness, data, one module per workload, targets, report."""
