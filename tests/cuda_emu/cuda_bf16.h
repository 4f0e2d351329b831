// cuda_bf16.h of the CUDA emulator (tests/cuda_emu/cuda_runtime.h): the bf16
// type the backend converts matrix operands to, the upper 16 bits of a float,
// and its conversion from float, rounded to nearest, ties to even.
#ifndef ELASTIC_CUDA_EMU_BF16_H
#define ELASTIC_CUDA_EMU_BF16_H

#include "cuda_runtime.h"

struct __nv_bfloat16 {
    uint16_t x;
};

inline __nv_bfloat16 __float2bfloat16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return {(uint16_t)((u >> 16) | 0x40)};  // a quiet NaN
    u += 0x7fffu + ((u >> 16) & 1);
    return {(uint16_t)(u >> 16)};
}

inline float __bfloat162float(__nv_bfloat16 b) {
    const uint32_t u = (uint32_t)b.x << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#endif
