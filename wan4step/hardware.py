"""What machine are we on: GPU name, VRAM, compute capability, RAM, disk.

Every value can be overridden by the caller, so users can plan for a card they
don't have; detection never raises (a CPU-only machine is a valid answer).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass

import torch

GiB = 1024**3


@dataclass
class GPUInfo:
    index: int
    name: str
    total_bytes: int
    free_bytes: int
    capability: tuple[int, int]

    @property
    def fp8_tensor_cores(self) -> bool:
        """sm_89 (Ada), sm_90 (Hopper), sm_100/120 (Blackwell) have FP8 MMA; sm_86 (Ampere) has not."""
        return self.capability >= (8, 9)

    @property
    def nvfp4(self) -> bool:
        return self.capability >= (10, 0)

    @property
    def arch(self) -> str:
        return f"sm_{self.capability[0]}{self.capability[1]}"


@dataclass
class MachineInfo:
    gpus: list[GPUInfo]
    ram_total_bytes: int
    ram_available_bytes: int
    disk_free_bytes: int | None
    torch_version: str
    cuda_version: str | None

    @property
    def gpu(self) -> GPUInfo | None:
        return self.gpus[0] if self.gpus else None

    def as_dict(self) -> dict:
        d = asdict(self)
        d["gpus"] = [dict(asdict(g), arch=g.arch, fp8_tensor_cores=g.fp8_tensor_cores) for g in self.gpus]
        return d

    def summary(self) -> str:
        lines = []
        if not self.gpus:
            lines.append("GPU: none found (CPU only: everything runs, slowly)")
        for g in self.gpus:
            lines.append(
                f"GPU {g.index}: {g.name}, {g.total_bytes / GiB:.1f} GiB total, {g.free_bytes / GiB:.1f} GiB free, "
                f"{g.arch} ({'FP8 tensor cores' if g.fp8_tensor_cores else 'no FP8 tensor cores'})"
            )
        lines.append(f"RAM: {self.ram_total_bytes / GiB:.1f} GiB total, {self.ram_available_bytes / GiB:.1f} GiB available")
        if self.disk_free_bytes is not None:
            lines.append(f"Disk free: {self.disk_free_bytes / GiB:.1f} GiB")
        lines.append(f"torch {self.torch_version}, CUDA {self.cuda_version or 'none'}")
        return "\n".join(lines)


def _ram() -> tuple[int, int]:
    try:
        import psutil

        vm = psutil.virtual_memory()
        return int(vm.total), int(vm.available)
    except ImportError:  # psutil is a ComfyUI dependency, but stay importable without it
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return int(pages), int(avail)


def detect_gpus() -> list[GPUInfo]:
    gpus: list[GPUInfo] = []
    if not torch.cuda.is_available():
        return gpus
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        free, total = torch.cuda.mem_get_info(i)
        gpus.append(GPUInfo(i, props.name, int(total), int(free), (props.major, props.minor)))
    return gpus


def detect(disk_path: str | None = None) -> MachineInfo:
    total, avail = _ram()
    disk = None
    if disk_path:
        try:
            disk = shutil.disk_usage(disk_path).free
        except OSError:
            disk = None
    return MachineInfo(
        gpus=detect_gpus(),
        ram_total_bytes=total,
        ram_available_bytes=avail,
        disk_free_bytes=disk,
        torch_version=torch.__version__,
        cuda_version=torch.version.cuda,
    )


def cpu_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX).

    Measured on the H100 host's CPU (16 cores): a UMT5-XXL encode took 2.1 s in bf16
    against 8.6 s in fp32; CPUs without these units emulate bf16 and are faster in fp32.
    """
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    for name in probes:
        fn = getattr(torch.cpu, name, None)
        try:
            if fn is not None and fn():
                return True
        except RuntimeError:
            continue
    return False
