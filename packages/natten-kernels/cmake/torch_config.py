"""Prints CMake `set()` lines describing the installed torch, without find_package(Torch).

find_package(Torch) drags in CUDA toolkit detection on GPU machines; the CPU kernels only need headers,
libraries and the C++ ABI flag.
"""

import torch
import torch.utils.cpp_extension as ext


def cmake_list(items):
    return ";".join(str(i).replace("\\", "/") for i in items)


print(f'set(NATTEN_TORCH_VERSION "{torch.__version__}")')
print(f'set(NATTEN_TORCH_INCLUDE_DIRS "{cmake_list(ext.include_paths())}")')
print(f'set(NATTEN_TORCH_LIBRARY_DIRS "{cmake_list(ext.library_paths())}")')
print(f"set(NATTEN_TORCH_CXX11_ABI {int(torch._C._GLIBCXX_USE_CXX11_ABI)})")
