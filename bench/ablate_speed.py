"""`microgpt ablate`'s wall time, stacked (today's default) against another build, side by side.

Each scenario runs its command as a fresh process with a fresh --out, alternating between this
checkout's `microgpt` and `--old` (another build's `microgpt`, e.g. one installed from the
commit before stacking), `--repeats` times; the figures are medians of the wall times, and the
ratio is old / new. Without --old only this checkout's times are printed.

  default  the default study: 4 designs x 5 seeds, 1,000 steps at batch 1 (20 runs)
  worked   the README's worked example: 6 designs x 3 widths x 5 seeds, 2,000 steps (90 runs)
  seeds    the worked example with --seeds 20 against --seeds 5, this checkout only: what four
           times the seeds cost

    python bench/ablate_speed.py --old ../old/.venv/bin/microgpt
    python bench/ablate_speed.py --scenarios seeds --repeats 1

The last line printed is the whole result as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from microgpt.environment import cpu_model

ROOT = Path(__file__).resolve().parent.parent
WORKED = ["--vary", "mlp_activation", "--vary", "qk_norm", "--vary", "n_embd=16,32,64"]
WORKED += ["--steps", "2000"]
SCENARIOS = {
    "default": {"new": [], "old": []},
    "worked": {"new": WORKED, "old": WORKED},
    "seeds": {"seeds 20": [*WORKED, "--seeds", "20"], "seeds 5": [*WORKED, "--seeds", "5"]},
}


def this_microgpt() -> str:
    here = Path(sys.executable).parent / "microgpt"
    return str(here) if here.exists() else "microgpt"


def timed(microgpt: str, argv: list[str]) -> float:
    """Wall seconds of `microgpt ablate *argv` in a fresh folder; fails loudly if it fails."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        done = subprocess.run(
            [microgpt, "ablate", *argv, "--out", str(Path(tmp) / "study")],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{microgpt} ablate {' '.join(argv)} failed:\n{done.stderr.strip()}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", help="another build's microgpt executable, to compare against")
    p.add_argument("--scenarios", default="default,worked,seeds", help="comma-separated")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    names = [s.strip() for s in a.scenarios.split(",")]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario {unknown[0]!r}: use {', '.join(SCENARIOS)}")
    builds = {"new": this_microgpt(), "seeds 20": this_microgpt(), "seeds 5": this_microgpt()}
    if a.old:
        builds["old"] = a.old
    out: dict = {"cpu": cpu_model(), "cores": os.cpu_count(), "repeats": a.repeats}
    print(f"{cpu_model()}, {os.cpu_count()} cores; medians of {a.repeats} repeats, alternating")
    for name in names:
        sides = {k: v for k, v in SCENARIOS[name].items() if k in builds}
        times: dict[str, list[float]] = {k: [] for k in sides}
        for _ in range(a.repeats):
            for side, extra in sides.items():
                times[side].append(timed(builds[side], extra))
        medians = {side: statistics.median(t) for side, t in times.items()}
        row = {"seconds": times, "median": medians}
        text = ", ".join(f"{side} {m:.1f} s" for side, m in medians.items())
        if name == "seeds":
            row["ratio"] = medians["seeds 20"] / medians["seeds 5"]
            text += f": 20 seeds cost {row['ratio']:.2f}x 5 seeds"
        elif "old" in medians:
            row["ratio"] = medians["old"] / medians["new"]
            text += f": {row['ratio']:.2f}x faster"
        print(f"{name:8s} {text}", flush=True)
        out[name] = row
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
