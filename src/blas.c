// blas.c: the OpenBLAS core in use against the CPU's level, and the re-exec
// that corrects it (see blas.h).
#include "blas.h"

#include <cblas.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

// set by the re-exec, read by the new image: "from>target"
#define BLAS_MARK "ELASTIC_BLAS_REEXEC"

// OpenBLAS's x86 core names (driver/others/dynamic.c, 0.3.21 and later) by
// the instruction set of the CPUs they are for; 32-bit cores count as SSE.
static const struct {
    const char* name;
    blas_level level;
} CORES[] = {
    {"Katmai", BLAS_SSE},        {"Coppermine", BLAS_SSE},
    {"Northwood", BLAS_SSE},     {"Prescott", BLAS_SSE},
    {"Banias", BLAS_SSE},        {"Atom", BLAS_SSE},
    {"Core2", BLAS_SSE},         {"Penryn", BLAS_SSE},
    {"Dunnington", BLAS_SSE},    {"Nehalem", BLAS_SSE},
    {"Athlon", BLAS_SSE},        {"Opteron", BLAS_SSE},
    {"Opteron_SSE3", BLAS_SSE},  {"Barcelona", BLAS_SSE},
    {"Nano", BLAS_SSE},          {"Bobcat", BLAS_SSE},
    {"Sandybridge", BLAS_AVX},   {"Bulldozer", BLAS_AVX},
    {"Piledriver", BLAS_AVX},    {"Steamroller", BLAS_AVX},
    {"Haswell", BLAS_AVX2},      {"Excavator", BLAS_AVX2},
    {"Zen", BLAS_AVX2},          {"SkylakeX", BLAS_AVX512},
    {"Cooperlake", BLAS_AVX512}, {"SapphireRapids", BLAS_AVX512},
};

static const char* LEVEL_NAMES[] = {"sse", "avx", "avx2", "avx512"};

// errno of a failed re-exec in this process, 0 if none was tried or it worked
static int reexec_errno;

blas_level blas_cpu_level(int* amd) {
    *amd = 0;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    *amd = __builtin_cpu_is("amd") != 0;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return BLAS_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return BLAS_AVX2;
    if (__builtin_cpu_supports("avx")) return BLAS_AVX;
    return BLAS_SSE;
#else
    return BLAS_UNKNOWN;
#endif
}

blas_level blas_core_level(const char* core) {
    if (!core) return BLAS_UNKNOWN;
    for (size_t i = 0; i < sizeof CORES / sizeof CORES[0]; i++)
        if (!strcasecmp(core, CORES[i].name)) return CORES[i].level;
    return BLAS_UNKNOWN;
}

const char* blas_core_choice(const char* core_in_use, blas_level cpu, int amd, const char* user_env,
                             int fix_enabled) {
    if ((user_env && *user_env) || !fix_enabled) return NULL;
    blas_level have = blas_core_level(core_in_use);
    if (have == BLAS_UNKNOWN || cpu == BLAS_UNKNOWN || have >= cpu) return NULL;
    switch (cpu) {
        case BLAS_AVX512:
            return "SkylakeX";  // Cooperlake's sgemm is SkylakeX's, and 0.3.21 cannot force it
        case BLAS_AVX2:
            return amd ? "Zen" : "Haswell";
        case BLAS_AVX:
            return "Sandybridge";
        default:
            return NULL;
    }
}

const char* blas_core_name(void) {
    const char* c = openblas_get_corename();
    return c && *c ? c : "unknown";
}

static int fix_on(void) {
    const char* v = getenv("ELASTIC_BLAS_FIX");
    return !(v && (!strcmp(v, "0") || !strcasecmp(v, "off") || !strcasecmp(v, "no") ||
                   !strcasecmp(v, "false")));
}

// The core we corrected from, when this image is a re-exec whose
// OPENBLAS_CORETYPE is still the one we set; NULL otherwise (the user's).
static const char* corrected_from(char* from, size_t n) {
    const char* mark = getenv(BLAS_MARK);
    const char* env = getenv("OPENBLAS_CORETYPE");
    const char* gt = mark ? strchr(mark, '>') : NULL;
    if (!gt || !env || strcmp(gt + 1, env)) return NULL;
    snprintf(from, n, "%.*s", (int)(gt - mark), mark);
    return from;
}

