"""The benchmark harness: bench.py times our workloads and their PyTorch, Keras and scikit-learn
peers (peers*.py), each in a fresh process, and writes BENCH.md (`make bench`, or `python -m
experiments.bench.bench`); fast_seeds.py writes FAST.md, gpu_bench.py measures on an accelerator."""
