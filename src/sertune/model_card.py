"""Model cards: the `README.md` of a trained run and of each fold's checkpoint, in the Hugging Face layout.

YAML front matter (library, base model, tags, dataset, metrics with their values) for the hub's
widgets and search, then what the model is, what it was trained and tested on, its scores with the
spread over folds, its fairness figures, its size, what it is for and not for, and how to load it.
Every number comes from the run's own `summary.json` or the fold's `metrics.json`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sertune.fileio import write_text_atomic
from sertune.metadata import base_model_id

CARD = "README.md"
_TASK_NAMES = {
    "categorical": "speech emotion recognition (classes)",
    "dimensional": "speech emotion recognition (arousal, valence, dominance)",
    "multitask": "speech emotion recognition (classes and arousal, valence, dominance)",
}


def _yaml(data: Any) -> str:
    import yaml  # imported here: the trainer imports this module, `sertune --help` need not pay for yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _figure(entry: Mapping[str, Any] | None, digits: int) -> str:
    """'61.2 ± 3.4 (5 folds)' for a summarize_folds entry, '61.2' for a fold's plain number, '–' for none."""
    if entry is None:
        return "–"
    if not isinstance(entry, Mapping):
        return f"{entry:.{digits}f}"
    if entry.get("mean") is None:
        return "n/a"
    spread = f" ± {entry['std']:.{digits}f}" if entry.get("std") is not None else ""
    return f"{entry['mean']:.{digits}f}{spread} ({entry['n']} fold{'s' if entry['n'] != 1 else ''})"


def _lookup(metrics: Mapping[str, Any], dotted: str) -> Any:
    """A value of nested fold metrics by its dotted summary key (`dimensions.arousal.ccc`)."""
    if dotted in metrics:
        return metrics[dotted]
    value: Any = metrics
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _value(entry: Any) -> float | None:
    return entry.get("mean") if isinstance(entry, Mapping) else entry


def _headline_keys(labels: Sequence[str], dimensions: Sequence[str]) -> list[tuple[str, str, str, int]]:
    """(metric key, hub metric type, readable name, decimals) of the figures a card leads with."""
    keys = []
    if labels:
        keys += [("uar", "uar", "UAR (%)", 1), ("macro_f1", "f1", "macro-F1 (%)", 1), ("accuracy", "accuracy",
                                                                                     "accuracy (%)", 1)]
    keys += [(f"dimensions.{name}.ccc", "ccc", f"CCC {name}", 3) for name in dimensions]
    return keys


