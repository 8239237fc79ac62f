// 16-bit floats (IEEE binary16 and bfloat16) widened exactly, for the CPU core and the kernels
// alike: every such value is exactly a float, found by moving bit fields.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define FASTFID_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FASTFID_HOST_DEVICE inline
#endif

namespace fastfid {

FASTFID_HOST_DEVICE float float_from_bits(uint32_t bits) {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(bits);
#else
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
#endif
}

FASTFID_HOST_DEVICE float half_to_float(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    const uint32_t exponent = (h >> 10) & 0x1fu;
    const uint32_t mantissa = h & 0x3ffu;
    if (exponent == 0) {  // zero or subnormal: mantissa · 2^-24, exact in float
        const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
        return sign ? -magnitude : magnitude;
    }
    if (exponent == 31) return float_from_bits(sign | 0x7f800000u | (mantissa << 13));  // Inf, NaN
    return float_from_bits(sign | ((exponent + 112u) << 23) | (mantissa << 13));    // rebias 15 -> 127
}

FASTFID_HOST_DEVICE double half_to_double(uint16_t h) { return half_to_float(h); }

FASTFID_HOST_DEVICE float bfloat16_to_float(uint16_t b) { return float_from_bits(static_cast<uint32_t>(b) << 16); }

}  // namespace fastfid
