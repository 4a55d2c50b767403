"""`sertune prepare combine`: several prepared corpora as one, namespaced, with the three protocols."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from corpus_fixtures import build_crema_d, build_iemocap, build_msp_improv, build_msp_podcast
from sertune.corpora import CORPORA, load_corpus, prepare
from sertune.corpora.combine import combine
from sertune.errors import SertuneError
from sertune.metrics import classification_metrics

BUILDERS = {"iemocap": build_iemocap, "msp-improv": build_msp_improv, "msp-podcast": build_msp_podcast,
            "crema-d": lambda root: build_crema_d(root, actors=91)}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The four corpora of the study's package, miniature, prepared with the default label set."""
    root = tmp_path_factory.mktemp("combine")
    directories = {}
    for name, build in BUILDERS.items():
        source = root / "sources" / name
        source.mkdir(parents=True)
        build(source)
        prepare(CORPORA[name], source, root / name, progress=False)
        directories[name] = root / name
    return directories


def parts_by_corpus(corpus, fold) -> dict[str, dict[str, set[str]]]:
    """{part: {source corpus: source ids}} of a fold of the combined corpus."""
    result: dict[str, dict[str, set[str]]] = {}
    for part, ids in fold.parts().items():
        for uid in ids:
            utterance = corpus.by_id[uid]
            result.setdefault(part, {}).setdefault(utterance.extras["corpus"], set()).add(utterance.extras["source_id"])
    return result


def ids_where(directory: Path, keep) -> set[str]:
    return {u.id for u in load_corpus(directory).utterances if keep(u)}


def test_package_protocol_puts_the_published_sessions_sets_and_speakers_in_dev_and_test(
    tmp_path: Path, prepared: dict[str, Path]
) -> None:
    corpus, _ = combine(list(prepared.values()), tmp_path / "combined", protocol="peft-ser-package")
    assert corpus.name == "iemocap+msp-improv+msp-podcast+crema-d" and len(corpus.folds) == 1
    parts = parts_by_corpus(corpus, corpus.folds[0])
    expected = {
        "dev": {"iemocap": ids_where(prepared["iemocap"], lambda u: u.extras["session"] == "Session4"),
                "msp-improv": ids_where(prepared["msp-improv"], lambda u: u.extras["session"] == "session4"),
                "msp-podcast": ids_where(prepared["msp-podcast"], lambda u: u.extras["split"] == "Development"),
                "crema-d": ids_where(prepared["crema-d"], lambda u: 1059 <= int(u.speaker) <= 1073)},
        "test": {"iemocap": ids_where(prepared["iemocap"], lambda u: u.extras["session"] == "Session5"),
                 "msp-improv": ids_where(prepared["msp-improv"], lambda u: u.extras["session"] == "session5"),
                 "msp-podcast": ids_where(prepared["msp-podcast"], lambda u: u.extras["split"] == "Test1"),
                 "crema-d": ids_where(prepared["crema-d"], lambda u: 1074 <= int(u.speaker) <= 1091)},
    }
    assert parts["dev"] == expected["dev"] and parts["test"] == expected["test"]
    assert all(ids for part in expected.values() for ids in part.values())
    everything = {name: {u.id for u in load_corpus(directory).utterances} for name, directory in prepared.items()}
    assert parts["train"] == {name: everything[name] - expected["dev"][name] - expected["test"][name]
                              for name in prepared}
    fold = corpus.folds[0]
    train_speakers = {corpus.by_id[uid].speaker for uid in fold.train}
    assert not train_speakers & {corpus.by_id[uid].speaker for uid in fold.dev + fold.test}
    # Written and readable like any prepared corpus; rows keep their corpus and original id.
    again = load_corpus(tmp_path / "combined")
    assert again.folds == corpus.folds and again.labels == ["neutral", "angry", "sad", "happy"]
    row = again.by_id["iemocap:Ses01F_impro01_F000"]
    assert row.speaker == "iemocap:Ses01F" and row.extras["corpus"] == "iemocap"
    assert row.extras["source_id"] == "Ses01F_impro01_F000"
    assert json.loads((tmp_path / "combined/prepare-report.json").read_text())["protocol"] == "peft-ser-package"


