"""Several processes under torchrun, on this machine over loopback: data-parallel training
follows one process (float64, 1e-9), checkpoints cross between the two, `ablate` shares its runs
over ranks (one "node" or two, with or without a shared --out) with one process's results, and a
rank killed with SIGKILL, or stopped with SIGSTOP, stops the others quickly with one line,
keeping what was finished. The torchrun tests are slow (each launch imports torch in every
process)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, read_metrics

from microgpt import checkpoint, tensorfile
from microgpt.cli import main
from microgpt.distributed import SINGLE, World, world_from_env
from microgpt.errors import UserError
from microgpt.stall import BEAT_EVERY_S

KILL_BOUND_S = 15  # SIGKILL of one rank to the launchers' exit (measured: 3 to 4.5 s here)
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
TENSOR = ["--mode", "tensor", "--threads", "1"]
TRAIN = ["train", *TENSOR, "--n-embd", "8", "--n-head", "2", "--val-docs", "40"]
TRAIN += ["--eval-docs", "60", "--num-samples", "3", "--log-every", "1000"]
TINY = ["--val-docs", "5", "--n-embd", "4", "--n-head", "1", "--block-size", "6"]
TINY += ["--last-n", "3", "--seeds", "2"]


def cli(args) -> int:
    return main([str(a) for a in args])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher(args, nproc=2, nodes=None, port=None, static=False) -> list[str]:
    """`python -m torch.distributed.run ... -m microgpt ARGS`; `nodes` = (count, this node's
    rank) for one launcher of several. c10d rendezvous (ranks in order of arrival), or `static`
    (node 0 holds rank 0 and the store)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc)]
    if nodes:
        cmd += ["--nnodes", str(nodes[0]), "--node-rank", str(nodes[1])]
    port = port or free_port()
    if static:
        cmd += ["--master-addr", "127.0.0.1", "--master-port", str(port)]
    else:
        cmd += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}"]
    return [*cmd, "-m", "microgpt", *map(str, args)]


