// What every kernel header includes: the CUDA built-ins under nvcc, their emulation otherwise
// (csrc/simt), and the few device helpers both need to share one source.
#pragma once

#include <cstdint>

#include "cuda/device_types.hpp"

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#define FASTFID_DEVICE __device__ __forceinline__
#define FASTFID_UNROLL _Pragma("unroll")
#else
#include <cmath>
#include <cstring>

#include "simt/simt.hpp"
#define FASTFID_DEVICE inline
#define FASTFID_UNROLL
#endif

namespace fastfid::kernels {

FASTFID_DEVICE float float_from_bits(uint32_t bits) {
#if defined(__CUDACC__)
    return __uint_as_float(bits);
#else
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
#endif
}

// IEEE binary16 -> binary32 by moving the fields; every half is exactly a float.
FASTFID_DEVICE float half_to_float(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    const uint32_t exponent = (h >> 10) & 0x1fu;
    const uint32_t mantissa = h & 0x3ffu;
    if (exponent == 0) {  // zero or subnormal: mantissa · 2^-24, exact in float
        const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
        return sign ? -magnitude : magnitude;
    }
    if (exponent == 31) return float_from_bits(sign | 0x7f800000u | (mantissa << 13));  // Inf, NaN
    return float_from_bits(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

struct LoadFloat16 {
    using Storage = uint16_t;
    static FASTFID_DEVICE double load(const Storage* p) { return half_to_float(*p); }
};
struct LoadBfloat16 {
    using Storage = uint16_t;
    static FASTFID_DEVICE double load(const Storage* p) { return float_from_bits(static_cast<uint32_t>(*p) << 16); }
};
struct LoadFloat32 {
    using Storage = float;
    static FASTFID_DEVICE double load(const Storage* p) { return *p; }
};
struct LoadFloat64 {
    using Storage = double;
    static FASTFID_DEVICE double load(const Storage* p) { return *p; }
};

// x − x is 0 for finite x and NaN for Inf and NaN (no fast-math anywhere in this build).
FASTFID_DEVICE bool is_finite(double x) { return x - x == 0.0; }

constexpr int kElementwiseThreads = 256;

// Blocks of `threads` covering `items` (host side).
inline unsigned blocks_for(int64_t items, int threads) {
    return static_cast<unsigned>((items + threads - 1) / threads);
}

__global__ void fill_zero_kernel(double* data, int64_t size) {
    const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
    if (i < size) data[i] = 0.0;
}

// Sums `value` over the block into *total with one atomic; every thread must call it.
// `scratch` is a __shared__ array of blockDim.x doubles (a power of two).
FASTFID_DEVICE void block_sum_into(double value, double* scratch, double* total) {
    const unsigned t = threadIdx.x;
    scratch[t] = value;
    __syncthreads();
    for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
        if (t < half) scratch[t] += scratch[t + half];
        __syncthreads();
    }
    if (t == 0) atomicAdd(total, scratch[0]);
}

}  // namespace fastfid::kernels
