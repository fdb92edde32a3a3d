"""A study's results.json: its schema, declared once here, the file written (`to_json`) and read
back (`parse`, `read`), and the `Results` every report is drawn from; the CSV beside it.

Nothing a study folder holds is trusted: the file may be old, copied or edited by hand. `parse`
turns anything unreadable, not JSON, or missing or mistyped where a report needs it into one
`UserError` line that names the field (`designs[2].val_loss.mean`). Fields only shown, never
computed with (the settings and environment at large), may hold any JSON value. `SCHEMA` lists
the part that is read; `write` reads back the bytes it has just written, so a field that
`to_json` no longer writes fails there, not in an old folder.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from microgpt import tensorfile
from microgpt.ablate.analysis import DIAGNOSTICS, FIGURES, HALVES, LOSSES, SPEEDS, run_row
from microgpt.ablate.plan import AXES, DEFAULTS, Level, Study, Task
from microgpt.config import SETTINGS, in_use
from microgpt.errors import UserError

# writing ----------------------------------------------------------------------------------------

DIAGNOSTICS_NOTE = (
    "Tensor mode: every log_every steps and at the end, one forward pass on a run's first "
    "held-out documents (diagnostics.docs of them): max_attention_logit, the largest q·k/sqrt(D) "
    "before the softmax over every layer, head and real query and the keys it may see; "
    "logit_mean and logit_max, the output logits' over every real position and the vocabulary. "
    "Scalar mode: none (null). A design file whose forward calls no attention block of "
    "microgpt.tensor.blocks: max_attention_logit null (not recorded)."
)


def to_json(
    study: Study, tasks: list[Task], records: list[dict], summary: dict, env: dict
) -> bytes:
    """results.json: the study's settings, the environment `env`, the analysis `summary`
    (`analysis.summarize`) and every run with its record."""
    runs = []
    for task, record in zip(tasks, records):
        row = run_row(study, task, record)
        del row["diverged_step"]  # in "diverged", with the rest
        train_config = {**record["train_config"], "last_n": study.train.last_n}
        run = {
            **row,
            "level": task.level.flags(),
            "switches": task.design.switches(),
            "axes": task.design.flags(),
            "val_docs": record["val_docs"],
            "diverged": record.get("diverged"),
            "diagnostics": record.get("diagnostics"),
            "data_order": record["data_order"],
            "model_config": record["model_config"],
            "train_config": train_config,
            "environment": record["environment"],
            "losses": record["losses"],
            "stack_size": record.get("stack_size", 1),  # trained in a stack of this many runs
        }
        if study.files:  # the design file it ran (None: the built-in model)
            run["design_file"] = task.design_run.name if task.design_run else None
            run["design_settings"] = task.design_run.values() if task.design_run else None
        if study.sweep:
            run["halves"] = record.get("halves")
        runs.append(run)
    doc = {
        "settings": {
            **study.settings(),
            "varied": {k: list(v) for k, v in study.varied.items()},
            "plan": study.plan,
            "baseline": study.baseline.flags(),
            "seeds": list(study.seeds),
            "last_n": study.train.last_n,
            "input": study.input_path,
        },
        "diagnostics_note": DIAGNOSTICS_NOTE,
        "environment": env,
        "spread": "sample standard deviation over seeds (n - 1)",
        **summary,
        "runs": runs,
    }
    return json_text(doc)


def json_text(doc: dict) -> bytes:
    """`doc` as JSON text, one key a line and a list of objects (the runs) one object a line,
    each value written by the json module's C encoder: its indented form is pure Python, a
    second of a study of hundreds of runs. Read by any JSON reader; tools like `jq` reindent."""

    def value(v) -> str:
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            return "[\n  " + ",\n  ".join(json.dumps(x) for x in v) + "\n ]"
        return json.dumps(v)

    lines = ",\n".join(f" {json.dumps(k)}: {value(v)}" for k, v in doc.items())
    return ("{\n" + lines + "\n}\n").encode()


def write(
    path: Path, study: Study, tasks: list[Task], records: list[dict], summary: dict, env: dict
) -> Results:
    """Writes results.json (`to_json`) atomically and returns it as `read` reads it back, so
    that what the reports are drawn from is the file, and a field `to_json` stopped writing
    (or wrote mistyped) fails here, at once, not later in an old folder."""
    data = to_json(study, tasks, records, summary, env)
    tensorfile.write_atomic(path, data)
    return parse(data, path)


def csv_columns(study: Study) -> list[str]:
    """`design`, one column per varied setting (and the learning rate of a sweep), the seed,
    then the run's figures, whether and where it diverged, and its diagnostics."""
    swept = ["learning_rate", *HALVES] if study.sweep else []
    return ["design", *study.varied, *swept[:1], "seed", *FIGURES, *swept[1:], "diverged",
            "diverged_step", *DIAGNOSTICS]  # fmt: skip


def to_csv(study: Study, tasks: list[Task], records: list[dict]) -> bytes:
    """One row per run (`analysis.run_row`), in `csv_columns`."""
    buf = io.StringIO()
    columns = csv_columns(study)
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for task, record in zip(tasks, records):
        writer.writerow(run_row(study, task, record))
    return buf.getvalue().encode()


# the schema -------------------------------------------------------------------------------------

# a type (bool is not a number), Opt(x) for x or null, [x] for a list of x,
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
LR_SWEEP = {  # `analysis.summarize`'s lr_sweep
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
            **dict.fromkeys(LOSSES + SPEEDS, FIGURE),
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
                "unrecorded": May([str]),  # designs that record no attention logit
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
            **dict.fromkeys(LOSSES, Opt(NUMBER)),
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
    """A checked results.json, and what the reports and the plots derive from it."""

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

    @property
    def stack(self) -> int:
        """The stack size (1: every run alone; so in files written before stacks)."""
        return self.settings.get("stack", 1)

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
        """ "reference" when every design axis of the baseline is the reference algorithm's
        (a file written before settings were axes: its "baseline" holds only switches)."""
        s = self.settings
        return baseline_name({**s["model"], **s["train"], **s["baseline"]})

    @property
    def lr_sweep(self) -> dict | None:
        """The learning-rate sweep's summary (see `analysis.summarize`), or None: no sweep."""
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

    @staticmethod
    def at(level: Level, entries: list[dict]) -> list[dict]:
        """The entries (design summaries, comparisons, a sweep's designs) of `level`."""
        flags = level.flags()
        return [e for e in entries if e["level"] == flags]

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


def baseline_name(design: dict) -> str:
    """ "reference" when every design axis (`plan.AXES`) of the baseline `design` (its varied
    and fixed values, name: value; one missing takes its default) that it uses is the
    reference algorithm's: every switch, the optimizer, the schedule..."""
    values = {**DEFAULTS, **design}
    reference = all(
        values[n] == a.default
        for n, a in AXES.items()
        if n not in SETTINGS or in_use(SETTINGS[n], values)
    )
    return "reference" if reference else "baseline"
