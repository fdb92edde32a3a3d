"""Run-steps per second of a stack (`tensor.stack.Stack`) against the solo loop, in one process.

A study of many runs of one shape (seeds, a learning-rate sweep) can train them one after
another, each a solo model (the baseline here), or as one stack of R runs (`stack_step`). The
figure is run-steps/s: Adam steps of single runs done per second, R per stack step.

Two scenarios:

  batch1   the reference model (n_layer 1, n_embd 16, n_head 4), batch 1
  batch32  n_layer 4, n_embd 64, n_head 4, batch 32
  wide     n_layer 1, n_embd 64, n_head 4, batch 1 (the worked example's widest level)
  batch8   the reference model at batch 8

For each, `--repeats` rounds (default 3), each a solo measurement and then one stacked
measurement at every R of `--runs` (default 1, 5, 20, 50); the figures are medians over the
rounds, and each R's ratio is its median over the solo median. Runs differ in seed (so in
shuffle, initial weights and documents) and learning rate (spread from 0.003 to 0.03). Each
measurement builds its model from the initial weights untimed, runs `WARMUP` untimed steps,
then times its steps, including what a real study pays every step: looking up each run's
documents (`token_data`) and learning rate (`lr_at`). A measurement does about `run_steps`
run-steps (at least `min_steps` steps), so that a small R is not timed over a handful of
milliseconds.

One torch thread by default (`--threads`): several processes of one thread each are how a
study would fill a machine's cores. The goals at batch 1 (reference model, one thread): a stack
of one at least as fast as the solo loop, R = 20 at least 8x the solo run-steps/s, R = 50 at
least 12x; and the marginal cost of one more run in a stack (a step's time from the second
largest R to the largest, per run added) at most 0.05 of a solo step. `--clock cpu` times
this process's CPU time instead of the wall clock: steadier on a machine shared with other
jobs (one thread: the two are the same on an idle machine). The last line printed is the whole
result as JSON.

    python bench/stack_speed.py
    python bench/stack_speed.py --scenarios batch1 --runs 1,20 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

CLOCK = time.perf_counter  # --clock: wall time, or the process's CPU time

SCENARIOS = {
    "batch1": dict(batch_size=1, n_layer=1, n_embd=16, n_head=4, run_steps=4000, min_steps=300),
    "batch32": dict(batch_size=32, n_layer=4, n_embd=64, n_head=4, run_steps=400, min_steps=10),
    # where stacking stops paying on a CPU (`plan.default_stack`'s budget):
    "wide": dict(batch_size=1, n_layer=1, n_embd=64, n_head=4, run_steps=2000, min_steps=100),
    "batch8": dict(batch_size=8, n_layer=1, n_embd=16, n_head=4, run_steps=2000, min_steps=100),
}
WARMUP = 2  # untimed steps before each measurement: the first steps allocate
GOAL_SCENARIO = "batch1"
GOALS = {1: 1.0, 20: 8.0, 50: 12.0}  # R: at least this many times the solo loop's run-steps/s
MARGINAL_GOAL = 0.05  # one more run costs at most this share of a solo step


class Study:
    """Up to `count` runs of one scenario, prepared once: each run's TrainConfig, initial
    weights and per-step documents."""

    def __init__(self, s: dict, count: int, steps: int, dtype: str, threads: int):
        from microgpt.config import TrainConfig
        from microgpt.modes import TensorOptions
        from microgpt.train import prepare, token_data

        self.options = TensorOptions(device="cpu", dtype=dtype, threads=threads)
        model = dict(n_layer=s["n_layer"], n_embd=s["n_embd"], n_head=s["n_head"])
        self.trains, self.weights, self.step_docs = [], [], []
        for seed in range(count):
            tc = TrainConfig(
                steps=steps, batch_size=s["batch_size"], seed=seed, learning_rate=sweep(seed)
            )
            config, prep = prepare(None, model, tc)
            self.config = config
            self.trains.append(tc)
            self.weights.append(prep.weights)
            self.step_docs.append(token_data(prep, tc, config.block_size)[0])

    def solo(self, steps: int) -> float:
        """The solo loop: run 0 alone for `steps` timed steps; seconds."""
        from microgpt.schedule import lr_at
        from microgpt.tensor import TensorGPT

        gpt = TensorGPT(self.config, self.weights[0], self.trains[0], self.options)
        tc, step_docs = self.trains[0], self.step_docs[0]
        for step in range(WARMUP):
            gpt.train_step(step_docs(step), lr_at(step, tc))
        start = CLOCK()
        for step in range(WARMUP, WARMUP + steps):
            loss = gpt.train_step(step_docs(step), lr_at(step, tc))
        seconds = CLOCK() - start
        check_finite([loss])
        return seconds

    def stacked(self, runs: int, steps: int) -> float:
        """Runs 0 .. runs - 1 as one stack for `steps` timed steps; seconds."""
        from microgpt.schedule import lr_at
        from microgpt.tensor import Stack

        trains, step_docs = self.trains[:runs], self.step_docs[:runs]
        gpt = Stack(self.config, self.weights[:runs], trains, self.options)
        for step in range(WARMUP):
            gpt.stack_step([d(step) for d in step_docs], [lr_at(step, tc) for tc in trains])
        start = CLOCK()
        for step in range(WARMUP, WARMUP + steps):
            docs = [d(step) for d in step_docs]
            lrs = [lr_at(step, tc) for tc in trains]
            losses = gpt.stack_step(docs, lrs)
        seconds = CLOCK() - start
        check_finite(losses)
        return seconds


def sweep(seed: int) -> float:
    """Run `seed`'s learning rate: 0.003 to 0.03, log-spaced, every 10 runs."""
    return 0.003 * 10 ** ((seed % 10) / 9)