def test_leave_one_corpus_out_holds_each_corpus_out_once(tmp_path: Path, prepared: dict[str, Path]) -> None:
    corpus, _ = combine(list(prepared.values()), tmp_path / "c", protocol="leave-one-corpus-out")
    assert [fold.name for fold in corpus.folds] == [f"test-{name}" for name in prepared]
    for fold, name in zip(corpus.folds, prepared, strict=True):
        parts = parts_by_corpus(corpus, fold)
        assert set(parts["test"]) == {name}
        assert parts["test"][name] == {u.id for u in load_corpus(prepared[name]).utterances}
        assert name not in parts["train"] and name not in parts["dev"]
        speakers = {part: {corpus.by_id[uid].speaker for uid in ids} for part, ids in fold.parts().items()}
        assert not (speakers["train"] & speakers["dev"]) and not (speakers["train"] & speakers["test"])


def test_per_corpus_unions_each_inputs_fold_and_reuses_a_shorter_protocol(
    tmp_path: Path, prepared: dict[str, Path]
) -> None:
    inputs = [prepared["iemocap"], prepared["msp-podcast"]]
    corpus, report = combine(inputs, tmp_path / "c")
    iemocap, podcast = load_corpus(inputs[0]), load_corpus(inputs[1])
    assert len(corpus.folds) == len(iemocap.folds) == 5 and len(podcast.folds) == 2  # Test1, Test2
    for k, (fold, own) in enumerate(zip(corpus.folds, iemocap.folds, strict=True)):
        parts = parts_by_corpus(corpus, fold)
        for part in ("train", "dev", "test"):
            assert parts[part]["iemocap"] == set(own.parts()[part])
            assert parts[part]["msp-podcast"] == set(podcast.folds[k % 2].parts()[part])
    assert any("msp-podcast has 2 fold(s)" in warning for warning in report.warnings)


def test_labels_outside_the_set_are_counted_per_corpus(tmp_path: Path, prepared: dict[str, Path]) -> None:
    shutil.copytree(prepared["crema-d"], tmp_path / "crema-all")
    crema = tmp_path / "crema-all"
    source = crema.parent / "src"
    source.mkdir()
    build_crema_d(source, actors=10)
    prepare(CORPORA["crema-d"], source, crema, labels="all", progress=False)
    corpus, report = combine([prepared["iemocap"], crema], tmp_path / "c")
    assert report.excluded == {"crema-d:fear": 10, "crema-d:disgust": 10}
    assert report.kept == report.found - 20 and set(corpus.labels) == {"neutral", "angry", "sad", "happy"}
    everything, report = combine([prepared["iemocap"], crema], tmp_path / "d", labels="all")
    assert everything.labels == ["neutral", "angry", "sad", "happy", "fear", "disgust"]
    assert "iemocap has no 'fear' clip" in report.warnings and not report.excluded


@pytest.mark.parametrize(("case", "message"), [
    ("twice", "is given twice"),
    ("not-prepared", "is not a prepared corpus"),
    ("ravdess-in-package", "splits iemocap, msp-improv, msp-podcast, crema-d only"),
    ("no-session4", "leaves its dev part empty"),
    ("one", "needs two or more"),
])
def test_bad_combinations_name_the_corpus_and_leave_no_output(
    tmp_path: Path, prepared: dict[str, Path], case: str, message: str
) -> None:
    protocol = "per-corpus"
    if case == "twice":
        inputs = [prepared["iemocap"], prepared["iemocap"]]
    elif case == "not-prepared":
        inputs = [prepared["iemocap"], tmp_path]
    elif case == "ravdess-in-package":
        synthetic = tmp_path / "other"
        shutil.copytree(prepared["crema-d"], synthetic)
        folds = json.loads((synthetic / "folds.json").read_text())
        (synthetic / "folds.json").write_text(json.dumps({**folds, "corpus": "ravdess"}))
        inputs, protocol = [prepared["iemocap"], synthetic], "peft-ser-package"
    elif case == "no-session4":
        source = tmp_path / "iemocap-src"
        source.mkdir()
        build_iemocap(source)
        shutil.rmtree(source / "Session4")
        prepare(CORPORA["iemocap"], source, tmp_path / "iemocap", progress=False)
        inputs, protocol = [tmp_path / "iemocap", prepared["crema-d"]], "peft-ser-package"
    else:
        inputs = [prepared["iemocap"]]
    with pytest.raises(SertuneError, match=message):
        combine(inputs, tmp_path / "out", protocol=protocol)
    assert not (tmp_path / "out").exists()


