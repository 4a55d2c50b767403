"""The PEFT methods: parameter counts, identity at init, what trains, LoRA reach, checkpoints, merge."""

from __future__ import annotations

import pytest
import torch

from sertune.backbones import SPECS, build_backbone
from sertune.checkpoint import load_classifier, save_classifier
from sertune.errors import SertuneError
from sertune.model import EmotionClassifier
from sertune.tuning import TuningConfig

from conftest import TINY_CONFIGS

LABELS = ["neutral", "angry", "sad", "happy"]
PEFT_METHODS = ["lora", "adapter", "parallel-adapter", "prompt", "lora+prompt", "lora+adapter", "combined"]
ALL_METHODS = ["frozen", "full", *PEFT_METHODS]


def _classifier(kind: str, method: str, **settings) -> EmotionClassifier:
    backbone = build_backbone(TINY_CONFIGS[kind](), seed=0)
    return EmotionClassifier(backbone, LABELS, TuningConfig(method=method, **settings))


def _batch(samples: int = 16000) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(2, samples, generator=generator), torch.tensor([samples, samples * 3 // 4])


# (backbone, method) -> the study's trainable parameter counts (docs/architecture.md)
STUDY_COUNTS = {
    ("wavlm-base-plus", "lora"): 1_474_560,
    ("wavlm-base-plus", "adapter"): 2_370_048,
    ("wavlm-base-plus", "prompt"): 46_080,
    ("whisper-tiny.en", "lora"): 245_760,
    ("whisper-tiny.en", "adapter"): 395_264,
    ("whisper-tiny.en", "prompt"): 7_680,
    ("whisper-base", "lora"): 491_520,
    ("whisper-base", "adapter"): 790_272,
    ("whisper-base", "prompt"): 15_360,
}
STUDY_HEADS = {"wavlm-base-plus": 395_280, "whisper-tiny.en": 296_968, "whisper-base": 329_738}


@pytest.mark.parametrize(("name", "method"), sorted(STUDY_COUNTS))
def test_trainable_parameters_equal_the_study(name: str, method: str) -> None:
    backbone = build_backbone(SPECS[name], seed=0)
    counts = EmotionClassifier(backbone, LABELS, TuningConfig(method=method, lora_rank=16)).parameter_counts()
    assert counts["tuning"] == STUDY_COUNTS[(name, method)]
    assert counts["head"] == STUDY_HEADS[name]


@pytest.mark.parametrize("kind", ["whisper", "wavlm", "wavlm-ln"])
@pytest.mark.parametrize("method", ["frozen", "full", "lora", "adapter", "parallel-adapter", "lora+adapter"])
def test_methods_leave_hidden_states_unchanged_at_init(kind: str, method: str) -> None:
    bare = build_backbone(TINY_CONFIGS[kind](), seed=0).eval()
    tuned = _classifier(kind, method, lora_dropout=0.1).eval()
    waveforms, lengths = _batch()
    with torch.no_grad():
        expected = bare.encode(waveforms, lengths)
        found = tuned.backbone.encode(waveforms, lengths)
    for reference, state in zip(expected.hidden_states, found.hidden_states, strict=True):
        assert (reference - state).abs().max() < 1e-5


@pytest.mark.parametrize("kind", ["whisper", "wavlm", "wav2vec2-ln"])
def test_prompts_keep_shapes_and_only_change_the_layers_they_enter(kind: str) -> None:
    bare = build_backbone(TINY_CONFIGS[kind](), seed=0).eval()
    layers = [1] if kind != "wavlm" else None
    tuned = _classifier(kind, "prompt", layers=layers).eval()
    waveforms, lengths = _batch()
    with torch.no_grad():
        expected = bare.encode(waveforms, lengths)
        found = tuned.backbone.encode(waveforms, lengths)
    assert [s.shape for s in found.hidden_states] == [s.shape for s in expected.hidden_states]
    assert torch.equal(found.frame_lengths, expected.frame_lengths)
    assert torch.allclose(found.hidden_states[0], expected.hidden_states[0])
    if layers == [1]:  # the prompt enters layer 1 only: layer 0's output is untouched
        assert torch.allclose(found.hidden_states[1], expected.hidden_states[1], atol=1e-6)
    assert (found.hidden_states[-1] - expected.hidden_states[-1]).abs().max() > 1e-4


@pytest.mark.parametrize("kind", ["whisper", "wavlm-ln"])
@pytest.mark.parametrize("method", ALL_METHODS)
def test_one_step_trains_only_the_method_and_head(kind: str, method: str) -> None:
    classifier = _classifier(kind, method).train()
    trainable = [p for p in classifier.parameters() if p.requires_grad]
    before = {name: p.detach().clone() for name, p in classifier.named_parameters()}
    optimizer = torch.optim.Adam(trainable, lr=1e-2)
    waveforms, lengths = _batch()
    loss = torch.nn.functional.cross_entropy(classifier(waveforms, lengths), torch.tensor([0, 3]))
    loss.backward()
    optimizer.step()
    trained = set(classifier.trained_names)
    changed = set()
    for name, parameter in classifier.named_parameters():
        if name not in trained:
            assert torch.equal(parameter, before[name]), f"frozen tensor {name} changed"
        elif not torch.equal(parameter, before[name]):
            changed.add(name)
        else:  # zero-initialised partners (LoRA's B, the adapter's up) give A / down no gradient yet
            assert parameter.grad is None or not parameter.grad.any(), (
                f"{name} had a gradient but did not move"
            )
    assert any(name.startswith("head.") for name in changed)
    feature_encoder = "conv1" if kind == "whisper" else "feature_extractor"
    assert not any(feature_encoder in name for name in trained)
    if method == "frozen":
        assert all(name.startswith("head.") for name in trained)
    else:
        assert any(not name.startswith("head.") for name in changed)


def _tuned_names(classifier: EmotionClassifier) -> list[str]:
    return [name for name in classifier.trained_names if not name.startswith("head.")]


@pytest.mark.parametrize("kind", ["whisper", "wav2vec2-ln", "hubert-ln", "wavlm-ln"])
@pytest.mark.parametrize("targets", ["ffn", "attn", "all"])
def test_perturbing_every_lora_target_moves_the_output(kind: str, targets: str) -> None:
    if kind == "wavlm-ln" and targets != "ffn":
        with pytest.raises(SertuneError, match="WavLM's attention projections"):
            _classifier(kind, "lora", lora_targets=targets)
        return
    classifier = _classifier(kind, "lora", lora_targets=targets).eval()
    waveforms, lengths = _batch()
    parameters = dict(classifier.named_parameters())
    with torch.no_grad():
        reference = classifier.backbone.encode(waveforms, lengths).hidden_states[-1]
        targets_seen = {name.split(".lora_B")[0] for name in _tuned_names(classifier) if ".lora_B." in name}
        for target in sorted(targets_seen):
            lora_b = parameters[f"{target}.lora_B.default.weight"]
            # Random, not constant: a shift shared by all features would vanish in the next layer norm.
            lora_b.normal_(0, 0.5)
            moved = (classifier.backbone.encode(waveforms, lengths).hidden_states[-1] - reference).abs().max()
            lora_b.zero_()
            assert moved > 1e-3, f"LoRA on {target} does not reach the output"
    per_layer = {"ffn": 2, "attn": 4}.get(targets)
    if per_layer:
        assert len(targets_seen) == per_layer * 2


def test_layer_subset_puts_lora_only_there() -> None:
    classifier = _classifier("whisper", "lora", layers=[-1])
    assert all(".layers.1." in name for name in _tuned_names(classifier))
    with pytest.raises(SertuneError, match="layer 5 does not exist"):
        _classifier("whisper", "lora", layers=[5])


@pytest.mark.parametrize("method", ["lora", "combined", "parallel-adapter", "full", "frozen"])
def test_save_load_reproduces_logits_exactly(tmp_path, method: str) -> None:
    classifier = _classifier("whisper", method)
    with torch.no_grad():  # move every trained tensor away from its initial value
        for name, parameter in classifier.named_parameters():
            if name in classifier.trained_names:
                parameter.add_(torch.randn_like(parameter) * 0.05)
    classifier.eval()
    waveforms, lengths = _batch()
    with torch.no_grad():
        expected = classifier(waveforms, lengths)
    save_classifier(classifier, tmp_path)
    loaded = load_classifier(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(waveforms, lengths), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter.safetensors", "sertune.json"]


@pytest.mark.parametrize("method", ["lora", "lora+adapter", "lora+parallel-adapter", "combined"])
def test_merged_lora_matches_unmerged_and_leaves_plain_linears(method: str) -> None:
    classifier = _classifier("whisper", method)
    _perturb_zero_initialised(classifier)
    classifier.eval()
    waveforms, lengths = _batch()
    with torch.no_grad():
        unmerged = classifier(waveforms, lengths)
        classifier.merge()
        merged = classifier(waveforms, lengths)
    assert (merged - unmerged).abs().max() < 1e-4
    assert type(classifier.backbone.model.layers[0].fc1) is torch.nn.Linear


def test_checkpoint_onto_wrong_backbone_or_with_wrong_tensors_is_refused(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    save_classifier(_classifier("whisper", "lora"), tmp_path)
    other = build_backbone(TINY_CONFIGS["wavlm-ln"](), seed=0)
    with pytest.raises(SertuneError, match="family whisper expected but wavlm found"):
        load_classifier(tmp_path, backbone=other)
    tensors = load_file(tmp_path / "adapter.safetensors")
    dropped = sorted(tensors)[0]
    del tensors[dropped]
    tensors["head.extra"] = torch.zeros(1)
    save_file(tensors, tmp_path / "adapter.safetensors")
    with pytest.raises(
        SertuneError, match=r"missing 1 tensors .*unexpected 1 tensors \[head.extra\]"
    ) as error:
        load_classifier(tmp_path)
    assert dropped in str(error.value)
    (tmp_path / "adapter.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(SertuneError, match="corrupt or truncated"):
        load_classifier(tmp_path)


@pytest.mark.parametrize(("name", "limit_mb"), [("whisper-tiny.en", 3), ("wavlm-base-plus", 8)])
def test_lora_checkpoint_is_a_few_megabytes(tmp_path, name: str, limit_mb: float) -> None:
    backbone = build_backbone(SPECS[name], seed=0)
    classifier = EmotionClassifier(backbone, LABELS, TuningConfig(method="lora", lora_rank=16))
    weights = save_classifier(classifier, tmp_path)
    assert weights.stat().st_size < limit_mb * 1024 * 1024


def _perturb_zero_initialised(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if "lora_B" in name or ".up." in name:
                parameter.normal_(0, 0.05)


def test_two_adapters_share_one_backbone_without_interfering() -> None:
    backbone = build_backbone(TINY_CONFIGS["whisper"](), seed=0)
    first = EmotionClassifier(backbone, LABELS, TuningConfig(method="lora"), adapter_name="first").eval()
    _perturb_zero_initialised(backbone)
    waveforms, lengths = _batch()
    with torch.no_grad():
        alone = first(waveforms, lengths)
    second = EmotionClassifier(backbone, ["calm", "tense"], TuningConfig(method="combined"), adapter_name="second")
    second.eval()
    with torch.no_grad():
        for name, parameter in backbone.named_parameters():
            if ".second." in name or "lora_B.second" in name:
                parameter.normal_(0, 0.05)
        b1 = second(waveforms, lengths)
        a1 = first(waveforms, lengths)
        b2 = second(waveforms, lengths)
    assert torch.equal(a1, alone)
    assert torch.equal(b1, b2) and b1.shape == (2, 2)


def test_unknown_method_and_bad_compositions_are_refused() -> None:
    with pytest.raises(SertuneError, match="unknown method part 'lorax'"):
        TuningConfig(method="lora+lorax")
    with pytest.raises(SertuneError, match="either a sequential or a parallel adapter"):
        TuningConfig(method="adapter+parallel-adapter")
    assert TuningConfig(method="combined").parts == ("prompt", "lora", "adapter")


@pytest.mark.slow
@pytest.mark.parametrize("method", ALL_METHODS)
def test_real_offline_whisper_tiny_en_trains_with_every_method(speech, method: str) -> None:
    from sertune.backbones import load_backbone

    backbone = load_backbone("whisper-tiny.en")
    assert backbone.source["kind"] in ("offline-package", "hub")
    classifier = EmotionClassifier(backbone, LABELS, TuningConfig(method=method)).train()
    clip = torch.from_numpy(speech[: 16000 * 2])
    waveforms = torch.stack([clip, clip * 0.5])
    logits = classifier(waveforms, torch.tensor([len(clip), len(clip) * 3 // 4]))
    torch.nn.functional.cross_entropy(logits, torch.tensor([1, 2])).backward()
    grads = {name: p.grad for name, p in classifier.named_parameters() if p.requires_grad}
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert any(g.abs().sum() > 0 for name, g in grads.items() if not name.startswith("head.")) or method == "frozen"
