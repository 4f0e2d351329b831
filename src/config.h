// config.h: the trainer's options, read from the command line and from a
// `key = value` file (--config FILE); the command line wins. Defines: config,
// config_defaults, config_parse, config_print, config_help, config_to_string,
// config_from_string.
#ifndef ELASTIC_CONFIG_H
#define ELASTIC_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#define CFG_STR 256

typedef struct {
    // data
    char data[CFG_STR];
    int L, stride, batch;
    // model
    char model[32];
    int d, layers, heads;
    double dropout;
    char attention[16];  // plain | fused
    int recompute;       // activations rebuilt in backward (FFN half; ELASTIC's mixer inputs)
    // ELASTIC
    int experts, chunk;
    int64_t mem_slots;
    int mem_topk, mem_heads, mem_dk;
    int no_memory;
    double mem_budget;  // MB per rank for the bank's shard (0: no limit)
    // RecGRELA
    int conv_kernel, no_local, no_gate;
    // optimisation
    double lr, beta1, beta2, eps, weight_decay;
    int warmup;
    char schedule[16];  // const | cosine
    int64_t steps;
    int epochs;
    uint64_t seed;
    int ce_block;
    int allreduce_overlap;  // each layer's dense gradients all-reduced as its backward ends
    // evaluation
    int64_t eval_every;
    int64_t eval_users;
    int patience;
    int mask_history;
    int sampled_negatives;
    int test;
    // running
    int log_every;
    int comm_stats;
    char metrics[CFG_STR];
    char ckpt_dir[CFG_STR];
    int64_t ckpt_every;
    int keep_last;
    char resume[CFG_STR];
    int resume_fallback;
    double max_loss, max_grad_norm;
    char on_divergence[8];
    int threads;
    char device[16];     // cpu | cuda
    char precision[16];  // fp32 | tf32
    char comm[16];
    char config[CFG_STR];
} config;

void config_defaults(config* c);
// Parses argv (argv[0] is the program). Returns 0 on success, 1 when --help
// was printed, -1 with a message in err[512] on a bad option or value.
int config_parse(config* c, int argc, char** argv, char* err);
// Checks ranges and combinations; -1 with err on failure.
int config_validate(const config* c, char* err);
void config_print(const config* c, FILE* f, const char* prefix);
void config_help(FILE* f, const char* prog);
// Serialises every option as "key = value\n" lines (for checkpoints).
char* config_to_string(const config* c);
// Compares a resumed run's options with its checkpoint's: -1 with err naming
// the first option that must be equal (it shapes the model or the trajectory)
// and differs; otherwise 0, with one line per allowed change (learning rate,
// schedule, steps...) in notes (empty when none).
int config_resume_check(const config* now, const config* then, char* err, char* notes,
                        size_t notes_len);
// Applies "key = value" lines; `origin` names the source in errors.
int config_apply_text(config* c, const char* text, const char* origin, char* err);

#endif
