import sys
from pathlib import Path

import pytest
from hypothesis import settings

# No per-example deadline: CI machines are shared and noisy, and these tests check values.
settings.register_profile("microgpt", deadline=None)
settings.load_profile("microgpt")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the naive model (naive_gpt.py) lives here


def pytest_collection_modifyitems(config, items):
    """Mark `fast` the tests that tests/fast_tier.py names: `bash scripts/test.sh --fast`."""
    from fast_tier import FAST, selects

    here = ROOT / "tests"
    for item in items:
        if item.path.is_relative_to(here):
            test_id = f"{item.path.relative_to(here).as_posix()}::{item.name}"
            if any(selects(entry, test_id) for entry in FAST):
                item.add_marker(pytest.mark.fast)


@pytest.fixture(scope="module")
def names(tmp_path_factory):
    """The first 120 bundled names as a file: a study's small, real input."""
    from microgpt.data import read_documents

    path = tmp_path_factory.mktemp("data") / "names.txt"
    path.write_text("\n".join(read_documents()[:120]) + "\n")
    return str(path)


def run_cli(*argv: str) -> tuple[int, str, str]:
    """`microgpt *argv` in this process: its exit status, stdout and stderr."""
    import contextlib
    import io

    from microgpt.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture
def names_head():
    """The first 200 bundled names: small, real data."""
    from microgpt.data import read_documents

    return read_documents()[:200]


def read_metrics(path):
    """Per-step losses and the summary record of a --metrics file."""
    import json

    records = [json.loads(line) for line in open(path)]
    return [r["loss"] for r in records if "loss" in r], records[-1]


def assert_sigkill_resume_is_exact(tmp_path, train_args, steps, save_every):
    """Train `microgpt train *train_args` once uninterrupted; once killed with SIGKILL right
    after its first checkpoint and resumed; the two must agree bit for bit."""
    import os
    import signal
    import subprocess
    import time

    from microgpt import checkpoint

    common = [
        sys.executable,
        "-m",
        "microgpt",
        "train",
        "--steps",
        str(steps),
        *train_args,
        "--num-samples",
        "3",
        "--log-every",
        str(10 * steps),
    ]
    full, resumed = tmp_path / "full.jsonl", tmp_path / "resumed.jsonl"
    subprocess.run([*common, "--metrics", str(full)], check=True, capture_output=True)

    ckpt = tmp_path / "c.safetensors"
    proc = subprocess.Popen(
        [*common, "--out", str(ckpt), "--save-every", str(save_every)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert 0 < checkpoint.load(ckpt).step < steps  # killed mid-run, after a save
    subprocess.run(
        [*common, "--resume", str(ckpt), "--metrics", str(resumed)], check=True, capture_output=True
    )
    losses_full, summary_full = read_metrics(full)
    losses_resumed, summary_resumed = read_metrics(resumed)
    assert losses_resumed == losses_full
    assert summary_resumed["val_loss"] == summary_full["val_loss"]
    assert summary_resumed["samples"] == summary_full["samples"]
    assert checkpoint.load(ckpt).step == steps
