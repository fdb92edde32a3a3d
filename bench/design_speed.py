"""The reference written as a design file against the hand-written model, side by side.

`examples/designs/reference.py` (the reference composed of `microgpt.tensor.blocks`, its
backward from torch autograd: `tensor/design_net.py`'s `DesignNet`) against the built-in net
(`tensor/net.py`, the hand-written backward), each in `TensorGPT` or `Stack`, per run-step, in
one process. Scenarios:

  batch1   the reference model (n_layer 1, n_embd 16, n_head 4), batch 1, one run
  stack20  the same, a stack of 20 runs (`Stack`), batch 1
  batch32  n_layer 4, n_embd 64, n_head 4, batch 32, one run

Both models are built once per scenario from the same initial weights and trained side by side
on the same documents: `--rounds` rounds, each timing `steps` steps of one and then of the
other (the order alternating between rounds), so that both see the machine's load alike. A
round's ratio is design time over hand-written time; the figure is the median over rounds
(and the quartiles), by the wall clock and by this process's CPU time (which, with one
thread, leaves out the time other processes of a loaded machine take from it). One torch
thread by default. The goals: at most 2x at batch 1, solo and in
a stack of 20; at most 1.5x at batch 32. The last line printed is the whole result as JSON.

    python bench/design_speed.py
    python bench/design_speed.py --scenarios batch1 --rounds 60
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "examples" / "designs" / "reference.py"

SCENARIOS = {
    "batch1": dict(batch_size=1, n_layer=1, n_embd=16, n_head=4, runs=1, steps=100),
    "stack20": dict(batch_size=1, n_layer=1, n_embd=16, n_head=4, runs=20, steps=10),
    "batch32": dict(batch_size=32, n_layer=4, n_embd=64, n_head=4, runs=1, steps=3),
}
GOALS = {"batch1": 2.0, "stack20": 2.0, "batch32": 1.5}  # design / hand-written, at most


class Pair:
    """The hand-written model and the design's, from the same runs' weights and documents."""

    def __init__(self, s: dict, design: str, dtype: str, threads: int):
        from microgpt.config import TensorOptions, TrainConfig
        from microgpt.design import load
        from microgpt.tensor import Stack, TensorGPT
        from microgpt.tensor.design_check import check
        from microgpt.train import prepare, token_data

        options = TensorOptions(device="cpu", dtype=dtype, threads=threads)
        model = dict(n_layer=s["n_layer"], n_embd=s["n_embd"], n_head=s["n_head"])
        trains, weights, self.step_docs = [], [], []
        for seed in range(s["runs"]):
            tc = TrainConfig(
                steps=10**6, batch_size=s["batch_size"], seed=seed, learning_rate=0.003
            )
            config, prep = prepare(None, model, tc)
            trains.append(tc)
            weights.append(prep.weights)
            self.step_docs.append(token_data(prep, tc, config.block_size)[0])
        file = load(design)
        docs = [d for step in range(4) for d in self.step_docs[0](step)][:4]
        checked = check(file, config, file.resolve(), docs)
        if checked.shapes != config.param_shapes():
            raise SystemExit(f"{design} is not the reference: its weights differ")
        net = checked.net(options)
        if s["runs"] == 1:
            self.models = {
                "hand": TensorGPT(config, weights[0], trains[0], options),
                "design": TensorGPT(config, weights[0], trains[0], options, net),
            }
        else:
            self.models = {
                "hand": Stack(config, weights, trains, options),
                "design": Stack(config, weights, trains, options, net),
            }
        self.runs, self.done = s["runs"], {"hand": 0, "design": 0}

    def time(self, which: str, steps: int) -> tuple[float, float]:
        """Seconds per step of `steps` more steps of one of the two: wall, CPU."""
        gpt, lrs = self.models[which], [0.003] * self.runs
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step = self.done[which]
            if self.runs == 1:
                gpt.train_step(self.step_docs[0](step), lrs[0])
            else:
                gpt.stack_step([d(step) for d in self.step_docs], lrs)
            self.done[which] += 1
        return (time.perf_counter() - start) / steps, (time.process_time() - cpu) / steps


def measure(name: str, a: argparse.Namespace) -> dict:
    s = SCENARIOS[name]
    pair = Pair(s, a.design, a.dtype, a.threads)
    steps = max(1, round(s["steps"] * a.steps_scale))
    for which in ("hand", "design"):  # warm-up: the first steps allocate
        pair.time(which, 2)
    times: dict[str, list[tuple[float, float]]] = {"hand": [], "design": []}
    for r in range(a.rounds):
        for which in ("hand", "design") if r % 2 == 0 else ("design", "hand"):
            times[which].append(pair.time(which, steps))
    out = {"config": {k: v for k, v in s.items() if k != "steps"}, "steps_per_round": steps}
    for clock, k in (("", 0), ("cpu_", 1)):  # wall clock, then CPU time
        hand = [t[k] for t in times["hand"]]
        design = [t[k] for t in times["design"]]
        ratios = [d / h for d, h in zip(design, hand)]
        quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        out[f"{clock}hand_ms"] = 1e3 * statistics.median(hand)
        out[f"{clock}design_ms"] = 1e3 * statistics.median(design)
        out[f"{clock}ratio"] = statistics.median(ratios)
        out[f"{clock}quartiles"] = [quartiles[0], quartiles[2]]
    out["goal"] = GOALS[name]
    out["met"] = out["ratio"] <= GOALS[name]
    out["cpu_met"] = out["cpu_ratio"] <= GOALS[name]
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    ap.add_argument("--rounds", type=int, default=30, help="alternating rounds (default 30)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16"])
    ap.add_argument("--steps-scale", type=float, default=1.0, help="scale every step count")
    ap.add_argument("--design", default=str(REFERENCE), help="the design file (the reference)")
    a = ap.parse_args(argv)
    names = a.scenarios.split(",")
    for name in names:
        if name not in SCENARIOS:
            ap.error(f"unknown scenario {name!r}: use {', '.join(SCENARIOS)}")
    if a.rounds < 1 or a.threads < 1:
        ap.error("--rounds and --threads must be positive")

    import torch

    from microgpt.environment import machine

    torch.set_num_threads(a.threads)
    result = {
        "machine": machine()
        | {
            "load_average": os.getloadavg(),
        },
        "design": a.design,
        "threads": a.threads,
        "dtype": a.dtype,
        "rounds": a.rounds,
        "scenarios": {},
    }
    print(
        f"{Path(a.design).name} (autograd) against the hand-written model on "
        f"{result['machine']['cpu']} ({os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}), "
        f"{a.threads} thread(s), {a.dtype}, torch {torch.__version__}; medians of "
        f"{a.rounds} alternating rounds"
    )
    for name in names:
        r = result["scenarios"][name] = measure(name, a)
        c = r["config"]
        print(
            f"  {name:8s} batch {c['batch_size']:>2}, {c['runs']:>2} run(s), n_layer "
            f"{c['n_layer']}, n_embd {c['n_embd']}, goal at most {r['goal']}x:"
        )
        for clock, what in (("", "wall"), ("cpu_", "CPU")):
            print(
                f"    {what:4s} hand-written {r[clock + 'hand_ms']:.3f} ms, design "
                f"{r[clock + 'design_ms']:.3f} ms a step: {r[clock + 'ratio']:.2f}x (quartiles "
                f"{r[clock + 'quartiles'][0]:.2f}-{r[clock + 'quartiles'][1]:.2f}: "
                f"{'met' if r[clock + 'met'] else 'NOT met'})"
            )
        sys.stdout.flush()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
