"""Muon's cost against AdamW's, side by side: tensor mode's optimizer step alone, the whole
training step, and scalar mode.

Tensor mode (`microgpt.tensor.muon.FlatMuon` against `microgpt.tensor.optim.FlatAdam`), in
three scenarios:

  stack20  the reference model (n_layer 1, n_embd 16, n_head 4), batch 1, 20 runs as a stack
  solo     the reference model, batch 1, one run
  batch32  n_layer 4, n_embd 64, n_head 4, batch 32, one run

For each, `--repeats` rounds (default 5), and in each round, alternating: the optimizer's
update alone, on the flat gradient of a real step; and the whole training step (`train_step`,
or `stack_step`), with `--optimizer adamw`, then with `--optimizer muon`. Also printed is the
estimate the optimizer timings alone give: AdamW's step - FlatAdam's update + FlatMuon's
update. The goal: a Muon step at most 2x an AdamW step in stack20.

Scalar mode (`--scalar-steps`, 0 to skip): the reference model's steps/s with AdamW and with
Muon, alternating, one run each per round.

Medians over the rounds; one torch thread by default, as a study's processes run. The last
line printed is the whole result as JSON.

    python bench/muon_speed.py
    python bench/muon_speed.py --scenarios stack20 --repeats 9 --scalar-steps 0
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

SCENARIOS = {
    "stack20": dict(runs=20, batch_size=1, n_layer=1, n_embd=16, n_head=4, steps=200),
    "solo": dict(runs=1, batch_size=1, n_layer=1, n_embd=16, n_head=4, steps=400),
    "batch32": dict(runs=1, batch_size=32, n_layer=4, n_embd=64, n_head=4, steps=30),
}
WARMUP = 2  # untimed steps before each measurement: the first steps allocate
GOAL = dict(scenario="stack20", ratio=2.0)  # a Muon step <= 2x an AdamW step


class Runs:
    """A scenario's runs, prepared once: TrainConfigs, initial weights, per-step documents."""

    def __init__(self, s: dict, steps: int, dtype: str, threads: int):
        from microgpt.config import TrainConfig
        from microgpt.modes import TensorOptions
        from microgpt.train import prepare, token_data

        self.options = TensorOptions(device="cpu", dtype=dtype, threads=threads)
        model = dict(n_layer=s["n_layer"], n_embd=s["n_embd"], n_head=s["n_head"])
        self.trains, self.weights, self.step_docs = [], [], []
        for seed in range(s["runs"]):
            rate = 0.003 * 10 ** ((seed % 10) / 9)  # 0.003 to 0.03, as bench/stack_speed.py
            tc = TrainConfig(steps=steps, batch_size=s["batch_size"], seed=seed, learning_rate=rate)
            self.config, prep = prepare(None, model, tc)
            self.trains.append(tc)
            self.weights.append(prep.weights)
            self.step_docs.append(token_data(prep, tc, self.config.block_size)[0])
        self.stacked = s["runs"] > 1

    def model(self, optimizer: str):
        """A fresh model (a stack, or one run) training with `optimizer`."""
        from dataclasses import replace

        from microgpt.tensor import TensorGPT
        from microgpt.tensor.stack import Stack

        trains = [replace(tc, optimizer=optimizer) for tc in self.trains]
        if self.stacked:
            return Stack(self.config, self.weights, trains, self.options)
        return TensorGPT(self.config, self.weights[0], trains[0], self.options)

    def docs_and_lrs(self, step: int):
        from microgpt.schedule import lr_at

        if self.stacked:
            return [d(step) for d in self.step_docs], [lr_at(step, t) for t in self.trains]
        return self.step_docs[0](step), [lr_at(step, self.trains[0])]

    def step(self, gpt, step: int):
        docs, lrs = self.docs_and_lrs(step)
        if self.stacked:
            return gpt.stack_step(docs, lrs)
        return gpt.train_step(docs, lrs[0])

    def time_steps(self, optimizer: str, steps: int) -> float:
        """Seconds a training step, over `steps` timed steps."""
        gpt = self.model(optimizer)
        for step in range(WARMUP):
            self.step(gpt, step)
        start = time.perf_counter()
        for step in range(WARMUP, WARMUP + steps):
            losses = self.step(gpt, step)
        seconds = (time.perf_counter() - start) / steps
        check_finite(losses if isinstance(losses, list) else [losses])
        return seconds

    def time_update(self, optimizer: str, steps: int) -> float:
        """Seconds an optimizer update, on the gradient of one real step, over `steps`."""
        gpt = self.model(optimizer)
        _, lrs = self.docs_and_lrs(0)
        self.step(gpt, 0)  # leaves that step's gradient in gpt.grad
        for step in range(1, WARMUP + 1):
            gpt.optimizer.update(lrs, step)
        start = time.perf_counter()
        for step in range(WARMUP + 1, WARMUP + 1 + steps):
            gpt.optimizer.update(lrs, step)
        if gpt.flat.is_cuda:
            import torch

            torch.cuda.synchronize()
        return (time.perf_counter() - start) / steps


def check_finite(losses: list[float]) -> None:
    if not all(math.isfinite(x) for x in losses):
        raise SystemExit(f"a run diverged: losses {losses}")