def check_finite(losses: list[float]) -> None:
    if not all(math.isfinite(x) for x in losses):
        raise SystemExit(f"a run diverged: losses {losses}")


def steps_for(s: dict, runs: int, scale: float) -> int:
    """Timed steps of a measurement of `runs` runs (1 for the solo loop)."""
    return max(1, round(scale * max(s["min_steps"], math.ceil(s["run_steps"] / runs))))


def measure(name: str, a: argparse.Namespace, runs_list: list[int]) -> dict:
    s = SCENARIOS[name]
    solo_steps = steps_for(s, 1, a.steps_scale)
    stack_steps = {r: steps_for(s, r, a.steps_scale) for r in runs_list}
    most = max([solo_steps, *stack_steps.values()]) + WARMUP
    study = Study(s, max(runs_list), most, a.dtype, a.threads)
    solo: list[float] = []  # run-steps/s of each round
    stacked: dict[int, list[float]] = {r: [] for r in runs_list}
    for _ in range(a.repeats):
        solo.append(solo_steps / study.solo(solo_steps))
        for r in runs_list:
            stacked[r].append(r * stack_steps[r] / study.stacked(r, stack_steps[r]))
    solo_median = statistics.median(solo)
    out = {
        "config": {k: v for k, v in s.items() if k not in ("run_steps", "min_steps")},
        "params": study.config.num_params(),
        "solo": {
            "steps": solo_steps,
            "run_steps_per_s": solo_median,
            "rounds": [round(x, 1) for x in solo],
        },
        "stacks": {},
    }
    for r in runs_list:
        median = statistics.median(stacked[r])
        out["stacks"][str(r)] = {
            "runs": r,
            "steps": stack_steps[r],
            "run_steps_per_s": median,
            "steps_per_s": median / r,
            "vs_solo": median / solo_median,
            "rounds": [round(x, 1) for x in stacked[r]],
        }
    return out


