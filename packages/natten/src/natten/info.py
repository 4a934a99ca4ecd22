"""``python -m natten.info``: versions, devices, and which backends are usable here and why not."""

from __future__ import annotations

import platform

import natten_kernels
import torch
from natten_kernels import env
from natten_kernels.backends import BACKENDS

import natten

CHECKS = (
    "has_cuda",
    "has_half",
    "has_bfloat",
    "has_fna",
    "has_gemm",
    "has_fp32_gemm",
    "has_tf32_gemm",
    "has_fp64_gemm",
)


def main() -> None:
    print(f"natten {natten.__version__}, natten-kernels {natten_kernels.__version__}")
    print(f"torch {torch.__version__}, python {platform.python_version()}, {platform.machine()}")
    print(f"cpu: {torch.get_num_threads()} threads, vector ISA {torch.backends.cpu.get_cpu_capability()}")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            print(f"cuda:{i}: {torch.cuda.get_device_name(i)}, SM{natten.get_device_cc(i)}")
    else:
        print("cuda: not available")
    print(f"environment checks (about {env.current_device()}; the CPU when torch sees no CUDA device):")
    for name in CHECKS:
        print(f"  {name}() = {getattr(env, name)()}")
    print("backends (dispatch order):")
    for backend in BACKENDS:
        why = backend.unavailable_reason()
        print(f"  {backend.describe()}")
        print(f"    -> {'usable' if why is None else 'unusable: ' + why}")
    for pkg, hint in (("natten_legacy", "natten-legacy"), ("natten_flops", "natten-flops fvcore")):
        try:
            __import__(pkg)
            print(f"{hint.split()[0]}: installed")
        except ImportError:
            print(f"{hint.split()[0]}: not installed (pip install {hint})")


if __name__ == "__main__":
    main()