def torchrun(args, nproc=2, cwd=None) -> subprocess.CompletedProcess:
    done = subprocess.run(
        launcher(args, nproc), cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def two_nodes(args, cwds, static=False) -> list[subprocess.Popen]:
    """Two launchers of one process each, as two machines would start them."""
    port = free_port()
    return [
        subprocess.Popen(
            launcher(args, 1, (2, n), port, static),
            cwd=cwd,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n, cwd in enumerate(cwds)
    ]


def ranks_of(launcher_pid: int) -> dict[int, int]:
    """rank -> pid of a launcher's worker processes (its children with RANK set)."""
    ranks = {}
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            parent = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            env = Path(f"/proc/{d}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        rank = [e[5:] for e in env if e.startswith(b"RANK=")]
        if parent == launcher_pid and rank:
            ranks[int(rank[0])] = int(d)
    return ranks


def ended(pid: int) -> bool:
    """The process ended (or is a zombie waiting for its parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def wait_for(condition, timeout=120.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("microgpt: error:")]


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


# without torchrun -------------------------------------------------------------------------------


def test_the_world_comes_from_torchruns_variables(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert world_from_env() == SINGLE
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert world_from_env() == World(3, 4, 1) and not world_from_env().main
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(UserError, match="outside WORLD_SIZE"):
        world_from_env()
    monkeypatch.delenv("RANK")
    with pytest.raises(UserError, match="RANK is missing"):
        world_from_env()


def test_shares_are_contiguous_and_cover_the_batch():
    for n in range(7):
        for size in (1, 2, 3, 4):
            parts = [World(r, size, r).share(list(range(n))) for r in range(size)]
            assert sum(parts, []) == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_scalar_mode_under_torchrun_is_one_line(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(["train", "--mode", "scalar", "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "under torchrun use --mode tensor" in err


def test_one_process_without_torchrun_imports_no_torch_distributed(tmp_path):
    code = (
        "import sys\nfrom microgpt.cli import main\n"
        "main(['train', '--steps', '3', '--n-embd', '8', '--n-head', '2', '--num-samples', '1',"
        " '--val-docs', '5', '--eval-docs', '5'])\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))"
    )
    env = {k: v for k, v in ENV.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.splitlines()[-1] == "[]"


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_follow_the_umask(tmp_path, umask):
    """Checkpoints, metrics, ablate's results and run files: as any new file (0644 under 022)."""
    from microgpt.train import MetricsWriter

    old = os.umask(umask)
    try:
        tensorfile.write_atomic(tmp_path / "results.json", b"{}")
        metrics = MetricsWriter(tmp_path / "m.jsonl")
        metrics.finish({})
        assert main(["train", "--steps", "2", "--n-embd", "8", "--n-head", "2", "--val-docs",
                     "5", "--eval-docs", "5", "--num-samples", "0",
                     "--out", str(tmp_path / "c.safetensors")]) == 0  # fmt: skip
    finally:
        os.umask(old)
    for name in ("results.json", "m.jsonl", "c.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("rank", ["0", "1"])
def test_ranks_that_never_meet_time_out_with_one_line(tmp_path, rank):
    """Started by hand (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), rank 0 waits for a rank 1
    that never comes, or rank 1 for a rank 0: --dist-timeout, then one line, exit 2."""
    env = {**ENV, "RANK": rank, "WORLD_SIZE": "2", "LOCAL_RANK": rank}
    env |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    start = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "microgpt", *TRAIN, "--steps", "2", "--dist-timeout", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert len(errors(done.stderr)) == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "the 2 ranks did not all meet at 127.0.0.1" in done.stderr
    assert time.time() - start < 60


# training ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_data_parallel_training_follows_one_process(tmp_path, capsys):
    """float64: 3 ranks on a batch of 2 (one rank's share is empty) follow one process to 1e-9
    per step, gradient clipping included; the checkpoint resumes in one process, and one
    process's checkpoint resumes under torchrun (2 ranks), both as one process would."""
    flags = [*TRAIN, "--dtype", "float64", "--batch-size", "2", "--grad-clip", "0.3"]
    flags += ["--eval-every", "10"]
    one, many = tmp_path / "one", tmp_path / "many"
    for d in (one, many):
        d.mkdir()
    assert cli([*flags, "--steps", "20", "--metrics", one / "m.jsonl", "--out",
                one / "c.safetensors"]) == 0  # fmt: skip
    done = torchrun([*flags, "--steps", "20", "--metrics", many / "m.jsonl", "--out",
                     many / "c.safetensors"], nproc=3)  # fmt: skip
    assert "3 processes, gloo" in done.stdout and done.stdout.count("final loss") == 1

    losses_one, summary_one = read_metrics(one / "m.jsonl")
    losses_many, summary_many = read_metrics(many / "m.jsonl")
    assert len(losses_many) == 20
    assert max(rel(a, b) for a, b in zip(losses_many, losses_one)) < 1e-9
    for key in ("val_loss", "val_loss_per_token"):
        assert rel(summary_many[key], summary_one[key]) < 1e-9
    assert summary_many["samples"] == summary_one["samples"]
    a, b = checkpoint.load(one / "c.safetensors"), checkpoint.load(many / "c.safetensors")
    assert (a.step, a.rng_state, a.mode) == (b.step, b.rng_state, b.mode)
    for name, rows in a.state["adam_v"].items():  # Adam saw the same clipped gradients
        flat_a = [x for row in rows for x in row]
        flat_b = [x for row in b.state["adam_v"][name] for x in row]
        assert max(abs(x - y) for x, y in zip(flat_a, flat_b)) <= 1e-9 * max(map(abs, flat_a))

    # across: torchrun's checkpoint in one process, one process's under torchrun
    resume = ["train", *TENSOR, "--dtype", "float64", "--steps", "30", "--num-samples", "3"]
    assert cli([*resume, "--resume", many / "c.safetensors", "--metrics", many / "r.jsonl"]) == 0
    torchrun([*resume, "--resume", one / "c.safetensors", "--metrics", one / "r.jsonl"])
    resumed_many, end_many = read_metrics(many / "r.jsonl")
    resumed_one, end_one = read_metrics(one / "r.jsonl")
    assert len(resumed_one) == len(resumed_many) == 30
    assert max(rel(a, b) for a, b in zip(resumed_many, resumed_one)) < 1e-9
    assert end_many["samples"] == end_one["samples"]
    capsys.readouterr()


@pytest.mark.slow
def test_a_killed_rank_stops_training_quickly_and_the_run_resumes(tmp_path, capsys):
    ckpt = tmp_path / "c.safetensors"
    args = [*TRAIN, "--steps", "3000", "--batch-size", "4", "--out", ckpt, "--save-every", "20"]
    proc = subprocess.Popen(
        launcher(args), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    wait_for(ckpt.exists)
    saved = checkpoint.load(ckpt).step
    os.kill(ranks_of(proc.pid)[1], signal.SIGKILL)
    killed = time.time()
    _, stderr = proc.communicate(timeout=KILL_BOUND_S)
    took = time.time() - killed
    assert proc.returncode != 0 and took < KILL_BOUND_S
    (line,) = errors(stderr)  # one line, not one per rank
    assert "rank 0: rank 1 stopped answering" in line, stderr[-2000:]
    assert "continue with --resume" in line
    ckpt_step = checkpoint.load(ckpt).step
    assert saved <= ckpt_step < 3000
    assert cli(["train", *TENSOR, "--resume", ckpt, "--num-samples", "0"]) == 0  # the rest
    assert checkpoint.load(ckpt).step == 3000
    capsys.readouterr()


# ablate -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory, names):
    """The study in one process: its folder."""
    out = tmp_path_factory.mktemp("one") / "study"
    rc = cli(["ablate", "--input", names, "--out", out, "--steps", "30", "--jobs", "1", *TINY])
    assert rc == 0
    return out


def outcome(out: Path) -> dict:
    runs = json.loads((out / "results.json").read_text())["runs"]
    keys = ("val_loss", "final_loss", "losses", "data_order", "params")
    return {(r["design"], r["seed"]): {k: r[k] for k in keys} for r in runs}


@pytest.mark.slow
def test_ablate_over_two_ranks_gives_one_process_results(tmp_path, names, reference, capsys):
    """A shared --out that already holds three runs: the ranks reuse them and share the rest."""
    out = tmp_path / "study"
    out.mkdir()
    kept = sorted(reference.glob("run-*.json"))[:3]
    for f in kept:
        shutil.copy(f, out)
    done = torchrun(["ablate", "--input", names, "--out", out, "--steps", "30", *TINY])
    assert "reusing 3 finished runs" in done.stdout and "2 ranks share the 5 runs" in done.stdout
    assert outcome(out) == outcome(reference)
    assert all((out / f.name).read_bytes() == f.read_bytes() for f in kept)
    assert len(list(out.glob("run-*.json"))) == 8
    capsys.readouterr()


@pytest.mark.slow
def test_two_nodes_without_a_shared_filesystem(tmp_path, names, reference):
    """Two launchers (as two machines would run them), each in its own folder with a relative
    --out and two different finished runs: whichever holds rank 0 gets every run over
    torch.distributed and writes the report; the results are one process's."""
    runs = sorted(reference.glob("run-*.json"))
    nodes = [tmp_path / "a", tmp_path / "b"]
    for node, mine in zip(nodes, (runs[:2], runs[2:4])):
        (node / "study").mkdir(parents=True)
        for f in mine:
            shutil.copy(f, node / "study")
    procs = two_nodes(["ablate", "--input", names, "--out", "study", "--steps", "30", *TINY], nodes)
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    main_node = [n for n in nodes if (n / "study" / "results.json").exists()]
    assert len(main_node) == 1
    study = main_node[0] / "study"
    stdout = "".join(out for out, _ in outs)
    assert "reusing 4 finished runs (2 of them from the other ranks)" in stdout
    assert outcome(study) == outcome(reference)
    assert all((study / f.name).read_bytes() == f.read_bytes() for f in runs[:4])
    assert len(list(study.glob("run-*.json"))) == 8


@pytest.mark.slow
def test_a_killed_rank_stops_the_other_node_and_the_study_resumes(tmp_path, names, capsys):
    """Two launchers sharing --out (static rendezvous: node 0 holds rank 0 and the store); rank
    1, on node 1, is killed while the runs train. Node 0's agent does not notice, so rank 0's own
    watcher must stop it, quickly and in one line, well before it would finish its share."""
    out = tmp_path / "study"
    args = ["ablate", "--input", names, "--out", out, "--steps", "4000", "--jobs", "1", *TINY]
    procs = two_nodes(args, [tmp_path, tmp_path], static=True)
    wait_for(lambda: list(out.glob("run-*.json")), timeout=200)
    os.kill(ranks_of(procs[1].pid)[1], signal.SIGKILL)
    killed = time.time()
    kept = {f.name: f.read_bytes() for f in out.glob("run-*.json")}
    outs = [p.communicate(timeout=KILL_BOUND_S) for p in procs]
    took = time.time() - killed
    assert all(p.returncode != 0 for p in procs) and took < KILL_BOUND_S
    stderr = "".join(err for _, err in outs)
    line = errors(stderr)  # one line, not one per rank
    assert len(line) == 1 and line[0].startswith("microgpt: error: rank 0: rank 1 stopped")
    assert "the same command trains the rest" in line[0], stderr[-2000:]
    assert "rank 1's connection" in line[0]  # the watcher's doing, not the final gather's
    assert all((out / name).read_bytes() == blob for name, blob in kept.items())

    # the same study, now in one process: it reuses every finished run and trains the rest
    finished = len(list(out.glob("run-*.json")))
    assert cli(args) == 0
    stdout = capsys.readouterr().out
    assert f"reusing {finished} finished runs" in stdout and (out / "results.json").exists()


@pytest.mark.slow
def test_a_stopped_rank_stops_the_study_with_one_line_and_it_resumes(tmp_path, names, capsys):
    """Rank 1 stopped (SIGSTOP: alive, silent) while the ranks train their shares: after
    --stall-timeout, rank 0 names it in one line and stops, keeping every finished run; rank 1,
    continued, meets the launcher's SIGTERM and ends without a second line; the same command
    trains the rest."""
    out = tmp_path / "study"
    args = ["ablate", "--mode", "scalar", "--input", names, "--out", out, "--steps", "500",
            "--jobs", "1", *TINY]  # fmt: skip
    proc = subprocess.Popen(
        launcher([*args, "--stall-timeout", "5"]),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    ranks = {}
    try:
        wait_for(lambda: list(out.glob("run-*.json")), timeout=200)
        ranks = ranks_of(proc.pid)
        os.kill(ranks[1], signal.SIGSTOP)
        stopped = time.time()
        wait_for(lambda: ended(ranks[0]), timeout=60)
        took = time.time() - stopped
        kept = {f.name: f.read_bytes() for f in out.glob("run-*.json")}
        os.kill(ranks[1], signal.SIGCONT)
        _, stderr = proc.communicate(timeout=KILL_BOUND_S)
    finally:  # nothing left stopped or orphaned, whatever happened
        for pid in ranks.values():
            if not ended(pid):
                os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait()
    # silence counts from rank 1's last passed-on beat, which came up to BEAT_EVERY_S (and a
    # step of this tiny model, milliseconds) before the SIGSTOP: 4.99 s was seen once
    assert proc.returncode != 0 and 5 - BEAT_EVERY_S - 0.1 <= took < 5 + KILL_BOUND_S, took
    (line,) = errors(stderr)
    assert line.startswith("microgpt: error: rank 0: rank 1 made no progress for 5 s"), line
    assert "stopped or hung (--stall-timeout)" in line and "the same command trains" in line
    assert all((out / name).read_bytes() == blob for name, blob in kept.items())

    assert cli(args) == 0  # the same study, now in one process: the rest
    stdout = capsys.readouterr().out
    assert f"reusing {len(kept)} finished runs" in stdout and (out / "results.json").exists()


@pytest.mark.slow
def test_an_error_every_rank_meets_is_printed_once(tmp_path, names):
    """A bad flag, met by both ranks before they meet: one line, named after the rank that
    printed it, instead of one per rank."""
    done = subprocess.run(
        launcher(["ablate", "--input", names, "--vary", "tie_lm_head=true"]),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    (line,) = errors(done.stderr)
    assert line.startswith("microgpt: error: rank ") and "gives one value" in line


@pytest.mark.slow
def test_a_rank_stopped_in_the_final_gather_is_named_too(tmp_path, names):
    """Three ranks, two long runs: rank 2, with no share, waits in the final gather at once,
    longer than --stall-timeout (waiting is not stalling), and is then stopped there. The
    gather has no time limit of its own, so only the stall watch ends it: rank 0 names rank 2
    in one line, and ranks 1 and 2 print nothing."""
    out = tmp_path / "study"
    stdout = tmp_path / "stdout"
    args = ["ablate", "--mode", "scalar", "--input", names, "--out", out, "--steps", "20000",
            "--jobs", "1", *TINY, "--seeds", "1", "--vary", "tie_lm_head"]  # fmt: skip
    with open(stdout, "w") as said:
        proc = subprocess.Popen(
            launcher([*args, "--stall-timeout", "5"], nproc=3),
            env=ENV,
            stdout=said,
            stderr=subprocess.PIPE,
            text=True,
        )
    ranks = {}
    try:
        wait_for(lambda: "3 ranks share the 2 runs" in stdout.read_text(), timeout=200)
        ranks = ranks_of(proc.pid)
        time.sleep(7)  # rank 2 waits for the others, past the stall timeout
        assert not ended(ranks[0]) and not list(out.glob("run-*.json"))
        os.kill(ranks[2], signal.SIGSTOP)
        stopped = time.time()
        wait_for(lambda: ended(ranks[0]), timeout=60)
        took = time.time() - stopped
        os.kill(ranks[2], signal.SIGCONT)
        _, stderr = proc.communicate(timeout=KILL_BOUND_S)
    finally:  # nothing left stopped or orphaned, whatever happened
        for pid in ranks.values():
            if not ended(pid):
                os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait()
    # as above: counted from rank 2's last passed-on beat (its wait beats), up to BEAT_EVERY_S
    # before the SIGSTOP
    assert proc.returncode != 0 and 5 - BEAT_EVERY_S - 0.1 <= took < 5 + KILL_BOUND_S, took
    (line,) = errors(stderr)
    assert line.startswith("microgpt: error: rank 0: rank 2 made no progress for 5 s"), line
