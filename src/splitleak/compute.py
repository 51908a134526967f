"""Where and how tensors are computed: device, precision and thread count, resolved once.

``auto`` picks CUDA when it is present, else Apple's MPS, else the CPU, and bf16 mixed
precision where the hardware computes it fast (bf16-capable CUDA GPUs; CPUs with AMX or
AVX-512 BF16). Mixed precision means autocast around forward passes with fp32 master weights:
parameters and optimiser state stay fp32, only matmuls and convolutions run in reduced
precision. Code that must stay exact (rMLE through a near-linear layer reaches far above
50 dB only in fp32) asks for :meth:`Compute.exact`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch import nn

from splitleak.errors import SplitleakError

DeviceName = str  # "auto", "cpu", "cuda", "cuda:N" or "mps"
Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class DeviceError(SplitleakError):
    """A requested device or precision is not available on this machine."""


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, not the machine's total)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):  # not on Linux
        return max(os.cpu_count() or 1, 1)


def default_threads() -> int:
    """``$SPLITLEAK_THREADS`` if set, else the cores this process may use."""
    value = os.environ.get("SPLITLEAK_THREADS", "")
    if value:
        if not value.isdigit() or int(value) < 1:
            raise DeviceError(f"SPLITLEAK_THREADS={value!r}: expected a positive integer")
        cores = os.cpu_count() or 1
        if int(value) > cores:
            raise DeviceError(
                f"SPLITLEAK_THREADS={value}: this machine has {cores} CPU cores; "
                f"use at most {cores}"
            )
        return int(value)
    return available_cores()


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX-BF16 or AVX-512 BF16 (read from /proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return False


def resolve_device(name: DeviceName) -> torch.device:
    """The torch device for a name; a one-line error when it does not exist here."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"--device {name}: this machine has no CUDA device (or torch is a CPU build); "
                "use --device cpu or auto"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(
                f"--device {name}: only {count} CUDA device(s) here (cuda:0..cuda:{count - 1})"
            )
    elif device.type == "mps":
        if not _mps_available():
            raise DeviceError(f"--device {name}: MPS is not available here; use cpu or auto")
    elif device.type != "cpu":
        raise DeviceError(f"unsupported device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_precision(name: str, device: torch.device) -> str:
    """fp32, bf16 or fp16 for a device.

    ``auto`` is ``$SPLITLEAK_PRECISION`` when that is set (a site-wide default, e.g. fp32
    for reproducible test runs), else bf16 where the hardware is fast at it, else fp32.
    """
    if name not in PRECISIONS:
        raise DeviceError(f"unknown precision {name!r}; valid: {', '.join(PRECISIONS)}")
    site = os.environ.get("SPLITLEAK_PRECISION", "")
    if name == "auto" and site:
        if site not in PRECISIONS[1:]:
            raise DeviceError(f"SPLITLEAK_PRECISION={site!r}: expected fp32, bf16 or fp16")
        name = site
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        if device.type == "cpu":
            return "bf16" if cpu_has_fast_bf16() else "fp32"
        return "fp32"
    if name == "fp16" and device.type == "cpu":
        raise DeviceError("--precision fp16 is for GPUs; on the CPU use bf16 or fp32")
    return name


@dataclass(frozen=True)
class Compute:
    """A resolved device, precision and thread count; pass it wherever tensors are made."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"  # fp32, bf16 or fp16 (never auto once resolved)
    threads: int = 1

    @classmethod
    def resolve(
        cls, device: DeviceName = "auto", precision: str = "auto", threads: int | None = None
    ) -> Compute:
        """Resolve names to a :class:`Compute`; raises :class:`DeviceError` for bad names."""
        dev = resolve_device(device)
        if threads is not None and threads < 1:
            raise DeviceError(f"--threads must be at least 1, got {threads}")
        cores = os.cpu_count() or 1
        if threads is not None and threads > cores:
            raise DeviceError(
                f"--threads {threads}: this machine has {cores} CPU cores, and more threads "
                f"than cores only slow torch down; use at most {cores}"
            )
        return cls(
            device=dev,
            precision=resolve_precision(precision, dev),
            threads=threads or default_threads(),
        )

    def apply_threads(self) -> None:
        """Set torch's intra-op thread count to :attr:`threads` (deliberately, not by default)."""
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    def exact(self) -> Compute:
        """The same device in fp32 (for computations whose quality reduced precision caps)."""
        return replace(self, precision="fp32")

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return _AMP_DTYPES.get(self.precision)

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """Autocast to the reduced precision (a no-op in fp32)."""
        dtype = self.amp_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def channels_last(self, model: nn.Module) -> bool:
        """Whether :meth:`module` stores ``model`` channels_last (conv nets, mixed precision)."""
        return self.amp_dtype is not None and _has_conv(model)

    def module(self, model: nn.Module) -> nn.Module:
        """Move ``model`` to the device (channels_last for conv nets under mixed precision)."""
        model = model.to(self.device)
        if self.channels_last(model):
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return model

    def tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Move a tensor to the device."""
        return x.to(self.device, non_blocking=True)

    def generator(self, seed: int) -> torch.Generator:
        """A seeded generator on the device (random draws reproducible per device)."""
        return torch.Generator(device=self.device).manual_seed(seed)

    def describe(self) -> dict[str, str | int]:
        """What is recorded with every result."""
        info: dict[str, str | int] = {
            "device": str(self.device),
            "precision": self.precision,
            "threads": self.threads,
        }
        if self.device.type == "cuda":
            info["device_name"] = torch.cuda.get_device_name(self.device)
        return info


CPU_FP32 = Compute()


@contextlib.contextmanager
def using_threads(threads: int) -> Iterator[None]:
    """Temporarily set torch's thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d | nn.ConvTranspose2d) for m in model.modules())
