"""Shared frozen-feature caches: one fill per (backbone, corpus, audio settings, cache folder), before
the cells that read it run, instead of every cell (and every fold) encoding the corpus itself.

`plan_caches` groups the cells (no torch needed); `python -m sertune.sweep.caches SWEEP_DIR KEY`
fills one group's cache, the task an executor runs. The cells then find every clip cached, which
their folds' `cache_fill` records (0 clips encoded).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from sertune.sweep.layout import CACHES, SweepDir
from sertune.sweep.spec import Cell


def plan_caches(cells: Sequence[Cell]) -> dict[str, dict[str, Any]]:
    """The shared caches of `cells`: key -> the settings that identify it, the store, and the cells using it.

    A group stores the layer outputs (`frames`) if any of its cells is frozen, else only their moments.
    """
    groups: dict[str, dict[str, Any]] = {}
    for cell in cells:
        config = cell.config
        store = config.cache_store
        if store is None:
            continue
        identity = {"backbone": config.backbone, "corpus": config.corpus, "cache_dir": config.train.cache_dir,
                    "eval_max_seconds": config.train.eval_max_seconds}
        key = "cache-" + hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
        group = groups.setdefault(key, {**identity, "store": store, "folds": [], "cells": [],
                                        "config": config.to_dict()})
        if store == "frames":
            group["store"] = "frames"  # frames give the moments too
        group["cells"].append(cell.id)
        group["folds"] = None if config.folds is None or group["folds"] is None else sorted(
            {*group["folds"], *config.folds})
    return groups


def fill_shared_cache(sweep: SweepDir, key: str) -> dict[str, Any]:
    """Encode the clips of cache `key` that are not cached yet; writes and returns caches/<key>.json."""
    import torch

    from sertune.backbones import load_backbone
    from sertune.config import config_from_dict
    from sertune.corpora import load_corpus
    from sertune.feature_cache import open_cache
    from sertune.fileio import write_json_atomic
    from sertune.progress import progress_bar
    from sertune.train import select_folds

    group = sweep.read_plan()["caches"][key]
    config = config_from_dict(group["config"])
    corpus = load_corpus(group["corpus"])
    wanted: dict[str, Any] = {}
    for _, fold in select_folds(corpus, group["folds"]):
        for ids in fold.parts().values():
            wanted.update((i, corpus.by_id[i]) for i in ids)
    began = time.perf_counter()
    backbone = load_backbone(group["backbone"], device="cuda" if torch.cuda.is_available() else "cpu")
    cache = open_cache(config, backbone)
    missing = cache.missing(list(wanted.values()), group["store"])
    if missing:
        with progress_bar(len(missing), f"caching {corpus.name} on {backbone.name}", "clip") as bar:
            cache.fill(backbone, missing, corpus.labels, batch_size=config.train.eval_batch_size,
                       progress=bar.update, store=group["store"])
    result = {"clips": len(wanted), "encoded": len(missing), "store": group["store"],
              "directory": str(cache.directory), "seconds": round(time.perf_counter() - began, 1)}
    write_json_atomic(sweep.root / CACHES / f"{key}.json", result)
    return result


def main(argv: list[str]) -> int:
    """`python -m sertune.sweep.caches SWEEP_DIR KEY`: fill one shared cache (an executor's task)."""
    from sertune.errors import SertuneError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sweep_dir, key = argv
    try:
        result = fill_shared_cache(SweepDir(sweep_dir), key)
    except SertuneError as error:
        print(f"sertune sweep: error: {error}", file=sys.stderr)
        return 2
    print(f"{key}: {result['encoded']} of {result['clips']} clips encoded into {result['directory']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
