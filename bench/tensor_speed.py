"""Tensor mode against the naive eager-PyTorch anchor (and scalar mode), side by side.

Three scenarios, each run as fresh processes that alternate between the anchor and tensor mode,
`--repeats` times, at the same batch size and thread count; the figures are medians:

  batch1   batch 1, 1 thread, the reference model: steps/s, against the anchor and scalar mode
  batch256 batch 256, 2 threads, the reference model: real (non-padding) target tokens/s
  medium   n_layer 4, n_embd 128, n_head 4, batch 256, 2 threads: MFU, the share of this
           machine's fp32 matmul peak (best of a few 2048x2048 matmuls, same threads) that
           6 x params x tokens/s reaches

Both sides time their training steps only (from the first step, after building the model) on
the same shuffled names. The last line printed is the whole result as JSON.

The design switches of `microgpt.config` are flags here too (`--qk-norm`, `--position rope`...,
see --help): they change tensor and scalar mode's model; the anchor always runs the reference.

    python bench/tensor_speed.py                       # all three, 3 repeats
    python bench/tensor_speed.py --scenarios batch1 --repeats 5
    python bench/tensor_speed.py --scenarios batch1 --final-rmsnorm --mlp-activation gelu \
        --qk-norm --position rope                      # every new switch on
    python bench/tensor_speed.py --old ../old/.venv/bin/python   # against another build
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

from microgpt.config import SWITCHES
from microgpt.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ANCHOR = ROOT / ".." / "shared" / "bench" / "naive_torch_anchor.py"

SCENARIOS = {
    "batch1": dict(batch_size=1, threads=1, n_layer=1, n_embd=16, n_head=4, steps=1000),
    "batch256": dict(batch_size=256, threads=2, n_layer=1, n_embd=16, n_head=4, steps=300),
    "medium": dict(batch_size=256, threads=2, n_layer=4, n_embd=128, n_head=4, steps=20),
}
SCALAR_STEPS = 150  # scalar mode runs at about 140 steps/s
TARGETS = {"batch1": "steps_per_s", "batch256": "tokens_per_s", "medium": "tokens_per_s"}


# workers: one measurement each, in a fresh process, printing one JSON line ------------------------


def worker_model(a) -> dict:
    """Train tensor or scalar mode for a.steps steps; time the steps."""
    from microgpt.config import TrainConfig
    from microgpt.data import batch_indices
    from microgpt.modes import TensorOptions, make_gpt
    from microgpt.schedule import lr_at
    from microgpt.train import prepare

    tc = TrainConfig(steps=a.steps, batch_size=a.batch_size)
    model_args = dict(n_layer=a.n_layer, n_embd=a.n_embd, n_head=a.n_head, **design_of(a))
    config, prep = prepare(None, model_args, tc)
    options = None
    if a.worker == "tensor":
        options = TensorOptions(device="cpu", threads=a.threads, compile=a.compile)
    gpt = make_gpt(a.worker, config, prep.weights, tc, options)
    docs = [prep.tokenizer.encode_document(d) for d in prep.split.train]
    batches = [[docs[i] for i in batch_indices(s, a.batch_size, len(docs))] for s in range(a.steps)]
    tokens = sum(min(config.block_size, len(d) - 1) for b in batches for d in b)
    losses, first_step_s = [], 0.0
    start = time.perf_counter()
    for s, batch in enumerate(batches):
        losses.append(gpt.train_step(batch, lr_at(s, tc)))
        if s == 0:
            first_step_s = time.perf_counter() - start
    seconds = time.perf_counter() - start
    tail = losses[-100:]
    return {
        "steps_per_s": a.steps / seconds,
        "tokens_per_s": tokens / seconds,
        "seconds": seconds,
        "first_step_s": first_step_s,
        "mean_last_100": sum(tail) / len(tail),
        "params": config.num_params(),
    }


def worker_matmul(a) -> dict:
    """The fp32 matmul peak at this thread count: best of several 2048x2048 products."""
    import torch

    torch.set_num_threads(a.threads)
    n = 2048
    x, y = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        x @ y
    best = float("inf")
    for _ in range(10):
        start = time.perf_counter()
        x @ y
        best = min(best, time.perf_counter() - start)
    return {"flops_per_s": 2 * n**3 / best}


# design switches: flags derived from the config's declarations ------------------------------------


def add_switch_flags(ap: argparse.ArgumentParser) -> None:
    for s in SWITCHES.values():
        if s.boolean:
            ap.add_argument(s.flag, action=argparse.BooleanOptionalAction, help=s.help)
        else:
            ap.add_argument(s.flag, type=_parser(s), metavar="VALUE", help=s.help)


def _parser(s):
    def parse(text: str) -> object:
        try:
            return s.parse(text)
        except UserError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return parse


def design_of(a: argparse.Namespace) -> dict:
    """The switches given on the command line, `name: value` (the others stay at reference)."""
    return {name: getattr(a, name) for name in SWITCHES if getattr(a, name) is not None}


def switch_flags(design: dict) -> list[str]:
    """`design` back as command-line flags, for the workers."""
    out = []
    for name, value in design.items():
        s = SWITCHES[name]
        if s.boolean:
            out.append(s.flag if value else "--no-" + s.flag[2:])
        else:
            out += [s.flag, str(value)]
    return out


# the driver ---------------------------------------------------------------------------------------


def run_json(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def worker_cmd(
    kind: str, s: dict, steps: int, design: dict, compile_: bool = False, python: str = ""
) -> list[str]:
    cmd = [python or sys.executable, __file__, "--worker", kind, "--steps", str(steps)]
    for key in ("batch_size", "threads", "n_layer", "n_embd", "n_head"):
        cmd += [f"--{key.replace('_', '-')}", str(s[key])]
    return cmd + switch_flags(design) + (["--compile"] if compile_ else [])


def anchor_cmd(anchor: Path, names: Path, s: dict, steps: int) -> list[str]:
    cmd = [sys.executable, str(anchor), "--input", str(names), "--steps", str(steps)]
    for key in ("batch_size", "threads", "n_layer", "n_embd", "n_head"):
        cmd += [f"--{key.replace('_', '-')}", str(s[key])]
    return cmd


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--anchor", type=Path, default=DEFAULT_ANCHOR, help="the anchor script")
    ap.add_argument("--scenarios", default="batch1,batch256,medium", help="comma-separated")
    ap.add_argument("--repeats", type=int, default=3, help="alternating runs per side")
    ap.add_argument("--steps-scale", type=float, default=1.0, help="scale every step count")
    ap.add_argument("--compile", action="store_true", help="also time tensor mode compiled")
    ap.add_argument("--no-scalar", action="store_true", help="skip scalar mode in batch1")
    ap.add_argument(
        "--old",
        metavar="PYTHON",
        help="also time tensor mode under another build's interpreter (whose microgpt is, say, "
        "an older commit), alternating with this one: the ratio old / new per scenario",
    )
    add_switch_flags(ap)
    # worker mode (internal)
    ap.add_argument("--worker", choices=["tensor", "scalar", "matmul"], help=argparse.SUPPRESS)
    for key in ("steps", "batch-size", "threads", "n-layer", "n-embd", "n-head"):
        ap.add_argument(f"--{key}", type=int, default=1, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker == "matmul":
        print(json.dumps(worker_matmul(a)))
        return
    if a.worker:
        print(json.dumps(worker_model(a)))
        return

    from microgpt.environment import cpu_model

    anchor = a.anchor.resolve()
    if not anchor.is_file():
        raise SystemExit(f"anchor script {anchor} not found: pass --anchor PATH")
    names_ref = resources.files("microgpt.assets").joinpath("names.txt")
    with resources.as_file(names_ref) as names:
        result = {
            "machine": {
                "python": platform.python_version(),
                "cpu": cpu_model(),
                "cores": os.cpu_count(),
            },
            "anchor": str(anchor),
            "design": design_of(a),  # tensor and scalar mode's; the anchor runs the reference
            "repeats": a.repeats,
            "scenarios": {},
        }
        import torch

        result["machine"]["torch"] = torch.__version__
        for name in a.scenarios.split(","):
            s = SCENARIOS[name]
            steps = max(2, round(s["steps"] * a.steps_scale))
            runs = {"anchor": [], "tensor": [], "scalar": [], "compiled": [], "matmul": []}
            runs["old"] = []
            for _ in range(a.repeats):
                runs["anchor"].append(run_json(anchor_cmd(anchor, names, s, steps)))
                design = design_of(a)
                runs["tensor"].append(run_json(worker_cmd("tensor", s, steps, design)))
                if a.old:
                    old = worker_cmd("tensor", s, steps, design, python=a.old)
                    runs["old"].append(run_json(old))
                if a.compile:
                    runs["compiled"].append(run_json(worker_cmd("tensor", s, steps, design, True)))
                if name == "batch1" and not a.no_scalar:
                    scalar_steps = max(2, round(SCALAR_STEPS * a.steps_scale))
                    runs["scalar"].append(run_json(worker_cmd("scalar", s, scalar_steps, design)))
                if name == "medium":
                    runs["matmul"].append(run_json(worker_cmd("matmul", s, 1, {})))
            result["scenarios"][name] = summarize(name, s, steps, runs)
            report(name, result["scenarios"][name])
    print(json.dumps(result))


def summarize(name: str, s: dict, steps: int, runs: dict) -> dict:
    key = TARGETS[name]
    out = {"config": {**s, "steps": steps}, "metric": key}
    for side in ("anchor", "tensor", "scalar", "compiled", "old"):
        if runs[side]:
            out[side] = {
                "steps_per_s": median_of(runs[side], "steps_per_s"),
                "tokens_per_s": median_of(runs[side], "tokens_per_s"),
                "mean_last_100": median_of(runs[side], "mean_last_100"),
                "runs_" + key: [round(r[key], 1) for r in runs[side]],
            }
    out["tensor_vs_anchor"] = out["tensor"][key] / out["anchor"][key]
    if runs["old"]:
        out["tensor_vs_old"] = out["tensor"][key] / out["old"][key]
    if runs["scalar"]:
        out["tensor_vs_scalar"] = out["tensor"]["steps_per_s"] / out["scalar"]["steps_per_s"]
    if runs["compiled"]:
        out["compiled_vs_anchor"] = out["compiled"][key] / out["anchor"][key]
        out["compiled"]["first_step_s"] = median_of(runs["compiled"], "first_step_s")
    if runs["matmul"]:
        peak = max(r["flops_per_s"] for r in runs["matmul"])
        flops_per_token = 6 * runs["tensor"][0]["params"]
        out["matmul_peak_flops_per_s"] = peak
        out["params"] = runs["tensor"][0]["params"]
        for side in ("anchor", "tensor", "compiled"):
            if side in out:
                out[side]["mfu"] = flops_per_token * out[side]["tokens_per_s"] / peak
    return out


def report(name: str, r: dict) -> None:
    key = r["metric"]
    unit = "steps/s" if key == "steps_per_s" else "tokens/s"
    c = r["config"]
    print(
        f"{name}: batch {c['batch_size']}, {c['threads']} thread(s), n_layer {c['n_layer']}, "
        f"n_embd {c['n_embd']}, {c['steps']} steps"
    )
    for side in ("anchor", "tensor", "old", "compiled", "scalar"):
        if side in r:
            runs = r[side]["runs_" + key]
            line = f"  {side:9s} {r[side][key]:>12,.0f} {unit} (median; runs {runs})"
            line += f"  loss {r[side]['mean_last_100']:.3f}"
            if "mfu" in r[side]:
                line += f"  MFU {100 * r[side]['mfu']:.1f}%"
            print(line)
    print(f"  tensor / anchor: {r['tensor_vs_anchor']:.2f}x")
    if "tensor_vs_old" in r:
        print(f"  tensor / old build: {r['tensor_vs_old']:.3f}x")
    if "tensor_vs_scalar" in r:
        print(f"  tensor / scalar: {r['tensor_vs_scalar']:.0f}x (steps/s)")
    if "compiled_vs_anchor" in r:
        print(
            f"  compiled / anchor: {r['compiled_vs_anchor']:.2f}x "
            f"(first step incl. compile {r['compiled']['first_step_s']:.1f} s)"
        )
    if "matmul_peak_flops_per_s" in r:
        print(
            f"  fp32 matmul peak ({c['threads']} threads): "
            f"{r['matmul_peak_flops_per_s'] / 1e9:.1f} GFLOP/s; params {r['params']:,}"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
