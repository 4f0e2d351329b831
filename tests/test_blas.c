// test_blas.c: the choice of OpenBLAS core (pure), the re-exec's hand-over of
// OPENBLAS_CORETYPE to the new image, and the start-up line's wording.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "blas.h"

#define MARK "ELASTIC_BLAS_REEXEC"

static void clear_env(void) {
    assert_int_equal(unsetenv("OPENBLAS_CORETYPE"), 0);
    assert_int_equal(unsetenv(MARK), 0);
    assert_int_equal(unsetenv("ELASTIC_BLAS_FIX"), 0);
}

static void assert_choice(const char* want, const char* core, blas_level cpu, int amd,
                          const char* user, int fix) {
    const char* got = blas_core_choice(core, cpu, amd, user, fix);
    if (!want) {
        if (got)
            fail_msg("%s on level %d: wanted no change, got %s", core ? core : "(null)", cpu, got);
    } else {
        if (!got)
            fail_msg("%s on level %d: wanted %s, got no change", core ? core : "(null)", cpu, want);
        assert_string_equal(got, want);
    }
}

static void test_choice(void** state) {
    // the issue: Prescott on an AVX-512 Xeon
    assert_choice("SkylakeX", "Prescott", BLAS_AVX512, 0, NULL, 1);
    assert_choice("SkylakeX", "prescott", BLAS_AVX512, 0, NULL, 1);  // OpenBLAS ignores case
    assert_choice("Haswell", "Prescott", BLAS_AVX2, 0, NULL, 1);
    assert_choice("Zen", "Opteron", BLAS_AVX2, 1, NULL, 1);
    assert_choice("Sandybridge", "Nehalem", BLAS_AVX, 0, NULL, 1);
    assert_choice("SkylakeX", "Haswell", BLAS_AVX512, 0, NULL, 1);
    assert_choice("SkylakeX", "Zen", BLAS_AVX512, 1, NULL, 1);  // Zen 4 on OpenBLAS < 0.3.21
    // as strong as the CPU: nothing to do
    assert_choice(NULL, "Haswell", BLAS_AVX2, 0, NULL, 1);
    assert_choice(NULL, "Zen", BLAS_AVX2, 1, NULL, 1);
    assert_choice(NULL, "Excavator", BLAS_AVX2, 1, NULL, 1);
    assert_choice(NULL, "SkylakeX", BLAS_AVX512, 0, NULL, 1);
    assert_choice(NULL, "Cooperlake", BLAS_AVX512, 1, NULL, 1);
    assert_choice(NULL, "SapphireRapids", BLAS_AVX512, 0, NULL, 1);
    assert_choice(NULL, "Prescott", BLAS_SSE, 0, NULL, 1);
    // never a downgrade
    assert_choice(NULL, "SkylakeX", BLAS_AVX2, 0, NULL, 1);
    // the user's OPENBLAS_CORETYPE wins, whatever it says
    assert_choice(NULL, "Prescott", BLAS_AVX512, 0, "Prescott", 1);
    assert_choice(NULL, "Prescott", BLAS_AVX512, 0, "bogus", 1);
    assert_choice(NULL, "Core2", BLAS_AVX2, 0, "Haswell", 1);
    assert_choice("SkylakeX", "Prescott", BLAS_AVX512, 0, "", 1);  // empty is not a choice
    // the switch
    assert_choice(NULL, "Prescott", BLAS_AVX512, 0, NULL, 0);
    // names we cannot rank, and CPUs we cannot read, are left alone
    assert_choice(NULL, "Unknown", BLAS_AVX512, 0, NULL, 1);
    assert_choice(NULL, "Zen5", BLAS_AVX512, 1, NULL, 1);
    assert_choice(NULL, "", BLAS_AVX512, 0, NULL, 1);
    assert_choice(NULL, NULL, BLAS_AVX512, 0, NULL, 1);
    assert_choice(NULL, "Prescott", BLAS_UNKNOWN, 0, NULL, 1);
    assert_choice(NULL, "POWER9", BLAS_UNKNOWN, 0, NULL, 1);
}

