"""`--precision auto`: bf16 only where the hardware computes it natively, recorded in the run's config."""

from __future__ import annotations

import pytest

from sertune import precision
from sertune.config import TrainConfig, resolve_config
from sertune.errors import SertuneError
from sertune.precision import Capabilities, choose_precision, resolve_precision
from sertune.train import with_resolved_precision


@pytest.mark.parametrize(
    ("capabilities", "expected"),
    [
        (Capabilities("cuda", cuda_bf16=True), "bf16"),
        (Capabilities("cuda", cuda_bf16=False), "fp16"),
        (Capabilities("cpu", cpu_bf16=True), "bf16"),
        (Capabilities("cpu", cpu_bf16=False), "no"),
        (Capabilities("mps"), "no"),
    ],
)
def test_auto_follows_the_hardware(capabilities: Capabilities, expected: str) -> None:
    assert choose_precision("auto", capabilities) == expected


@pytest.mark.parametrize("asked", ["no", "bf16", "fp16"])
def test_an_explicit_precision_is_kept_whatever_the_hardware(asked: str) -> None:
    assert choose_precision(asked, Capabilities("cpu", cpu_bf16=False)) == asked
    assert choose_precision(asked, Capabilities("cuda", cuda_bf16=True)) == asked


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="precision must be one of auto, no, bf16, fp16"):
        choose_precision("fp8", Capabilities("cpu"))
    with pytest.raises(SertuneError, match="precision must be one of"):
        TrainConfig(precision="fp8")


def test_cpu_detection_reads_amx_and_avx512_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert resolve_precision("auto", "cpu") == ("no", "auto: CPU without native bf16 matrix instructions")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert resolve_precision("auto", "cpu") == ("bf16", "auto: CPU with AMX/AVX-512-BF16")


def test_cpuinfo_is_the_fallback_without_torch_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        monkeypatch.delattr(torch.cpu, name, raising=False)
    monkeypatch.setattr(precision, "_cpuinfo_flags", lambda: {"avx2", "fma", "amx_bf16"})
    assert precision.detect_capabilities("cpu") == Capabilities("cpu", cpu_bf16=True)
    monkeypatch.setattr(precision, "_cpuinfo_flags", lambda: {"avx2", "fma", "avx512f"})
    assert precision.detect_capabilities("cpu") == Capabilities("cpu", cpu_bf16=False)


def test_training_defaults_to_auto_and_records_the_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    config = resolve_config()
    assert config.train.precision == "auto"
    monkeypatch.setattr(precision, "detect_capabilities", lambda device_type=None: Capabilities("cpu", cpu_bf16=False))
    assert with_resolved_precision(config, None).train.precision == "no"
    monkeypatch.setattr(precision, "detect_capabilities", lambda device_type=None: Capabilities("cpu", cpu_bf16=True))
    resolved = with_resolved_precision(config, None)
    assert resolved.train.precision == "bf16"
    assert resolved.to_dict()["train"]["precision"] == "bf16"  # what config.yaml records
    assert config.train.precision == "auto"  # the caller's config is left as it was
