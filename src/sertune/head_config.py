"""Settings of the classification head, apart from the head itself so that they import without torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sertune.errors import SertuneError

# How layer outputs are standardised before the weighted sum (sertune.feature_statistics).
NORMALIZATIONS = ("none", "global", "speaker")


@dataclass
class HeadConfig:
    """Settings of the head; the defaults are the study's, apart from `normalization` (docs/training.md)."""

    channels: int = 256
    dropout: float = 0.1
    # Also weigh the embedding / conv output (hidden state 0), not only the transformer layers.
    include_embedding: bool = False
    # Standardise each layer output with the pretrained encoder's statistics: of each speaker's own
    # clips (`speaker`), of the training clips (`global`), or not at all (`none`, the study's head).
    # Without a speaker's clips (a single clip at inference) the training clips' statistics are used.
    normalization: str = "speaker"

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise SertuneError(
                f"head.normalization must be one of {', '.join(NORMALIZATIONS)}, got {self.normalization!r}"
            )

    def to_dict(self) -> dict:
        """The settings as plain data (for sertune.json and config.yaml)."""
        return asdict(self)


def upgrade_saved_head(settings: dict) -> None:
    """Bring head settings saved by an older sertune (sertune.json, config.yaml) to today's, in place.

    Runs saved before the head could normalise have the study's head, not today's default; the
    layer-norm option that speaker normalisation replaced is dropped when off and refused when on
    (ValueError), since no head of today computes what it trained.
    """
    settings.setdefault("normalization", "none")
    if settings.pop("normalize_layers", False):
        raise ValueError(
            "head.normalize_layers (layer norm before the weighted sum) is no longer supported; "
            "retrain the run, e.g. with --normalization global"
        )
