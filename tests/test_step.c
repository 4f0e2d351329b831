// test_step.c: the shared training step. Its memory-bank update: over several
// steps from a mid-training state, each step's bank rows equal a dense Adam
// on the summed row gradients with the global step; other rows (and their
// moments) do not move. The activations each model calls spare hold nothing
// backward reads (poisoned between forward and backward, the gradients are
// the same bit for bit), and the loss run in them trains as with its own
// memory.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "bank.h"
#include "model.h"
#include "step.h"

static void test_bank_adam_uses_global_step(void** state) {
    config cfg;
    config_defaults(&cfg);
    strcpy(cfg.model, "elastic");
    cfg.L = 8, cfg.d = 8, cfg.heads = 2, cfg.layers = 1, cfg.experts = 2, cfg.chunk = 4;
    cfg.mem_slots = 16, cfg.mem_topk = 2, cfg.mem_heads = 1, cfg.mem_dk = 4;
    cfg.dropout = 0.1, cfg.lr = 1e-2;
    const int B = 2, L = cfg.L, d = cfg.d, V = 21;
    char err[512];
    model* m = model_create(&cfg, V - 1, B, NULL, err);
    assert_non_null(m);
    assert_non_null(m->bank);
    m->init(m, 3);
    stepper sp;
    stepper_init(&sp, m, &cfg);
    const size_t nb = (size_t)m->bank->rows * d;
    // a state as after some training: moments that are not zero
    for (size_t i = 0; i < nb; i++) {
        m->bank->m[i] = (real)(0.01 * sin(0.7 * (double)i));
        m->bank->v[i] = (real)(1e-4 * (1.5 + cos(0.3 * (double)i)));
    }
    int32_t inputs[16], targets[16], pad[2] = {0, 3};
    for (int b = 0; b < B; b++)
        for (int t = 0; t < L; t++) {
            const int real_pos = t >= pad[b];
            inputs[b * L + t] = real_pos ? 1 + (b * 7 + t * 3) % (V - 1) : 0;
            targets[b * L + t] = real_pos ? 1 + (b * 5 + t * 11 + 2) % (V - 1) : 0;
        }
    real *p0 = malloc(nb * sizeof(real)), *m0 = malloc(nb * sizeof(real)),
         *v0 = malloc(nb * sizeof(real));
    double* gsum = malloc(nb * sizeof(double));
    uint8_t* hit = malloc((size_t)m->bank->rows);
    const comm c = {.rank = 0, .world = 1, .backend = COMM_LOCAL};
    const double b1 = cfg.beta1, b2 = cfg.beta2, eps = cfg.eps, lr = cfg.lr;
    for (int64_t t = 5; t <= 7; t++) {  // global steps 5, 6, 7 (a resumed run)
        memcpy(p0, m->bank->values, nb * sizeof(real));
        memcpy(m0, m->bank->m, nb * sizeof(real));
        memcpy(v0, m->bank->v, nb * sizeof(real));
        step_result r;
        assert_int_equal(stepper_run(&sp, &c, inputs, pad, targets, B, 0, 99 + t, lr, t, &r, err),
                         0);
        // the gradient rows of this step's backward, summed per row
        memset(gsum, 0, nb * sizeof(double));
        memset(hit, 0, (size_t)m->bank->rows);
        for (int64_t i = 0; i < m->n_bank_grads; i++) {
            const int32_t row = m->bank_grad_ids[i];
            hit[row] = 1;
            for (int k = 0; k < d; k++) gsum[(size_t)row * d + k] += model_bank_grad(m, i, k);
        }
        int touched = 0;
        for (int64_t row = 0; row < m->bank->rows; row++) {
            touched += hit[row];
            for (int k = 0; k < d; k++) {
                const size_t i = (size_t)row * d + k;
                if (!hit[row]) {  // lazy: not even the moments decay
                    assert_true(m->bank->values[i] == p0[i] && m->bank->m[i] == m0[i] &&
                                m->bank->v[i] == v0[i]);
                    continue;
                }
                const double g = gsum[i];
                const double mm = b1 * m0[i] + (1 - b1) * g, vv = b2 * v0[i] + (1 - b2) * g * g;
                const double mh = mm / (1 - pow(b1, (double)t)), vh = vv / (1 - pow(b2, (double)t));
                const double want = p0[i] - lr * mh / (sqrt(vh) + eps);
                assert_true(fabs(m->bank->m[i] - mm) <= 1e-6 * fabs(mm) + 1e-9);
                assert_true(fabs(m->bank->v[i] - vv) <= 1e-6 * fabs(vv) + 1e-12);
                assert_true(fabs(m->bank->values[i] - want) <=
                            1e-5 * fabs(lr * mh / (sqrt(vh) + eps)) + 1e-7);
            }
        }
        assert_true(touched > 0 && touched < m->bank->rows);  // some rows read, some not
    }
    free(p0), free(m0), free(v0), free(gsum), free(hit);
    stepper_free(&sp);
    model_free(m);
}

