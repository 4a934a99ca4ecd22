import natten_kernels.triton.standalone as _standalone

# Without the compiled C++ library (e.g. it failed to build on the GPU machine), define the op schemas
# from Python so the Triton path still runs; a no-op when the library loaded.
_standalone.ensure_ops()
