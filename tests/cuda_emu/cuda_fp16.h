// cuda_fp16.h of the CUDA emulator (tests/cuda_emu/cuda_runtime.h): the IEEE
// half the loss keeps its logits in, and its conversions: from float rounded
// to nearest, ties to even (subnormals, overflow to infinity, NaN kept), and
// back exactly.
#ifndef ELASTIC_CUDA_EMU_FP16_H
#define ELASTIC_CUDA_EMU_FP16_H

#include "cuda_runtime.h"

struct __half {
    uint16_t x;
};

inline __half __float2half(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    u &= 0x7fffffffu;
    if (u >= 0x7f800000u) return {(uint16_t)(sign | (u > 0x7f800000u ? 0x7e00u : 0x7c00u))};
    if (u >= 0x477ff000u) return {(uint16_t)(sign | 0x7c00u)};  // 65520 and over: infinity
    if (u < 0x38800000u) {  // under 2^-14: a subnormal half (or 0), in units of 2^-24
        float a;
        memcpy(&a, &u, 4);
        return {(uint16_t)(sign | (uint16_t)lrintf(a * 16777216.0f))};
    }
    uint32_t h = ((((u >> 23) - 127 + 15) << 10) | ((u & 0x7fffffu) >> 13));
    const uint32_t rest = u & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1))) h++;  // a carry bumps the exponent
    return {(uint16_t)(sign | h)};
}

inline float __half2float(__half h) {
    const uint32_t sign = (uint32_t)(h.x & 0x8000u) << 16, e = (h.x >> 10) & 0x1fu,
                   m = h.x & 0x3ffu;
    if (e == 0) {
        const float f = ldexpf((float)m, -24);
        return sign ? -f : f;
    }
    const uint32_t u =
        e == 31 ? sign | 0x7f800000u | (m << 13) : sign | ((e - 15 + 127) << 23) | (m << 13);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#endif
