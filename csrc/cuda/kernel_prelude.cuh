// What every kernel header includes: the CUDA built-ins under nvcc, their emulation otherwise
// (csrc/simt), and the few device helpers both need to share one source.
#pragma once

#include <cstdint>

#include "core/half.hpp"
#include "cuda/device_types.hpp"

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#define FASTFID_DEVICE __device__ __forceinline__
#define FASTFID_UNROLL _Pragma("unroll")
#else
#include <cmath>

#include "simt/simt.hpp"
#define FASTFID_DEVICE inline
#define FASTFID_UNROLL
#endif

namespace fastfid::kernels {

struct LoadFloat16 {
    using Storage = uint16_t;
    static FASTFID_DEVICE double load(const Storage* p) { return half_to_double(*p); }
};
struct LoadBfloat16 {
    using Storage = uint16_t;
    static FASTFID_DEVICE double load(const Storage* p) { return bfloat16_to_float(*p); }
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
