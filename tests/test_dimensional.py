"""Dimensional emotion end to end: corpus scales and targets, training with the CCC loss, the task's
errors, and the same arousal/valence/dominance values from predict, serve and the ONNX export."""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from corpus_fixtures import build_iemocap, build_msp_improv, build_msp_podcast
from sertune.config import resolve_config
from sertune.corpora import CORPORA, Corpus, load_corpus, prepare
from sertune.corpora.manifest import write_corpus_files
from sertune.dimensions import Dimension, corpus_dimensions, dimension_scores
from sertune.errors import SertuneError
from sertune.sweep.spec import expand, spec_hash
from sertune.train import train_run

from served import running_server


# -- corpora -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "build", "raw", "scale"),
    [
        # IEMOCAP's bracket is [valence, activation, dominance]: the fixture writes [2.5, 3.0, 3.5].
        ("iemocap", build_iemocap, {"arousal": 3.0, "valence": 2.5, "dominance": 3.5}, (1.0, 5.0)),
        ("msp-improv", build_msp_improv, {"arousal": 3.0, "valence": 2.5, "dominance": 3.5}, (1.0, 5.0)),
        ("msp-podcast", build_msp_podcast, {"arousal": 3.2, "valence": 4.0, "dominance": 3.8}, (1.0, 7.0)),
    ],
)
def test_prepared_corpora_record_their_scales_and_give_normalised_targets(
    tmp_path: Path, name: str, build, raw: dict[str, float], scale: tuple[float, float]
) -> None:
    build(tmp_path / "src")
    prepare(CORPORA[name], tmp_path / "src", tmp_path / "out", progress=False)
    corpus = load_corpus(tmp_path / "out")
    assert json.loads((tmp_path / "out/folds.json").read_text())["scales"] == {
        dimension: list(scale) for dimension in ("arousal", "valence", "dominance")
    }
    dimensions = corpus_dimensions(corpus, ["arousal", "valence", "dominance"])
    scores = dimension_scores(corpus.utterances, [d.name for d in dimensions])
    low, high = scale
    expected = [(raw[d.name] - low) / (high - low) for d in dimensions]  # e.g. IEMOCAP arousal (3 - 1) / 4 = 0.5
    normalised = np.stack([d.normalize(scores[:, i]) for i, d in enumerate(dimensions)], axis=1)
    np.testing.assert_allclose(normalised, np.tile(expected, (len(corpus.utterances), 1)))
    assert dimensions[0].denormalize(expected[0]) == pytest.approx(raw["arousal"])


def test_a_score_off_the_scale_is_reported_with_its_line_and_left_out(tmp_path: Path) -> None:
    build_iemocap(tmp_path / "src")
    label_file = tmp_path / "src/Session1/dialog/EmoEvaluation/Ses01F_impro01.txt"
    lines = label_file.read_text().splitlines()
    number = next(i for i, line in enumerate(lines, start=1) if line.startswith("[0.0000"))
    lines[number - 1] = lines[number - 1].replace("[2.5000, 3.0000, 3.5000]", "[2.5000, 6.5000, 3.5000]")
    label_file.write_text("\n".join(lines) + "\n")
    corpus, report = prepare(CORPORA["iemocap"], tmp_path / "src", tmp_path / "out", progress=False)
    assert f"{label_file}:{number}: activation '6.5000' is not on the corpus's 1-5 scale; the score is left out " \
        "(the clip is kept)" in report.warnings
    clip = corpus.by_id["Ses01F_impro01_F000"]
    assert clip.extras["activation"] == "" and clip.extras["valence"] == "2.5000"
    assert np.isnan(dimension_scores([clip], ["arousal"])[0, 0])


def test_synthetic_attributes_follow_the_prosody_that_made_each_clip(small_corpus: Path) -> None:
    corpus = load_corpus(small_corpus)
    assert corpus.scales == {name: (1.0, 5.0) for name in ("arousal", "valence", "dominance")}
    scores = dimension_scores(corpus.utterances, ["arousal", "valence", "dominance"])
    assert np.isfinite(scores).all() and (scores >= 1).all() and (scores <= 5).all()
    by_class = {label: scores[[u.label == label for u in corpus.utterances]].mean(axis=0)
                for label in corpus.labels}
    # Louder, faster and livelier speech is more aroused; happy is the pleasant class, anger dominant.
    assert by_class["angry"][0] > by_class["neutral"][0] > by_class["sad"][0]
    assert by_class["happy"][0] > by_class["neutral"][0]
    assert by_class["happy"][1] > by_class["neutral"][1] > max(by_class["angry"][1], by_class["sad"][1])
    assert by_class["angry"][2] > by_class["sad"][2]


