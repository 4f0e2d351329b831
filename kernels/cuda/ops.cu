// ops.cu: the table of the CUDA backend's entry points (cuda.h), the one
// symbol kernels/cpu/device.c looks up in libelastic_cuda.so.
#include "common.cuh"

extern "C" const cuda_ops* elastic_cuda_ops(void) {
    static const cuda_ops ops = {
#define CUDA_OP(ret, name, params) .name = cuda_##name,
#include "ops.h"
#undef CUDA_OP
    };
    return &ops;
}