def test_the_command_line_combines(cli, tmp_path: Path, prepared: dict[str, Path]) -> None:
    status, printed, _ = cli(["prepare", "combine", str(prepared["iemocap"]), str(prepared["crema-d"]),
                              "--out", str(tmp_path / "c"), "--protocol", "leave-one-corpus-out"])
    assert status == 0 and "2 fold(s), protocol leave-one-corpus-out" in printed
    status, _, err = cli(["prepare", "iemocap", "a", "b", "--out", str(tmp_path / "x")])
    assert status == 2 and "takes one SOURCE directory" in err


def test_an_input_with_its_own_audio_cache_combines_with_its_audio(tmp_path: Path, prepared: dict[str, Path]) -> None:
    source = tmp_path / "src"
    source.mkdir()
    build_msp_improv(source)
    prepare(CORPORA["msp-improv"], source, tmp_path / "cached", audio_cache=True, progress=False)
    shutil.rmtree(source)  # only the cached copies remain
    corpus, _ = combine([tmp_path / "cached", prepared["iemocap"]], tmp_path / "c")
    cached = load_corpus(tmp_path / "cached")
    for utterance in cached.utterances:
        combined = corpus.by_id[f"msp-improv:{utterance.id}"]
        assert combined.path == utterance.path and combined.path.is_file()
        assert combined.path.is_relative_to(tmp_path / "cached")
    assert load_corpus(tmp_path / "c").by_id[f"msp-improv:{cached.utterances[0].id}"].path.is_file()


def test_two_corpora_of_one_name_are_namespaced_by_directory_and_train(
    tmp_path: Path, small_corpus: Path, tiny_whisper_dir: Path
) -> None:
    from sertune.config import RunConfig, TrainConfig
    from sertune.corpora.synthetic import SynthSettings, synthesize
    from sertune.head_config import HeadConfig
    from sertune.train import train_run
    from sertune.tuning import TuningConfig

    other = tmp_path / "voices-b"
    synthesize(other, SynthSettings(speakers=4, sentences=3, seed=1), progress=False)
    corpus, _ = combine([small_corpus, other], tmp_path / "both")
    assert {u.extras["corpus"] for u in corpus.utterances} == {small_corpus.name, "voices-b"}
    assert len(corpus.utterances) == 96 and len(corpus.folds) == 4
    config = RunConfig(corpus=str(tmp_path / "both"), backbone=str(tiny_whisper_dir), folds=["1"],
                       tuning=TuningConfig(method="frozen"), head=HeadConfig(normalization="speaker"),
                       train=TrainConfig(epochs=1, batch_size=8, eval_batch_size=8, workers=0, balance="corpus"))
    summary = train_run(config, tmp_path / "run")
    assert summary["corpus"] == f"{small_corpus.name}+voices-b"
    test = summary["folds"]["fold1"]["test"]
    assert test["n"] == len(corpus.folds[0].test)
    # Per source corpus: the metrics of predictions.csv's rows of that corpus.
    with open(tmp_path / "run/folds/fold1/predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(test["by_corpus"]) == sorted({small_corpus.name, "voices-b"})
    for name, metrics in test["by_corpus"].items():
        mine = [row for row in rows if corpus.by_id[row["id"]].extras["corpus"] == name]
        index = {label: i for i, label in enumerate(corpus.labels)}
        expected = classification_metrics([index[r["label"]] for r in mine], [index[r["predicted"]] for r in mine],
                                          corpus.labels)
        assert metrics["uar"] == pytest.approx(expected["uar"], abs=1e-9) and metrics["n"] == len(mine)
        assert metrics["macro_f1"] == pytest.approx(expected["macro_f1"], abs=1e-9)
        assert "fairness" in metrics
    assert summary["test"][f"by_corpus.{name}.uar"]["mean"] == pytest.approx(test["by_corpus"][name]["uar"])
