"""Where a run ran: versions, CPU and, in tensor mode, torch's threads and device.

One function for every record that says so (ablate's run files and results.json); it reads torch
only if something else already imported it, so scalar mode stays standard-library only.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

from microgpt import __version__


def machine() -> dict:
    """The machine and versions a benchmark's figures belong to (bench/*.py)."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": _torch_version(),
    }


def _torch_version() -> str | None:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def environment(gpt=None) -> dict:
    """The versions and the machine; with a tensor-mode `gpt`, also torch's threads and the
    device it resolved (and the GPU's name on CUDA)."""
    torch_version = _torch_version()
    env = {
        "microgpt": __version__,
        "python": platform.python_version(),
        "torch": torch_version,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
    }
    placement = getattr(gpt, "placement", None)  # where TensorGPT resolved --device
    if placement is not None and "torch" in sys.modules:
        torch = sys.modules["torch"]
        device = str(placement.device)
        env.update(torch_threads=torch.get_num_threads(), device=device)
        if device.startswith("cuda"):
            env["gpu"] = torch.cuda.get_device_name(placement.device)
    return env


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
