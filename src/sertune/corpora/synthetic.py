"""A synthetic emotional-speech corpus made with espeak-ng, so demos and tests run anywhere.

Speakers are espeak-ng voice variants (female en+f1..f5, male en+m1..m7) with their own base
pitch and speaking rate; emotions are prosody profiles (pitch, pitch range, rate, level) applied
through SSML, with random per-utterance jitter so that classes overlap; every speaker says the
same sentences in every emotion, so the words carry no label. Everything random comes from
generators seeded by (seed, speaker, emotion, sentence), so the audio is identical for the same
seed whatever the number of workers. It is a test bed, not a substitute for real corpora.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from sertune.audio import DEFAULT_SAMPLE_RATE, resample
from sertune.corpora.cache import cache_path, write_flac
from sertune.corpora.folds import speaker_protocol
from sertune.corpora.labels import DEFAULT_CLASSES
from sertune.corpora.manifest import Corpus
from sertune.corpora.pipeline import Candidate, CorpusSpec, write_corpus
from sertune.corpora.report import PrepareReport
from sertune.errors import SertuneError
from sertune.progress import progress_bar

INSTALL_HINT = "sudo apt-get install espeak-ng"
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5")
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7")
N_FOLDS = 5

SENTENCES = (
    "The train to the coast leaves at seven tonight.",
    "I put the blue folder on the kitchen table.",
    "We will paint the fence before the weekend.",
    "She told me the meeting moved to Thursday.",
    "There are three boxes left in the garage.",
    "He walked the dog along the river this morning.",
    "The shop on the corner closes at nine.",
    "My brother bought a new bicycle last month.",
    "Please bring the letters back to the office.",
    "They planted tomatoes behind the old barn.",
    "The radio was playing when I came home.",
    "Our neighbours are moving to another city.",
    "I found your keys under the sofa cushion.",
    "The bus was late again this afternoon.",
    "You can leave the window open tonight.",
    "The lecture starts right after lunch.",
    "We watched the boats from the harbour wall.",
    "He writes everything down in a small notebook.",
    "The coffee machine on the second floor is new.",
    "She called her sister during the long drive.",
    "The printer needs more paper in the top tray.",
    "I have to return these books by Friday.",
    "The children built a tower out of wooden blocks.",
    "They changed the lock on the front door.",
    "The parcel arrived a day earlier than planned.",
    "We sat on the bench and counted the cars.",
    "The garden gate was open when we arrived.",
    "He kept the old photographs in a metal box.",
    "Dinner will be ready in about twenty minutes.",
    "The museum is free on the first Sunday.",
)


@dataclass(frozen=True)
class Prosody:
    """Relative prosody in SSML percent units: pitch shift, pitch range, speaking rate, level."""

    pitch: float
    range: float
    rate: float
    volume: float


# Means follow the usual acoustic findings (anger and joy: higher, livelier, faster, louder;
# sadness: lower, flatter, slower, quieter), pulled close enough together that the jitter below
# makes neighbouring classes overlap; both were tuned until the MFCC baseline landed near 70% UAR.
PROFILES = {
    "neutral": Prosody(pitch=0, range=100, rate=100, volume=100),
    "angry": Prosody(pitch=20, range=170, rate=120, volume=165),
    "sad": Prosody(pitch=-20, range=35, rate=80, volume=55),
    "happy": Prosody(pitch=40, range=220, rate=110, volume=125),
}
JITTER = Prosody(pitch=16, range=50, rate=12, volume=28)  # per-utterance standard deviations
# Valence on the 1-5 scale by emotion, and the per-clip spread around it (see `attributes`).
VALENCE = {"neutral": 3.0, "angry": 1.8, "sad": 1.7, "happy": 4.3}
VALENCE_JITTER = 0.4
SCALES = {"arousal": (1.0, 5.0), "valence": (1.0, 5.0), "dominance": (1.0, 5.0)}


@dataclass(frozen=True)
class SynthSettings:
    """The size and difficulty of a synthetic corpus; the defaults suit a CPU demo."""

    speakers: int = 10
    sentences: int = 25  # sentences each speaker says in each emotion
    seed: int = 0
    snr: float = 20.0  # dB of white noise relative to the speech; inf = clean
    workers: int = 2


@dataclass(frozen=True)
class _Speaker:
    name: str
    gender: str
    voice: str
    pitch: float  # the speaker's own offset, in percent
    rate: float


@dataclass(frozen=True)
class _Job:
    uid: str
    speaker: _Speaker
    emotion: str
    sentence: int
    seed: tuple[int, ...]


def require_espeak() -> str:
    """The espeak-ng executable, or a `SertuneError` that says how to install it."""
    found = shutil.which("espeak-ng")
    if found is None:
        raise SertuneError(f"espeak-ng is not installed; install it with: {INSTALL_HINT}")
    return found


def _speakers(settings: SynthSettings) -> list[_Speaker]:
    rng = np.random.default_rng([settings.seed, 0])
    speakers = []
    for index in range(settings.speakers):
        female = index % 2 == 0
        variants = FEMALE_VARIANTS if female else MALE_VARIANTS
        variant = variants[(index // 2) % len(variants)]
        speakers.append(
            _Speaker(
                name=f"spk{index + 1:02d}",
                gender="female" if female else "male",
                voice=f"en+{variant}",
                pitch=float(rng.uniform(-12, 12)),
                rate=float(rng.uniform(90, 110)),
            )
        )
    return speakers


def _plan(settings: SynthSettings) -> list[_Job]:
    jobs = []
    for s_index, speaker in enumerate(_speakers(settings)):
        order = np.random.default_rng([settings.seed, 1, s_index]).permutation(len(SENTENCES))
        for e_index, emotion in enumerate(DEFAULT_CLASSES):
            for k in range(settings.sentences):
                sentence = int(order[k % len(SENTENCES)])
                uid = f"{speaker.name}-{emotion}-{k:03d}"
                jobs.append(_Job(uid, speaker, emotion, sentence, (settings.seed, 2, s_index, e_index, k)))
    return jobs


def _prosody(job: _Job, rng: np.random.Generator) -> Prosody:
    """The clip's prosody: its emotion's profile, its speaker's pitch and rate, and the clip's jitter."""
    mean = PROFILES[job.emotion]
    return Prosody(
        pitch=mean.pitch + job.speaker.pitch + rng.normal(0, JITTER.pitch),
        range=max(10.0, mean.range + rng.normal(0, JITTER.range)),
        rate=max(50.0, mean.rate * job.speaker.rate / 100 + rng.normal(0, JITTER.rate)),
        volume=max(20.0, mean.volume + rng.normal(0, JITTER.volume)),
    )


def _ssml(job: _Job, prosody: Prosody) -> str:
    return (
        f'<speak><prosody pitch="{prosody.pitch:+.1f}%" range="{prosody.range:.1f}%" rate="{prosody.rate:.1f}%" '
        f'volume="{prosody.volume:.1f}%">{SENTENCES[job.sentence]}</prosody></speak>'
    )


def _squash(z: float) -> float:
    """A standardised deviation onto the 1-5 scale, 3 at the neutral point, never reaching the ends."""
    return 3.0 + 2.0 * float(np.tanh(z))


def attributes(job: _Job, prosody: Prosody) -> dict[str, str]:
    """Arousal, valence and dominance of a clip on a 1-5 scale, from what made it (docs/corpora.md).

    Arousal follows loudness, speaking rate and pitch range, each as its deviation from neutral speech
    in units of the spread between the profiles; valence is the emotion's (happy high; angry and sad
    low) with per-clip jitter; dominance follows loudness up and pitch down (anger dominant, sadness
    submissive). Deviations are taken from the speaker's own rate and pitch, as a listener would.
    """
    loud = (prosody.volume - PROFILES["neutral"].volume) / 60
    fast = (prosody.rate - job.speaker.rate) / 20
    lively = (prosody.range - PROFILES["neutral"].range) / 90
    high = (prosody.pitch - job.speaker.pitch) / 30
    jitter = np.random.default_rng((*job.seed, 1)).normal(0, VALENCE_JITTER)
    values = {
        "arousal": _squash((loud + fast + lively) / 3),
        "valence": float(np.clip(VALENCE[job.emotion] + jitter, 1.0, 5.0)),
        "dominance": _squash(0.8 * loud - 0.4 * high),
    }
    return {name: f"{value:.3f}" for name, value in values.items()}


def _render(job: _Job, espeak: str, snr: float, target: Path) -> dict[str, str]:
    """Write the clip to `target`; returns its attributes."""
    rng = np.random.default_rng(job.seed)
    prosody = _prosody(job, rng)
    result = subprocess.run(
        [espeak, "-m", "-v", job.speaker.voice, "--stdout", _ssml(job, prosody)], capture_output=True, check=False
    )
    if result.returncode != 0 or not result.stdout:
        raise SertuneError(f"espeak-ng failed for {job.uid}: {result.stderr.decode(errors='replace').strip()}")
    wave, rate = sf.read(io.BytesIO(result.stdout), dtype="float32")
    wave = resample(wave, rate, DEFAULT_SAMPLE_RATE)
    if np.isfinite(snr):
        power = float(np.mean(wave**2)) / (10 ** (snr / 10))
        wave = wave + rng.normal(0, np.sqrt(power), len(wave)).astype(np.float32)
    write_flac(target, np.clip(wave, -1, 1))
    return attributes(job, prosody)


def synthesize(
    out: str | Path, settings: SynthSettings = SynthSettings(), progress: bool = True
) -> tuple[Corpus, PrepareReport]:
    """Generate the corpus into `out` (audio under `out/audio`) and write its manifest and folds."""
    espeak = require_espeak()
    if settings.speakers < 3 or settings.sentences < 1:
        raise SertuneError("synth needs at least 3 speakers (train, dev and test) and 1 sentence")
    out = Path(out).resolve()
    jobs = _plan(settings)
    bar = progress_bar(len(jobs), "synth", "clip", disable=not progress)

    def render(job: _Job) -> dict[str, str]:
        scores = _render(job, espeak, settings.snr, cache_path(out, job.uid))
        bar.update()
        return scores

    # Each job spends its time in an espeak-ng process or in numpy/soxr, so threads use the cores.
    with ThreadPoolExecutor(max_workers=max(1, settings.workers)) as pool:
        scores = list(pool.map(render, jobs))
    bar.close()
    candidates = [
        Candidate(
            job.uid,
            cache_path(out, job.uid),
            job.emotion,
            job.speaker.name,
            job.speaker.gender,
            job.uid,
            {"voice": job.speaker.voice, "sentence": str(job.sentence), **attributes_of_job},
        )
        for job, attributes_of_job in zip(jobs, scores, strict=True)
    ]
    report = PrepareReport(corpus="synthetic", source=f"espeak-ng, {settings}")
    corpus = write_corpus(SPEC, candidates, out, report, workers=settings.workers, seed=settings.seed)
    return corpus, report


SPEC = CorpusSpec("synthetic", DEFAULT_CLASSES, speaker_protocol(N_FOLDS), scales=SCALES)
