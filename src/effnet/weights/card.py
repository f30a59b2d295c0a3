"""The model card of an effnet weight file on the Hub (its repository's README.md): everything the file's
header says (the network's description and cost, preprocessing, classes), the training recipe and
figures its run folder records (``report.json`` beside a trained ``model.safetensors``), an ``effnet
evaluate`` report folder's figures where one is given, and the licence of the weights it started from.

Built from files only (the weight file, its run folder, the evaluation folder): nothing here trains or
evaluates, so the card says only what was recorded."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from effnet.errors import UserError
from effnet.models.profile import profile
from effnet.weights.native import WeightsInfo
from effnet.weights.pretrained import find_pretrained

#: What an ``effnet evaluate`` report folder holds that a card shows (figures are uploaded beside it).
EVALUATION_FILES = ("report.md", "report.json", "confusion.png", "reliability.png")
#: Licences the Hub's card metadata names by their SPDX id in lower case; others are ``other``.
HUB_LICENSES = {"apache-2.0", "mit", "bsd-2-clause", "bsd-3-clause", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0",
                "cc0-1.0", "gpl-3.0", "lgpl-3.0", "mpl-2.0", "openrail"}  # fmt: skip
UNKNOWN_LICENSE = "unknown — set --license"
#: Classes listed in full up to this many; more are counted.
MAX_LISTED_CLASSES = 100


@dataclass(frozen=True)
class ModelCard:
    """A card's text, the licence it states (None: unknown) and the files it shows (path in the
    repository → local file)."""

    text: str
    license: str | None
    attachments: dict[str, Path] = field(default_factory=dict)
    run_report: Path | None = None


def run_report(weights: Path) -> dict[str, Any] | None:
    """The training report of the run that wrote ``weights`` (its folder's ``report.json``), if any."""
    path = weights.parent / "report.json"
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) and {"recipe", "epochs", "top1"} <= report.keys() else None


def evaluation_report(folder: str | Path) -> tuple[dict[str, Any], dict[str, Path]]:
    """An ``effnet evaluate`` report folder's ``report.json`` and figures (path in the repository →
    file); a folder without its report.json is a UserError naming --evaluation."""
    root = Path(folder)
    path = root / "report.json"
    if not path.is_file():
        raise UserError(f"evaluation: {root} holds no report.json (an `effnet evaluate` report folder)",
                        field="evaluation")  # fmt: skip
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"evaluation: cannot read {path}: {err}", field="evaluation") from None
    if not isinstance(report, dict):
        raise UserError(f"evaluation: {path} is not an evaluation report", field="evaluation")
    files = {f"evaluation/{name}": root / name for name in EVALUATION_FILES if (root / name).is_file()}
    return report, files


def starting_license(info: WeightsInfo, run: dict[str, Any] | None) -> str | None:
    """The licence of the weights a file started from, where recorded: its own header (a converted
    checkpoint), else the published checkpoint it or its run started from."""
    if info.extra.get("license"):
        return info.extra["license"]
    for name in (info.extra.get("pretrained"), (run or {}).get("weights")):
        if not name:
            continue
        try:
            entry = find_pretrained(str(name))
        except UserError:
            entry = None
        if entry is not None and entry.license:
            return entry.license
        origin = Path(str(name))
        if origin.suffix == ".safetensors" and origin.is_file():
            from effnet.weights.files import read_safetensors
            from effnet.weights.native import info_from_metadata, is_native

            try:
                metadata = read_safetensors(origin)[1]
                if is_native(metadata):
                    return starting_license(info_from_metadata(metadata, str(origin)), None)
            except UserError:
                continue
    return None


def hub_license(license: str | None) -> list[str]:
    """The card metadata's licence lines."""
    if license is None:
        return ["license: unknown"]
    spdx = license.strip().lower()
    if spdx in HUB_LICENSES:
        return [f"license: {spdx}"]
    return ["license: other", f"license_name: {json.dumps(license)}"]


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.4g}" if math.isfinite(value) and abs(value) >= 1e4 else f"{value:.4g}"


#: Fields that may hold a local path: the card shows its last part only (a public card names no local folders).
_PATH_KEYS = {"weights", "data"}


def _table(rows: list[tuple[str, Any]]) -> list[str]:
    shown = [(k, Path(v).name if k in _PATH_KEYS and isinstance(v, str) and "/" in v and ":" not in v else v)
             for k, v in rows]  # fmt: skip
    return ["| | |", "|---|---|", *(f"| {name} | {_number(value)} |" for name, value in shown)]


def _per_class(report: dict[str, Any]) -> list[str]:
    """An evaluation's per-class table (accuracy is recall), where it has one."""
    rows = report.get("per_class")
    if not isinstance(rows, list) or not rows or len(rows) > MAX_LISTED_CLASSES:
        return []
    if not all(isinstance(row, dict) and {"class", "accuracy", "support"} <= row.keys() for row in rows):
        return []
    lines = ["", "| class | accuracy (recall) | precision | images |", "|---|---|---|---|"]
    for row in rows:
        precision = row.get("precision")
        shown = "—" if precision is None else _number(precision)
        lines.append(f"| {row['class']} | {_number(row['accuracy'])} | {shown} | {_number(row['support'])} |")
    return lines


