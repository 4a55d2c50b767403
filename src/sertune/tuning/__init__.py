"""The tuning methods: LoRA (peft), bottleneck adapters, deep prompts, and their compositions.

The settings (`TuningConfig`, `parse_method`) import without torch, so that the command line can
build its parser cheaply; the modules that apply the methods load on first use of their names.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sertune.tuning.config import TuningConfig, parse_method

if TYPE_CHECKING:
    from sertune.tuning.apply import TuningModules, activate, attach, set_trainable
    from sertune.tuning.lora import merge_lora

_LAZY = {
    "TuningModules": "sertune.tuning.apply",
    "activate": "sertune.tuning.apply",
    "attach": "sertune.tuning.apply",
    "set_trainable": "sertune.tuning.apply",
    "merge_lora": "sertune.tuning.lora",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ = [
    "TuningConfig",
    "TuningModules",
    "activate",
    "attach",
    "merge_lora",
    "parse_method",
    "set_trainable",
]
