"""Recipes (`--config`): bundled names, TOML files, precedence of flags, one-line errors."""

import pytest

from microgpt import recipe
from microgpt.cli import main, parse_args


def test_bundled_recipes_parse_and_every_key_is_a_flag():
    assert {"names"} <= set(recipe.bundled())
    for name in recipe.bundled():
        args = parse_args(["train", "--config", name])
        _, table = recipe.read(name)
        for key, value in table.items():
            assert getattr(args, key.replace("-", "_")) == value, key


def test_flags_override_the_recipe(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('n_layer = 3\n"n-embd" = 24\nqk_norm = true\nmlp_activation = "gelu"\n')
    args = parse_args(["train", "--config", str(path), "--n-layer", "2"])
    assert (args.n_layer, args.n_embd, args.qk_norm, args.mlp_activation) == (2, 24, True, "gelu")
    assert parse_args(["train", "--config", str(path), "--no-qk-norm"]).qk_norm is False
    assert parse_args(["train"]).n_layer is None  # no recipe, no default leaks in


def test_a_recipe_drives_a_run(tmp_path, capsys):
    path = tmp_path / "r.toml"
    path.write_text("steps = 3\nn_embd = 8\nn_head = 2\nnum_samples = 1\nval_docs = 4\n")
    assert main(["train", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "final loss" in out and "(step 3)" in out and out.count("sample ") == 1


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("n_layers = 3\n", "unknown key 'n_layers'"),
        ("n_layer = 0\n", "n_layer: 0 is below the minimum 1"),
        ("n_layer = 'x'\n", "is not an integer"),
        ("qk_norm = 1\n", "qk_norm must be true or false"),
        ("mlp_activation = 'swish'\n", "is not one of relu, relu2, gelu"),
        ("resume = 'x.safetensors'\n", "unknown key 'resume'"),
        ("n_layer = [1, 2]\n", "is not a value"),
        ("n_layer = \n", "is not valid TOML"),
    ],
)
def test_bad_recipes_are_one_line_errors(tmp_path, capsys, content, match):
    path = tmp_path / "bad.toml"
    path.write_text(content)
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and match in err, err


def test_missing_recipe_and_file(tmp_path, capsys):
    assert main(["train", "--config", "nosuch"]) == 2
    assert "not a bundled recipe" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "none.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b"n_layer = 2 # \xe9\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "not UTF-8" in capsys.readouterr().err


def test_a_study_varies_or_sweeps_what_a_recipe_sets():
    """A recipe's value gives way to `ablate`'s --vary and --lr-sweep as it gives way to a flag
    (a recipe is retuned with the tool itself); a flag given with them is still an error."""
    from microgpt.ablate.cli import make_study

    def study(*flags):
        return make_study(parse_args(["ablate", "--config", "names", "--steps", "10", *flags]))

    swept = study("--lr-sweep", "1e-3,3e-3")
    assert swept.lrs == (1e-3, 3e-3) and "learning_rate" not in swept.given
    levels = study("--vary", "learning_rate=1e-3,3e-3").levels()
    assert [lv.label for lv in levels] == ["learning_rate 0.001", "learning_rate 0.003"]
    listed = study("--vary", "weight_decay=0,0.1")  # the recipe's 0.1 listed: the baseline
    assert listed.given == {"weight_decay": 0.1} and listed.baseline.label == "weight decay 0.1"
    unlisted = study("--vary", "weight_decay=0,0.2")  # not listed: the first value is
    assert unlisted.given == {} and unlisted.baseline.label == "weight decay 0"
    assert "learning_rate" in parse_args(["ablate", "--config", "names"]).from_recipe
    given = parse_args(["ablate", "--config", "names", "--learning-rate", "0.003"])
    assert "learning_rate" not in given.from_recipe


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--learning-rate", "3e-3", "--lr-sweep", "1e-3,3e-3"], "--lr-sweep and --learning-rate"),
        (["--weight-decay", "0.3", "--vary", "weight_decay=0,0.2"], "is not among --vary"),
    ],
)
def test_a_flag_given_beside_a_recipe_still_conflicts_with_the_study(flags, message, capsys):
    assert main(["ablate", "--config", "names", "--steps", "10", *flags, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
