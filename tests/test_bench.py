"""The benchmark scripts still run (a few steps each): they import the package's internals."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*argv: str) -> str:
    done = subprocess.run(
        [sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_scalar_speed_runs():
    out = run("bench/scalar_speed.py", "--steps", "2", "--repeats", "1")
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["losses_equal_to_6_decimals"] is True


def test_tensor_speed_runs():
    pytest.importorskip("torch")
    anchor = ROOT.parent / "shared" / "bench" / "naive_torch_anchor.py"
    if not anchor.exists():
        pytest.skip("the shared anchor is not beside this checkout")
    flags = ["--scenarios", "batch1", "--repeats", "1", "--steps-scale", "0.02", "--no-scalar"]
    out = run("bench/tensor_speed.py", *flags, "--qk-norm", "--position", "rope")
    assert "batch1" in out


def test_stack_speed_runs():
    pytest.importorskip("torch")
    flags = ["--runs", "1,3", "--repeats", "1", "--steps-scale", "0.01"]
    out = run("bench/stack_speed.py", *flags)
    summary = json.loads(out.strip().splitlines()[-1])
    assert set(summary["scenarios"]) == {"batch1", "batch32"}
    for scenario in summary["scenarios"].values():
        assert scenario["solo"]["run_steps_per_s"] > 0
        assert set(scenario["stacks"]) == {"1", "3"}
        assert all(row["vs_solo"] > 0 for row in scenario["stacks"].values())
    goals = {goal["what"]: goal for goal in summary["goals"]}  # R = 1 and the marginal run
    assert len(goals) == 2 and all(isinstance(g["met"], bool) for g in goals.values())


def test_study_speed_runs():
    pytest.importorskip("torch")
    out = run("bench/study_speed.py", "--scenarios", "fixed", "--repeats", "1")
    summary = json.loads(out.strip().splitlines()[-1])
    new = summary["fixed"]["builds"]["new"]
    assert math.isfinite(new["value"]) and isinstance(new["goal_met"], bool)


def test_muon_speed_runs():
    pytest.importorskip("torch")
    flags = ["--scenarios", "stack20,solo", "--repeats", "1", "--steps-scale", "0.02"]
    out = run("bench/muon_speed.py", *flags, "--scalar-steps", "2")
    summary = json.loads(out.strip().splitlines()[-1])
    assert set(summary["scenarios"]) == {"stack20", "solo"}
    for scenario in summary["scenarios"].values():
        assert all(ms > 0 for ms in scenario["ms"].values())
    assert summary["scalar"]["steps_per_s"]["muon"] > 0
    assert summary["goal"]["scenario"] == "stack20"
