// Inline functions in our headers are compiled into objects built with different -m flags (one per ISA
// variant, see CMakeLists.txt). The linker keeps one copy of each inline symbol, which could hand an
// AVX-512 copy to baseline code; an inline namespace per variant gives every variant its own symbols.
#pragma once

#ifdef NATTEN_ISA
#define NATTEN_ISA_NAMESPACE NATTEN_ISA
#else
#define NATTEN_ISA_NAMESPACE host
#endif
