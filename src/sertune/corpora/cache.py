"""The optional audio cache: every kept clip converted once to 16 kHz mono FLAC inside the corpus.

Each file is written under a temporary name and renamed when complete, so a file that exists is
finished; an interrupted run therefore resumes by converting only the missing ones.
"""

from __future__ import annotations

import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import soundfile as sf

from sertune.audio import DEFAULT_SAMPLE_RATE, audio_info, load_audio
from sertune.corpora.manifest import AUDIO_DIR, Utterance
from sertune.corpora.report import PrepareReport
from sertune.errors import SertuneError
from sertune.fileio import atomic_path
from sertune.progress import progress_bar

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def cache_path(root: Path, uid: str) -> Path:
    """Where the cached FLAC of utterance `uid` lives under corpus directory `root`."""
    return root / AUDIO_DIR / f"{_UNSAFE.sub('_', uid)}.flac"


def write_flac(path: Path, wave, sample_rate: int = DEFAULT_SAMPLE_RATE) -> None:
    """Write a mono waveform as 16-bit FLAC, atomically."""
    with atomic_path(path) as tmp:
        sf.write(tmp, wave, sample_rate, format="FLAC", subtype="PCM_16")


def convert(source: Path, target: Path) -> str:
    """Convert one clip; return "" on success or the reason it failed (picklable for worker processes)."""
    try:
        write_flac(target, load_audio(source, DEFAULT_SAMPLE_RATE))
    except SertuneError as error:
        return str(error)
    return ""


def _run(jobs: list[tuple[Path, Path]], workers: int, progress: bool) -> list[str]:
    bar = progress_bar(len(jobs), "audio cache", "clip", disable=not progress)
    results: list[str] = []
    try:
        if workers <= 1:
            for source, target in jobs:
                results.append(convert(source, target))
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                sources, targets = zip(*jobs, strict=True) if jobs else ((), ())
                for result in pool.map(convert, sources, targets, chunksize=8):
                    results.append(result)
                    bar.update()
    finally:
        bar.close()
    return results


def cache_audio(
    utterances: list[Utterance], root: Path, report: PrepareReport, workers: int = 1, progress: bool = True
) -> list[Utterance]:
    """Convert the clips not cached yet; return the utterances that now point into `root/audio`.

    Clips that fail to convert are skipped and reported, the rest are kept.
    """
    targets = {u.id: cache_path(root, u.id) for u in utterances}
    todo = [u for u in utterances if not targets[u.id].is_file()]
    failures = dict(
        zip(
            (u.id for u in todo),
            _run([(u.path, targets[u.id]) for u in todo], workers, progress),
            strict=True,
        )
    )
    report.audio_cache = {
        "converted": sum(1 for reason in failures.values() if not reason),
        "reused": len(utterances) - len(todo),
        "failed": sum(1 for reason in failures.values() if reason),
    }
    cached = []
    for utterance in utterances:
        if failures.get(utterance.id):
            report.skip(str(utterance.path), failures[utterance.id], utterance.id)
            continue
        target = targets[utterance.id]
        cached.append(replace(utterance, path=target.resolve(), duration=audio_info(target).duration))
    return cached
