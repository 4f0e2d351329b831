// test_config.c: options from the command line and from a config file.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

static int parse(config* c, const char* line, char* err) {
    char buf[1024], *argv[64];
    int argc = 0;
    snprintf(buf, sizeof buf, "prog %s", line);
    for (char* tok = strtok(buf, " "); tok && argc < 64; tok = strtok(NULL, " "))
        argv[argc++] = tok;
    config_defaults(c);
    return config_parse(c, argc, argv, err);
}

static void test_cli(void** state) {
    config c;
    char err[512];
    assert_int_equal(parse(&c, "--data x.h5 --L 50 --lr=0.002 --mask-history --d 32", err), 0);
    assert_string_equal(c.data, "x.h5");
    assert_int_equal(c.L, 50);
    assert_true(c.lr == 0.002);
    assert_int_equal(c.mask_history, 1);
    assert_int_equal(c.d, 32);
    assert_int_equal(c.heads, 2);  // default kept
    assert_int_equal(parse(&c, "--mask-history false --test no", err), 0);
    assert_int_equal(c.mask_history, 0);
    assert_int_equal(c.test, 0);
    assert_int_equal(parse(&c, "--bogus 3", err), -1);
    assert_non_null(strstr(err, "unknown option '--bogus'"));
    assert_int_equal(parse(&c, "--L ten", err), -1);
    assert_non_null(strstr(err, "--L"));
    assert_int_equal(parse(&c, "--attention slow", err), -1);
    assert_non_null(strstr(err, "fused|plain"));
    assert_int_equal(parse(&c, "--L", err), -1);
    assert_int_equal(parse(&c, "--data f --L 0", err), 0);
    assert_int_equal(config_validate(&c, err), -1);
    assert_non_null(strstr(err, "--L must be at least 1"));
    assert_int_equal(parse(&c, "--data f --batch 0", err), 0);
    assert_int_equal(config_validate(&c, err), -1);
    assert_non_null(strstr(err, "--batch"));
}

static void test_file_and_precedence(void** state) {
    char path[] = "/tmp/elastic_cfgXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE* f = fdopen(fd, "w");
    fprintf(
        f,
        "# comment\ndata = a.h5\nL = 77  # trailing\nweight_decay = 0.1\n\nmask-history = true\n");
    fclose(f);
    config c;
    char err[512], line[300];
    snprintf(line, sizeof line, "--L 9 --config %s", path);
    assert_int_equal(parse(&c, line, err), 0);
    assert_int_equal(c.L, 9);  // command line wins whatever the order
    assert_string_equal(c.data, "a.h5");
    assert_true(c.weight_decay == 0.1);
    assert_int_equal(c.mask_history, 1);
    // serialised config reads back to the same values
    char* text = config_to_string(&c);
    config d;
    config_defaults(&d);
    assert_int_equal(config_apply_text(&d, text, "ckpt", err), 0);
    strcpy(d.config, c.config);
    assert_int_equal(memcmp(&c, &d, sizeof c), 0);
    free(text);
    f = fopen(path, "w");
    fprintf(f, "L = 5\nnonsense line\n");
    fclose(f);
    snprintf(line, sizeof line, "--config %s", path);
    assert_int_equal(parse(&c, line, err), -1);
    assert_non_null(strstr(err, ":2: expected `key = value`"));
    snprintf(line, sizeof line, "--config /nonexistent/x.cfg");
    assert_int_equal(parse(&c, line, err), -1);
    assert_non_null(strstr(err, "/nonexistent/x.cfg"));
    remove(path);
}

// A resumed run: options that shape the model or trajectory must match, the
// learning rate and the like may change (and are listed), paths may change
// silently, and an option of another model is ignored.
static void test_resume_rules(void** state) {
    config then, now;
    char err[512], notes[1024];
    config_defaults(&then);
    strcpy(then.model, "elastic");
    now = then;
    assert_int_equal(config_resume_check(&now, &then, err, notes, sizeof notes), 0);
    assert_string_equal(notes, "");
    now.seed = 7;
    assert_int_equal(config_resume_check(&now, &then, err, notes, sizeof notes), -1);
    assert_non_null(strstr(err, "--seed is 7 here but 42"));
    now = then, now.mem_topk = 4;
    assert_int_equal(config_resume_check(&now, &then, err, notes, sizeof notes), -1);
    assert_non_null(strstr(err, "--mem-topk"));
    now = then, now.no_memory = 1;
    assert_int_equal(config_resume_check(&now, &then, err, notes, sizeof notes), -1);
    now = then, now.lr = 0.002, now.warmup = 5;
    strcpy(now.data, "moved.h5");
    strcpy(now.metrics, "m.jsonl");
    assert_int_equal(config_resume_check(&now, &then, err, notes, sizeof notes), 0);
    assert_non_null(strstr(notes, "--lr is 0.002 here, 0.001 in the checkpoint"));
    assert_non_null(strstr(notes, "--warmup is 5 here, 0"));
    assert_null(strstr(notes, "--data"));
    assert_null(strstr(notes, "--metrics"));
    now = then, now.no_gate = 1;  // a RecGRELA option, ignored for ELASTIC
    assert_int_equal(config_resume_check(&now, &then, err, notes, sizeof notes), 0);
    strcpy(then.model, "recgrela");
    now = then, now.no_gate = 1;
    assert_int_equal(config_resume_check(&now, &then, err, notes, sizeof notes), -1);
    assert_non_null(strstr(err, "--no-gate"));
}

static void test_value_messages(void** state) {
    config c;
    char err[512];
    assert_int_equal(parse(&c, "--seed -1", err), -1);
    assert_non_null(strstr(err, "bad value '-1' for --seed (a non-negative integer)"));
    assert_int_equal(parse(&c, "--mask-history maybe", err), -1);
    assert_non_null(strstr(err, "bad value 'maybe' for --mask-history (true or false)"));
    assert_int_equal(parse(&c, "--mask-history --L 5", err), 0);  // a flag alone
    assert_int_equal(c.mask_history, 1);
    assert_int_equal(c.L, 5);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cli),
        cmocka_unit_test(test_file_and_precedence),
        cmocka_unit_test(test_resume_rules),
        cmocka_unit_test(test_value_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
