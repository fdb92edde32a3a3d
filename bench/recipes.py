"""The bundled recipes against their anchors, side by side, on this machine, in one session.

Runs, one after another and `--repeats` times each (medians reported):

  names        microgpt train --config names         goal: val loss per token <= 1.88 in <= 300 s
  shakespeare  microgpt train --config shakespeare   goal: val loss per token <= 1.60 in no more
                                                     training seconds than the anchor's, run here
  anchor       python ../shared/bench/shakespeare_cpu_anchor.py (nanoGPT's CPU recipe)

Our figures come from each run's `--metrics` JSON Lines summary record (val_loss_per_token,
train_seconds, tokens_per_s); wall seconds are the whole command's, start-up, evaluation and
samples included. The names figure is also given apart for the held-out names that occur among
the training names too (names.txt lists some names twice) and for the others, from the run's
checkpoint. The anchor prints one JSON line (its val_loss is the mean of 20 random held-out
batches: the same quantity as our per-token loss over every held-out window, estimated
differently). The names anchors are quoted, not run: makemore's transformer (about 1.92 test
loss) and the best published figure (about 1.85: 4 layers, n_embd 64, dropout, 20,000 steps).

The anchor script is looked for at ../shared/bench/ beside the repository (or `--anchor PATH`);
if it is missing the anchor is skipped with a note. Thread counts: each recipe's own `threads`,
and the anchor the Shakespeare recipe's, unless `--threads N` sets all three. Timings on a shared
machine are noisy: compare runs made in the same session, and prefer an idle machine.

    python bench/recipes.py                    # each once
    python bench/recipes.py --repeats 3        # medians of 3
    python bench/recipes.py --only shakespeare,anchor --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # this checkout's microgpt, for the recipes and cpu_model

from microgpt import recipe  # noqa: E402
from microgpt.environment import cpu_model  # noqa: E402

DEFAULT_ANCHOR = ROOT.parent / "shared" / "bench" / "shakespeare_cpu_anchor.py"
RUNS = ("names", "shakespeare", "anchor")
# (val loss per token, training seconds); None: the anchor's median, run in the same session
GOALS = {"names": (1.88, 300.0), "shakespeare": (1.60, None)}
# quoted anchors, not run here: (label, val loss, train s, tokens/s)
QUOTED = {
    "names": [
        ("makemore transformer (quoted)", 1.92, None, None),
        ("best published, 4L/64/dropout/20k steps (quoted)", 1.85, None, None),
    ],
    "shakespeare": [
        ("nanoGPT CPU recipe (quoted: 2-vCPU EPYC, 2 threads)", 1.889, 57.0, 26_800),
    ],
}


def run_ours(name: str, threads: int | None, folder: Path, i: int) -> dict:
    """`microgpt train --config NAME` in a fresh process; the figures of its metrics summary."""
    metrics, ckpt = folder / f"{name}-{i}.jsonl", folder / f"{name}-{i}.safetensors"
    cmd = [sys.executable, "-m", "microgpt", "train", "--config", name, "--metrics", str(metrics)]
    cmd += ["--out", str(ckpt)]
    if threads:
        cmd += ["--threads", str(threads)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    wall = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - wall
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    summary = None
    with open(metrics, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            if record.get("summary"):
                summary = record
    if summary is None:
        raise SystemExit(f"{metrics} has no summary record")
    figures = {
        "val_loss": summary["val_loss_per_token"],
        "train_seconds": summary["train_seconds"],
        "tokens_per_s": summary["tokens_per_s"],
        "wall_seconds": wall,
        "steps": summary["train_config"]["steps"],
        "params": summary["params"],
    }
    if summary["train_config"]["data"] == "lines":
        figures["held_out_overlap"] = held_out_overlap(ckpt)
    return figures


def held_out_overlap(path: Path) -> dict:
    """The checkpoint's per-token held-out loss apart for the held-out documents that also occur
    among its training documents ("seen") and for the others ("new")."""
    from microgpt import checkpoint
    from microgpt.config import TensorOptions
    from microgpt.modes import make_gpt
    from microgpt.train import prepare

    ckpt = checkpoint.load(path)
    model = {k: v for k, v in ckpt.model.to_dict().items() if k != "vocab_size"}
    prep = prepare(ckpt.input_path, model, ckpt.train)[1]  # the run's split
    options = TensorOptions() if ckpt.mode == "tensor" else None
    gpt = make_gpt(ckpt.mode, ckpt.model, ckpt.state["weights"], ckpt.train, options)  # as sample
    training = set(prep.split.train)
    figures = {}
    for part, docs in (
        ("seen", [d for d in prep.split.val if d in training]),
        ("new", [d for d in prep.split.val if d not in training]),
    ):
        total, tokens = gpt.eval_token_loss([prep.tokenizer.encode_document(d) for d in docs])
        figures[part] = {"docs": len(docs), "tokens": tokens, "val_loss": total / tokens}
    return figures


def run_anchor(anchor: Path, threads: int | None) -> dict:
    cmd = [sys.executable, str(anchor)]
    if threads:
        cmd += ["--threads", str(threads)]
    wall = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - wall
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = wall
    return result


def median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def fmt(value: float | None, spec: str) -> str:
    """`value` formatted by `spec`; None as a dash of the spec's width."""
    if value is None:
        return "-".rjust(int(re.match(r"\d*", spec).group() or 0))
    return format(value, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=1, help="runs of each (default 1); medians")
    ap.add_argument("--threads", type=int, help="torch threads for all three (default: recipes')")
    ap.add_argument(
        "--only", default=",".join(RUNS), help="comma-separated subset of " + ",".join(RUNS)
    )
    ap.add_argument("--anchor", type=Path, default=DEFAULT_ANCHOR, help="the anchor script")
    ap.add_argument("--out", type=Path, help="folder for the metrics files (default: a temp dir)")
    ap.add_argument("--json", type=Path, help="also write every run's figures here")
    a = ap.parse_args(argv)
    only = [s.strip() for s in a.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(RUNS))
    if unknown or a.repeats < 1:
        ap.error(f"--only takes {', '.join(RUNS)}; --repeats must be 1 or more")
    anchor = a.anchor.resolve()
    notes = []
    if "anchor" in only and not anchor.is_file():
        only.remove("anchor")
        notes.append(f"anchor skipped: {anchor} not found (give --anchor PATH)")
    anchor_threads = a.threads or recipe.read("shakespeare")[1].get("threads")

    folder = a.out or Path(tempfile.mkdtemp(prefix="microgpt-recipes-"))
    folder.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {name: [] for name in only}
    for i in range(a.repeats):
        for name in only:
            print(f"[{i + 1}/{a.repeats}] {name} ...", file=sys.stderr, flush=True)
            if name == "anchor":
                r = run_anchor(anchor, anchor_threads)
            else:
                r = run_ours(name, a.threads, folder, i)
            runs[name].append(r)
            print(f"    {json.dumps(r)}", file=sys.stderr, flush=True)

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "not installed"
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs); torch {torch_version}; ", end="")
    print(f"Python {sys.version.split()[0]}; medians of {a.repeats} run(s); load average ", end="")
    print(" ".join(f"{x:.2f}" for x in os.getloadavg()))
    header = f"{'run':<52} {'val loss':>9} {'train s':>8} {'tokens/s':>9} {'wall s':>7}  goal"
    print(header)
    print("-" * len(header))
    sections = {"names": ["names"], "shakespeare": ["shakespeare", "anchor"]}
    for task, names in sections.items():
        if not any(name in runs for name in names):
            continue
        for name in names:
            if name not in runs:
                continue
            rs = runs[name]
            label = f"microgpt --config {name}"
            if name == "anchor":
                n = anchor_threads or "default"
                label = f"nanoGPT CPU recipe, run here ({n} thread{'' if n == 1 else 's'})"
            goal = ""
            if name in GOALS:
                loss_goal, secs_goal = GOALS[name]
                loss, secs = median(rs, "val_loss"), median(rs, "train_seconds")
                if secs_goal is None:  # the anchor's time, if it ran
                    secs_goal = median(runs.get("anchor", []), "train_seconds")
                    within = "the anchor's" + (f" {secs_goal:.0f} s" if secs_goal else "")
                else:
                    within = f"{secs_goal:.0f} s"
                if secs_goal is None:
                    ok = "time unknown without the anchor"
                else:
                    ok = "met" if loss <= loss_goal and secs <= secs_goal else "NOT met"
                goal = f"<= {loss_goal:.2f} in <= {within}: {ok}"
            print(
                f"{label:<52} {fmt(median(rs, 'val_loss'), '9.4f')} "
                f"{fmt(median(rs, 'train_seconds'), '8.1f')} "
                f"{fmt(median(rs, 'tokens_per_s'), '9,.0f')} "
                f"{fmt(median(rs, 'wall_seconds'), '7.1f')}  {goal}"
            )
        for label, loss, secs, tps in QUOTED[task]:
            print(
                f"{'  ' + label:<52} {fmt(loss, '9.4f')} {fmt(secs, '8.1f')} "
                f"{fmt(tps, '9,.0f')} {fmt(None, '7')}"
            )
    for r in runs.get("names", []):
        seen, new = r["held_out_overlap"]["seen"], r["held_out_overlap"]["new"]
        print(
            f"names: per token {seen['val_loss']:.4f} on the {seen['docs']:,} held-out names that "
            f"also occur among the training names, {new['val_loss']:.4f} on the other "
            f"{new['docs']:,}"
        )
    if "shakespeare" in runs and "anchor" in runs:
        ours, anchor = runs["shakespeare"], runs["anchor"]
        quoted_secs, quoted_tps = QUOTED["shakespeare"][0][2:]
        pace = median(anchor, "tokens_per_s") / quoted_tps
        print(
            f"side by side: the Shakespeare recipe trained in "
            f"{median(ours, 'train_seconds') / median(anchor, 'train_seconds'):.2f}x the anchor's "
            f"time at {median(ours, 'tokens_per_s') / median(anchor, 'tokens_per_s'):.2f}x its "
            f"tokens/s; the anchor ran at {pace:.2f}x its quoted speed"
        )
    for note in notes:
        print(f"note: {note}")
    print(
        "val loss: per token on held-out data (ours: every held-out name / window; the anchor: "
        "20 random held-out batches). train s: the training loop only. tokens/s: trained "
        "target tokens per second of the loop. wall s: the whole command."
    )
    if a.json:
        a.json.write_text(json.dumps({"runs": runs, "notes": notes}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