static void test_levels(void** state) {
    // every x86 name of OpenBLAS's DYNAMIC_ARCH table (driver/others/dynamic.c) is ranked
    static const char* sse[] = {"Katmai",       "Coppermine", "Northwood", "Prescott",
                                "Banias",       "Atom",       "Core2",     "Penryn",
                                "Dunnington",   "Nehalem",    "Athlon",    "Opteron",
                                "Opteron_SSE3", "Barcelona",  "Nano",      "Bobcat"};
    for (size_t i = 0; i < sizeof sse / sizeof *sse; i++)
        assert_int_equal(blas_core_level(sse[i]), BLAS_SSE);
    assert_int_equal(blas_core_level("Sandybridge"), BLAS_AVX);
    assert_int_equal(blas_core_level("Bulldozer"), BLAS_AVX);
    assert_int_equal(blas_core_level("Piledriver"), BLAS_AVX);
    assert_int_equal(blas_core_level("Steamroller"), BLAS_AVX);
    assert_int_equal(blas_core_level("Haswell"), BLAS_AVX2);
    assert_int_equal(blas_core_level("Excavator"), BLAS_AVX2);
    assert_int_equal(blas_core_level("Zen"), BLAS_AVX2);
    assert_int_equal(blas_core_level("SkylakeX"), BLAS_AVX512);
    assert_int_equal(blas_core_level("Cooperlake"), BLAS_AVX512);
    assert_int_equal(blas_core_level("SapphireRapids"), BLAS_AVX512);
    assert_int_equal(blas_core_level("Unknown"), BLAS_UNKNOWN);
    // every core we switch to is one OpenBLAS 0.3.21 can be forced to (its
    // force_coretype stops before Cooperlake) and is as strong as the CPU
    for (int cpu = BLAS_SSE; cpu <= BLAS_AVX512; cpu++)
        for (int amd = 0; amd <= 1; amd++) {
            const char* c = blas_core_choice("Prescott", (blas_level)cpu, amd, NULL, 1);
            if (!c) continue;
            assert_true(!strcmp(c, "SkylakeX") || !strcmp(c, "Haswell") || !strcmp(c, "Zen") ||
                        !strcmp(c, "Sandybridge"));
            assert_int_equal(blas_core_level(c), cpu);
        }
#if defined(__x86_64__)
    int amd = -1;
    blas_level cpu = blas_cpu_level(&amd);
    assert_true(cpu >= BLAS_SSE && cpu <= BLAS_AVX512);  // x86-64 has SSE2 at least
    assert_true(amd == 0 || amd == 1);
    // this binary was built for this CPU (-march=native): the level matches what it was built for
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__)
    assert_int_equal(cpu, BLAS_AVX512);
#elif defined(__AVX2__) && defined(__FMA__)
    assert_int_equal(cpu, BLAS_AVX2);
#endif
#endif
}

// exec fails: -1, errno from execv, and the environment as it was
static void test_reexec_failure(void** state) {
    clear_env();
    char* argv[] = {"elastic_nope", NULL};
    errno = 0;
    assert_int_equal(blas_reexec("/nonexistent/elastic_nope", argv, "Prescott", "SkylakeX"), -1);
    assert_int_equal(errno, ENOENT);
    assert_null(getenv("OPENBLAS_CORETYPE"));
    assert_null(getenv(MARK));
    // values that were there are put back
    assert_int_equal(setenv("OPENBLAS_CORETYPE", "Nehalem", 1), 0);
    assert_int_equal(setenv(MARK, "Core2>Nehalem", 1), 0);
    assert_int_equal(blas_reexec("/nonexistent/elastic_nope", argv, "Prescott", "SkylakeX"), -1);
    assert_string_equal(getenv("OPENBLAS_CORETYPE"), "Nehalem");
    assert_string_equal(getenv(MARK), "Core2>Nehalem");
    clear_env();
}

// exec works: the new image sees OPENBLAS_CORETYPE and the loop guard, and
// gets the same argv
static void test_reexec_handover(void** state) {
    clear_env();
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (dup2(fd[1], 1) < 0) _exit(3);
        close(fd[0]);
        char* argv[] = {"sh",   "-c",    "echo \"$OPENBLAS_CORETYPE|$ELASTIC_BLAS_REEXEC|$0|$1\"",
                        "arg0", "arg 1", NULL};
        blas_reexec("/bin/sh", argv, "Prescott", "SkylakeX");
        _exit(4);
    }
    close(fd[1]);
    char out[256] = {0};
    ssize_t got = 0, n;
    while ((n = read(fd[0], out + got, sizeof out - 1 - (size_t)got)) > 0) got += n;
    close(fd[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_string_equal(out, "SkylakeX|Prescott>SkylakeX|arg0|arg 1\n");
}

// the loop guard and the user's setting: blas_autocorrect returns at once
static void test_autocorrect_returns(void** state) {
    clear_env();
    assert_int_equal(setenv(MARK, "Prescott>SkylakeX", 1), 0);
    char* argv[] = {"test_blas", NULL};
    blas_autocorrect(1, argv);
    clear_env();
    assert_int_equal(setenv("OPENBLAS_CORETYPE", "Prescott", 1), 0);
    blas_autocorrect(1, argv);
    clear_env();
}

static void test_describe(void** state) {
    clear_env();
    char buf[512], want[128];
    const char* core = blas_core_name();
    blas_describe(buf, sizeof buf);
    snprintf(want, sizeof want, "; core %s (", core);
    assert_non_null(strstr(buf, want));
    assert_non_null(strstr(buf, "OpenBLAS"));
#if defined(__x86_64__)
    assert_non_null(strstr(buf, "(CPU: "));
    // a re-exec's image: OPENBLAS_CORETYPE is the one the guard names
    assert_int_equal(setenv("OPENBLAS_CORETYPE", core, 1), 0);
    snprintf(want, sizeof want, "Prescott>%s", core);
    assert_int_equal(setenv(MARK, want, 1), 0);
    blas_describe(buf, sizeof buf);
    assert_non_null(strstr(buf, "; corrected from Prescott)"));
    // a user who set another value under an inherited guard: the user's
    assert_int_equal(setenv("OPENBLAS_CORETYPE", "Nehalem", 1), 0);
    blas_describe(buf, sizeof buf);
    assert_non_null(strstr(buf, "; set by OPENBLAS_CORETYPE=Nehalem"));
    assert_null(strstr(buf, "corrected"));
#endif
    clear_env();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_choice),
        cmocka_unit_test(test_levels),
        cmocka_unit_test(test_reexec_failure),
        cmocka_unit_test(test_reexec_handover),
        cmocka_unit_test(test_autocorrect_returns),
        cmocka_unit_test(test_describe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
