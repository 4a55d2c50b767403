"""Model cards: a README.md in the Hugging Face layout for every finished run and fold checkpoint, whose
numbers are summary.json's and whose front matter is YAML."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from sertune.config import resolve_config
from sertune.report import load_runs, write_report
from sertune.train import train_run


def _card(path: Path) -> tuple[dict, str]:
    text = path.read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n(.*)", text, re.S)
    assert match, text[:200]
    return yaml.safe_load(match[1]), match[2]


def _metrics(front: dict) -> dict[str, float]:
    return {m["name"]: m["value"] for m in front["model-index"][0]["results"][0]["metrics"]}


def _train(corpus: Path, out: Path, backbone: Path, task: str) -> dict:
    flags = {"corpus": str(corpus), "backbone": str(backbone), "folds": ["1", "2"], "tuning": {"method": "lora"},
             "task": {"kind": task}, "train": {"epochs": 1, "batch_size": 8, "workers": 0, "augment": False}}
    return train_run(resolve_config(flags=flags), out)


@pytest.fixture(scope="module")
def categorical_run(tmp_path_factory: pytest.TempPathFactory, small_corpus: Path, tiny_whisper_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("card") / "lora-run"
    _train(small_corpus, out, tiny_whisper_dir, "categorical")
    return out


def test_the_run_card_states_summary_numbers_in_yaml_front_matter(categorical_run: Path, tiny_whisper_dir: Path
                                                                  ) -> None:
    summary = json.loads((categorical_run / "summary.json").read_text())
    front, body = _card(categorical_run / "README.md")
    assert front["library_name"] == "sertune" and front["datasets"] == ["synthetic"]
    assert front["base_model"] == str(tiny_whisper_dir.resolve())  # a local encoder has no hub id: its path
    assert {"speech-emotion-recognition", "lora", "peft"} <= set(front["tags"])
    values = _metrics(front)
    assert values["UAR (%)"] == pytest.approx(summary["test"]["uar"]["mean"], abs=1e-4)
    assert values["macro-F1 (%)"] == pytest.approx(summary["test"]["macro_f1"]["mean"], abs=1e-4)
    uar = summary["test"]["uar"]
    assert f"| UAR (%) | {uar['mean']:.1f} ± {uar['std']:.1f} (2 folds) |" in body
    assert ", ".join(summary["labels"]) in body and f"{summary['parameters']['trained']:,} trained" in body
    assert "sertune.load('lora-run')" in body and "Intended use and limitations" in body


def test_every_fold_checkpoint_has_its_own_card(categorical_run: Path) -> None:
    summary = json.loads((categorical_run / "summary.json").read_text())
    for name, fold in summary["folds"].items():
        front, body = _card(categorical_run / "folds" / name / "checkpoint" / "README.md")
        assert _metrics(front)["UAR (%)"] == pytest.approx(fold["test"]["uar"], abs=1e-4)
        assert f"| UAR (%) | {fold['test']['uar']:.1f} |" in body and f"fold {name}" in body


def test_the_report_links_the_cards(categorical_run: Path, tmp_path: Path) -> None:
    runs, _ = load_runs([categorical_run])
    write_report(runs, tmp_path / "report")
    assert "([model card](../../" in (tmp_path / "report/report.md").read_text()


def test_a_dimensional_card_gives_ccc_per_dimension(tmp_path: Path, small_corpus: Path, tiny_whisper_dir: Path
                                                   ) -> None:
    summary = _train(small_corpus, tmp_path / "avd", tiny_whisper_dir, "dimensional")
    front, body = _card(tmp_path / "avd/README.md")
    values = _metrics(front)
    for name in ("arousal", "valence", "dominance"):
        assert values[f"CCC {name}"] == pytest.approx(summary["test"][f"dimensions.{name}.ccc"]["mean"], abs=1e-4)
    assert "UAR (%)" not in values and "arousal on the training corpus's 1-5 scale" in body
