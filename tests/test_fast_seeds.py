"""experiments/bench/fast_seeds.py's table: ratios and pass/fail per seed. No timing assertions;
the processes it times are exercised by running the script (experiments/bench/FAST.md)."""

from __future__ import annotations

import argparse

from experiments.bench import fast_seeds


def run(seed: int, seconds: float, accuracy: float) -> dict:
    return {
        "seed": seed,
        "seconds": seconds,
        "compile_seconds": 0.5,
        "epoch_seconds": [3.0, 3.0],
        "test_accuracy": accuracy,
        "val_accuracy": 0.93,
    }


def rows(text: str) -> list[list[str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("| ") and ln[2].isdigit()]
    return [[cell.strip() for cell in ln.strip("|").split("|")] for ln in lines]


def test_each_seed_is_judged_against_the_mean_torch_epoch():
    args = argparse.Namespace(cold_cache=False, subset=None)
    runs = [run(0, 18.0, 0.9231), run(1, 21.0, 0.9250), run(2, 15.0, 0.9187)]
    text = fast_seeds.report(runs, [14.0, 18.0], args)  # mean 16 s
    got = {r[0]: (r[6], r[7], r[8]) for r in rows(text)}
    assert got == {
        "0": ("1.12×", "PASS", "PASS"),
        "1": ("1.31×", "PASS", "FAIL"),
        "2": ("0.94×", "FAIL", "PASS"),
    }
    assert "All seeds pass: no." in text


def test_all_pass_only_when_every_seed_passes_both():
    args = argparse.Namespace(cold_cache=True, subset=None)
    text = fast_seeds.report([run(0, 19.9, 0.92), run(1, 10.0, 0.95)], [16.0, 16.0], args)
    assert "All seeds pass: yes." in text
    assert "an empty's compilation cache" not in text and "an empty compilation cache" in text


def test_a_new_measurement_keeps_the_hand_written_history(tmp_path):
    out = tmp_path / "FAST.md"
    out.write_text(f"# old table\n\n{fast_seeds.HISTORY_MARK}\n\n## How it was found\nnotes\n")
    text = fast_seeds.with_history("# new table\n", out)
    assert text.startswith("# new table") and "old table" not in text
    assert text.endswith(f"{fast_seeds.HISTORY_MARK}\n\n## How it was found\nnotes\n")
    out.write_text("# a file without history\n")
    assert fast_seeds.with_history("# new table\n", out) == "# new table\n"
