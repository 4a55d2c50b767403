"""Cross-request batching for the server: clips of concurrent requests on one encoder encoded together.

Each encoder gets one worker thread and a queue. A request's clip (or its windows) is queued as a
`Job`; the worker takes the first waiting piece and, when other requests are under way that could
join it, waits up to `wait_seconds` for more (never past `max_batch` pieces; a lone request never
waits), groups what it has by model (each adapter on the encoder runs its own forward),
and gives each group to `Predictor.logits`, which pads pieces of similar length into batches (equal
lengths only for group-norm encoders, so an answer never depends on its batch mates). Results go back
to their jobs, and a job whose pieces are all done is assembled as `Predictor.predict` would assemble
it. A cancelled job (its client went away) has its pieces dropped from the queue and from every later
batch; a batch that fails is retried one job at a time, so one bad clip fails only its own request.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from sertune.errors import SertuneError
from sertune.inference import Predictor
from sertune.prediction import Span

# Called after every forward group with (clips in the group, clips still queued).
BatchObserver = Callable[[int, int], None]


@dataclass(eq=False)
class Job:
    """One request: a waveform cut into `spans`, the outputs found so far, and the answer's future."""

    predictor: Predictor
    wave: np.ndarray
    spans: list[Span]
    future: Future = field(default_factory=Future)
    outputs: dict[int, np.ndarray] = field(default_factory=dict)
    cancelled: bool = False

    def piece(self, index: int) -> np.ndarray:
        start, end = self.spans[index]
        return self.wave[start:end]


class EncoderQueue:
    """The queue and worker thread of one encoder (see the module docstring)."""

    def __init__(self, *, max_batch: int, wait_seconds: float, observe: BatchObserver | None = None) -> None:
        self.max_batch = max_batch
        self.wait_seconds = wait_seconds
        self.observe = observe
        self._pieces: deque[tuple[Job, int]] = deque()
        # Requests announced (`expect`) but not yet answered: whether waiting for batch mates can pay off.
        self._open = 0
        self._ready = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="sertune-batcher", daemon=True)
        self._worker.start()

    def expect(self, change: int) -> None:
        """Count a request that will submit a job (+1), or that has its answer or gave up (-1)."""
        with self._ready:
            self._open += change

    def submit(self, job: Job) -> None:
        """Queue every piece of `job`."""
        with self._ready:
            if self._closed:
                raise SertuneError("the server is shutting down")
            self._pieces.extend((job, index) for index in range(len(job.spans)))
            self._ready.notify()

    def cancel(self, job: Job) -> None:
        """Drop the job's waiting pieces; pieces already in a forward are discarded when it ends."""
        with self._ready:
            job.cancelled = True
            self._pieces = deque(item for item in self._pieces if item[0] is not job)
        job.future.cancel()

    @property
    def depth(self) -> int:
        """Pieces waiting for a forward."""
        return len(self._pieces)

    def close(self) -> None:
        """Stop the worker after the pieces already queued."""
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._worker.join(timeout=30)

    def _take(self) -> list[tuple[Job, int]] | None:
        with self._ready:
            while not self._pieces and not self._closed:
                self._ready.wait()
            if not self._pieces:
                return None
            deadline = time.monotonic() + self.wait_seconds
            while len(self._pieces) < self.max_batch and not self._closed and self._others_under_way():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._ready.wait(left)
            taken = [self._pieces.popleft() for _ in range(min(self.max_batch, len(self._pieces)))]
            return [(job, index) for job, index in taken if not job.cancelled]

    def _others_under_way(self) -> bool:
        """Whether a request that is not in the queue yet is still expected (being read or decoded)."""
        return self._open > len({id(job) for job, _ in self._pieces})

    def _run(self) -> None:
        while (taken := self._take()) is not None:
            groups: dict[int, list[tuple[Job, int]]] = {}
            for job, index in taken:
                groups.setdefault(id(job.predictor), []).append((job, index))
            for group in groups.values():
                self._forward(group)
                if self.observe is not None:
                    self.observe(len(group), self.depth)

    def _forward(self, group: list[tuple[Job, int]]) -> None:
        predictor = group[0][0].predictor
        try:
            outputs = predictor.logits([job.piece(index) for job, index in group])
        except Exception:  # retried per job below, where the error reaches its own request
            for job in unique_jobs(group):
                self._forward_alone(job, [index for other, index in group if other is job])
            return
        for (job, index), output in zip(group, outputs, strict=True):
            self._deliver(job, index, output)

    def _forward_alone(self, job: Job, indices: list[int]) -> None:
        try:
            outputs = job.predictor.logits([job.piece(index) for index in indices])
        except Exception as error:  # the request's own failure, answered to it
            job.cancelled = True
            if not job.future.done():
                job.future.set_exception(error)
            return
        for index, output in zip(indices, outputs, strict=True):
            self._deliver(job, index, output)

    def _deliver(self, job: Job, index: int, output: np.ndarray) -> None:
        if job.cancelled:
            return
        job.outputs[index] = output
        if len(job.outputs) == len(job.spans) and not job.future.done():
            parts = [(span, job.outputs[i]) for i, span in enumerate(job.spans)]
            try:
                job.future.set_result(job.predictor.assemble(job.wave, parts, None))
            except Exception as error:  # e.g. a future cancelled meanwhile
                if not job.future.done():
                    job.future.set_exception(error)


def unique_jobs(items: Iterable[tuple[Job, int]]) -> list[Job]:
    """The jobs of (job, piece) pairs, each once, in order."""
    return list({id(job): job for job, _ in items}.values())


class Batcher:
    """One `EncoderQueue` per encoder among `predictors`; `submit` queues a request's clip and returns its job."""

    def __init__(
        self, predictors: Iterable[Predictor], *, max_batch: int = 8, wait_seconds: float = 0.005,
        observe: BatchObserver | None = None,
    ) -> None:
        if max_batch < 1 or not wait_seconds >= 0:
            raise SertuneError(f"max_batch must be at least 1 and wait at least 0 s, got {max_batch}, {wait_seconds}")
        self._queues: dict[int, EncoderQueue] = {}
        for predictor in predictors:
            key = id(predictor.backbone)
            if key not in self._queues:
                self._queues[key] = EncoderQueue(max_batch=max_batch, wait_seconds=wait_seconds, observe=observe)

    def expect(self, predictor: Predictor, change: int) -> None:
        """Announce a request for `predictor` that is being read (+1), or that is over (-1): the worker waits
        for batch mates only while some are announced but not queued."""
        self._queues[id(predictor.backbone)].expect(change)

    def submit(self, predictor: Predictor, wave: np.ndarray, spans: list[Span]) -> Job:
        """Queue `wave`, cut into `spans`, for `predictor`; the job's future gives the `Prediction`."""
        job = Job(predictor, wave, spans)
        self._queues[id(predictor.backbone)].submit(job)
        return job

    def cancel(self, job: Job) -> None:
        """Stop the work of a job whose answer nobody waits for any more."""
        self._queues[id(job.predictor.backbone)].cancel(job)

    @property
    def depth(self) -> int:
        """Pieces waiting over all encoders."""
        return sum(queue.depth for queue in self._queues.values())

    def close(self) -> None:
        """Stop every worker."""
        for queue in self._queues.values():
            queue.close()