def edited_copy(source: Path, out: Path, edit: Callable[[Corpus], None]) -> Path:
    """A copy of the prepared corpus `source` in `out`, its manifest and folds rewritten after `edit(corpus)`."""
    corpus = load_corpus(source)
    shutil.copytree(source, out)
    for utterance in corpus.utterances:
        utterance.path = out / utterance.path.relative_to(source)
    corpus.root = out
    edit(corpus)
    write_corpus_files(corpus, seed=0)
    return out


def test_a_corpus_without_scores_is_one_line_naming_it_and_the_columns(tmp_path: Path, small_corpus: Path) -> None:
    def unscored(corpus: Corpus) -> None:
        for utterance in corpus.utterances:
            for column in ("arousal", "valence", "dominance"):
                utterance.extras.pop(column)
        corpus.scales, corpus.name = {}, "my-corpus"

    bare = edited_copy(small_corpus, tmp_path / "bare", unscored)
    config = resolve_config(flags={"corpus": str(bare), "task": {"kind": "dimensional", "dimensions": ["arousal"]}})
    with pytest.raises(SertuneError) as error:
        train_run(config, tmp_path / "run")
    message = str(error.value)
    assert "\n" not in message and "my-corpus" in message and "arousal: arousal or activation" in message
    assert not (tmp_path / "run").exists()


# -- training ----------------------------------------------------------------------------------------
def _train(corpus: Path, out: Path, backbone: Path | str, *, task: str, method: str = "lora", epochs: int = 1,
           dimensions: list[str] | None = None, folds: list[str] | None = None) -> dict:
    flags = {"corpus": str(corpus), "backbone": str(backbone), "folds": folds or ["1"],
             "tuning": {"method": method},
             "task": {"kind": task, **({"dimensions": dimensions} if dimensions else {})},
             "train": {"epochs": epochs, "batch_size": 8, "workers": 0, "augment": False}}
    return train_run(resolve_config(flags=flags), out)


