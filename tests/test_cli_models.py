"""The model-side commands: `sertune backbones` and `sertune params`."""

from __future__ import annotations

from sertune.backbones import build_backbone
from sertune.checkpoint import save_classifier
from sertune.model import EmotionClassifier
from sertune.tuning import TuningConfig

from conftest import TINY_CONFIGS


def test_backbones_lists_sizes_and_offline_availability(cli) -> None:
    code, out, _ = cli(["backbones"])
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert len(rows) == 12
    assert "94.4M" in rows["wavlm-base-plus"] and " 768 " in rows["wavlm-base-plus"]
    assert "offline package" in rows["whisper-tiny.en"] and "offline package" in rows["whisper-base"]
    assert "8.2M" in rows["whisper-tiny.en"] and "637.0M" in rows["whisper-large-v3"]


def test_params_for_a_method_matches_the_study(cli) -> None:
    code, out, _ = cli(["params", "--backbone", "wavlm-base-plus", "--method", "lora", "--rank", "16"])
    assert code == 0
    assert "1,474,560" in out and "395,280" in out and "1.98% of the encoder's 94,381,936" in out
    assert "7.48 MB (estimated, float32)" in out


def test_params_for_a_trained_run_reads_the_checkpoint(tmp_path, cli) -> None:
    backbone = build_backbone(TINY_CONFIGS["whisper"](), seed=0)
    classifier = EmotionClassifier(backbone, ["a", "b"], TuningConfig(method="adapter", adapter_dim=8))
    weights = save_classifier(classifier, tmp_path)
    code, out, _ = cli(["params", str(tmp_path)])
    assert code == 0
    expected = classifier.parameter_counts()
    assert f"{expected['tuning']:,}" in out and f"{expected['head']:,}" in out
    assert f"{weights.stat().st_size / 1e6:.2f} MB" in out


def test_params_errors_are_one_clear_line(tmp_path, cli) -> None:
    code, _, err = cli(["params", "--backbone", "wavlm-base-plus", "--lora-targets", "attn"])
    assert code == 2 and "WavLM's attention projections" in err and "Traceback" not in err
    code, _, err = cli(["params", str(tmp_path)])
    assert code == 2 and "sertune.json is missing" in err
    code, _, err = cli(["params", "--backbone", "wavlm-xl"])
    assert code == 2 and "unknown backbone 'wavlm-xl'" in err
