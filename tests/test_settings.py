"""Training settings and model sizes, each declared once (`config.Setting`): the flags, the
validation and its messages, the parse from text and the stack's per-run settings derived from
the declarations; --decay-fraction's errors; the warning for a warm-up longer than the run; and
checkpoints from before --decay-fraction."""

import argparse
import json
import math
from dataclasses import fields

import pytest

from microgpt import checkpoint, tensorfile
from microgpt.cli import build_parser, main
from microgpt.config import (
    SETTINGS,
    SIZE_SETTINGS,
    STACK_PER_RUN,
    SWITCHES,
    TRAIN_SETTINGS,
    ModelConfig,
    TrainConfig,
    stack_shared,
)
from microgpt.errors import UserError

TINY = ["--steps", "3", "--n-embd", "8", "--n-head", "2", "--num-samples", "2", "--val-docs", "5"]
TINY += ["--eval-docs", "5"]
NOT_FLAGS = ("eps",)  # deliberately not a flag: Adam's epsilon stays the reference's


def _actions(command: str) -> dict[str, argparse.Action]:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a for a in commands.choices[command]._actions}


# flags from the declarations -------------------------------------------------------------------


def test_every_train_setting_is_a_flag_or_deliberately_not():
    assert set(TRAIN_SETTINGS) == {f.name for f in fields(TrainConfig)}
    assert tuple(n for n, s in TRAIN_SETTINGS.items() if s.group is None) == NOT_FLAGS
    model = {f.name for f in fields(ModelConfig)}
    assert set(SIZE_SETTINGS) == model - set(SWITCHES) - {"vocab_size"}  # vocab: from the data


@pytest.mark.parametrize("command", ["train", "ablate"])
def test_the_flags_are_the_declarations(command):
    """Each setting with a flag group has its flag with the declared help, kind and metavar;
    ablate sets the seeds itself, so it has no --seed; eps has no flag anywhere."""
    actions = _actions(command)
    for s in SETTINGS.values():
        if s.group is None or (command == "ablate" and s.name == "seed"):
            assert s.name not in actions, s.name
            continue
        a = actions[s.name]
        assert a.option_strings[0] == s.flag and a.help == s.help.replace("%", "%%")
        if s.kind == "bool":
            assert isinstance(a, argparse.BooleanOptionalAction)
        elif s.kind == "name":
            assert tuple(a.choices) == s.values
        else:
            assert a.metavar == s.metavar and a.choices is None
        assert a.default is None, "a flag not given leaves the declared default"


def test_an_integer_flag_checks_its_lower_bound_and_a_real_its_range_in_the_config(capsys):
    assert main(["train", "--warmup-steps", "-1"]) == 2
    assert "argument --warmup-steps: -1 is below the minimum 0" in capsys.readouterr().err
    assert main(["train", "--steps", "0"]) == 2
    assert "argument --steps: 0 is below the minimum 1" in capsys.readouterr().err


# validation and its messages -------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(steps=0), "--steps must be a positive integer, got 0"),
        (dict(steps=True), "--steps must be a positive integer, got True"),
        (dict(seed=-1), "--seed must be 0 or more, got -1"),
        (dict(learning_rate=-1.0), "--learning-rate must be a positive number, got -1.0"),
        (dict(learning_rate=math.nan), "--learning-rate must be a positive number, got nan"),
        (dict(val_fraction=1.0), "--val-fraction must be in [0, 1), got 1.0"),
        (dict(warmup_steps=-1), "--warmup-steps must be 0 or more, got -1"),
        (dict(eval_docs=-1), "--eval-docs must be 0 or more, got -1"),
        (dict(decay_fraction=0.0), "--decay-fraction must be in (0, 1], got 0.0"),
        (dict(decay_fraction=1.5), "--decay-fraction must be in (0, 1], got 1.5"),
        (dict(decay_fraction=math.inf), "--decay-fraction must be in (0, 1], got inf"),
        (dict(min_lr=-1e-3), "--min-lr must be 0 or more, got -0.001"),
        (dict(min_lr=0.1), "--min-lr must be in [0, --learning-rate], got 0.1"),
        (dict(beta2=1.0), "--beta2 must be in [0, 1), got 1.0"),
        (dict(eps=0.0), "eps must be a positive number, got 0.0"),
        (dict(lr_schedule="step"), "--lr-schedule must be one of linear, cosine, constant, wsd"),
        (dict(data="words"), "--data must be lines or stream, got 'words'"),
        (dict(reshuffle=1), "--reshuffle must be true or false, got 1"),
        (dict(data="stream", reshuffle=True), "--reshuffle applies to --data lines"),
    ],
)
def test_bad_settings_are_one_line_messages_from_the_declaration(kwargs, message):
    with pytest.raises(UserError) as e:
        TrainConfig(**kwargs)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_bad_sizes_name_their_flag():
    with pytest.raises(UserError, match="^--n-head must be a positive integer, got 0$"):
        ModelConfig(vocab_size=27, n_head=0)
    with pytest.raises(UserError, match="^--vocab-size must be a positive integer, got 0$"):
        ModelConfig(vocab_size=0)


