"""The generic importer: a CSV with speakers, or label folders without them."""

from __future__ import annotations

import codecs
import re
from pathlib import Path

import pytest

from corpus_fixtures import build_ravdess, write_tone
from sertune.corpora import CORPORA, prepare
from sertune.corpora.folder import clip_ids
from sertune.corpora.folds import check_speaker_disjoint
from sertune.errors import SertuneError


def test_csv_with_speakers_gives_speaker_folds(tmp_path):
    rows = ["path,label,speaker,gender"]
    for speaker in range(6):
        for label in ("calm", "tense"):
            rel = f"clips/s{speaker}/{label}.wav"
            write_tone(tmp_path / "data" / rel)
            rows.append(f"{rel},{label},s{speaker},{'f' if speaker % 2 else 'M'}")
    rows += ["clips/s0/calm.wav,calm,s0,f", "clips/x.wav,7,s1,f", "clips/y.wav,calm,s1,robot"]
    (tmp_path / "data/list.csv").write_text("\n".join(rows) + "\n")
    corpus, report = prepare(CORPORA["folder"], tmp_path / "data/list.csv", tmp_path / "out", progress=False)
    assert corpus.labels == ["calm", "tense"] and len(corpus.utterances) == 12
    clip = corpus.by_id["clips-s3-tense"]
    assert (clip.speaker, clip.gender, clip.label) == ("s3", "female", "tense")
    assert corpus.by_id["clips-s2-calm"].gender == "male"
    assert [(item["where"].rsplit(":", 1)[-1], item["reason"][:20]) for item in report.skipped] == [
        ("15", "label '7' is a numbe"),
        ("16", "malformed row: needs"),
        ("14", "duplicate id (first "),
    ]
    assert report.protocol.startswith("5 speaker folds")
    check_speaker_disjoint(corpus.folds, corpus.by_id)


def test_label_folders_without_speakers_are_flagged_not_speaker_independent(tmp_path):
    for label in ("angry", "neutral", "sad"):
        for index in range(5):
            write_tone(tmp_path / "data" / label / f"take{index}.flac")
    (tmp_path / "data/neutral/readme.txt").write_text("not audio")
    corpus, report = prepare(CORPORA["folder"], tmp_path / "data", tmp_path / "out", progress=False)
    assert corpus.labels == ["angry", "neutral", "sad"] and len(corpus.utterances) == 15
    assert "NOT speaker independent: 15 clips have no speaker" in report.protocol
    assert len(corpus.folds) == 5
    for fold in corpus.folds:  # stratified: one clip of each class per test part
        assert sorted(corpus.by_id[uid].label for uid in fold.test) == ["angry", "neutral", "sad"]


# Distinct files that the readable slug alone maps to one id: space vs dash, folder vs dash, suffix.
COLLIDING = ("a b.flac", "a-b.flac", "sub/x.flac", "sub-x.flac", "y.flac", "y.wav")


def _write_list(root: Path, rows: list[str]) -> Path:
    for row in rows:
        if not (root / row.split(",")[0]).exists():
            write_tone(root / row.split(",")[0])
    path = root / "list.csv"
    path.write_text("\n".join(["path,label", *rows]) + "\n")
    return path


