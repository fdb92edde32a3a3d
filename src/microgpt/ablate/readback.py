"""A study's results.json read back, every field the page and the plots use checked first.

Nothing a study folder holds is trusted: the file may be old, copied or edited by hand. `read`
turns anything unreadable, not JSON, or missing or mistyped where the page needs it into one
`UserError` line that names the field (`designs[2].val_loss.mean`). Fields only shown, never
computed with (the settings and environment at large), may hold any JSON value.

The schema is what `report.results_json` writes; `SCHEMA` below lists the part that is read.
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from microgpt.ablate.plan import Level
from microgpt.ablate.report import baseline_name
from microgpt.errors import UserError

# the schema: a type (bool is not a number), Opt(x) for x or null, [x] for a list of x,
# Map(x) for an object of x, a dict for an object with (at least) those keys, May(x) for a key
# that may be absent
NUMBER, FINITE = "number", "finite number"


@dataclass(frozen=True)
class Opt:
    of: object


@dataclass(frozen=True)
class Map:
    of: object


@dataclass(frozen=True)
class OneOf:
    values: tuple


@dataclass(frozen=True)
class May:
    """A key an object may lack (a results.json written before it existed), else `of`."""

    of: object


FIGURE = Opt({"mean": NUMBER, "std": Opt(NUMBER)})  # mean ± sample std over seeds
LEVEL = Map(FINITE)  # the numeric settings of a level
WHERE = {"level": LEVEL, "design": str, "learning_rate": FINITE}  # a run's, but for its seed
LR_SWEEP = {  # `report.summarize`'s lr_sweep
    "learning_rates": [FINITE],
    "loss_at_init": FINITE,
    "halves": str,
    "designs": [
        {
            "level": LEVEL,
            "design": str,
            "baseline": bool,
            "rates": [
                {
                    "learning_rate": FINITE,
                    "val_loss": FIGURE,
                    "diverged": int,
                    "max_attention_logit": Opt(NUMBER),
                }
            ],
            "best_lr": FINITE,
            "report_loss": FIGURE,
            "sensitivity": {
                "mean": NUMBER,
                "low": Opt(NUMBER),
                "high": Opt(NUMBER),
                "confidence": NUMBER,
            },
        }
    ],
}
SCHEMA = {
    "settings": {
        "mode": str,
        "seeds": [int],
        "last_n": int,
        "plan": str,
        "varied": Map(list),
        "baseline": dict,
        "model": dict,
        "train": {"steps": int},
        "stack": May(int),  # the stack size (1: every run alone); absent before stacks
    },
    "environment": dict,
    "designs": [
        {
            "level": LEVEL,
            "design": str,
            "baseline": bool,
            "params": int,
            **dict.fromkeys(("final_loss", "mean_last_n", "val_loss"), FIGURE),
            **dict.fromkeys(("steps_per_s", "tokens_per_s", "wall_seconds"), FIGURE),
        }
    ],
    "comparisons": [
        {
            "kind": OneOf(("difference", "sensitivity", "main effect", "interaction")),
            "level": LEVEL,
            "name": str,
            "mean_diff": NUMBER,
            "n": int,
            "confidence": NUMBER,
            "low": Opt(NUMBER),
            "high": Opt(NUMBER),
            "p": Opt(NUMBER),
            "significant": Opt(bool),
        }
    ],
    "adjustment": {"method": Opt(str), "family": int, "alpha": NUMBER},
    "diverged": May([{**WHERE, "seed": int, "step": int, "last_loss": Opt(NUMBER), "reason": str}]),
    "diagnostics": May(
        Opt(
            {
                "threshold": FINITE,
                "runs": int,
                "over": [{**WHERE, "seeds": int, "of": int, "largest": Opt(NUMBER)}],
            }
        )
    ),
    "lr_sweep": May(LR_SWEEP),
    "runs": [
        {
            "design": str,
            "level": LEVEL,
            "seed": int,
            "params": int,
            "losses": [NUMBER],
            **dict.fromkeys(("final_loss", "mean_last_n", "val_loss"), Opt(NUMBER)),
            **dict.fromkeys(("steps_per_s", "wall_seconds"), Opt(NUMBER)),
            "learning_rate": May(FINITE),
            "diverged": May(Opt({"step": int, "reason": str})),
            "max_attention_logit": May(Opt(NUMBER)),
        }
    ],
}


def check(value, schema, where: str) -> None:
    """Raises ValueError('where: what is wrong') at the first value that does not fit."""
    if isinstance(schema, Opt):
        if value is not None:
            check(value, schema.of, where)
    elif isinstance(schema, OneOf):
        if value not in schema.values:
            choices = ", ".join(map(json.dumps, schema.values))
            raise ValueError(f"{where} is {_kind(value)}, not one of {choices}")
    elif schema in (NUMBER, FINITE):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or (schema == FINITE and not math.isfinite(value)):
            raise ValueError(f"{where} is {_kind(value)}, not a {schema}")
    elif isinstance(schema, list):
        if not isinstance(value, list):
            raise ValueError(f"{where} is {_kind(value)}, not a list")
        for i, item in enumerate(value):
            check(item, schema[0], f"{where}[{i}]")
    elif isinstance(schema, Map):
        check(value, dict, where)
        for key, item in value.items():
            check(item, schema.of, f"{where}.{key}")
    elif isinstance(schema, dict):
        check(value, dict, where)
        for key, item_schema in schema.items():
            if isinstance(item_schema, May):
                if key not in value:
                    continue
                item_schema = item_schema.of
            elif key not in value:
                raise ValueError(f"{_at(where, key)} is missing")
            check(value[key], item_schema, _at(where, key))
    elif not isinstance(value, schema) or (schema is int and isinstance(value, bool)):
        raise ValueError(f"{where} is {_kind(value)}, not {_NAMES[schema]}")


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


_NAMES = {
    str: "a string",
    int: "an integer",
    bool: "true or false",
    list: "a list",
    dict: "an object",
}


def _kind(value) -> str:
    """What a JSON value is, in words (never the value itself: it may be long or odd)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number" if math.isfinite(value) else f"{value}"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