// A small configuration of each model (its variants by name).
static void small_config(config* cfg, const char* variant) {
    config_defaults(cfg);
    cfg->L = 12, cfg->d = 8, cfg->heads = 2, cfg->layers = 2, cfg->dropout = 0.2;
    cfg->experts = 2, cfg->chunk = 4, cfg->mem_slots = 16, cfg->mem_topk = 2;
    cfg->mem_heads = 1, cfg->mem_dk = 4;
    if (!strncmp(variant, "sasrec", 6)) {
        strcpy(cfg->model, "sasrec");
        strcpy(cfg->attention, strstr(variant, "plain") ? "plain" : "fused");
    } else {
        strcpy(cfg->model, !strncmp(variant, "elastic", 7) ? "elastic" : "recgrela");
    }
    cfg->recompute = strstr(variant, "recompute") != NULL;
    cfg->no_memory = strstr(variant, "nomem") != NULL;
}

static const char* VARIANTS[] = {"sasrec-fused",      "sasrec-plain",       "sasrec-recompute",
                                 "recgrela",          "recgrela-recompute", "elastic",
                                 "elastic-recompute", "elastic-nomem"};
enum { NV = sizeof VARIANTS / sizeof VARIANTS[0], SB = 3, SL = 12, SV = 23 };

// a batch of SB rows with some padding, and its targets
static void small_batch(int32_t* inputs, int32_t* pad, int32_t* targets) {
    const int pads[SB] = {0, 5, 11};
    for (int b = 0; b < SB; b++) {
        pad[b] = pads[b];
        for (int t = 0; t < SL; t++) {
            const int on = t >= pads[b];
            inputs[b * SL + t] = on ? 1 + (b * 7 + t * 3) % (SV - 1) : 0;
            targets[b * SL + t] = on ? 1 + (b * 5 + t * 11 + 2) % (SV - 1) : 0;
        }
    }
}

// forward, a fixed dout, backward into zeroed gradients; with poison, the
// spare activations are NaN between forward and backward
static void gradients(model* m, const int32_t* inputs, const int32_t* pad, int poison) {
    memset(m->grads, 0, m->n_params * sizeof(real));
    model_forward(m, inputs, pad, SB, 77);
    for (size_t i = 0; i < (size_t)SB * SL * m->d; i++)
        m->dout[i] = (real)(0.01 * sin(0.37 * (double)i + 1));
    if (poison)
        for (size_t i = 0; i < m->spare_floats; i++) m->spare[i] = (real)NAN;
    m->backward(m);
}

static void test_spare_activations_are_dead_between_passes(void** state) {
    (void)state;
    int32_t inputs[SB * SL], pad[SB], targets[SB * SL];
    small_batch(inputs, pad, targets);
    for (int v = 0; v < NV; v++) {
        config cfg;
        small_config(&cfg, VARIANTS[v]);
        char err[512];
        model* m = model_create(&cfg, SV - 1, SB, NULL, err);
        assert_non_null(m);
        m->ffn_rows = 8;  // several FFN blocks
        m->init(m, 5);
        assert_true(m->spare_floats > 0);
        real* want = malloc(m->n_params * sizeof(real));
        real* bank_want = NULL;
        gradients(m, inputs, pad, 0);
        memcpy(want, m->grads, m->n_params * sizeof(real));
        const size_t nb = (size_t)m->n_bank_grads * m->d;
        if (m->bank) {
            bank_want = malloc(nb * sizeof(real));
            for (size_t i = 0; i < nb; i++) bank_want[i] = model_bank_grad(m, i / m->d, i % m->d);
        }
        gradients(m, inputs, pad, 1);
        if (memcmp(want, m->grads, m->n_params * sizeof(real)))
            fail_msg("%s: backward read a spare activation", VARIANTS[v]);
        for (size_t i = 0; m->bank && i < nb; i++) {
            const real got = model_bank_grad(m, i / m->d, i % m->d);
            if (memcmp(&bank_want[i], &got, sizeof got))
                fail_msg("%s: the bank's gradients read a spare activation", VARIANTS[v]);
        }
        free(want), free(bank_want);
        model_free(m);
    }
}