def test_every_declared_range_is_checked_at_its_bounds():
    """Just inside each bound is allowed, just outside is refused, for every number setting."""
    for s in SETTINGS.values():
        if s.kind not in ("int", "real"):
            continue
        r = s.within
        step = 1 if s.kind == "int" else 1e-9
        inside = r.low if r.low_closed else r.low + step
        others = {"learning_rate": 1.0} if s.name == "min_lr" else {}  # min_lr <= lr
        config = ModelConfig if s.name in SIZE_SETTINGS else TrainConfig
        extra = {"vocab_size": 27} if config is ModelConfig else {}
        if s.name == "n_embd":
            extra["n_head"] = 1
        value = type(s.default)(inside) if s.default is not None else int(inside)
        config(**extra, **others, **{s.name: value})
        outside = r.low - step if r.low_closed else r.low
        with pytest.raises(UserError, match=f"{s.label} must be"):
            config(**extra, **others, **{s.name: type(value)(outside)})
        if r.high != math.inf:
            with pytest.raises(UserError, match=f"{s.label} must be"):
                config(**extra, **{s.name: r.high + (step if r.high_closed else 0)})


def test_parse_reads_each_kind_from_text_and_checks_it():
    assert SETTINGS["decay_fraction"].parse(" 0.5") == 0.5
    assert SETTINGS["decay_fraction"].parse("1") == 1.0
    assert SETTINGS["warmup_steps"].parse("0") == 0
    assert SETTINGS["lr_schedule"].parse("wsd") == "wsd"
    assert SETTINGS["reshuffle"].parse("yes") is True
    assert SETTINGS["n_embd"].parse("64") == 64
    for name, text, message in [
        ("decay_fraction", "1.5", "--decay-fraction '1.5' is not in (0, 1]"),
        ("decay_fraction", "nan", "--decay-fraction 'nan' is not in (0, 1]"),
        ("steps", "ten", "--steps 'ten' is not a positive integer"),
        ("steps", "2.5", "--steps '2.5' is not a positive integer"),
        ("lr_schedule", "step", "--lr-schedule 'step' is not one of linear, cosine"),
        ("reshuffle", "maybe", "--reshuffle 'maybe' is not true or false"),
    ]:
        with pytest.raises(UserError) as e:
            SETTINGS[name].parse(text)
        assert str(e.value).startswith(message)


# stacks: which settings may differ between the runs of one ---------------------------------------


def test_the_schedule_and_the_seed_may_differ_inside_a_stack_and_nothing_else():
    assert STACK_PER_RUN == (
        "seed",
        "learning_rate",
        "lr_schedule",
        "warmup_steps",
        "decay_fraction",
        "min_lr",
    )
    base = TrainConfig(steps=40)
    schedule = dict(lr_schedule="wsd", warmup_steps=5, decay_fraction=0.5, min_lr=1e-3)
    per_run = TrainConfig(steps=40, seed=7, learning_rate=0.02, **schedule)
    assert stack_shared(per_run) == stack_shared(base)
    for change in (dict(batch_size=2), dict(beta1=0.9), dict(optimizer="muon"), dict(z_loss=1.0)):
        assert stack_shared(TrainConfig(steps=40, **change)) != stack_shared(base), change