@dataclass(frozen=True)
class Results:
    """A checked results.json, and what the page and the plots derive from it."""

    doc: dict

    @property
    def settings(self) -> dict:
        return self.doc["settings"]

    @property
    def environment(self) -> dict:
        return self.doc["environment"]

    @property
    def designs(self) -> list[dict]:
        """Per level and design, the summary over seeds (level-major, baseline first)."""
        return self.doc["designs"]

    @property
    def comparisons(self) -> list[dict]:
        return self.doc["comparisons"]

    @property
    def adjustment(self) -> dict:
        return self.doc["adjustment"]

    @property
    def runs(self) -> list[dict]:
        return self.doc["runs"]

    @property
    def mode(self) -> str:
        return self.settings["mode"]

    @property
    def seeds(self) -> list[int]:
        return self.settings["seeds"]

    @property
    def steps(self) -> int:
        return self.settings["train"]["steps"]

    @property
    def last_n(self) -> int:
        return self.settings["last_n"]

    def levels(self) -> list[Level]:
        """The numeric levels in the order of the designs' summaries."""
        out: list[Level] = []
        for d in self.designs:
            level = Level(tuple(d["level"].items()))
            if level not in out:
                out.append(level)
        return out

    @property
    def numeric(self) -> list[str]:
        """The numeric settings that vary (none: one level without values)."""
        return list(self.designs[0]["level"])

    def design_labels(self) -> list[str]:
        return list(dict.fromkeys(d["design"] for d in self.designs))

    @property
    def baseline(self) -> str | None:
        return next((d["design"] for d in self.designs if d["baseline"]), None)

    def baseline_name(self) -> str:
        """ "reference" when every switch of the baseline is the reference algorithm's."""
        return baseline_name({**self.settings["model"], **self.settings["baseline"]})

    @property
    def lr_sweep(self) -> dict | None:
        """The learning-rate sweep's summary (see `report.summarize`), or None: no sweep."""
        return self.doc.get("lr_sweep")

    @property
    def diverged(self) -> list[dict]:
        return self.doc.get("diverged") or []

    @property
    def diagnostics(self) -> dict | None:
        return self.doc.get("diagnostics")

    def best_lr(self, level: Level, design: str) -> float | None:
        """A sweep's best rate of `design` at `level` (None: no sweep, or not listed)."""
        flags = level.flags()
        for d in (self.lr_sweep or {}).get("designs", []):
            if d["level"] == flags and d["design"] == design:
                return d["best_lr"]
        return None

    def runs_of(self, level: Level, design: str) -> list[dict]:
        flags = level.flags()
        return [r for r in self.runs if r["design"] == design and r["level"] == flags]


