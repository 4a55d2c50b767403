"""Settings of the classification head, apart from the head itself so that they import without torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class HeadConfig:
    """Settings of the head; the defaults are the study's."""

    channels: int = 256
    dropout: float = 0.1
    # Also weigh the embedding / conv output (hidden state 0), not only the transformer layers.
    include_embedding: bool = False
    # Standardise every layer output over its hidden dimension (layer norm without parameters) before
    # the weighted sum, as SUPERB's featurizer can; the study's head does not.
    normalize_layers: bool = False

    def to_dict(self) -> dict:
        """The settings as plain data (for sertune.json and config.yaml)."""
        return asdict(self)