def goals(scenario: dict) -> list[dict]:
    """The batch-1 goals that this run measured: each R of `GOALS` against the solo loop, and
    the marginal cost of a run between the two largest R."""
    out = []
    stacks = scenario["stacks"]
    for runs, ratio in GOALS.items():
        if str(runs) in stacks:
            got = stacks[str(runs)]["vs_solo"]
            what = f"R = {runs} >= {ratio:g}x the solo loop"
            out.append({"what": what, "measured": got, "met": got >= ratio, "text": f"{got:.2f}x"})
    sizes = sorted(int(r) for r in stacks)
    if len(sizes) >= 2:
        a, b = sizes[-2], sizes[-1]
        step = {r: 1 / stacks[str(r)]["steps_per_s"] for r in (a, b)}  # seconds a stack step
        solo_step = 1 / scenario["solo"]["run_steps_per_s"]
        share = (step[b] - step[a]) / (b - a) / solo_step
        what = f"one more run (R = {a} to {b}) <= {MARGINAL_GOAL:g} of a solo step"
        out.append({"what": what, "measured": share, "met": share <= MARGINAL_GOAL,
                    "text": f"{share:.3f}"})  # fmt: skip
    return out


def report(name: str, r: dict) -> None:
    c = r["config"]
    print(
        f"{name}: batch {c['batch_size']}, n_layer {c['n_layer']}, n_embd {c['n_embd']}, "
        f"n_head {c['n_head']} ({r['params']:,} params)"
    )
    print(f"  {'R':>5} {'steps':>6} {'run-steps/s':>12} {'steps/s':>9} {'vs solo':>8}  rounds")
    solo = r["solo"]
    print(
        f"  {'solo':>5} {solo['steps']:>6} {solo['run_steps_per_s']:>12,.0f} "
        f"{solo['run_steps_per_s']:>9,.0f} {1:>7.2f}x  {solo['rounds']}"
    )
    for row in r["stacks"].values():
        print(
            f"  {row['runs']:>5} {row['steps']:>6} {row['run_steps_per_s']:>12,.0f} "
            f"{row['steps_per_s']:>9,.1f} {row['vs_solo']:>7.2f}x  {row['rounds']}"
        )
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default="batch1,batch32", help="comma-separated")
    ap.add_argument("--runs", default="1,5,20,50", help="stack sizes R, comma-separated")
    ap.add_argument("--repeats", type=int, default=3, help="rounds of solo, then every R")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16"])
    ap.add_argument("--steps-scale", type=float, default=1.0, help="scale every step count")
    ap.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="time by the wall clock (default), or by this process's CPU time (one thread: "
        "steadier on a machine shared with other jobs)",
    )
    a = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if a.clock == "cpu" else time.perf_counter
    names = a.scenarios.split(",")
    for name in names:
        if name not in SCENARIOS:
            ap.error(f"unknown scenario {name!r}: use {', '.join(SCENARIOS)}")
    runs_list = [int(r) for r in a.runs.split(",")]
    if min(runs_list) < 1 or a.repeats < 1 or a.threads < 1:
        ap.error("--runs, --repeats and --threads must be positive")

    import torch

    from microgpt.environment import machine

    torch.set_num_threads(a.threads)
    result = {
        "machine": machine(),
        "threads": a.threads,
        "dtype": a.dtype,
        "repeats": a.repeats,
        "warmup_steps": WARMUP,
        "scenarios": {},
    }
    print(
        f"stack vs solo loop on {result['machine']['cpu']} ({os.cpu_count()} cores), "
        f"{a.threads} thread(s), {a.dtype}, torch {torch.__version__}; "
        f"medians of {a.repeats} rounds"
    )
    for name in names:
        result["scenarios"][name] = measure(name, a, runs_list)
        report(name, result["scenarios"][name])
    scenario = result["scenarios"].get(GOAL_SCENARIO)
    if scenario is not None:
        result["goals"] = goals(scenario)
        for goal in result["goals"]:
            print(f"goal: {goal['what']}: {goal['text']}, {'met' if goal['met'] else 'not met'}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
