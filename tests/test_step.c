// test_step.c: the shared training step's memory-bank update: over several
// steps from a mid-training state, each step's bank rows equal a dense Adam
// on the summed row gradients with the global step; other rows (and their
// moments) do not move.
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
            for (int k = 0; k < d; k++)
                gsum[(size_t)row * d + k] += m->bank_grad_rows[(size_t)i * d + k];
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bank_adam_uses_global_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
