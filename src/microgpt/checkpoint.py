"""Checkpoints: one safetensors file that both modes read and write.

Tensors (float64, exact for every mode and dtype): the weights under their model names
(`wte`, `layer0.attn_wq`, ...), Adam's moments as `adam_m.<name>` and `adam_v.<name>`, with
`--optimizer muon` Muon's momentum of its matrices as `momentum.<name>`, and the per-step
training losses and learning rates so far as `train_losses` and `train_lrs`.
Metadata (JSON strings): the format and its version, the model and training configs, the
vocabulary, the step, the RNG state, the mode that wrote it, a fingerprint of the documents, so
that a resume can check it continues on the same data, and the held-out evaluations so far
(`evals`), so that a resumed run's metrics are the whole run's. Checkpoints written before
`train_lrs` and `evals` existed read with the learning rates recomputed from their own schedule
and no evaluations; those written before `optimizer` existed read as AdamW's, which they are.

A checkpoint with Muon's state is format version 3, so that a microgpt that does not know
Muon refuses it rather than resume it with Adam; every other checkpoint is still version 2,
which such a microgpt reads as before.

A checkpoint of a design file (`microgpt.design`) is format version 4, so that a microgpt that
does not know design files refuses it rather than load its weights into the built-in model. Its
`design` metadata names the file (name, absolute path, sha256 of its bytes), its settings'
values, the weights it uses (name: shape, in the layout's order: the tensors are those) and
Muon's matrices among them: sampling or resuming it needs that file, in that version
(`design_check.for_checkpoint`).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, fields
from pathlib import Path

from microgpt import tensorfile
from microgpt.config import SWITCHES, ModelConfig, TrainConfig
from microgpt.errors import UserError
from microgpt.init import Matrix
from microgpt.muon import muon_matrices
from microgpt.schedule import lr_at

FORMAT = "microgpt-checkpoint"
VERSION = 2  # 2: the model config names every design switch; 1: only the first two
MUON_VERSION = 3  # 3: version 2 with Muon's momentum (written by --optimizer muon alone)
DESIGN_VERSION = 4  # 4: a design file's weights, with its `design` metadata (either optimizer)
READS = ("1", "2", "3", "4")  # a version-1 checkpoint's missing switches: their reference values
MODEL_FIELDS = tuple(f.name for f in fields(ModelConfig))
GROUPS = {"weights": "", "adam_m": "adam_m.", "adam_v": "adam_v."}  # state key: name prefix
MUON_GROUPS = {"momentum": "momentum."}  # with --optimizer muon, of Muon's matrices alone


@dataclass(frozen=True)
class Checkpoint:
    model: ModelConfig
    train: TrainConfig
    chars: str  # the vocabulary, BOS excluded (a stream's has none)
    step: int  # training steps done
    state: dict[str, dict[str, Matrix]]  # {"weights" | "adam_m" | "adam_v": {name: rows}},
    # and with Muon "momentum": {name: rows} of Muon's matrices
    losses: list[float]  # per-step training loss of steps 1..step
    lrs: list[float]  # the learning rate of steps 1..step (an extended run changed schedule)
    rng_state: tuple  # random.Random.getstate() after the weight draws
    data_fingerprint: str  # see microgpt.data.fingerprint
    input_path: str | None  # None: the bundled names
    mode: str  # the mode that wrote it
    val_loss: float | None = None  # per-token held-out loss at `step`, if evaluated (--keep-best)
    evals: tuple[tuple[int, float], ...] = ()  # (step, per-token held-out loss), --eval-every
    design: dict | None = None  # a design file's run: `design_entry`; None: the built-in model


DESIGN_KEYS = {"name": str, "path": str, "sha256": str, "settings": dict, "weights": dict,
               "muon": list}  # fmt: skip


def design_entry(run, shapes: dict[str, tuple[int, int]], muon: dict[str, bool]) -> dict:
    """A design file's run (`design.DesignRun`) as a checkpoint keeps it: the file, its
    version, its settings, the weights it uses and which of them Muon trains."""
    return {
        "name": run.name,
        "path": run.path,
        "sha256": run.sha256,
        "settings": run.values(),
        "weights": {name: list(shape) for name, shape in shapes.items()},
        "muon": muon_matrices(shapes, muon),
    }


def save(path: str | Path, ckpt: Checkpoint) -> None:
    tensors = {}
    muon = ckpt.train.optimizer == "muon"
    for key, prefix in (GROUPS | MUON_GROUPS if muon else GROUPS).items():
        for name, rows in ckpt.state[key].items():
            tensors[prefix + name] = ([len(rows), len(rows[0])], [x for row in rows for x in row])
    tensors["train_losses"] = ([len(ckpt.losses)], list(ckpt.losses))
    tensors["train_lrs"] = ([len(ckpt.lrs)], list(ckpt.lrs))
    version, internal, gauss_next = ckpt.rng_state
    number = DESIGN_VERSION if ckpt.design is not None else MUON_VERSION if muon else VERSION
    metadata = {
        "format": FORMAT,
        "version": str(number),
        "model_config": json.dumps(ckpt.model.to_dict()),
        "train_config": json.dumps(ckpt.train.to_dict()),
        "chars": json.dumps(ckpt.chars),
        "step": str(ckpt.step),
        "rng_state": json.dumps([version, list(internal), gauss_next]),
        "data_fingerprint": ckpt.data_fingerprint,
        "input_path": json.dumps(ckpt.input_path),
        "mode": ckpt.mode,
        "evals": json.dumps([list(e) for e in ckpt.evals]),
    }
    if ckpt.val_loss is not None:
        metadata["val_loss"] = json.dumps(ckpt.val_loss)
    if ckpt.design is not None:
        metadata["design"] = json.dumps(ckpt.design)
    try:
        tensorfile.write_atomic(path, tensorfile.dumps(tensors, metadata))
    except OSError as e:
        raise UserError(f"cannot write checkpoint {path}: {e.strerror}: check --out") from None


def load(path: str | Path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise UserError(f"checkpoint {path} {what}: pass the .safetensors file written by --out")
    return loads(path.read_bytes(), path)


def loads(blob: bytes, path: str | Path) -> Checkpoint:
    """A checkpoint from the bytes of the file at `path` (named in errors)."""
    path = Path(path)
    try:
        tensors, meta = tensorfile.loads(blob)
    except tensorfile.FormatError as e:
        raise UserError(f"checkpoint {path} is corrupt: {e}; use an intact checkpoint") from None
    if meta.get("format") != FORMAT:
        raise UserError(f"{path} is not a microgpt checkpoint (no '{FORMAT}' marker)")
    if meta.get("version") not in READS:
        raise UserError(
            f"checkpoint {path} has format version {meta.get('version')}, this microgpt reads "
            f"versions {' and '.join(READS)}: use the microgpt version that wrote it"
        )
    try:
        model_dict = json.loads(meta["model_config"])
        _check_switches(path, model_dict)
        model = ModelConfig.from_dict(model_dict)
        train = TrainConfig.from_dict(json.loads(meta["train_config"]))
        version, internal, gauss_next = json.loads(meta["rng_state"])
        losses = tensors["train_losses"][1]
        if "train_lrs" in tensors:
            lrs = tensors["train_lrs"][1]
        else:  # written before train_lrs: as its own schedule gave them
            lrs = [lr_at(i, train) for i in range(len(losses))]
        evals = tuple((int(s), float(v)) for s, v in json.loads(meta.get("evals", "[]")))
        design = _design(meta) if meta["version"] == str(DESIGN_VERSION) else None
        ckpt = Checkpoint(
            model=model,
            train=train,
            chars=json.loads(meta["chars"]),
            step=int(meta["step"]),
            state=_unpack_state(tensors, model, train, design),
            losses=losses,
            lrs=lrs,
            rng_state=(version, tuple(internal), gauss_next),
            data_fingerprint=meta["data_fingerprint"],
            input_path=json.loads(meta["input_path"]),
            mode=meta["mode"],
            val_loss=json.loads(meta["val_loss"]) if "val_loss" in meta else None,
            evals=evals,
            design=design,
        )
        random.Random().setstate(ckpt.rng_state)  # raises on a malformed state
    except (KeyError, ValueError, TypeError, UserError) as e:
        raise UserError(f"checkpoint {path} is corrupt or incompatible ({e})") from None
    bos = 1 if train.data == "lines" else 0  # a stream's vocabulary has no BOS
    if len(ckpt.chars) + bos != model.vocab_size or not len(ckpt.losses) == len(lrs) == ckpt.step:
        raise UserError(f"checkpoint {path} is inconsistent: its vocabulary or step count is off")
    return ckpt


def _check_switches(path: Path, model: dict) -> None:
    """A design switch or value this version does not know is one clear line, not 'corrupt'."""
    if not isinstance(model, dict):
        return
    for name, value in model.items():
        if name in SWITCHES and value not in SWITCHES[name].values:
            raise UserError(
                f"checkpoint {path} uses {name} = {value!r}, which this microgpt does not know "
                f"({', '.join(map(str, SWITCHES[name].values))}): use a newer microgpt"
            )
    unknown = sorted(set(model) - set(MODEL_FIELDS))
    if unknown:
        raise UserError(
            f"checkpoint {path} has model settings this microgpt does not know "
            f"({', '.join(unknown)}): use a newer microgpt"
        )


def _design(meta: dict) -> dict:
    """A version-4 checkpoint's `design` metadata, checked (ValueError: not as written)."""
    design = json.loads(meta["design"])
    if not isinstance(design, dict):
        raise ValueError("its design is not an object")
    for key, kind in DESIGN_KEYS.items():
        if not isinstance(design.get(key), kind):
            raise ValueError(f"its design has no {key}")
    for name, shape in design["weights"].items():
        if not (isinstance(shape, list) and len(shape) == 2 and all(
                isinstance(n, int) and n > 0 for n in shape)):  # fmt: skip
            raise ValueError(f"its design's weight {name} has no shape")
    return design


def _unpack_state(
    tensors: dict, model: ModelConfig, train: TrainConfig, design: dict | None = None
) -> dict[str, dict[str, Matrix]]:
    """The weights and optimizer state by name: the built-in model's, or a design's (its
    `design` metadata names them)."""
    if design is None:
        shapes, muon = model.param_shapes(), muon_matrices(model.param_shapes())
    else:
        shapes = {name: tuple(shape) for name, shape in design["weights"].items()}
        muon = [name for name in design["muon"] if name in shapes]
    groups = {key: (prefix, list(shapes)) for key, prefix in GROUPS.items()}
    if train.optimizer == "muon":
        groups["momentum"] = (MUON_GROUPS["momentum"], muon)
    state: dict[str, dict[str, Matrix]] = {key: {} for key in groups}
    for key, (prefix, names) in groups.items():
        for name in names:
            rows, cols = shapes[name]
            shape, flat = tensors[prefix + name]
            if list(shape) != [rows, cols]:
                raise ValueError(
                    f"{prefix + name} has shape {shape}, the config says {[rows, cols]}"
                )
            state[key][name] = [flat[r * cols : (r + 1) * cols] for r in range(rows)]
    return state
