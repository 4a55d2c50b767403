"""Several prepared corpora as one: `sertune prepare combine DIR... --out DIR --protocol NAME`.

Every row keeps its source corpus (`corpus` column) and original id (`source_id`); ids and speakers
are namespaced by the corpus name (`iemocap:Ses01F_impro01_F000`, `iemocap:Ses01F`), or by the
directory name where two inputs share a corpus name, so that two corpora's `M01` never merge.
Labels are mapped onto one label set (the default four classes, every class, or a YAML map); a clip
whose label maps nowhere is counted per corpus in the report.

Protocols:
- `per-corpus`: each input keeps its own speaker-independent folds; fold k of the combination is the
  union of every input's fold k. An input with fewer folds than the largest count contributes its
  folds again in turn (a one-fold official split, such as MSP-Podcast's, is in every fold), so
  every fold holds every corpus.
- `peft-ser-package`: the single split the PEFT-SER package published for its released models.
- `leave-one-corpus-out`: one fold per corpus, tested on that whole corpus (domain generalisation).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from sertune.corpora.folds import check_speaker_disjoint
from sertune.corpora.labels import DEFAULT_CLASSES, LabelSet, resolve_label_set
from sertune.corpora.manifest import REPORT, Corpus, Fold, Utterance, load_corpus, write_corpus_files
from sertune.corpora.report import PrepareReport
from sertune.dimensions import corpus_scales, shared_scales
from sertune.errors import SertuneError

PROTOCOLS = ("per-corpus", "peft-ser-package", "leave-one-corpus-out")
SEPARATOR = ":"

# The package's dev and test parts: a corpus name -> (which clips go to dev, which to test).
PACKAGE_SPLIT: dict[str, tuple[str, Callable[[Utterance], str | None]]] = {
    "iemocap": ("dev = Session 4, test = Session 5",
                lambda u: {"Session4": "dev", "Session5": "test"}.get(u.extras.get("session", ""))),
    "msp-improv": ("dev = session 4, test = session 5",
                   lambda u: {"session4": "dev", "session5": "test"}.get(u.extras.get("session", ""))),
    "msp-podcast": ("dev = Development, test = Test1",
                    lambda u: {"Development": "dev", "Test1": "test"}.get(u.extras.get("split", ""))),
    "crema-d": ("dev = speakers 1059-1073, test = speakers 1074-1091",
                lambda u: _crema_part(u.speaker)),
}


def _crema_part(speaker: str) -> str | None:
    number = int(speaker) if speaker.isdigit() else 0
    return "dev" if 1059 <= number <= 1073 else "test" if 1074 <= number <= 1091 else None


def _inputs(directories: Sequence[str | Path]) -> list[tuple[str, Corpus]]:
    """The prepared corpora, each once, with the namespace of their ids: the corpus name, or the
    directory name where two inputs share a corpus name (two synthetic corpora)."""
    if len(directories) < 2:
        raise SertuneError("combine needs two or more prepared corpus directories")
    corpora: list[Corpus] = []
    for directory in directories:
        try:
            corpus = load_corpus(directory)
        except SertuneError as error:
            raise SertuneError(f"combine: {directory}: {error}") from None
        if any(other.root == corpus.root for other in corpora):
            raise SertuneError(f"combine: {directory} is given twice; give each corpus once")
        corpora.append(corpus)
    names = Counter(corpus.name for corpus in corpora)
    spaces = [corpus.name if names[corpus.name] == 1 else corpus.root.name for corpus in corpora]
    for space, corpus in zip(spaces, corpora, strict=True):
        if spaces.count(space) > 1:
            raise SertuneError(f"combine: two inputs would share the namespace {space!r} ({corpus.root}): give "
                               "corpora of the same name directories of different names")
    return list(zip(spaces, corpora, strict=True))


def _label_set(choice: str, corpora: Sequence[tuple[str, Corpus]]) -> LabelSet:
    if choice == "default":
        return LabelSet(DEFAULT_CLASSES, {name: name for name in DEFAULT_CLASSES})
    labels = list(dict.fromkeys(label for _, corpus in corpora for label in corpus.labels))
    return resolve_label_set(choice, labels)


def _namespaced(space: str, utterance: Utterance, label: str) -> Utterance:
    return Utterance(
        f"{space}{SEPARATOR}{utterance.id}", utterance.path, utterance.duration, label,
        f"{space}{SEPARATOR}{utterance.speaker}" if utterance.speaker else "", utterance.gender,
        {**utterance.extras, "corpus": space, "source_id": utterance.id},
    )


def _per_corpus(corpora: Sequence[tuple[str, Corpus]], kept: dict[str, set[str]], report: PrepareReport
                ) -> list[Fold]:
    count = max(len(corpus.folds) for _, corpus in corpora)
    for space, corpus in corpora:
        if len(corpus.folds) < count:
            report.warnings.append(f"{space} has {len(corpus.folds)} fold(s), the combination {count}: its "
                                   "folds are used again in turn")
    folds = []
    for k in range(count):
        parts: dict[str, list[str]] = {"train": [], "dev": [], "test": []}
        for space, corpus in corpora:
            fold = corpus.folds[k % len(corpus.folds)]
            for part, ids in fold.parts().items():
                parts[part] += [f"{space}{SEPARATOR}{i}" for i in ids if i in kept[space]]
        folds.append(Fold(f"fold{k + 1}", parts["train"], parts["dev"], parts["test"]))
    return folds


def _package(corpora: Sequence[tuple[str, Corpus]], kept: dict[str, set[str]]) -> list[Fold]:
    parts: dict[str, list[str]] = {"train": [], "dev": [], "test": []}
    for space, corpus in corpora:
        if corpus.name not in PACKAGE_SPLIT:
            raise SertuneError(f"combine: the peft-ser-package protocol splits {', '.join(PACKAGE_SPLIT)} only; "
                               f"{corpus.root} is {corpus.name!r}: leave it out, or use --protocol per-corpus")
        rule, part_of = PACKAGE_SPLIT[corpus.name]
        placed = {"train": [], "dev": [], "test": []}
        for utterance in corpus.utterances:
            if utterance.id in kept[space]:
                placed[part_of(utterance) or "train"].append(f"{space}{SEPARATOR}{utterance.id}")
        for part, ids in placed.items():
            if not ids:
                raise SertuneError(f"combine: {corpus.root}: the peft-ser-package protocol ({rule}) leaves its "
                                   f"{part} part empty; prepare the whole corpus, or use --protocol per-corpus")
            parts[part] += ids
    return [Fold("package", parts["train"], parts["dev"], parts["test"])]


def _leave_one_out(corpora: Sequence[tuple[str, Corpus]], kept: dict[str, set[str]]) -> list[Fold]:
    folds = []
    for held_out, _ in corpora:
        parts: dict[str, list[str]] = {"train": [], "dev": [], "test": []}
        for space, corpus in corpora:
            ids = [f"{space}{SEPARATOR}{i}" for i in sorted(kept[space])]
            if space == held_out:
                parts["test"] += ids
                continue
            # The first fold's dev speakers are a speaker-disjoint part of the corpus.
            dev = {f"{space}{SEPARATOR}{i}" for i in corpus.folds[0].dev}
            parts["dev"] += [i for i in ids if i in dev]
            parts["train"] += [i for i in ids if i not in dev]
        folds.append(Fold(f"test-{held_out}", parts["train"], parts["dev"], parts["test"]))
    return folds


def combine(
    directories: Sequence[str | Path], out: str | Path, *, labels: str = "default", protocol: str = "per-corpus"
) -> tuple[Corpus, PrepareReport]:
    """Write the prepared corpora `directories` as one prepared corpus in `out` (see the module docstring).

    Everything is checked before anything is written: a problem raises SertuneError naming the corpus
    and leaves no output directory behind.
    """
    if protocol not in PROTOCOLS:
        raise SertuneError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    corpora = _inputs(directories)
    out = Path(out).resolve()
    if any(out == corpus.root for _, corpus in corpora):
        raise SertuneError(f"combine: --out {out} is one of the inputs; choose a new directory")
    label_set = _label_set(labels, corpora)
    name = "+".join(space for space, _ in corpora)
    report = PrepareReport(corpus=name, source=", ".join(str(corpus.root) for _, corpus in corpora), label_set=labels)
    utterances: list[Utterance] = []
    kept: dict[str, set[str]] = {}
    for space, corpus in corpora:
        kept[space] = set()
        for utterance in corpus.utterances:
            target = label_set.map(utterance.label)
            if target is None:
                report.exclude(f"{space}{SEPARATOR}{utterance.label}")
                continue
            kept[space].add(utterance.id)
            utterances.append(_namespaced(space, utterance, target))
        present = Counter(label_set.map(u.label) for u in corpus.utterances)
        report.warnings += [f"{space} has no {label!r} clip" for label in label_set.classes if not present[label]]
    report.found = sum(len(corpus.utterances) for _, corpus in corpora)
    counts = Counter(u.label for u in utterances)
    classes = [label for label in label_set.classes if counts[label]]
    report.kept, report.classes = len(utterances), {label: counts[label] for label in classes}
    if not utterances:
        raise SertuneError(f"combine: the label set {labels!r} keeps no clip of {name}")
    if protocol == "per-corpus":
        folds = _per_corpus(corpora, kept, report)
    elif protocol == "peft-ser-package":
        folds = _package(corpora, kept)
    else:
        folds = _leave_one_out(corpora, kept)
    by_id = {u.id: u for u in utterances}
    for fold in folds:
        for part, ids in fold.parts().items():
            if not ids:
                raise SertuneError(f"combine: fold {fold.name} of the {protocol} protocol has an empty {part} part "
                                   "(the label set or the inputs leave nothing there)")
    try:
        check_speaker_disjoint(folds, by_id)
    except SertuneError as error:
        raise SertuneError(f"combine: {error}") from None
    report.protocol, report.folds = protocol, len(folds)
    scales, dropped = shared_scales(corpus_scales(corpus) for _, corpus in corpora)
    report.warnings += [f"{dimension} scores are left out of dimensional training: the inputs rate them on different "
                        "scales, or not all of them have any" for dimension in dropped]
    combined = Corpus(out, name, classes, sorted(utterances, key=lambda u: u.id), folds, protocol, scales)
    write_corpus_files(combined, seed=0)
    report.save(out / REPORT)
    return combined, report
