"""What the model knows about hardware: the device to use and one table of GPUs.

``GPUS`` is the one table of accelerator peaks (dense bf16 tensor-core FLOP/s, no
sparsity), memory and a rough 2025 on-demand price; the trainer's MFU and ``lmforge plan``
both read it. ``peak_flops_for`` finds the running CUDA device in it by name. torch is
imported only by the functions that need a device, so ``lmforge plan`` stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Gpu:
    peak_bf16_flops: float  # dense (no sparsity) tensor-core peak
    memory_gib: float
    usd_per_hour: float  # rough on-demand cloud price; `plan --usd-per-gpu-hour` for yours
    device_names: tuple[str, ...]  # substrings of torch.cuda.get_device_name() that mean this GPU


GPUS = {
    "h100": Gpu(989e12, 80, 2.50, ("H100 80GB HBM3", "H100 SXM")),
    "h100-pcie": Gpu(756e12, 80, 2.00, ("H100 PCIe",)),
    "h200": Gpu(989e12, 141, 3.50, ("H200",)),
    "b200": Gpu(2250e12, 180, 5.50, ("B200",)),
    "a100": Gpu(312e12, 80, 1.50, ("A100-SXM4-80GB", "A100 80GB")),
    "a100-40gb": Gpu(312e12, 40, 1.20, ("A100-SXM4-40GB", "A100-PCIE-40GB", "A100 40GB")),
    "l40s": Gpu(362e12, 48, 1.00, ("L40S",)),
    "a10": Gpu(125e12, 24, 0.75, ("A10",)),
    "l4": Gpu(121e12, 24, 0.70, ("L4",)),
    "rtx4090": Gpu(165e12, 24, 0.40, ("RTX 4090",)),
    "mi300x": Gpu(1307e12, 192, 3.00, ("MI300X",)),
}


def gpu_named(device_name: str) -> Gpu | None:
    """The table entry for a CUDA device name, the longest matching name winning ("A10" is
    also in "A100"); None for a GPU not in the table."""
    matches = [(len(name), gpu) for gpu in GPUS.values() for name in gpu.device_names if name in device_name]
    return max(matches, key=lambda m: m[0])[1] if matches else None


def peak_flops_for(device: torch.device, configured: float | None = None) -> float | None:
    """Peak FLOP/s for MFU: ``configured`` when given, else the table's for a known GPU, else None."""
    import torch

    if configured is not None:
        return configured
    if device.type == "cuda":
        gpu = gpu_named(torch.cuda.get_device_name(device))
        return gpu.peak_bf16_flops if gpu else None
    return None


def default_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    """``requested`` as a device; "auto" is CUDA when available, else CPU. A CUDA device is
    this process's GPU, ``local_rank``."""
    import torch

    device_type = ("cuda" if torch.cuda.is_available() else "cpu") if requested == "auto" else requested
    return torch.device(device_type, local_rank) if device_type == "cuda" else torch.device(device_type)
