"""The designs the parity tests run, derived from `microgpt.config.SWITCHES`, so that a new
switch is covered without touching a test: the reference design, each switch's every other value
alone, and one design with every switch at its last value (all non-reference at once)."""

from microgpt.config import REFERENCE_DESIGN, SWITCHES


def _designs() -> dict[str, dict]:
    out = {"reference": dict(REFERENCE_DESIGN)}
    for name, s in SWITCHES.items():
        for value in s.values[1:]:
            out[f"{name}={value}"] = {**REFERENCE_DESIGN, name: value}
    out["all"] = {name: s.values[-1] for name, s in SWITCHES.items()}
    return out


DESIGNS = _designs()  # test id -> {switch name: value}