def model_card(
    summary: Mapping[str, Any],
    *,
    test: Mapping[str, Any],
    protocol: str,
    base_model: str,
    scope: str,
    load_path: str,
) -> str:
    """The card's text. `test` holds the test metrics (the run's summary over folds, or one fold's own);
    `scope` says which (`"the 5 folds of the run"`, `"fold fold2"`); `load_path` is what to pass to
    `sertune.load` (the directory's own name: the card travels with it)."""
    labels = list(summary.get("labels") or [])
    dimensions = [d["name"] for d in summary.get("dimensions") or []]
    task = summary.get("task", "categorical")
    method = summary["method"]
    parameters = summary.get("parameters") or {}
    headline = _headline_keys(labels, dimensions)
    front = {
        "library_name": "sertune",
        "base_model": base_model,
        "pipeline_tag": "audio-classification",
        "tags": list(dict.fromkeys(["speech-emotion-recognition", "audio", "sertune", method,
                                    *(["peft", "lora"] if "lora" in method else [])])),
        "datasets": [summary["corpus"]],
        "metrics": [kind for _, kind, _, _ in headline],
        "model-index": [{
            "name": f"{summary['corpus']}-{summary['backbone']}-{method}",
            "results": [{
                "task": {"type": "audio-classification", "name": _TASK_NAMES.get(task, task)},
                "dataset": {"name": summary["corpus"], "type": summary["corpus"]},
                "metrics": [
                    {"type": kind, "name": name, "value": round(float(_value(_lookup(test, key))), 4)}
                    for key, kind, name, _ in headline if _value(_lookup(test, key)) is not None
                ],
            }],
        }],
    }
    lines = [
        "---", _yaml(front).rstrip(), "---", "",
        f"# {summary['backbone']} + {method} for {_TASK_NAMES.get(task, task)}, trained on {summary['corpus']}", "",
        f"A speech emotion recognition model made with sertune: the encoder `{base_model}` "
        f"({'its weights unchanged' if method != 'full' else 'fine-tuned in full'}, tuned with `{method}`) and the "
        "PEFT-SER study's head (a weighted sum of the encoder's layers, three 1x1 convolutions, mean pooling, "
        "two linear layers).", "",
        "## Outputs", "",
    ]
    if labels:
        lines.append(f"- emotion classes, in output order: {', '.join(labels)}")
    for entry in summary.get("dimensions") or []:
        lines.append(f"- {entry['name']} on the training corpus's {entry['low']:g}-{entry['high']:g} scale "
                     "(and normalised to 0-1)")
    lines += ["", "## Training and evaluation data", "",
              f"Corpus `{summary['corpus']}`, protocol: {protocol or 'the corpus folds'}. Scores below are on the "
              f"test speakers of {scope}, never seen in training; each fold's epoch was chosen on its dev part.", "",
              "## Results", "", "| metric | test |", "|---|---|"]
    lines += [f"| {name} | {_figure(_lookup(test, key), digits)} |" for key, _, name, digits in headline]
    lines += ["", "## Fairness (by gender)", ""]
    fairness = [
        ("fairness.statistical_parity", "statistical parity gap (percentage points, lower is fairer)", 1),
        ("fairness.equality_of_opportunity", "equality-of-opportunity gap (percentage points)", 1),
    ] if labels else []
    fairness += [(f"dimension_fairness.ccc_gap.{name}", f"CCC gap between genders, {name}", 3) for name in dimensions]
    lines += ["| figure | test |", "|---|---|"]
    lines += [f"| {name} | {_figure(_lookup(test, key), digits)} |" for key, name, digits in fairness]
    lines += ["", "n/a: not measurable on these test speakers (e.g. a test part of one gender)."]
    lines += [
        "", "## Size", "",
        f"{parameters.get('trained', 0):,} trained parameters ({parameters.get('tuning', 0):,} in the tuning method, "
        f"{parameters.get('head', 0):,} in the head) on an encoder of {parameters.get('encoder', 0):,}; only the "
        "trained tensors are stored (`adapter.safetensors`), the encoder is loaded from its source.", "",
        "## Intended use and limitations", "",
        "For research on speech emotion recognition, and for prototypes that treat its output as an estimate. "
        "Emotion is perceived differently across people, languages and cultures; this model knows only what its "
        f"corpus shows ({summary['corpus']}: speakers, recording conditions, and whether the emotions were acted "
        "or natural), and acted emotion is more intense and clearer than everyday speech, so expect lower scores "
        "elsewhere. Do not use it to make decisions about people (hiring, health, policing, education) or to "
        "monitor them without their informed consent. Check the fairness figures above for the groups your data "
        "holds.", "",
        "## How to use", "",
        "```python",
        "import sertune",
        f"predictor = sertune.load({load_path!r})",
        "result = predictor.predict(\"clip.wav\")  # 16 kHz mono is used; other rates are converted",
        "print(result.label, result.probabilities, result.dimensions)",
        "```", "",
        f"or `sertune predict {load_path} clip.wav`, `sertune serve --model name={load_path}`.", "",
    ]
    return "\n".join(lines)


def write_model_card(directory: Path, text: str) -> Path:
    """Write `text` as `directory/README.md`, atomically."""
    path = Path(directory) / CARD
    write_text_atomic(path, text)
    return path


def write_run_cards(out: Path, summary: Mapping[str, Any], protocol: str, source: Mapping[str, Any]) -> list[Path]:
    """The cards of a finished run: `out/README.md` (scores over its folds) and each fold checkpoint's own
    (that fold's scores); `source` is the encoder's source as sertune.json records it."""
    base = base_model_id(source, summary["backbone"])
    folds = summary.get("folds") or {}
    written = [write_model_card(out, model_card(
        summary, test=summary["test"], protocol=protocol, base_model=base,
        scope=f"the run's {len(folds)} fold{'s' if len(folds) != 1 else ''}", load_path=out.name,
    ))]
    for name, fold in folds.items():
        checkpoint = out / "folds" / name / "checkpoint"
        if checkpoint.is_dir():
            written.append(write_model_card(checkpoint, model_card(
                summary, test=fold["test"], protocol=protocol, base_model=base, scope=f"fold {name}",
                load_path=checkpoint.name,
            )))
    return written
