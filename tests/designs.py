"""The designs the parity tests run, derived from `microgpt.config.SWITCHES`, so that a new
switch is covered without touching a test: the reference design, each switch's every other value
alone, and one design with every switch at its last value (all non-reference at once).

A model setting that changes the function rather than the size (`FUNCTION_SETTINGS`) is a number,
not a list of values: it joins at a test value, alone and in "all"."""

from microgpt.config import REFERENCE_DESIGN, SIZE_SETTINGS, SWITCHES

SIZES = ("n_layer", "n_embd", "n_head", "block_size")
# each at a value the small test models' logits come near, so that its curvature counts
FUNCTION_SETTINGS = {"logit_softcap": 3.0}
assert set(SIZE_SETTINGS) == {*SIZES, *FUNCTION_SETTINGS}, "a new model setting: give it a value"


def _designs() -> dict[str, dict]:
    out = {"reference": dict(REFERENCE_DESIGN)}
    for name, s in SWITCHES.items():
        for value in s.values[1:]:
            out[f"{name}={value}"] = {**REFERENCE_DESIGN, name: value}
    for name, value in FUNCTION_SETTINGS.items():
        out[f"{name}={value:g}"] = {**REFERENCE_DESIGN, name: value}
    out["all"] = {name: s.values[-1] for name, s in SWITCHES.items()} | FUNCTION_SETTINGS
    return out


DESIGNS = _designs()  # test id -> {switch or model setting name: value}
