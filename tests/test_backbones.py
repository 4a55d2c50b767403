"""The encoder interface on every family: shapes, frame lengths, padding invariance, errors."""

from __future__ import annotations

import pytest
import torch

from sertune.backbones import SPECS, build_backbone, load_backbone
from sertune.errors import SertuneError

from conftest import TINY_CONFIGS

# Valid frames must not depend on the batch for every model that takes a padding mask and has no
# group norm in its front end (group norm pools statistics over the padded length by design).
MASKED = ["wavlm-ln", "wav2vec2-ln", "hubert-ln", "whisper"]


@pytest.mark.parametrize("kind", sorted(TINY_CONFIGS))
def test_encode_returns_every_layer_with_exact_frame_lengths(kind: str) -> None:
    backbone = build_backbone(TINY_CONFIGS[kind](), seed=0).eval()
    lengths = torch.tensor([16000, 12345, 4000])
    waveforms = torch.randn(3, 16000)
    with torch.no_grad():
        out = backbone.encode(waveforms, lengths)
    assert len(out.hidden_states) == backbone.num_layers + 1 == 3
    if backbone.family == "whisper":
        expected = [50, 39, 13]  # 100 Hz mel frames (samples // 160), halved by the stride-2 conv
    else:
        expected = [1599, 1233, 399]  # conv (10, stride 5) then (3, stride 2), no padding
    assert out.frame_lengths.tolist() == expected
    for state in out.hidden_states:
        assert state.shape == (3, max(expected), 32)
        assert torch.isfinite(state).all()
    assert out.frame_mask().sum(dim=1).tolist() == expected


@pytest.mark.parametrize("kind", MASKED)
def test_valid_frames_do_not_depend_on_batch_neighbours(kind: str) -> None:
    backbone = build_backbone(TINY_CONFIGS[kind](), seed=0).eval()
    short, long = torch.randn(7000), torch.randn(16000)
    batch = torch.zeros(2, 16000)
    batch[0, :7000], batch[1] = short, long
    with torch.no_grad():
        together = backbone.encode(batch, torch.tensor([7000, 16000]))
        alone = backbone.encode(short[None], torch.tensor([7000]))
    frames = int(alone.frame_lengths[0])
    assert int(together.frame_lengths[0]) == frames
    for joint, single in zip(together.hidden_states, alone.hidden_states, strict=True):
        assert torch.allclose(joint[0, :frames], single[0, :frames], atol=1e-4)


def test_group_norm_models_get_no_attention_mask() -> None:
    assert not build_backbone(TINY_CONFIGS["wav2vec2"]()).uses_attention_mask
    assert not build_backbone(TINY_CONFIGS["hubert"]()).uses_attention_mask
    assert build_backbone(TINY_CONFIGS["wav2vec2-ln"]()).uses_attention_mask
    assert build_backbone(TINY_CONFIGS["wavlm"]()).uses_attention_mask


def test_too_short_clip_is_refused_with_the_minimum() -> None:
    backbone = build_backbone(TINY_CONFIGS["whisper"]())
    with pytest.raises(SertuneError, match="minimum of 201 samples"):
        backbone.encode(torch.randn(1, 100))


def test_whisper_refuses_more_than_30_seconds() -> None:
    backbone = build_backbone(TINY_CONFIGS["whisper"]())
    with pytest.raises(SertuneError, match="at most 30 s"):
        backbone.encode(torch.randn(1, 16000 * 31))


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(SertuneError) as error:
        load_backbone("wavlm-huge")
    assert "wavlm-base-plus" in str(error.value) and "whisper-large-v3" in str(error.value)


def test_registry_architectures_have_the_published_sizes() -> None:
    sizes = {name: (spec.hidden_size, spec.num_layers) for name, spec in SPECS.items()}
    assert sizes["wavlm-base-plus"] == (768, 12)
    assert sizes["wavlm-large"] == (1024, 24)
    assert sizes["mms-300m"] == (1024, 24) and SPECS["mms-300m"].config().do_stable_layer_norm
    assert SPECS["mms-300m"].config().conv_bias and SPECS["mms-300m"].normalize_waveform
    assert sizes["whisper-tiny.en"] == (384, 4)
    assert sizes["whisper-base"] == (512, 6)
    assert sizes["whisper-large-v3"] == (1280, 32)
    assert SPECS["whisper-large-v3"].config().num_mel_bins == 128


def test_local_directory_loads_frozen(tmp_path) -> None:
    config = TINY_CONFIGS["wavlm-ln"]()
    reference = build_backbone(config, seed=1)
    reference.model.save_pretrained(tmp_path)
    loaded = load_backbone(tmp_path)
    assert loaded.source["kind"] == "local"
    assert not any(p.requires_grad for p in loaded.parameters())
    waveform = torch.randn(1, 8000)
    with torch.no_grad():
        assert torch.allclose(
            loaded.encode(waveform).hidden_states[-1], reference.eval().encode(waveform).hidden_states[-1]
        )
