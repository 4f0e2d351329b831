// cuda.h (private to kernels/): the CUDA backend, a shared library
// (libelastic_cuda.so, built from kernels/cuda/*.cu with cuBLAS) that
// kernels/cpu/device.c loads with dlopen only when --device cuda is chosen, so
// that a CPU run neither loads nor maps the CUDA libraries. Its one export,
// elastic_cuda_ops, returns the table below, whose entries ops.h lists.
#ifndef ELASTIC_CUDA_H
#define ELASTIC_CUDA_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
#define CUDA_OP(ret, name, params) ret(*name) params;
#include "ops.h"
#undef CUDA_OP
} cuda_ops;

#ifdef __cplusplus
extern "C" {
#endif
const cuda_ops* elastic_cuda_ops(void);
#ifdef __cplusplus
}
#endif

#endif
