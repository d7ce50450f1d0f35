"""Research harnesses: one-off measurements and reproducers that README.md and docs/ cite
(hard_examples.py, keras_roundtrip.py, make_photos.py, xla_cpu_inflight_hang.py). make_photos.py
also generates the shop-style photos that tests/test_predict.py and test_preprocess.py use."""
