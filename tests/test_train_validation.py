"""`sertune train` refuses bad settings, corpora and backbones before writing anything; logs get sparse progress."""

from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path

import pytest
import yaml
from tqdm import tqdm

from sertune import progress
from sertune.backbones import loader
from sertune.corpora import load_corpus
from sertune.progress import LogProgress, progress_bar


def tiny_training(corpus: Path, backbone: Path, out: Path) -> list[str]:
    """Arguments of a one-epoch training of fold 1 on the tiny encoder."""
    return [
        "train", str(corpus), "--backbone", str(backbone), "--out", str(out), "--epochs", "1", "--batch-size", "8",
        "--workers", "0", "--max-seconds", "1", "--no-augment", "--folds", "1",
    ]


def error_line(err: str) -> str:
    """The message of a command that failed with a user error: exactly one line, no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sertune train: error: "), err
    return lines[0]


@pytest.fixture
def edited_corpus(tmp_path: Path, small_corpus: Path) -> Path:
    """A copy of the small corpus whose folds.json a test may edit by hand."""
    return Path(shutil.copytree(small_corpus, tmp_path / "corpus"))


def edit_folds(corpus: Path, fold: int, **parts: list[str]) -> None:
    path = corpus / "folds.json"
    data = json.loads(path.read_text())
    data["folds"][fold].update(parts)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--plateau-factor", "5"], "train.plateau_factor must be a finite number in (0, 1), got 5.0"),
        (["--weight-decay", "-1"], "train.weight_decay must be a finite number >= 0, got -1.0"),
        (["--betas", "2", "2"], "train.betas must be 2 numbers, each a finite number in [0, 1), got [2.0, 2.0]"),
        (["--lora-dropout", "2"], "tuning.lora_dropout must be a finite number in [0, 1), got 2.0"),
        (["--adapter-dropout", "1"], "tuning.adapter_dropout must be a finite number in [0, 1), got 1.0"),
        (["--lora-alpha", "nan"], "tuning.lora_alpha must be a finite number > 0, got nan"),
        (["--lr", "inf"], "train.lr must be a finite number > 0, got inf"),
        (["--lr", "nan"], "train.lr must be a finite number > 0, got nan"),
        (["--min-lr", "-1"], "train.min_lr must be a finite number >= 0, got -1.0"),
        (["--max-grad-norm", "0"], "train.max_grad_norm must be a finite number > 0, got 0.0"),
        (["--max-seconds", "inf"], "train.max_seconds must be a finite number > 0, got inf"),
    ],
)
def test_bad_numeric_flags_are_one_line_errors(tmp_path: Path, cli, flags: list[str], message: str) -> None:
    out = tmp_path / "run"
    status, _, err = cli(["train", str(tmp_path), "--out", str(out), *flags])
    assert status == 2 and error_line(err) == f"sertune train: error: {message}"
    assert not out.exists()


def test_yaml_settings_get_the_same_checks_and_yaml_exponents_are_numbers(tmp_path: Path, cli) -> None:
    settings = tmp_path / "run.yaml"
    settings.write_text("train:\n  plateau_factor: 5\n")
    status, _, err = cli(["train", str(tmp_path), "--config", str(settings), "--out", str(tmp_path / "run")])
    assert status == 2 and error_line(err).endswith("train.plateau_factor must be a finite number in (0, 1), got 5")
    from sertune.config import read_yaml, resolve_config

    settings.write_text("train:\n  lr: 1e-3\n")  # PyYAML reads this as the string '1e-3'
    assert resolve_config(yaml_settings=read_yaml(settings)).train.lr == 0.001


def test_out_naming_a_file_is_a_one_line_error(tmp_path: Path, small_corpus: Path, cli) -> None:
    taken = tmp_path / "taken"
    taken.write_text("mine")
    status, _, err = cli(["train", str(small_corpus), "--out", str(taken)])
    assert status == 2 and f"--out {taken}: {taken} is a file, not a directory" in error_line(err)
    status, _, err = cli(["train", str(small_corpus), "--out", str(taken / "run")])
    assert status == 2 and f"{taken} is a file, not a directory" in error_line(err)
    assert taken.read_text() == "mine"


def test_an_empty_dev_part_is_refused_before_training(tmp_path: Path, edited_corpus: Path, tiny_whisper_dir: Path,
                                                      cli) -> None:
    edit_folds(edited_corpus, 0, dev=[])
    out = tmp_path / "run"
    status, _, err = cli(tiny_training(edited_corpus, tiny_whisper_dir, out))
    assert status == 2
    assert f"{edited_corpus.resolve() / 'folds.json'}: fold fold1 has an empty dev part" in error_line(err)
    assert not out.exists()


def test_a_speaker_in_train_and_test_is_refused(tmp_path: Path, edited_corpus: Path, tiny_whisper_dir: Path,
                                                cli) -> None:
    corpus = load_corpus(edited_corpus)
    fold = corpus.folds[0]
    moved = fold.test[0]
    edit_folds(edited_corpus, 0, train=[*fold.train, moved], test=fold.test[1:])
    out = tmp_path / "run"
    status, _, err = cli(tiny_training(edited_corpus, tiny_whisper_dir, out))
    line = error_line(err)
    assert status == 2 and "folds are not speaker independent" in line
    assert f"fold fold1: speaker {corpus.by_id[moved].speaker} is in both train and test" in line
    assert "--allow-speaker-overlap" in line and not out.exists()


@pytest.mark.slow
def test_allow_speaker_overlap_trains_with_a_warning(tmp_path: Path, edited_corpus: Path, tiny_whisper_dir: Path,
                                                     cli, caplog: pytest.LogCaptureFixture) -> None:
    fold = load_corpus(edited_corpus).folds[0]
    edit_folds(edited_corpus, 0, dev=[*fold.dev, fold.test[0]], test=fold.test[1:])
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="sertune.train"):
        status, _, err = cli([*tiny_training(edited_corpus, tiny_whisper_dir, out), "--allow-speaker-overlap"])
    assert status == 0, err
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any("is in both dev and test" in message and "training anyway" in message for message in warnings)
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["allow_speaker_overlap"] is True


@pytest.mark.slow
def test_failed_starts_leave_nothing_and_the_corrected_command_runs(
    tmp_path: Path, small_corpus: Path, tiny_whisper_dir: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    command = tiny_training(small_corpus, tiny_whisper_dir, out)
    status, _, err = cli([*command, "--backbone", "no-such-encoder"])
    assert status == 2 and "unknown backbone 'no-such-encoder'" in error_line(err) and not out.exists()
    monkeypatch.setattr(loader, "_hub_reachable", lambda: False)
    status, _, err = cli([*command, "--backbone", "nobody/no-such-encoder"])
    assert status == 2 and "not in the local Hugging Face cache" in error_line(err) and not out.exists()
    status, _, err = cli([*command, "--layers", "99"])  # the tiny encoder has 2 layers
    assert status == 2 and "layer 99 does not exist" in error_line(err) and not out.exists()

    out.mkdir()  # what a failed start of an earlier version left: a config.yaml and no trained fold
    (out / "config.yaml").write_text("backbone: no-such-encoder\n")
    status, _, err = cli(command)
    assert status == 0, err
    assert yaml.safe_load((out / "config.yaml").read_text())["backbone"] == str(tiny_whisper_dir)
    status, _, err = cli(command)
    assert status == 2 and "already holds a run; pass --resume" in error_line(err)


def test_log_progress_prints_a_line_per_interval_and_a_final_line(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(progress, "monotonic", lambda: now[0])
    log = io.StringIO()
    bar = progress_bar(800, "fold1 epoch 1/3", "step", file=log)
    assert isinstance(bar, LogProgress)
    with bar:
        for _ in range(800):  # 100 s of updates every 0.125 s: a line after 30, 60 and 90 s, then the final one
            now[0] += 0.125
            bar.update()
            bar.set_postfix(loss="1.234")
        bar.write("a message of its own")
    lines = log.getvalue().splitlines()
    assert len(lines) == 5 and lines[3] == "a message of its own"
    assert lines[0] == "fold1 epoch 1/3: 240/800 step [00:30] loss=1.234"
    assert lines[-1] == "fold1 epoch 1/3: 800/800 step [01:40] loss=1.234"


def test_progress_on_a_terminal_is_tqdm_and_a_disabled_bar_prints_nothing() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    with progress_bar(3, "x", "clip", file=Terminal()) as bar:
        assert isinstance(bar, tqdm)
    log = io.StringIO()
    with progress_bar(3, "x", "clip", disable=True, file=log) as bar:
        bar.update(3)
    assert log.getvalue() == ""


def test_an_unknown_balance_is_refused_with_the_choices() -> None:
    from sertune.config import resolve_config
    from sertune.errors import SertuneError

    with pytest.raises(SertuneError, match=r"train.balance must be one of none, corpus, class, corpus\+class, "
                                           r"got 'speaker'"):
        resolve_config(flags={"train": {"balance": "speaker"}})
