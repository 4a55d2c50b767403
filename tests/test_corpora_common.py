"""Shared machinery: fold checks, manifest validation, the audio cache, `corpus info` and the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from corpus_fixtures import build_crema_d, build_ravdess, write_tone
from sertune.cli import main
from sertune.corpora import CORPORA, Fold, Utterance, load_corpus, prepare
from sertune.corpora import cache as cache_module
from sertune.corpora.folds import check_speaker_disjoint, speaker_folds
from sertune.corpora.info import corpus_info
from sertune.errors import SertuneError


def _utterances(speakers: int) -> list[Utterance]:
    return [
        Utterance(f"s{s}-{i}", Path(f"/x/s{s}-{i}.wav"), 1.0, "neutral", f"s{s}", "female" if s % 2 else "male")
        for s in range(speakers)
        for i in range(2)
    ]


def test_speaker_check_finds_a_speaker_in_two_parts():
    by_id = {u.id: u for u in _utterances(4)}
    good = speaker_folds(list(by_id.values()), 4, seed=0)
    check_speaker_disjoint(good, by_id)
    leaky = Fold("bad", ["s0-0", "s1-0"], ["s2-0"], ["s0-1", "s3-0"])
    with pytest.raises(SertuneError, match="fold bad: speaker s0 is in both train and test"):
        check_speaker_disjoint([leaky], by_id)


def test_speaker_folds_need_three_groups():
    with pytest.raises(SertuneError, match="at least 3 groups"):
        speaker_folds(_utterances(2), 5, seed=0)


@pytest.fixture
def prepared(tmp_path) -> Path:
    build_ravdess(tmp_path / "src")
    prepare(CORPORA["ravdess"], tmp_path / "src", tmp_path / "out", progress=False)
    return tmp_path / "out"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (",0.2500,", ",abc,", "duration 'abc' is not a positive number"),
        (",neutral,", ",furious,", "label 'furious' is not one of"),
        (",male,", ",m,", "gender 'm' must be female, male or empty"),
        (",neutral", ",neutral,,", r"1\d fields, the header has"),
    ],
)
def test_load_corpus_names_file_and_line(prepared, old, new, message):
    manifest = prepared / "manifest.csv"
    rows = manifest.read_text().splitlines()
    assert old in rows[1]  # line 2: actor 1 (male), neutral
    rows[1] = rows[1].replace(old, new, 1)
    manifest.write_text("\n".join(rows) + "\n")
    with pytest.raises(SertuneError, match=f"manifest.csv line 2: {message}"):
        load_corpus(prepared)


@pytest.mark.parametrize("damaged", ["manifest.csv", "folds.json"])
def test_binary_corpus_file_is_a_one_line_error_saying_to_prepare_again(prepared, damaged, capsys):
    (prepared / damaged).write_bytes(np.random.default_rng(0).bytes(4096))  # random bytes written over it
    with pytest.raises(SertuneError) as error:
        load_corpus(prepared)
    message = str(error.value)
    assert re.match(rf"{re.escape(str(prepared / damaged))} line \d+: byte 0x[0-9a-f]{{2}} is not utf-8 text", message)
    assert "re-run `sertune prepare`" in message and "\n" not in message
    with pytest.raises(SystemExit) as done:
        main(["corpus", "info", str(prepared)])
    error = capsys.readouterr().err
    assert done.value.code == 2 and error == f"sertune corpus: error: {message}\n"


def test_load_corpus_rejects_unknown_fold_ids_and_missing_files(prepared, tmp_path):
    data = json.loads((prepared / "folds.json").read_text())
    data["folds"][0]["test"].append("ghost")
    (prepared / "folds.json").write_text(json.dumps(data))
    with pytest.raises(SertuneError, match=r"folds.json: fold fold1 test lists ids not in manifest.csv: \['ghost'\]"):
        load_corpus(prepared)
    with pytest.raises(SertuneError, match="is not a prepared corpus"):
        load_corpus(tmp_path)


def test_audio_cache_converts_and_resumes_after_an_interruption(tmp_path, monkeypatch):
    build_crema_d(tmp_path / "src", actors=5)
    write_tone(tmp_path / "src/AudioWAV/1001_DFA_NEU_XX.wav", seconds=0.5, rate=44100, channels=2)
    real_convert, calls = cache_module.convert, []

    def interrupted(source, target):
        if len(calls) == 7:
            raise KeyboardInterrupt
        calls.append(source)
        return real_convert(source, target)

    monkeypatch.setattr(cache_module, "convert", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(CORPORA["crema-d"], tmp_path / "src", tmp_path / "out", audio_cache=True, workers=1, progress=False)
    finished = sorted((tmp_path / "out/audio").glob("*.flac"))
    assert len(finished) == 7 and not list((tmp_path / "out/audio").glob("*.tmp"))
    assert not (tmp_path / "out/manifest.csv").exists()
    stamps = {path: path.stat().st_mtime_ns for path in finished}
    calls.clear()
    monkeypatch.setattr(cache_module, "convert", lambda s, t: (calls.append(s), real_convert(s, t))[1])
    corpus, report = prepare(
        CORPORA["crema-d"], tmp_path / "src", tmp_path / "out", audio_cache=True, workers=1, progress=False
    )
    assert report.audio_cache == {"converted": 13, "reused": 7, "failed": 0} and len(calls) == 13
    assert {path: path.stat().st_mtime_ns for path in finished} == stamps
    clip = corpus.by_id["1001_DFA_NEU_XX"]
    info = sf.info(clip.path)
    assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
    assert clip.duration == pytest.approx(0.5) and clip.path.parent == (tmp_path / "out/audio").resolve()
    assert "audio/1001_DFA_NEU_XX.flac" in (tmp_path / "out/manifest.csv").read_text()


def test_audio_cache_in_parallel_reports_failures(tmp_path):
    build_crema_d(tmp_path / "src", actors=5)
    corpus, report = prepare(
        CORPORA["crema-d"], tmp_path / "src", tmp_path / "out", audio_cache=True, workers=2, progress=False
    )
    assert report.audio_cache == {"converted": 20, "reused": 0, "failed": 0}
    assert all(u.path.suffix == ".flac" and u.path.is_file() for u in corpus.utterances)
    assert load_corpus(tmp_path / "out").by_id.keys() == corpus.by_id.keys()


def test_corpus_info_tables(prepared):
    text = corpus_info(load_corpus(prepared))
    lines = text.splitlines()
    assert lines[1] == "protocol: 6 speaker folds (seed 0), dev = next fold"
    assert any(line.split() == ["neutral", "6", "0.00", "6"] for line in lines)
    assert any(line.split() == ["female", "12", "0.00", "3"] for line in lines)
    assert any(line.split()[:5] == ["fold1", "train", "16", "0.00", "4"] for line in lines)
    assert any(line.split()[:5] == ["fold6", "test", "4", "0.00", "1"] for line in lines)


def test_cli_prepare_and_info(tmp_path, capsys):
    build_ravdess(tmp_path / "src")
    with pytest.raises(SystemExit) as done:
        main(["prepare", "ravdess", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--workers", "1"])
    assert done.value.code == 0
    printed = capsys.readouterr().out
    assert "ravdess: found 48 utterances, kept 24" in printed
    assert "left out by the label set: calm 6, disgust 6, fear 6, surprise 6" in printed
    with pytest.raises(SystemExit) as done:
        main(["corpus", "info", str(tmp_path / "out")])
    assert done.value.code == 0 and "per fold part" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main(["prepare", "iemocap", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])
    assert done.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("sertune prepare: error:") and "nowhere: no such file or directory" in error
