// blas.h: which OpenBLAS core runs our matrix multiplies, and a correction
// when the library guessed a weaker one than the CPU supports. Defines:
// blas_level, blas_cpu_level, blas_core_level, blas_core_choice,
// blas_autocorrect, blas_reexec, blas_describe, blas_core_name.
// OpenBLAS (DYNAMIC_ARCH) picks its core from CPUID when the library loads;
// some CPUs it does not know (a VM reporting an odd family) get the SSE3
// "Prescott" kernels, 4-5x slower. The only way to change the core is
// OPENBLAS_CORETYPE in the environment before the library loads, so the
// correction sets it and re-executes the program once. A user's own
// OPENBLAS_CORETYPE always wins; ELASTIC_BLAS_FIX=0 turns the correction off.
#ifndef ELASTIC_BLAS_H
#define ELASTIC_BLAS_H

#include <stddef.h>

// ISA level of a CPU or of an OpenBLAS core's kernels; BLAS_UNKNOWN for a
// core name we cannot rank (never corrected) or a CPU that is not x86.
typedef enum {
    BLAS_UNKNOWN = -1,
    BLAS_SSE = 0,    // below AVX: Prescott, Core2, Nehalem, Opteron, ...
    BLAS_AVX = 1,    // Sandybridge, Bulldozer, Piledriver, Steamroller
    BLAS_AVX2 = 2,   // AVX2 + FMA: Haswell, Zen, Excavator
    BLAS_AVX512 = 3  // AVX-512 F/BW/VL/DQ: SkylakeX, Cooperlake, SapphireRapids
} blas_level;

// This CPU's level (gcc's __builtin_cpu_supports, which checks the OS saves
// the registers too); *amd set to 1 on an AMD CPU. BLAS_UNKNOWN off x86.
blas_level blas_cpu_level(int* amd);
// The level of an OpenBLAS x86 core name (case-insensitive, as OpenBLAS
// compares OPENBLAS_CORETYPE); BLAS_UNKNOWN for a name not in the table.
blas_level blas_core_level(const char* core);
// The core to switch to, or NULL to keep core_in_use: NULL when user_env
// (the user's OPENBLAS_CORETYPE) is set and not empty, when fix_enabled is 0,
// when either level is unknown, or when core_in_use is already as strong as
// the CPU. Otherwise SkylakeX (AVX-512), Zen (AVX2 on AMD) or Haswell (AVX2),
// Sandybridge (AVX). Pure: no environment, no CPU queries.
const char* blas_core_choice(const char* core_in_use, blas_level cpu, int amd, const char* user_env,
                             int fix_enabled);
// First thing in main, before MPI init and any thread: when blas_core_choice
// names a stronger core, sets OPENBLAS_CORETYPE and re-executes
// /proc/self/exe with the same argv (same pid, so mpirun is unaffected),
// once. On failure it warns on stderr and returns; blas_describe says so.
void blas_autocorrect(int argc, char** argv);
// The re-exec itself, exe being the program to run (/proc/self/exe): sets
// OPENBLAS_CORETYPE=target and the loop guard, execv. Returns only on
// failure, -1 with errno set and the environment as it was.
int blas_reexec(const char* exe, char** argv, const char* from, const char* target);
// One line for start-up headers, e.g. "OpenBLAS 0.3.21 ... Haswell MAX_THREADS=64;
// core Haswell (CPU: avx2; corrected from Prescott)". Returns buf.
const char* blas_describe(char* buf, size_t n);
// The core in use, as OpenBLAS names it ("unknown" if it does not say).
const char* blas_core_name(void);

#endif
