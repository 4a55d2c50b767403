"""sertune: parameter-efficient fine-tuning of speech encoders for speech emotion recognition."""

from __future__ import annotations

from sertune.errors import SertuneError

# Not `from typing import TYPE_CHECKING`: `import sertune` (and so `sertune --help`) would pay for typing.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from sertune.inference import Predictor

__version__ = "0.1.0"


def load_backbone(name_or_path: str, **kwargs):
    """Load a speech encoder by short name, Hugging Face id or local directory (see sertune.backbones)."""
    from sertune.backbones import load_backbone as _load

    return _load(name_or_path, **kwargs)


def load(run_dir: str, **kwargs: Any) -> Predictor:
    """A predictor for a trained run: `sertune.load("runs/x").predict("clip.wav")` (see sertune.inference.load).

    Imported on first use, so that `import sertune` stays cheap.
    """
    from sertune.inference import load as _load

    return _load(run_dir, **kwargs)


__all__ = ["SertuneError", "__version__", "load", "load_backbone"]
