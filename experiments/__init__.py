"""The experiments around fashion_jax, in four folders by purpose: chapter/ (the textbook chapter's
sections, s01 to s14, and run_all.py, which regenerates chapter/RESULTS.md and its figures), bench/
(the benchmark harness against PyTorch, Keras and scikit-learn, and its reports BENCH.md and
FAST.md), soak/ (long soak and fault harnesses: random kills with exact resume, the all-reduce
hang) and research/ (one-off measurements and reproducers). Each script is a module: run it from
the repository root as `python -m experiments.<folder>.<module>` (e.g. `python -m
experiments.chapter.run_all --quick`); none edits sys.path. Nothing here is part of the installed
package.
"""