// A forward whose caller reads only each row's last position (m->last_only:
// evaluation, serving) gives those rows as the whole forward does, every
// model and variant, with padding (a row of padding only included), at L 16
// (from 8 on the path is taken).
static void test_last_only_forward(void** state) {
    (void)state;
    enum { LB = 4, LL = 16 };
    int32_t inputs[LB * LL], pad[LB] = {0, 5, 15, 16};
    for (int b = 0; b < LB; b++)
        for (int t = 0; t < LL; t++)
            inputs[b * LL + t] = t >= pad[b] ? 1 + (b * 7 + t * 3) % 20 : 0;
    for (int v = 0; v < NV; v++) {
        config cfg;
        small_config(&cfg, VARIANTS[v]);
        cfg.L = LL;
        char err[512];
        model* m = model_create(&cfg, 20, LB, NULL, err);
        assert_non_null(m);
        m->init(m, 5);
        const int d = m->d;
        real* want = malloc((size_t)LB * d * sizeof(real));
        model_forward(m, inputs, pad, LB, 0);
        for (int b = 0; b < LB; b++)
            memcpy(want + b * d, m->out + ((size_t)b * LL + LL - 1) * d, d * sizeof(real));
        for (size_t i = 0; i < (size_t)LB * LL * d; i++) m->out[i] = (real)NAN;
        m->last_only = 1;
        model_forward(m, inputs, pad, LB, 0);
        m->last_only = 0;
        double worst = 0;
        for (int b = 0; b < LB; b++)
            for (int c = 0; c < d; c++) {
                const double a = m->out[((size_t)b * LL + LL - 1) * d + c], w = want[b * d + c];
                worst = fmax(worst, fabs(a - w) / (fabs(w) + 1e-3));
                if (!isfinite(a)) worst = INFINITY;
            }
        printf("# %s: last positions within %.2e of the whole forward's\n", VARIANTS[v], worst);
        if (!(worst < 1e-5))
            fail_msg("%s: the last-only forward differs (%.2e)", VARIANTS[v], worst);
        // a row's numbers do not depend on how many rows come with it (a rank's
        // share of a batch): the first two rows alone, bit for bit
        for (int b = 0; b < LB; b++)
            memcpy(want + b * d, m->out + ((size_t)b * LL + LL - 1) * d, d * sizeof(real));
        m->last_only = 1;
        model_forward(m, inputs, pad, 2, 0);
        m->last_only = 0;
        for (int b = 0; b < 2; b++)
            if (memcmp(want + b * d, m->out + ((size_t)b * LL + LL - 1) * d, d * sizeof(real)))
                fail_msg("%s: row %d differs in a batch of 2 from in a batch of %d", VARIANTS[v], b,
                         LB);
        free(want);
        model_free(m);
    }
}

// Three steps with the loss's scratch in the spare activations, and with its
// own (the spare hidden from the stepper): the same parameters bit for bit.
static void test_loss_in_spare_trains_the_same(void** state) {
    (void)state;
    int32_t inputs[SB * SL], pad[SB], targets[SB * SL];
    small_batch(inputs, pad, targets);
    const comm c = {.rank = 0, .world = 1, .backend = COMM_LOCAL};
    for (int v = 0; v < NV; v++) {
        config cfg;
        small_config(&cfg, VARIANTS[v]);
        cfg.ce_block = 5;  // several blocks, the same in both runs
        real* params[2] = {NULL, NULL};
        double loss[2] = {0, 0};
        for (int own = 0; own < 2; own++) {
            char err[512];
            model* m = model_create(&cfg, SV - 1, SB, NULL, err);
            assert_non_null(m);
            m->init(m, 5);
            if (own) m->spare_floats = 0;
            stepper sp;
            stepper_init(&sp, m, &cfg);
            assert_int_equal(sp.in_spare, !own);
            assert_int_equal(sp.ce_block, 5);
            for (int64_t t = 1; t <= 3; t++) {
                step_result r;
                assert_int_equal(
                    stepper_run(&sp, &c, inputs, pad, targets, SB, 0, 40 + t, 1e-2, t, &r, err), 0);
                loss[own] += r.loss;
            }
            params[own] = malloc(m->n_params * sizeof(real));
            memcpy(params[own], m->params, m->n_params * sizeof(real));
            if (own && memcmp(params[0], params[1], m->n_params * sizeof(real)))
                fail_msg("%s: the loss in the spare activations trains differently", VARIANTS[v]);
            stepper_free(&sp);
            model_free(m);
        }
        assert_true(loss[0] == loss[1]);
        free(params[0]), free(params[1]);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bank_adam_uses_global_step),
        cmocka_unit_test(test_spare_activations_are_dead_between_passes),
        cmocka_unit_test(test_loss_in_spare_trains_the_same),
        cmocka_unit_test(test_last_only_forward),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