// name=old, or name removed when old is NULL; the names are valid, so
// neither call can fail for want of anything but memory
static void restore_env(const char* name, const char* old) {
    if (old ? setenv(name, old, 1) : unsetenv(name))
        fprintf(stderr, "elastic: warning: cannot restore %s: %s\n", name, strerror(errno));
}

// No zero-initialised arrays before the exec: -march=native turns them into
// AVX-512 stores, and tests/cli/blas.sh runs this path on an emulated AVX2 CPU.
int blas_reexec(const char* exe, char** argv, const char* from, const char* target) {
    char mark[128], old_core[64], old_mark[128];
    const char* oc = getenv("OPENBLAS_CORETYPE");
    const char* om = getenv(BLAS_MARK);
    if (oc) snprintf(old_core, sizeof old_core, "%s", oc);
    if (om) snprintf(old_mark, sizeof old_mark, "%s", om);
    snprintf(mark, sizeof mark, "%s>%s", from, target);
    if (!setenv("OPENBLAS_CORETYPE", target, 1) && !setenv(BLAS_MARK, mark, 1)) {
        (void)fflush(NULL);  // a line lost here is no reason not to exec
        execv(exe, argv);
    }
    int e = errno;
    restore_env("OPENBLAS_CORETYPE", oc ? old_core : NULL);
    restore_env(BLAS_MARK, om ? old_mark : NULL);
    errno = e;
    return -1;
}

void blas_autocorrect(int argc, char** argv) {
    (void)argc;
    if (getenv(BLAS_MARK)) return;  // already re-executed once: never loop
    int amd = 0;
    blas_level cpu = blas_cpu_level(&amd);
    const char* core = blas_core_name();
    const char* target = blas_core_choice(core, cpu, amd, getenv("OPENBLAS_CORETYPE"), fix_on());
    if (!target) return;
    char from[64];
    snprintf(from, sizeof from, "%s", core);
    if (blas_reexec("/proc/self/exe", argv, from, target) < 0)
        reexec_errno = errno ? errno : ENOEXEC;
    fprintf(stderr,
            "elastic: warning: OpenBLAS uses the %s core on a CPU with %s; re-running with "
            "OPENBLAS_CORETYPE=%s failed (%s): continuing on %s, slower\n",
            from, LEVEL_NAMES[cpu], target, strerror(reexec_errno), from);
}

const char* blas_describe(char* buf, size_t n) {
    const char* cfg = openblas_get_config();
    const char* core = blas_core_name();
    int amd = 0;
    blas_level cpu = blas_cpu_level(&amd);
    const char* env = getenv("OPENBLAS_CORETYPE");
    char from[64], why[192];
    // what the CPU would get if nothing stood in the way
    const char* best = blas_core_choice(core, cpu, amd, NULL, 1);
    if (cpu == BLAS_UNKNOWN) {
        snprintf(why, sizeof why, "not x86: not checked");
    } else if (corrected_from(from, sizeof from)) {
        if (!strcasecmp(core, env))
            snprintf(why, sizeof why, "CPU: %s; corrected from %s", LEVEL_NAMES[cpu], from);
        else
            snprintf(why, sizeof why, "CPU: %s; detected %s, asked for %s, OpenBLAS gave %s",
                     LEVEL_NAMES[cpu], from, env, core);
    } else if (env && *env) {
        snprintf(why, sizeof why, "CPU: %s; set by OPENBLAS_CORETYPE=%s%s%s", LEVEL_NAMES[cpu], env,
                 best ? ", weaker than " : "", best ? best : "");
    } else if (!best) {
        snprintf(why, sizeof why, "CPU: %s", LEVEL_NAMES[cpu]);
    } else if (!fix_on()) {
        snprintf(why, sizeof why, "CPU: %s; weaker than %s, not corrected: ELASTIC_BLAS_FIX=0",
                 LEVEL_NAMES[cpu], best);
    } else if (reexec_errno) {
        snprintf(why, sizeof why, "CPU: %s; weaker than %s, re-exec failed: %s", LEVEL_NAMES[cpu],
                 best, strerror(reexec_errno));
    } else {
        snprintf(why, sizeof why, "CPU: %s; weaker than %s", LEVEL_NAMES[cpu], best);
    }
    snprintf(buf, n, "%s; core %s (%s)", cfg ? cfg : "OpenBLAS (no config string)", core, why);
    return buf;
}
