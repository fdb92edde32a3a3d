"""A study's speed, the whole command: its throughput, its fixed cost and what more seeds cost.

Each scenario runs `microgpt ablate` as a fresh process with a fresh --out, `--repeats` times,
alternating between the sides it compares; the figures are medians of the wall times.

  throughput  `microgpt ablate --seeds 50`: 4 designs x 50 seeds = 200 runs of 1,000 steps, in
              run-steps per second (200,000 run-steps over the wall time). Goal on 2 cores:
              >= 30,000 (under 7 s).
  fixed       `microgpt ablate --steps 1` beside `python -c "import torch"`: what a study costs
              besides its training. Goal: at most the import's own time + 0.5 s.
  seeds       the README's worked example (6 designs x 3 widths, 2,000 steps) with --seeds 20
              against --seeds 5. Goal: at most 1.5x.

With `--old` (another build's `microgpt` executable, e.g. main's in its own virtual
environment), each scenario runs that build too, alternating with this one, and prints the
ratio old / new beside each figure. The machine's load moves every figure here: run it on an
otherwise idle machine, and compare figures measured side by side in one run.

    python bench/study_speed.py
    python bench/study_speed.py --old ../main/.venv/bin/microgpt --repeats 5
    python bench/study_speed.py --scenarios fixed --repeats 9
    python bench/study_speed.py --clock cpu --old ...   # on a loaded machine: ratios only

The last line printed is the whole result as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from microgpt.environment import cpu_model

THROUGHPUT = ["--seeds", "50"]
RUN_STEPS = 4 * 50 * 1000  # the throughput study's runs x steps
WORKED = ["--vary", "mlp_activation", "--vary", "qk_norm", "--vary", "n_embd=16,32,64"]
WORKED += ["--steps", "2000"]
GOALS = {"throughput": 30_000.0, "fixed": 0.5, "seeds": 1.5}  # run-steps/s, s, ratio


def this_microgpt() -> str:
    here = Path(sys.executable).parent / "microgpt"
    return str(here) if here.exists() else "microgpt"


def timed(argv: list[str], clock: str = "wall") -> float:
    """Seconds of `argv` run in a fresh folder (`{out}` in it is that folder's study path): by
    the wall clock, or with `clock` "cpu" the CPU time of the command and every process it
    started; fails loudly if it fails."""
    with tempfile.TemporaryDirectory() as tmp:
        argv = [a.replace("{out}", str(Path(tmp) / "study")) for a in argv]
        start, used = time.perf_counter(), _children_cpu()
        done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        if clock == "cpu":
            seconds = _children_cpu() - used
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr.strip()}")
    return seconds


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def ablate(microgpt: str, *flags: str) -> list[str]:
    return [microgpt, "ablate", *flags, "--out", "{out}"]


def python_of(microgpt: str) -> str:
    """The interpreter beside a `microgpt` executable (its virtual environment's)."""
    python = Path(microgpt).parent / "python"
    return str(python) if python.exists() else sys.executable


def commands(name: str, builds: dict[str, str]) -> dict[str, list[str]]:
    """What a scenario times, by label, for each build ("new", and "old" with --old)."""
    out = {}
    for build, microgpt in builds.items():
        if name == "throughput":
            out[build] = ablate(microgpt, *THROUGHPUT)
        elif name == "fixed":
            out[f"{build}: ablate --steps 1"] = ablate(microgpt, "--steps", "1")
            out[f"{build}: import torch"] = [python_of(microgpt), "-c", "import torch"]
        else:
            out[f"{build}: seeds 20"] = ablate(microgpt, *WORKED, "--seeds", "20")
            out[f"{build}: seeds 5"] = ablate(microgpt, *WORKED, "--seeds", "5")
    return out


def figures(name: str, medians: dict[str, float], builds: dict[str, str]) -> dict:
    """Each build's figure of the scenario (and its goal's verdict)."""
    out = {}
    for build in builds:
        if name == "throughput":
            value = RUN_STEPS / medians[build]
            text = f"{value:,.0f} run-steps/s ({medians[build]:.2f} s)"
            met = value >= GOALS[name]
        elif name == "fixed":
            study, torch = medians[f"{build}: ablate --steps 1"], medians[f"{build}: import torch"]
            value = study - torch
            text = f"ablate --steps 1 {study:.2f} s, import torch {torch:.2f} s: +{value:.2f} s"
            met = value <= GOALS[name]
        else:
            twenty, five = medians[f"{build}: seeds 20"], medians[f"{build}: seeds 5"]
            value = twenty / five
            text = f"--seeds 20 {twenty:.1f} s, --seeds 5 {five:.1f} s: {value:.2f}x"
            met = value <= GOALS[name]
        out[build] = {"value": value, "text": text, "goal_met": met}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", help="another build's microgpt executable, to compare against")
    p.add_argument("--scenarios", default="throughput,fixed,seeds", help="comma-separated")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="wall time (default; the goals are in it), or the CPU time of the command and its "
        "workers: steadier on a machine shared with other jobs, but it counts two cores' work "
        "twice, so only its ratios between builds mean anything",
    )
    a = p.parse_args(argv)
    names = [s.strip() for s in a.scenarios.split(",")]
    unknown = [n for n in names if n not in GOALS]
    if unknown:
        raise SystemExit(f"unknown scenario {unknown[0]!r}: use {', '.join(GOALS)}")
    if a.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    builds = {"new": this_microgpt()}
    if a.old:
        builds["old"] = a.old
    out: dict = {"cpu": cpu_model(), "cores": os.cpu_count(), "repeats": a.repeats}
    out["clock"] = a.clock
    print(
        f"{cpu_model()}, {os.cpu_count()} cores; medians of {a.repeats} repeats, alternating; "
        f"{a.clock} time"
    )
    for name in names:
        runs = commands(name, builds)
        times: dict[str, list[float]] = {label: [] for label in runs}
        for r in range(a.repeats):
            order = list(runs) if r % 2 == 0 else list(reversed(runs))
            for label in order:
                times[label].append(timed(runs[label], a.clock))
        medians = {label: statistics.median(t) for label, t in times.items()}
        row = {"seconds": times, "median": medians, "builds": figures(name, medians, builds)}
        for build, f in row["builds"].items():
            verdict = "met" if f["goal_met"] else "not met"
            print(f"{name:10s} {build}: {f['text']} (goal: {verdict})", flush=True)
        if "old" in builds:
            old, new = row["builds"]["old"]["value"], row["builds"]["new"]["value"]
            row["old_over_new"] = old / new
            better = new / old if name == "throughput" else old / new
            print(f"{name:10s} new against old: {better:.2f}x", flush=True)
        out[name] = row
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
