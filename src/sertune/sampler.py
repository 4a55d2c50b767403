"""Batch samplers that put clips of similar length together, for single- and multi-process runs.

Padding a batch to its longest clip costs compute on every padded sample, and SER corpora mix clips
of 1 to 20+ s. :class:`LengthBucketBatchSampler` shuffles the dataset, cuts it into large random
chunks, sorts each chunk by length and cuts it into batches, then shuffles the batch order: batches
are homogeneous in length yet their content and order change every epoch. ``bucketing=False`` gives
plain random batches (the baseline the benchmark compares against).

Both samplers are ``batch_sampler`` arguments for :class:`torch.utils.data.DataLoader`. They expose
``max_batch_size`` but deliberately no ``batch_size`` attribute: accelerate's ``BatchSamplerShard``
reads ``batch_size`` and, when it is set, silently skips every batch of another size, which
length-limited batches often are.

Distributed use
---------------
Every rank builds the same global batch list from ``(seed, epoch)`` and takes every
``num_replicas``-th batch starting at ``rank``. Either give the sampler ``num_replicas``/``rank`` and
do not pass the DataLoader through ``accelerator.prepare``, or keep ``num_replicas=1`` and let
``prepare`` shard it (accelerate then splits batches round-robin the same way).

* Training (:class:`LengthBucketBatchSampler`): every rank gets the same number of batches, as
  DDP needs: the list is padded by repeating its first batches (or, with ``drop_last``, truncated).
* Evaluation (:class:`ShardedEvalBatchSampler`): ranks get disjoint batches whose union is exactly
  the dataset, so rank batch counts may differ by one (a rank may get none when there are fewer
  batches than ranks). ``accelerator.gather_for_metrics`` cannot be used to stay exact here: it
  drops ``len(dataset) % (batch_size * num_processes)`` items from the last gather, which assumes
  equal, fixed-size batches. The caller instead runs the unwrapped model (no collective per batch,
  since counts differ), keeps each prediction with its dataset index, gathers the lists once after
  the loop (``accelerate.utils.gather_object``) and orders them by index; the gathered indices are
  exactly ``range(len(dataset))``, which the caller can assert.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


def balance_weights(groups: Sequence[Hashable]) -> np.ndarray:
    """A weight per item that gives every group the same share of draws: 1 / the size of its group."""
    counts = Counter(groups)
    return np.array([1.0 / counts[group] for group in groups], dtype=np.float64)


def padding_fraction(batches: Iterable[Sequence[int]], lengths: Sequence[float] | np.ndarray) -> float:
    """Share of the padded batches that is padding: 1 - sum of lengths / sum of (size x longest)."""
    lengths = np.asarray(lengths, dtype=np.float64)
    real = padded = 0.0
    for batch in batches:
        batch_lengths = lengths[np.asarray(batch, dtype=np.int64)]
        real += batch_lengths.sum()
        padded += len(batch) * batch_lengths.max()
    return 0.0 if padded == 0 else float(1 - real / padded)


def _cut(
    order: np.ndarray, lengths: np.ndarray, max_batch_size: int, max_padded_length: float | None
) -> list[tuple[list[int], bool]]:
    """Cut ``order`` into consecutive batches; each comes with whether a limit (not the end) closed it.

    A batch holds at most ``max_batch_size`` items and, with a budget, at most ``max_padded_length``
    of padded audio (items x longest item): the size the model actually computes on. A single item
    over the budget still gets a batch of its own rather than being dropped.
    """
    batches: list[tuple[list[int], bool]] = []
    current: list[int] = []
    longest = 0.0
    for index in order.tolist():
        length = lengths[index]
        grown = (len(current) + 1) * max(longest, length)
        if current and max_padded_length is not None and grown > max_padded_length:
            batches.append((current, True))
            current, longest = [], 0.0
        current.append(index)
        longest = max(longest, length)
        if len(current) == max_batch_size:
            batches.append((current, True))
            current, longest = [], 0.0
    if current:
        batches.append((current, False))
    return batches


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Training batches of similar-length clips, reshuffled every epoch, sharded over ranks.

    Args:
        lengths: length of every dataset item (seconds or samples, as long as the budget uses the
            same unit).
        max_batch_size: most items in a batch.
        max_padded_length: optional budget on items x longest item per batch (e.g. 32 x 6 s = 192 s),
            so that batches of short clips hold more items than batches of long ones.
        bucketing: sort by length within chunks; ``False`` gives plain random batches.
        shuffle: reshuffle every epoch. ``False`` keeps a fixed order: by decreasing length when
            bucketing (longest batch first, so an out-of-memory shows at once), else dataset order.
        drop_last: drop batches that were closed only by the end of a chunk while smaller than
            ``max_batch_size`` (without a budget, just the final short batch, as in DataLoader), and
            truncate rather than pad the batch list to a multiple of ``num_replicas``.
        seed: with the epoch (:meth:`set_epoch`), fixes every choice; all ranks must use the same.
        num_replicas, rank: this process's share of the batches.
        chunk_batches: batches per sorted chunk; larger chunks pad less but mix less.
        weights: optional weight per item: each epoch then draws len(lengths) items with replacement,
            item i with probability weights[i] / sum(weights) (`train.balance`), instead of a permutation.
    """

    # Training needs equal batch counts on all ranks; evaluation (subclass) needs no duplicates.
    _equal_batch_counts = True

    def __init__(
        self,
        lengths: Sequence[float] | np.ndarray,
        max_batch_size: int,
        *,
        max_padded_length: float | None = None,
        bucketing: bool = True,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        chunk_batches: int = 50,
        weights: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        self.lengths = np.asarray(lengths, dtype=np.float64)
        self.probabilities = None
        if weights is not None:
            weights = np.asarray(weights, dtype=np.float64)
            if weights.shape != self.lengths.shape or not np.all(np.isfinite(weights)) or np.any(weights < 0) \
                    or not weights.sum() > 0:
                raise ValueError("weights must be one finite, non-negative number per item, not all zero")
            self.probabilities = weights / weights.sum()
        if self.lengths.ndim != 1 or not np.all(np.isfinite(self.lengths)) or np.any(self.lengths < 0):
            raise ValueError("lengths must be a flat sequence of finite, non-negative numbers")
        if max_batch_size < 1 or chunk_batches < 1:
            raise ValueError("max_batch_size and chunk_batches must be at least 1")
        if max_padded_length is not None and max_padded_length <= 0:
            raise ValueError("max_padded_length must be positive")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in 0..{num_replicas - 1}")
        self.max_batch_size = max_batch_size
        self.max_padded_length = max_padded_length
        self.bucketing = bucketing
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.chunk_batches = chunk_batches
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields (call it before every epoch)."""
        self.epoch = epoch

    def _global_batches(self) -> list[list[int]]:
        """The batches of the current epoch over all ranks, identical on every rank."""
        rng = np.random.default_rng([self.seed, self.epoch])
        n = len(self.lengths)
        if self.probabilities is not None:
            # Weighted: an epoch is n draws with replacement, so rare groups are seen as often as common ones.
            order = rng.choice(n, size=n, replace=True, p=self.probabilities)
        else:
            order = rng.permutation(n) if self.shuffle else np.arange(n)
        if self.bucketing:
            # Unshuffled, the whole dataset is one chunk: a global sort by length.
            chunk = self.max_batch_size * self.chunk_batches if self.shuffle else max(n, 1)
            cut: list[tuple[list[int], bool]] = []
            for start in range(0, n, chunk):
                part = order[start : start + chunk]
                # stable sort: equal lengths keep their (shuffled or dataset) order
                cut += _cut(
                    part[np.argsort(-self.lengths[part], kind="stable")],
                    self.lengths,
                    self.max_batch_size,
                    self.max_padded_length,
                )
        else:
            cut = _cut(order, self.lengths, self.max_batch_size, self.max_padded_length)
        batches = [batch for batch, closed in cut if closed or not self.drop_last]
        if self.bucketing and self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def _local_batches(self) -> list[list[int]]:
        if self._cache is None or self._cache[0] != self.epoch:
            batches = self._global_batches()
            excess = len(batches) % self.num_replicas
            if self._equal_batch_counts and excess:
                if self.drop_last:
                    batches = batches[: len(batches) - excess]
                elif batches:
                    # Repeat batches from the start, as DistributedSampler repeats items.
                    missing = self.num_replicas - excess
                    batches = batches + [batches[i % len(batches)] for i in range(missing)]
            self._cache = (self.epoch, batches[self.rank :: self.num_replicas])
        return self._cache[1]

    def __iter__(self) -> Iterator[list[int]]:
        # Copies, so that a consumer editing a batch cannot corrupt the cached epoch.
        return (list(batch) for batch in self._local_batches())

    def __len__(self) -> int:
        return len(self._local_batches())


class ShardedEvalBatchSampler(LengthBucketBatchSampler):
    """Evaluation batches: sorted by length, in a fixed order, each clip on exactly one rank.

    The union of the batches over ranks is exactly ``range(len(lengths))``, with no padding and no
    duplicate; ranks' batch counts differ by at most one. See the module docstring for how to gather
    exact metrics with it.
    """

    _equal_batch_counts = False

    def __init__(
        self,
        lengths: Sequence[float] | np.ndarray,
        max_batch_size: int,
        *,
        max_padded_length: float | None = None,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(
            lengths,
            max_batch_size,
            max_padded_length=max_padded_length,
            shuffle=False,
            drop_last=False,
            num_replicas=num_replicas,
            rank=rank,
        )
