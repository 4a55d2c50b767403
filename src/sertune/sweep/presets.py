"""The study's grids as sweep presets; the corpora come from the command line.

`peft-ser` is the study's main table: five backbones x the frozen baseline, the two adapters,
deep prompts and LoRA, each cell on the study's recipe (`sertune train --preset paper`). The
ablations vary one size parameter on the two backbones the study examined most closely, over
value lists that cover its figures.
"""

from __future__ import annotations

from typing import Any

from sertune.errors import SertuneError

STUDY_BACKBONES = ["whisper-tiny", "whisper-base", "whisper-small", "wav2vec2-base-960h", "wavlm-base-plus"]
STUDY_METHODS = ["frozen", "adapter", "parallel-adapter", "prompt", "lora"]
ABLATION_BACKBONES = ["wavlm-base-plus", "whisper-base"]

SWEEP_PRESETS: dict[str, dict[str, Any]] = {
    "peft-ser": {"grid": {"backbone": STUDY_BACKBONES, "method": STUDY_METHODS}},
    "peft-ser-prompt-length": {
        "grid": {"backbone": ABLATION_BACKBONES, "method": ["prompt"], "prompt_length": [1, 2, 5, 10, 20]},
    },
    "peft-ser-adapter-dim": {
        "grid": {"backbone": ABLATION_BACKBONES, "method": ["adapter", "parallel-adapter"],
                 "adapter_dim": [16, 32, 64, 128, 256]},
    },
    "peft-ser-lora-rank": {
        "grid": {"backbone": ABLATION_BACKBONES, "method": ["lora"], "rank": [2, 4, 8, 16, 32]},
    },
}


def preset_spec(name: str, corpora: list[str]) -> dict[str, Any]:
    """The spec of preset `name` over `corpora` (prepared corpus directories), on the study's recipe."""
    if name not in SWEEP_PRESETS:
        raise SertuneError(f"unknown sweep preset {name!r}; known: {', '.join(SWEEP_PRESETS)}")
    if not corpora:
        raise SertuneError(f"--preset {name} needs the prepared corpus directories, e.g. "
                           f"`sertune sweep --preset {name} corpora/iemocap corpora/crema-d --out sweeps/{name}`")
    preset = SWEEP_PRESETS[name]
    return {"preset": "paper", "grid": {"corpus": list(corpora), **preset["grid"]}}