def test_runs_with_different_schedules_stack_as_they_train_alone():
    """A stack of three runs that differ in seed and in every part of the schedule: each run's
    losses and rates are its solo run's (float64, to test_stack's 1e-12)."""
    pytest.importorskip("torch")
    from microgpt.modes import TensorOptions
    from microgpt.train import prepare, train, train_stack

    common = dict(steps=12, batch_size=2, val_docs=5, eval_docs=0)
    trains = [
        TrainConfig(seed=0, lr_schedule="wsd", warmup_steps=2, decay_fraction=0.5, **common),
        TrainConfig(seed=1, learning_rate=0.02, lr_schedule="cosine", min_lr=1e-3, **common),
        TrainConfig(seed=2, lr_schedule="constant", warmup_steps=5, **common),
    ]
    options = TensorOptions(device="cpu", dtype="float64", threads=1)
    prepared = [prepare(None, {"n_embd": 8, "n_head": 2}, tc) for tc in trains]
    config = prepared[0][0]
    stacked = train_stack(config, trains, [prep for _, prep in prepared], options)
    for tc, (_, prep), got in zip(trains, prepared, stacked):
        _, want = train("tensor", config, tc, prep, tensor=options)
        assert got.lrs == want.lrs
        for a, b in zip(got.losses, want.losses, strict=True):
            assert abs(a - b) <= 1e-12 * abs(b)


def test_ablate_reads_its_axes_and_levels_from_the_declarations():
    """The levels are today's numeric settings, unchanged; every other setting with a flag is a
    design axis, as every switch is, but the seed, the reporting window and the data's."""
    from microgpt.ablate import plan

    assert plan.LEVELS == ("n_layer", "n_embd", "n_head", "block_size", "steps", "batch_size",
                           "learning_rate", "z_loss")  # fmt: skip
    not_varied = {"seed", "last_n", *(n for n, s in SETTINGS.items() if s.group in (None, "data"))}
    model = [f.name for f in fields(ModelConfig) if f.name in SWITCHES or f.name in SETTINGS]
    assert list(plan.AXES) == [  # ModelConfig's fields first, in their order
        *(n for n in model if n not in plan.LEVELS),
        *(n for n in TRAIN_SETTINGS if n not in {*plan.LEVELS, *not_varied}),
    ]
    assert set(SWITCHES) <= set(plan.AXES)
    assert {n for n, s in SETTINGS.items() if s.vary is None} == not_varied
    for name, axis in plan.AXES.items():
        declared = SETTINGS.get(name)
        assert axis.per_run == (declared is not None and declared.per_run)
        assert axis.config == ("model" if name in SWITCHES else declared.config)


# --decay-fraction's errors, before anything trains -----------------------------------------------


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--lr-schedule", "wsd", "--decay-fraction", "0"], "--decay-fraction must be in (0, 1]"),
        (["--lr-schedule", "wsd", "--decay-fraction", "1.01"], "must be in (0, 1], got 1.01"),
        (["--lr-schedule", "wsd", "--decay-fraction", "nan"], "--decay-fraction must be in"),
        (["--lr-schedule", "wsd", "--decay-fraction", "x"], "'x' is not a number"),
        (["--decay-fraction", "0.5"], "--decay-fraction applies to --lr-schedule wsd"),
        (["--lr-schedule", "cosine", "--decay-fraction", "0.5"], "applies to --lr-schedule wsd"),
    ],
)
@pytest.mark.parametrize("command", ["train", "ablate"])
def test_a_bad_or_unused_decay_fraction_is_one_line_exit_2(
    tmp_path, capsys, command, flags, message
):
    out = tmp_path / "never"
    argv = [command, *TINY, *flags, "--out", str(out)]
    if command == "ablate":
        argv = ["ablate", "--mode", "scalar", "--steps", "3", *flags, "--out", str(out)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and not out.exists()
    assert captured.err.startswith("microgpt") and captured.err.count("\n") == 1
    assert message in captured.err, captured.err


def test_wsd_trains_with_its_decay_fraction(tmp_path, capsys):
    metrics = tmp_path / "m.jsonl"
    flags = ["--steps", "10", "--lr-schedule", "wsd", "--decay-fraction", "0.3", "--warmup-steps"]
    assert main(["train", *TINY, *flags, "2", "--metrics", str(metrics)]) == 0
    assert capsys.readouterr().err == ""
    lrs = [r["lr"] for r in map(json.loads, open(metrics)) if "lr" in r]
    assert len(lrs) == 10 and lrs[:8] == [0.005] + [0.01] * 7  # the decay from step 7 on
    assert lrs[8] == pytest.approx(0.01 * 2 / 3) and lrs[9] == pytest.approx(0.01 / 3)


# a warm-up longer than the run: allowed, with one warning line -----------------------------------


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("microgpt: warning:")]


