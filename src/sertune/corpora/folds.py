"""Evaluation protocols: every fold has train, dev (for model selection) and test parts.

All protocols keep speakers apart: a speaker's utterances sit in exactly one part of a fold.
They are pure functions of the utterance list and the seed, so the same corpus, protocol and
seed give the same folds on any machine.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

from sertune.corpora.manifest import Fold, Utterance
from sertune.errors import SertuneError


def _rotate(groups: list[list[str]], names: list[str], members: dict[str, list[str]]) -> list[Fold]:
    """Fold i tests on group i, selects on group i+1 and trains on the rest."""
    if len(groups) < 3:
        raise SertuneError(f"a train/dev/test protocol needs at least 3 groups of speakers, found {len(groups)}")

    def ids(keys: list[str]) -> list[str]:
        return sorted(uid for key in keys for uid in members[key])

    folds = []
    for index, name in enumerate(names):
        dev_index = (index + 1) % len(groups)
        train_keys = [key for i, group in enumerate(groups) if i not in (index, dev_index) for key in group]
        folds.append(Fold(name, ids(train_keys), ids(groups[dev_index]), ids(groups[index])))
    return folds


def leave_one_group_out(utterances: Sequence[Utterance], group_of: Callable[[Utterance], str]) -> list[Fold]:
    """One fold per group (e.g. session): test on it, dev on the next group in sorted order."""
    members: dict[str, list[str]] = defaultdict(list)
    for utterance in utterances:
        members[group_of(utterance)].append(utterance.id)
    names = sorted(members)
    return _rotate([[name] for name in names], names, members)


def speaker_folds(utterances: Sequence[Utterance], n_folds: int, seed: int) -> list[Fold]:
    """`n_folds` folds over disjoint speaker groups, each group mixing genders as evenly as possible.

    Speakers are shuffled within each gender by `seed` and dealt round-robin, so every test part
    holds female and male speakers whenever the corpus has both.
    """
    members: dict[str, list[str]] = defaultdict(list)
    gender_of: dict[str, str] = {}
    for utterance in utterances:
        members[utterance.speaker].append(utterance.id)
        gender_of[utterance.speaker] = utterance.gender
    if "" in members:
        raise SertuneError("speaker folds need a speaker for every utterance")
    rng = np.random.default_rng(seed)
    dealt: list[str] = []
    for gender in ("female", "male", ""):
        speakers = sorted(s for s in members if gender_of[s] == gender)
        dealt.extend(speakers[i] for i in rng.permutation(len(speakers)))
    n_groups = min(n_folds, len(dealt))
    groups: list[list[str]] = [dealt[start::n_groups] for start in range(n_groups)]
    return _rotate(groups, [f"fold{i + 1}" for i in range(n_groups)], members)


def utterance_folds(utterances: Sequence[Utterance], n_folds: int, seed: int) -> list[Fold]:
    """Label-stratified folds over utterances, for corpora without speaker information.

    These are NOT speaker independent; the prepare report says so.
    """
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[str]] = defaultdict(list)
    for utterance in sorted(utterances, key=lambda u: u.id):
        by_label[utterance.label].append(utterance.id)
    members: dict[str, list[str]] = defaultdict(list)
    position = 0
    for label in sorted(by_label):
        ids = by_label[label]
        for i in rng.permutation(len(ids)):
            members[str(position % n_folds)].append(ids[i])
            position += 1
    keys = sorted(members, key=int)
    return _rotate([[key] for key in keys], [f"fold{int(key) + 1}" for key in keys], members)


def official_splits(
    utterances: Sequence[Utterance],
    split_of: Callable[[Utterance], str],
    train: str,
    dev: str,
    tests: list[str],
) -> list[Fold]:
    """One fold per official test set, all sharing the official train and development sets."""
    parts: dict[str, list[str]] = defaultdict(list)
    for utterance in utterances:
        parts[split_of(utterance)].append(utterance.id)
    for required in (train, dev):
        if not parts[required]:
            raise SertuneError(f"the official protocol needs a {required!r} split, but none of the kept rows has it")
    return [
        Fold(test.lower(), sorted(parts[train]), sorted(parts[dev]), sorted(parts[test]))
        for test in tests
        if parts[test]
    ]


def speaker_overlaps(folds: Sequence[Fold], by_id: dict[str, Utterance]) -> list[str]:
    """Every case of a known speaker in two parts of one fold, as readable sentences (empty: none).

    Utterances with an unknown speaker ("") cannot be checked and are ignored.
    """
    problems = []
    for fold in folds:
        seen: dict[str, str] = {}
        for part, ids in fold.parts().items():
            for speaker in sorted({by_id[uid].speaker for uid in ids} - {""}):
                if speaker in seen:
                    problems.append(f"fold {fold.name}: speaker {speaker} is in both {seen[speaker]} and {part}")
                else:
                    seen[speaker] = part
    return problems


def overlap_message(problems: Sequence[str], shown: int = 5) -> str:
    """One line for the cases `speaker_overlaps` found: the first `shown` of them and how many more."""
    more = f" (and {len(problems) - shown} more)" if len(problems) > shown else ""
    return "folds are not speaker independent: " + "; ".join(problems[:shown]) + more


def check_speaker_disjoint(folds: Sequence[Fold], by_id: dict[str, Utterance]) -> None:
    """Raise `SertuneError` listing the overlaps when any speaker appears in two parts of a fold."""
    problems = speaker_overlaps(folds, by_id)
    if problems:
        raise SertuneError(overlap_message(problems))


Protocol = Callable[[list[Utterance], int], tuple[str, list[Fold]]]


def session_protocol(utterances: list[Utterance], seed: int) -> tuple[str, list[Fold]]:
    """Leave one session (the `session` column) out; sessions are fixed groups, so `seed` is unused."""
    del seed
    return "leave one session out, dev = next session", leave_one_group_out(utterances, lambda u: u.extras["session"])


def speaker_protocol(n_folds: int) -> Protocol:
    """A protocol of `n_folds` gender-balanced speaker folds, dev = the next fold's speakers."""

    def make(utterances: list[Utterance], seed: int) -> tuple[str, list[Fold]]:
        folds = speaker_folds(utterances, n_folds, seed)
        return f"{len(folds)} speaker folds (seed {seed}), dev = next fold", folds

    return make
