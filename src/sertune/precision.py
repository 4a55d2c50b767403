"""Which numeric precision a run uses: `auto` picks what the hardware computes fast.

bf16 autocast only pays where the processor has native bf16 matrix instructions. On a CPU without
them (AVX2-only, or AVX-512 without the BF16 extension) every bf16 product is emulated and a
training step gets 15-20x slower than fp32; with AMX or AVX-512-BF16 it is 1.3-1.9x faster
(docs/architecture.md, "Precision"). GPUs get bf16 where they support it, fp16 (with a loss
scaler, which accelerate adds) otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from sertune.errors import SertuneError

PRECISIONS = ("auto", "no", "bf16", "fp16")


class UnknownPrecision(SertuneError, ValueError):
    """A precision that is not one of PRECISIONS."""


def check_precision(value: str, name: str = "precision") -> None:
    """Refuse a value that is not one of PRECISIONS; `name` is the setting as the user wrote it."""
    if value not in PRECISIONS:
        raise UnknownPrecision(f"{name} must be one of {', '.join(PRECISIONS)}, got {value!r}")


@dataclass(frozen=True)
class Capabilities:
    """What the device a run uses can compute natively."""

    device_type: str  # "cuda", "cpu", "mps", ...
    cuda_bf16: bool = False  # the GPU computes bf16 natively (Ampere and newer)
    cpu_bf16: bool = False  # the CPU has AMX or AVX-512-BF16 instructions

    def describe(self) -> str:
        """A short phrase for the log line that reports the choice."""
        if self.device_type == "cuda":
            return "GPU with native bf16" if self.cuda_bf16 else "GPU without native bf16"
        if self.device_type == "cpu":
            return "CPU with AMX/AVX-512-BF16" if self.cpu_bf16 else "CPU without native bf16 matrix instructions"
        return self.device_type


def detect_capabilities(device_type: str | None = None) -> Capabilities:
    """The capabilities of `device_type` (default: cuda when available, else cpu) on this machine."""
    import torch

    if device_type is None:
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    if device_type == "cuda":
        return Capabilities("cuda", cuda_bf16=bool(torch.cuda.is_bf16_supported()))
    if device_type == "cpu":
        return Capabilities("cpu", cpu_bf16=_cpu_has_native_bf16())
    return Capabilities(device_type)


def _cpu_has_native_bf16() -> bool:
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    if any(check is not None for check in checks):
        return any(bool(check()) for check in checks if check is not None)
    return _cpuinfo_flags() & {"amx_bf16", "avx512_bf16"} != set()


def _cpuinfo_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def choose_precision(requested: str, capabilities: Capabilities) -> str:
    """The precision to run with: `requested` itself unless it is `auto` (see the module docstring)."""
    check_precision(requested)
    if requested != "auto":
        return requested
    if capabilities.device_type == "cuda":
        return "bf16" if capabilities.cuda_bf16 else "fp16"
    if capabilities.device_type == "cpu" and capabilities.cpu_bf16:
        return "bf16"
    return "no"


def resolve_precision(requested: str, device_type: str | None = None) -> tuple[str, str]:
    """(precision, reason) for `requested` on this machine's `device_type`; the reason is for the log."""
    check_precision(requested)
    if requested != "auto":
        return requested, "asked for"
    capabilities = detect_capabilities(device_type)
    return choose_precision(requested, capabilities), f"auto: {capabilities.describe()}"