JSON_DEPTH = 5000  # the recursion limit while parsing: far deeper than any results.json


def parse(data: bytes, where: str | Path) -> Results:
    """A results.json's bytes, checked; `where` names the file in the errors."""
    # json's C decoder recurses once per nesting level, bounded by the recursion limit: under
    # a limit someone raised (a test's, say) a deeply nested file would overflow the C stack
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(min(limit, JSON_DEPTH))
    try:
        doc = json.loads(data)
    except RecursionError:
        raise UserError(f"{where} is nested too deeply to be a results.json") from None
    except ValueError as e:  # not JSON, or not UTF-8
        raise UserError(f"{where} is not JSON ({e})") from None
    finally:
        sys.setrecursionlimit(limit)
    doc = _unicode(doc)
    try:
        if not isinstance(doc, dict):
            raise ValueError(f"the file is {_kind(doc)}, not an object")
        check(doc, SCHEMA, "")
        _check_consistent(doc)
    except ValueError as e:
        raise UserError(f"{where}: {e}") from None
    return Results(doc)


SURROGATE = re.compile("[\ud800-\udfff]")


def _unicode(value):
    """The value with every lone surrogate (JSON's "\\ud800", never valid text) replaced by
    U+FFFD, so that the page encodes and matplotlib draws whatever the file held."""
    if isinstance(value, str):
        return SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_unicode(v) for v in value]
    if isinstance(value, dict):
        return {_unicode(k): _unicode(v) for k, v in value.items()}
    return value


def _check_consistent(doc: dict) -> None:
    """Every run and comparison belongs to a level and design the summaries list."""
    designs = doc["designs"]
    if not designs:
        raise ValueError("designs is empty")
    names = list(designs[0]["level"])
    for i, d in enumerate(designs):
        if list(d["level"]) != names:
            raise ValueError(f"designs[{i}].level names other settings than designs[0].level")
    known = {(json.dumps(d["level"], sort_keys=True), d["design"]) for d in designs}
    levels = {key for key, _ in known}
    for i, r in enumerate(doc["runs"]):
        if (json.dumps(r["level"], sort_keys=True), r["design"]) not in known:
            raise ValueError(f"runs[{i}] is of a design and level that designs does not list")
    for i, c in enumerate(doc["comparisons"]):
        if json.dumps(c["level"], sort_keys=True) not in levels:
            raise ValueError(f"comparisons[{i}].level is not a level that designs lists")
    sweep = doc.get("lr_sweep")
    if sweep is None:
        return
    n = len(sweep["learning_rates"])
    for i, d in enumerate(sweep["designs"]):
        if (json.dumps(d["level"], sort_keys=True), d["design"]) not in known:
            raise ValueError(f"lr_sweep.designs[{i}] is of a design and level designs lacks")
        if [r["learning_rate"] for r in d["rates"]] != sweep["learning_rates"]:
            raise ValueError(f"lr_sweep.designs[{i}].rates are not at the {n} learning_rates")


def read(path: str | Path) -> Results:
    """results.json at `path`, checked (see `parse`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(
            f"{path} does not exist: give a folder microgpt ablate wrote (its --out)"
        ) from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    return parse(data, path)
