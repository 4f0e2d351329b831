// ops.cu: the table of the CUDA backend's entry points (cuda.h), the one
// symbol kernels/cpu/device.c looks up in libelastic_cuda.so.
#include "common.cuh"

extern "C" const cuda_ops* elastic_cuda_ops(void) {
    static const cuda_ops ops = {
        .init = cuda_init,
        .set_fatal = cuda_set_fatal,
        .set_tf32 = cuda_set_tf32,
        .alloc = cuda_alloc,
        .free = cuda_free,
        .zero = cuda_zero,
        .to_device = cuda_to_device,
        .to_host = cuda_to_host,
        .copy = cuda_copy,
        .sync = cuda_sync,
        .residual_forward = cuda_residual_forward,
        .residual_backward = cuda_residual_backward,
        .gelu_forward = cuda_gelu_forward,
        .gelu_backward = cuda_gelu_backward,
        .silu_forward = cuda_silu_forward,
        .silu_backward = cuda_silu_backward,
        .mul_forward = cuda_mul_forward,
        .mul_backward = cuda_mul_backward,
        .dropout_forward = cuda_dropout_forward,
        .dropout_backward = cuda_dropout_backward,
        .adamw_update = cuda_adamw_update,
        .layernorm_forward = cuda_layernorm_forward,
        .layernorm_backward = cuda_layernorm_backward,
        .matmul_forward = cuda_matmul_forward,
        .matmul_backward = cuda_matmul_backward,
        .embedding_forward = cuda_embedding_forward,
        .embedding_backward = cuda_embedding_backward,
        .rows_gather = cuda_rows_gather,
        .rows_scatter = cuda_rows_scatter,
        .sum_squares = cuda_sum_squares,
        .crossentropy_tied = cuda_crossentropy_tied,
        .attention_forward = cuda_attention_forward,
        .attention_backward = cuda_attention_backward,
        .elu1_forward = cuda_elu1_forward,
        .elu1_backward = cuda_elu1_backward,
        .rope_forward = cuda_rope_forward,
        .rope_backward = cuda_rope_backward,
        .conv_causal_forward = cuda_conv_causal_forward,
        .conv_causal_backward = cuda_conv_causal_backward,
    };
    return &ops;
}