def _figures(report: dict[str, Any]) -> list[tuple[str, Any]]:
    """A report's top-level figures: numbers, and intervals as [low, high]."""
    rows: list[tuple[str, Any]] = []
    for key, value in report.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            rows.append((key, value))
        elif (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        ):
            rows.append((key, f"[{_number(value[0])}, {_number(value[1])}]"))
        elif isinstance(value, str) and len(value) <= 120 and key in ("data", "weights", "model"):
            rows.append((key, value))
    return rows


#: What a training report's card section shows, in this order, where recorded.
_TRAINING_KEYS = ("weights", "data", "recipe", "epochs", "epochs_done", "batch_size", "lr", "resolution", "ema",
                  "freeze_epochs", "freeze_stages", "seed", "top1", "top5", "loss", "images_per_second", "seconds",
                  "device")  # fmt: skip


def model_card(
    info: WeightsInfo,
    weights: Path,
    repo_id: str,
    *,
    evaluation: str | Path | None = None,
    license: str | None = None,
) -> ModelCard:
    """The README.md of a Hub repository holding the effnet weight file ``weights`` (described by
    ``info``): ``evaluation`` an ``effnet evaluate`` report folder, ``license`` the weights' licence
    where it is not recorded (it overrides what is)."""
    spec, pre = info.spec, info.preprocessing
    counts = profile(spec, num_classes=info.num_classes, in_chans=info.in_chans)
    run = run_report(weights)
    licence = license or starting_license(info, run)
    name = f"hf-hub:{repo_id}"
    lines = [
        "---",
        "library_name: effnet",
        *hub_license(licence),
        "pipeline_tag: image-classification",
        "tags:",
        "- effnet",
        "- efficientnet",
        "- image-classification",
        "---",
        "",
        f"# {repo_id}",
        "",
        f"An EfficientNet-family image classifier, `{spec.name}`, with {info.num_classes:,} classes, in effnet's "
        "self-describing weight file (`model.safetensors`: its header holds the network's description, "
        "preprocessing and class names).",
        "",
        "```python",
        "import effnet",
        "",
        f'model = effnet.create_model("{name}", pretrained=True)',
        "```",
        "",
        f"or `effnet predict IMAGE --weights {name}` (`pip install effnet`).",
        "",
        "## Network",
        "",
        *_table(
            [
                ("parameters", counts.params),
                (f"multiply-adds at {counts.resolution} px", counts.macs),
                ("activations (conv and linear outputs)", counts.activations),
                ("resolution", spec.resolution),
                (
                    "width × depth × resolution multipliers",
                    f"{spec.width:g} × {spec.depth:g} × {spec.resolution_multiplier:g}",
                ),
                ("activation", spec.activation),
                ("padding", spec.padding),
                ("BatchNorm eps", spec.bn_eps),
                ("input channels", info.in_chans),
            ]
        ),
        "",
        "Blocks (effnet's block strings, one per stage):",
        "",
        "```",
        *spec.block_strings,
        "```",
        "",
        "## Preprocessing",
        "",
        f"Resize the short side to {pre.resize_size} px ({pre.interpolation}"
        + (", both sides: the aspect ratio is not kept" if pre.crop_mode == "squash" else "")
        + f"), center-crop {pre.resolution} px (crop fraction {pre.crop_pct:.4g}), scale pixels to 0–1, "
        f"normalise with mean {list(pre.mean)} and std {list(pre.std)}.",
        "",
        "## Classes",
        "",
    ]
    names = info.class_names
    if names is None:
        lines.append(f"{info.num_classes:,} classes, unnamed in the file.")
    elif len(names) > MAX_LISTED_CLASSES:
        lines.append(f"{len(names):,} classes: {', '.join(names[:10])}, … (the file lists them all).")
    else:
        lines.append(", ".join(f"{i}: {n}" for i, n in enumerate(names)))
    lines += ["", "## Training", ""]
    if run is not None:
        rows = [(key, run[key]) for key in _TRAINING_KEYS if key in run and run[key] not in (None, "")]
        lines += ["Recorded by the run that wrote the file (its report.json):", "", *_table(rows)]
    elif "recipe" in info.extra or "pretrained" in info.extra:
        rows = [(key, info.extra[key]) for key in ("pretrained", "recipe", "data", "top1") if key in info.extra]
        lines += ["Recorded in the file's header:", "", *_table(rows)]
    else:
        lines.append("Not recorded.")
    attachments: dict[str, Path] = {}
    if evaluation is not None:
        report, attachments = evaluation_report(evaluation)
        lines += [
            "",
            "## Evaluation",
            "",
            "From `effnet evaluate`:",
            "",
            *_table(_figures(report)),
            *_per_class(report),
        ]
        lines += [f"\n![{Path(path).stem}]({path})" for path in attachments if path.endswith(".png")]
    lines += [
        "",
        "## Licence",
        "",
        f"{licence}." if licence else f"Of the weights it started from: {UNKNOWN_LICENSE}.",
        "",
    ]
    return ModelCard("\n".join(lines), licence, attachments, weights.parent / "report.json" if run else None)