def test_distinct_files_with_colliding_slugs_are_all_kept(tmp_path):
    listed = [*COLLIDING, "z.wav", "f1.wav", "f2.wav", "f3.wav"]
    rows = [f"{path},{'calm' if index % 2 else 'tense'}" for index, path in enumerate(listed)]
    rows.append("./z.wav,tense")  # the same physical file again: still a duplicate
    source = _write_list(tmp_path / "data", rows)
    corpus, report = prepare(CORPORA["folder"], source, tmp_path / "out", progress=False)
    assert len(corpus.utterances) == 10
    files = {u.path.relative_to(source.parent.resolve()).as_posix(): u.id for u in corpus.utterances}
    assert sorted(files) == sorted(listed)
    assert [files[name] for name in ("z.wav", "f1.wav")] == ["z", "f1"]  # no collision: the plain slug
    for name in COLLIDING:
        slug = name.rsplit(".", 1)[0].replace(" ", "-").replace("/", "-")
        assert re.fullmatch(rf"{slug}-[0-9a-f]{{8}}", files[name]), files[name]
    assert [(item["where"].rsplit(":", 1)[-1], item["id"], item["reason"][:12]) for item in report.skipped] == [
        ("12", "z", "duplicate id")
    ]

    manifest = (tmp_path / "out/manifest.csv").read_bytes()
    source.write_text("\n".join(["path,label", *reversed(rows)]) + "\n")  # another order, the same files
    prepare(CORPORA["folder"], source, tmp_path / "out", progress=False)
    assert (tmp_path / "out/manifest.csv").read_bytes() == manifest


def test_label_folders_keep_clips_that_differ_only_in_suffix(tmp_path):
    for label in ("angry", "neutral", "sad"):
        for index in range(5):
            write_tone(tmp_path / "data" / label / f"take{index}.flac")
    write_tone(tmp_path / "data/sad/take0.wav")
    corpus, _ = prepare(CORPORA["folder"], tmp_path / "data", tmp_path / "out", progress=False)
    assert len(corpus.utterances) == 16
    sad_takes = sorted(u.id for u in corpus.utterances if u.id.startswith("sad-take0"))
    assert len(sad_takes) == 2 and all(re.fullmatch(r"sad-take0-[0-9a-f]{8}", uid) for uid in sad_takes)
    assert "angry-take0" in corpus.by_id


def test_hashed_ids_never_clash_with_another_files_plain_id():
    first = clip_ids([Path("y.flac"), Path("y.wav")], Path("/data"))
    lookalike = Path(f"{first[0]}.wav")  # a file named like the first hashed id
    ids = clip_ids([Path("y.flac"), Path("y.wav"), lookalike], Path("/data"))
    assert len(set(ids)) == 3 and ids[2] == first[0] and ids[0] != first[0] and ids[0].startswith(first[0])


def test_latin1_csv_is_an_error_naming_file_line_and_encoding_option(tmp_path):
    rows = [f"c{index}.wav,{'ängry' if index % 2 else 'calm'}" for index in range(10)]
    source = _write_list(tmp_path / "data", rows)
    source.write_bytes("\n".join(["path,label", *rows]).encode("latin-1") + b"\n")
    with pytest.raises(SertuneError) as error:
        prepare(CORPORA["folder"], source, tmp_path / "out", progress=False)
    message = str(error.value)
    assert message.startswith(f"{source} line 3: byte 0xe4 is not utf-8 text") and "--encoding" in message
    assert "\n" not in message
    corpus, _ = prepare(CORPORA["folder"], source, tmp_path / "out", progress=False, encoding="latin-1")
    assert corpus.labels == ["calm", "ängry"]


def test_csv_with_a_utf8_byte_order_mark_is_read(tmp_path):
    rows = [f"c{index}.wav,{'ängry' if index % 2 else 'calm'}" for index in range(10)]
    source = _write_list(tmp_path / "data", rows)
    source.write_bytes(codecs.BOM_UTF8 + source.read_bytes())
    corpus, _ = prepare(CORPORA["folder"], source, tmp_path / "out", progress=False)
    assert corpus.labels == ["calm", "ängry"] and "c0" in corpus.by_id


def test_encoding_is_refused_for_corpora_read_as_distributed(tmp_path):
    build_ravdess(tmp_path / "src")
    with pytest.raises(SertuneError, match="--encoding applies to `prepare folder` only"):
        prepare(CORPORA["ravdess"], tmp_path / "src", tmp_path / "out", progress=False, encoding="latin-1")
    with pytest.raises(SertuneError, match="unknown text encoding 'klingon'"):
        prepare(CORPORA["folder"], _write_list(tmp_path / "data", ["a.wav,x"]), tmp_path / "out", encoding="klingon")