def test_a_warmup_longer_than_the_run_trains_and_warns_once(tmp_path, capsys):
    metrics = tmp_path / "m.jsonl"
    assert main(["train", *TINY, "--warmup-steps", "10", "--metrics", str(metrics)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and _warnings(err) == [
        "microgpt: warning: --warmup-steps 10 is longer than the run (3 steps): the learning "
        "rate rises to only 3/10 of its peak and never decays"
    ]
    lrs = [r["lr"] for r in map(json.loads, open(metrics)) if "lr" in r]
    assert lrs == [0.01 * (s + 1) / 10 for s in range(3)]  # the behaviour kept: warm-up only


def test_a_warmup_as_long_as_the_run_does_not_warn(capsys):
    assert main(["train", *TINY, "--warmup-steps", "3"]) == 0
    assert _warnings(capsys.readouterr().err) == []


def test_a_recipe_run_with_a_small_steps_warns_and_trains(capsys):
    pytest.importorskip("torch")
    argv = ["train", "--config", "names", "--steps", "2", "--threads", "1"]
    assert main([*argv, "--val-docs", "10", "--eval-docs", "10", "--num-samples", "1"]) == 0
    assert _warnings(capsys.readouterr().err) == [
        "microgpt: warning: --warmup-steps 200 is longer than the run (2 steps): the learning "
        "rate rises to only 2/200 of its peak and never decays"
    ]


def test_ablate_warns_once_for_the_study_not_per_run(tmp_path, capsys):
    """Two levels of steps (3 and 4), two designs, one seed: four runs, one warning, which
    names the shortest run."""
    argv = ["ablate", "--mode", "scalar", "--seeds", "1", "--jobs", "1", "--warmup-steps", "5"]
    argv += ["--vary", "steps=4,3", "--vary", "tie_lm_head", "--n-embd", "8", "--n-head", "2"]
    argv += ["--val-docs", "5", "--out", str(tmp_path / "study")]
    assert main(argv) == 0
    assert _warnings(capsys.readouterr().err) == [
        "microgpt: warning: --warmup-steps 5 is longer than the run (3 steps): the learning "
        "rate rises to only 3/5 of its peak and never decays"
    ]


# checkpoints written before --decay-fraction ------------------------------------------------------


def test_a_checkpoint_without_decay_fraction_loads_and_resumes(tmp_path, capsys):
    ckpt = tmp_path / "c.safetensors"
    assert main(["train", *TINY, "--out", str(ckpt)]) == 0
    tensors, meta = tensorfile.loads(ckpt.read_bytes())
    train_config = json.loads(meta["train_config"])
    del train_config["decay_fraction"]
    meta["train_config"] = json.dumps(train_config)
    ckpt.write_bytes(tensorfile.dumps(tensors, meta))
    old = checkpoint.load(ckpt)
    assert old.train.decay_fraction == TrainConfig.decay_fraction == 0.2
    assert old.train == TrainConfig.from_dict(train_config)
    capsys.readouterr()
    assert main(["train", "--resume", str(ckpt), "--steps", "5", "--num-samples", "1"]) == 0
    assert "extending the run from 3 to 5 steps" in capsys.readouterr().out
    assert checkpoint.load(ckpt).step == 5