@pytest.fixture(scope="module")
def dimensional_run(tmp_path_factory: pytest.TempPathFactory, small_corpus: Path, tiny_whisper_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("dimensional") / "run"
    _train(small_corpus, out, tiny_whisper_dir, task="dimensional", epochs=2)
    return out


def test_a_dimensional_run_saves_ccc_metrics_predictions_and_its_scales(dimensional_run: Path) -> None:
    summary = json.loads((dimensional_run / "summary.json").read_text())
    assert summary["task"] == "dimensional" and summary["labels"] == []
    assert summary["dimensions"] == [{"name": name, "low": 1.0, "high": 5.0} for name in ("arousal", "valence",
                                                                                          "dominance")]
    assert "uar" not in summary["test"] and "dimensions.arousal.ccc" in summary["test"]
    fold = json.loads((dimensional_run / "folds/fold1/metrics.json").read_text())
    # epoch 0: the model of the head warm-up (on frozen features), before any LoRA step
    assert [row["epoch"] for row in fold["epochs"]] == [0, 1, 2]
    assert all(set(row) >= {"dev_ccc", "dev_loss"} and "dev_uar" not in row for row in fold["epochs"])
    warmup = json.loads((dimensional_run / "folds/fold1/head_warmup/metrics.json").read_text())
    assert fold["epochs"][0]["dev_ccc"] == pytest.approx(warmup["dev"]["ccc_mean"], abs=1e-3)
    rows = list(csv.DictReader((dimensional_run / "folds/fold1/predictions.csv").open()))
    assert len(rows) == fold["counts"]["test"]
    # The fold's test metrics are those of its predictions.csv, on the corpus scale.
    true = np.array([float(row["true_arousal"]) for row in rows])
    predicted = np.array([float(row["predicted_arousal"]) for row in rows])
    covariance = np.mean((true - true.mean()) * (predicted - predicted.mean()))
    ccc = 2 * covariance / (true.var() + predicted.var() + (true.mean() - predicted.mean()) ** 2)
    assert fold["test"]["dimensions"]["arousal"]["ccc"] == pytest.approx(ccc, abs=1e-5)
    assert fold["test"]["dimensions"]["arousal"]["mae"] == pytest.approx(np.abs(true - predicted).mean(), abs=1e-5)
    assert (predicted >= 1).all() and (predicted <= 5).all()  # the sigmoid keeps predictions on the scale
    metadata = json.loads((dimensional_run / "folds/fold1/checkpoint/sertune.json").read_text())
    assert metadata["labels"] == [] and [d["name"] for d in metadata["dimensions"]] == ["arousal", "valence",
                                                                                         "dominance"]


def test_multitask_keeps_unscored_clips_for_the_classes_and_dimensional_leaves_them_out(
    tmp_path: Path, small_corpus: Path, tiny_whisper_dir: Path
) -> None:
    corpus = load_corpus(small_corpus)
    unscored = [u.id for u in corpus.utterances if u.id.endswith("-000")]

    def blank(edited: Corpus) -> None:
        for utterance in edited.utterances:
            if utterance.id in unscored:
                utterance.extras["arousal"] = ""

    copy = edited_copy(small_corpus, tmp_path / "corpus", blank)
    fold = load_corpus(copy).folds[0]
    left_out = {part: len(set(ids) & set(unscored)) for part, ids in fold.parts().items()}

    _train(copy, tmp_path / "dim", tiny_whisper_dir, task="dimensional", dimensions=["arousal"], method="frozen")
    counts = json.loads((tmp_path / "dim/folds/fold1/metrics.json").read_text())["counts"]
    assert counts["unscored"] == left_out and counts["test"] == len(fold.test) - left_out["test"]

    summary = _train(copy, tmp_path / "multi", tiny_whisper_dir, task="multitask", dimensions=["arousal"],
                     method="frozen")
    test = summary["folds"]["fold1"]["test"]
    assert test["n"] == len(fold.test)  # every test clip is scored for its class
    assert test["dimensions"]["arousal"]["n"] == len(fold.test) - left_out["test"]
    assert summary["labels"] == corpus.labels and "uar" in summary["test"] and "ccc_mean" in summary["test"]


def test_constant_dev_scores_are_stated_not_nan(tmp_path: Path, small_corpus: Path, tiny_whisper_dir: Path) -> None:
    def constant_dev(corpus: Corpus) -> None:
        dev = set(corpus.folds[0].dev)
        for utterance in corpus.utterances:
            if utterance.id in dev:
                utterance.extras["arousal"] = "3.000"

    copy = edited_copy(small_corpus, tmp_path / "corpus", constant_dev)
    summary = _train(copy, tmp_path / "run", tiny_whisper_dir, task="dimensional", dimensions=["arousal"],
                     method="frozen", epochs=2)
    fold = json.loads((tmp_path / "run/folds/fold1/metrics.json").read_text())
    assert fold["dev"]["dimensions"]["arousal"]["ccc"] is None and fold["dev"]["ccc_mean"] is None
    assert fold["dev"]["undefined"] == ["arousal: the reference scores are constant (all 3), so CCC is undefined"]
    assert fold["best_epoch"] == 1  # nothing to select on: the first epoch is kept
    assert [row["dev_ccc"] for row in fold["epochs"]] == [None, None]
    assert "NaN" not in (tmp_path / "run/summary.json").read_text()
    assert math.isfinite(summary["test"]["dimensions.arousal.ccc"]["mean"])


def test_dimensions_from_predict_serve_and_onnx_agree(dimensional_run: Path, tmp_path: Path, speech: np.ndarray,
                                                        cli) -> None:
    import onnxruntime

    import sertune

    clip = np.round(speech[:24000] * 32767).astype(np.int16)  # 16-bit, as uploaded
    wav = tmp_path / "clip.wav"
    sf.write(wav, clip, 16000, subtype="PCM_16")
    predictor = sertune.load(dimensional_run, merge=False)
    local = predictor.predict(wav)
    assert local.label is None and local.probabilities == {} and set(local.dimensions) == {"arousal", "valence",
                                                                                           "dominance"}
    for name, value in local.dimensions.items():
        assert value == pytest.approx(1 + 4 * local.dimensions_normalized[name], abs=1e-6)

    code, out, _ = cli(["predict", str(dimensional_run), str(wav), "--json"])
    assert code == 0
    printed = json.loads(out)[0]
    assert printed["label"] is None
    for name, value in local.dimensions.items():
        assert printed["dimensions"][name] == pytest.approx(value, abs=1e-4)

    code, out, _ = cli(["export", str(dimensional_run), "--onnx", str(tmp_path / "model.onnx"), "--audio", str(wav)])
    assert code == 0, out
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [output.name for output in session.get_outputs()] == ["dimensions", "dimensions_normalized"]
    wave = (clip / 32768).astype(np.float32)
    scaled, normalised = session.run(None, {"waveform": wave[None], "length": np.array([len(wave)])})
    metadata = json.loads(session.get_modelmeta().custom_metadata_map["dimensions"])
    assert [Dimension(**d) for d in metadata] == predictor.dimensions
    names = [d.name for d in predictor.dimensions]
    np.testing.assert_allclose(scaled[0], [local.dimensions[n] for n in names], atol=1e-4)
    np.testing.assert_allclose(normalised[0], [local.dimensions_normalized[n] for n in names], atol=1e-4)

    with running_server({"avd": dimensional_run}, tmp_path / "server.log") as url:
        answer = httpx.post(f"{url}/predict", content=wav.read_bytes(), headers={"content-type": "audio/wav"},
                            timeout=60).json()
        model = httpx.get(f"{url}/models").json()[0]
    assert model["dimensions"] == [d.to_dict() for d in predictor.dimensions]
    for name, value in local.dimensions.items():
        assert answer["dimensions"][name] == pytest.approx(value, abs=1e-4)
        assert answer["dimensions_normalized"][name] == pytest.approx(local.dimensions_normalized[name], abs=1e-4)


def test_cross_corpus_evaluation_scores_dimensions_on_the_test_corpus(dimensional_run: Path, small_corpus: Path,
                                                                     tmp_path: Path, cli) -> None:
    from sertune.cross_corpus import evaluate_run

    summary = evaluate_run(dimensional_run, small_corpus, tmp_path / "own", part="test")
    wrote = json.loads((dimensional_run / "folds/fold1/metrics.json").read_text())
    again = json.loads((tmp_path / "own/folds/fold1/metrics.json").read_text())
    for key in ("test", "test_unknown_speaker"):
        for name, scores in wrote[key]["dimensions"].items():
            for metric in ("ccc", "pearson", "mae"):
                # The speaker statistics are recomputed from the feature cache, whose moments depend on which
                # clips shared an encoder batch when it was filled (float noise): CCCs move by ~1e-5.
                assert again[key]["dimensions"][name][metric] == pytest.approx(scores[metric], abs=1e-4)
    assert summary["task"] == "dimensional" and "dimensions.arousal.ccc" in summary["test"]
    code, out, _ = cli(["evaluate", str(dimensional_run), str(small_corpus), "--part", "test",
                        "--out", str(tmp_path / "cli")])
    assert code == 0 and "synthetic -> synthetic (test): test CCC arousal" in out
    assert f"fold1: CCC arousal {again['test']['dimensions']['arousal']['ccc']:.3f}" in out
    header = (tmp_path / "own/folds/fold1/predictions.csv").read_text().splitlines()[0]
    assert header == "id,label,true_arousal,predicted_arousal,true_valence,predicted_valence,true_dominance," \
        "predicted_dominance"


def test_windows_of_long_audio_average_their_dimensions(dimensional_run: Path, speech: np.ndarray) -> None:
    import sertune

    predictor = sertune.load(dimensional_run)
    long = np.concatenate([speech, speech[::-1]])
    answer = predictor.predict(long, window=1.0, hop=0.5)
    assert len(answer.windows) > 2
    for name in answer.dimensions:
        windows = [w.dimensions_normalized[name] for w in answer.windows]
        assert answer.dimensions_normalized[name] == pytest.approx(float(np.mean(windows)), abs=1e-6)
        assert answer.dimensions[name] == pytest.approx(1 + 4 * float(np.mean(windows)), abs=1e-5)


def test_a_sweep_varies_the_task_and_categorical_cells_keep_their_ids(small_corpus: Path) -> None:
    spec = {"base": {"train": {"epochs": 1}}, "grid": {"corpus": [str(small_corpus)], "backbone": ["whisper-tiny.en"],
                                                      "method": ["frozen"], "task": ["categorical", "dimensional"]}}
    cells = expand(spec, "grid.yaml")
    assert [cell.config.task.kind for cell in cells] == ["categorical", "dimensional"]
    categorical = cells[0].config
    data = categorical.to_dict()
    del data["task"]  # the id a categorical cell had before runs had a task section
    assert cells[0].id == spec_hash(categorical) == __import__("hashlib").sha256(
        json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]
    assert cells[1].id != cells[0].id


# -- the acceptance figure ---------------------------------------------------------------------------
@pytest.mark.slow
def test_dimensional_lora_on_whisper_tiny_beats_the_ridge_baseline_on_arousal(tmp_path: Path) -> None:
    """LoRA on the offline Whisper tiny.en, 6 epochs on a 96-clip synthetic corpus: dev arousal CCC > 0.3,
    and above the MFCC ridge regression's on the same fold."""
    from sertune.baseline import mfcc_baseline
    from sertune.corpora.synthetic import SynthSettings, synthesize

    synthesize(tmp_path / "corpus", SynthSettings(speakers=4, sentences=6), progress=False)
    summary = _train(tmp_path / "corpus", tmp_path / "run", "whisper-tiny.en", task="dimensional", epochs=6)
    lora = summary["folds"]["fold1"]["dev"]["dimensions"]["arousal"]["ccc"]
    ridge = mfcc_baseline(tmp_path / "corpus", folds=["fold1"], task="dimensional")
    reference = ridge["folds"]["fold1"]["dev"]["dimensions"]["arousal"]["ccc"]
    print(f"dev arousal CCC: LoRA {lora:.3f}, MFCC ridge {reference:.3f}")
    assert lora > 0.3 and lora > reference
