// Runtime choice of the ISA variant of the CPU kernels: the only place that knows which variants exist.
#include <cstdlib>
#include <cstring>

#include "cpu/kernel_args.h"

namespace natten::cpu {

namespace isa_default {
const KernelTable& kernel_table();
}
#ifdef NATTEN_HAVE_AVX2
namespace isa_avx2 {
const KernelTable& kernel_table();
}
#endif
#ifdef NATTEN_HAVE_AVX512
namespace isa_avx512 {
const KernelTable& kernel_table();
}
#endif

namespace {

// NATTEN_CPU_CAPABILITY=default|avx2|avx512 caps the variant (like ATen's ATEN_CPU_CAPABILITY), e.g. to
// test the fallbacks on a newer CPU. It never raises the choice above what the CPU supports.
int capability_cap() {
  const char* env = std::getenv("NATTEN_CPU_CAPABILITY");
  if (env == nullptr || *env == '\0') return 2;
  if (std::strcmp(env, "default") == 0) return 0;
  if (std::strcmp(env, "avx2") == 0) return 1;
  return 2;
}

const KernelTable& select_kernels() {
  [[maybe_unused]] const int cap = capability_cap();
#ifdef NATTEN_HAVE_AVX512
  if (cap >= 2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma")) {
    return isa_avx512::kernel_table();
  }
#endif
#ifdef NATTEN_HAVE_AVX2
  if (cap >= 1 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return isa_avx2::kernel_table();
  }
#endif
  return isa_default::kernel_table();
}

}  // namespace

const KernelTable& kernel_table() {
  static const KernelTable& table = select_kernels();
  return table;
}

}  // namespace natten::cpu

// For diagnostics (natten.info): the variant in use, e.g. "avx512". Reachable through ctypes.
extern "C" __attribute__((visibility("default"))) const char* natten_cpu_capability() {
  return natten::cpu::kernel_table().name;
}