def measure_tensor(name: str, a: argparse.Namespace) -> dict:
    s = SCENARIOS[name]
    steps = max(1, round(s["steps"] * a.steps_scale))
    runs = Runs(s, WARMUP + steps + 1, a.dtype, a.threads)
    rounds = {k: [] for k in ("adamw_update", "muon_update", "adamw_step", "muon_step")}
    for _ in range(a.repeats):
        for optimizer in ("adamw", "muon"):
            rounds[f"{optimizer}_update"].append(runs.time_update(optimizer, 4 * steps))
        for optimizer in ("adamw", "muon"):
            rounds[f"{optimizer}_step"].append(runs.time_steps(optimizer, steps))
    ms = {k: 1000 * statistics.median(v) for k, v in rounds.items()}
    estimate = ms["adamw_step"] - ms["adamw_update"] + ms["muon_update"]
    return {
        "config": {k: v for k, v in s.items() if k != "steps"},
        "params": runs.config.num_params(),
        "steps": steps,
        "ms": ms,
        "update_ratio": ms["muon_update"] / ms["adamw_update"],
        "step_ratio": ms["muon_step"] / ms["adamw_step"],
        "estimated_step_ratio": estimate / ms["adamw_step"],
        "rounds_ms": {k: [round(1000 * x, 3) for x in v] for k, v in rounds.items()},
    }


def measure_scalar(a: argparse.Namespace) -> dict:
    from microgpt.config import TrainConfig
    from microgpt.scalar.model import ScalarGPT
    from microgpt.schedule import lr_at
    from microgpt.train import prepare

    rounds = {"adamw": [], "muon": []}
    for _ in range(a.repeats):
        for optimizer in rounds:
            tc = TrainConfig(optimizer=optimizer)
            config, prep = prepare(None, {}, tc)
            gpt = ScalarGPT(config, prep.weights, tc)
            docs = [[prep.tokenizer.encode_document(d)] for d in prep.split.train[: a.scalar_steps]]
            start = time.perf_counter()
            for step, batch in enumerate(docs):
                gpt.train_step(batch, lr_at(step, tc))
            rounds[optimizer].append(a.scalar_steps / (time.perf_counter() - start))
    rate = {k: statistics.median(v) for k, v in rounds.items()}
    return {
        "steps": a.scalar_steps,
        "steps_per_s": rate,
        "muon_vs_adamw_time": rate["adamw"] / rate["muon"],
        "rounds": {k: [round(x, 1) for x in v] for k, v in rounds.items()},
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default="stack20,solo,batch32", help="comma-separated")
    ap.add_argument("--repeats", type=int, default=5, help="alternating rounds")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16"])
    ap.add_argument("--steps-scale", type=float, default=1.0, help="scale every step count")
    ap.add_argument("--scalar-steps", type=int, default=50, help="scalar mode steps; 0: skip")
    a = ap.parse_args(argv)
    names = [n for n in a.scenarios.split(",") if n]
    for name in names:
        if name not in SCENARIOS:
            ap.error(f"unknown scenario {name!r}: use {', '.join(SCENARIOS)}")
    if a.repeats < 1 or a.threads < 1 or a.scalar_steps < 0:
        ap.error("--repeats and --threads must be positive, --scalar-steps 0 or more")

    import torch

    from microgpt.environment import machine

    torch.set_num_threads(a.threads)
    result = {
        "machine": machine(),
        "threads": a.threads,
        "dtype": a.dtype,
        "repeats": a.repeats,
        "scenarios": {},
    }
    print(
        f"Muon vs AdamW on {result['machine']['cpu']} ({os.cpu_count()} cores), "
        f"{a.threads} thread(s), {a.dtype}, torch {torch.__version__}; "
        f"medians of {a.repeats} alternating rounds"
    )
    print(
        f"  {'scenario':>8} {'update ms: adamw':>17} {'muon':>7} {'ratio':>6}   "
        f"{'step ms: adamw':>15} {'muon':>7} {'ratio':>6} {'(estimate)':>10}"
    )
    for name in names:
        r = measure_tensor(name, a)
        result["scenarios"][name] = r
        ms = r["ms"]
        print(
            f"  {name:>8} {ms['adamw_update']:>17.3f} {ms['muon_update']:>7.3f} "
            f"{r['update_ratio']:>5.2f}x   {ms['adamw_step']:>15.3f} {ms['muon_step']:>7.3f} "
            f"{r['step_ratio']:>5.2f}x {r['estimated_step_ratio']:>9.2f}x"
        )
        sys.stdout.flush()
    if a.scalar_steps:
        r = result["scalar"] = measure_scalar(a)
        rate = r["steps_per_s"]
        print(
            f"  scalar mode, reference model, batch 1: adamw {rate['adamw']:.1f} steps/s, "
            f"muon {rate['muon']:.1f} steps/s: a Muon step takes {r['muon_vs_adamw_time']:.2f}x"
        )
    goal = result["scenarios"].get(GOAL["scenario"])
    if goal is not None:
        met = goal["step_ratio"] <= GOAL["ratio"]
        result["goal"] = {**GOAL, "measured": goal["step_ratio"], "met": met}
        print(
            f"goal: a Muon step <= {GOAL['ratio']:.0f}x an AdamW step in {GOAL['scenario']}: "
            f"{goal['step_ratio']:.2f}x, {'met' if met else 'not met'}"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
