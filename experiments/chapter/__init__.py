"""The chapter's sections as experiments: sNN_*.py each run one section (`python -m
experiments.chapter.s06_dense --quick`), run_all.py runs them all and writes RESULTS.md (`make
experiments`); common.py is their shared plumbing."""
