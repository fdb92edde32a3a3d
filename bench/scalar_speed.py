"""Scalar mode against the reference's naive graph (tests/naive_gpt.py), side by side.

Each repeat trains both from the same seed on the same documents for --steps steps (the
reference's defaults: names, 1 layer, n_embd 16, batch 1), timing the training steps only,
and checks that they print the same losses to six decimals. Reports the median of the
per-repeat speed ratios.

    python bench/scalar_speed.py --steps 100 --repeats 5
"""

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from naive_gpt import NaiveRun  # noqa: E402

from microgpt.config import TrainConfig  # noqa: E402
from microgpt.data import read_documents  # noqa: E402
from microgpt.scalar.model import ScalarGPT  # noqa: E402
from microgpt.schedule import lr_at  # noqa: E402
from microgpt.train import prepare  # noqa: E402


def time_naive(docs, steps):
    model = NaiveRun(docs, seed=42)
    start = time.perf_counter()
    losses = [model.train_step(s, 1000) for s in range(steps)]
    return time.perf_counter() - start, losses


def time_scalar(steps):
    tc = TrainConfig()
    config, prep = prepare(None, {}, tc)
    model = ScalarGPT(config, prep.weights, tc)
    batches = [[prep.tokenizer.encode_document(prep.split.train[s])] for s in range(steps)]
    start = time.perf_counter()
    losses = [model.train_step(batches[s], lr_at(s, tc)) for s in range(steps)]
    return time.perf_counter() - start, losses


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100, help="training steps per timed run")
    ap.add_argument("--repeats", type=int, default=5, help="side-by-side repeats")
    a = ap.parse_args()
    docs = read_documents()
    rows = []
    for r in range(a.repeats):
        gc.collect()
        naive_s, naive_losses = time_naive(docs, a.steps)
        gc.collect()
        ours_s, our_losses = time_scalar(a.steps)
        same = [f"{x:.6f}" for x in naive_losses] == [f"{x:.6f}" for x in our_losses]
        rows.append((a.steps / naive_s, a.steps / ours_s, same))
        print(
            f"repeat {r + 1}: naive {rows[-1][0]:6.1f} steps/s | scalar mode "
            f"{rows[-1][1]:6.1f} steps/s | ratio {rows[-1][1] / rows[-1][0]:5.1f}x | "
            f"same losses: {same}",
            flush=True,
        )
    ratios = [ours / naive for naive, ours, _ in rows]
    print(
        json.dumps(
            {
                "benchmark": "scalar-vs-naive-reference",
                "python": platform.python_version(),
                "steps": a.steps,
                "repeats": a.repeats,
                "naive_steps_per_s": round(statistics.median(r[0] for r in rows), 1),
                "scalar_steps_per_s": round(statistics.median(r[1] for r in rows), 1),
                "median_ratio": round(statistics.median(ratios), 2),
                "min_ratio": round(min(ratios), 2),
                "losses_equal_to_6_decimals": all(r[2] for r in rows),
            }
        )
    )


if __name__ == "__main__":
    main()
