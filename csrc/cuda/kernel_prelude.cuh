// What every kernel header includes: the CUDA built-ins under nvcc, their emulation otherwise
// (csrc/simt), and the few device helpers both need to share one source.
//
// Kernels are entry points with C names (FASTFID_KERNEL): the host code launches them by name
// through the driver API (cuda/runtime.hpp), from the fatbin nvcc builds out of cuda/kernels.cu,
// or from the emulated driver, which finds the same functions compiled for the host.
#pragma once

#include <cstdint>

#include "core/half.hpp"
#include "cuda/device_types.hpp"

#if defined(__CUDACC__)
#define FASTFID_DEVICE __device__ __forceinline__
#define FASTFID_UNROLL _Pragma("unroll")
#define FASTFID_KERNEL extern "C" __global__
#else
#include <cmath>
#include <cstring>

#include "simt/simt.hpp"
#define FASTFID_DEVICE inline
#define FASTFID_UNROLL
// inline: the host build includes the kernels in more than one translation unit.
#define FASTFID_KERNEL extern "C" inline
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
constexpr int kReductionThreads = 256;

// Blocks of `threads` covering `items` (host side).
inline unsigned blocks_for(int64_t items, int threads) {
    return static_cast<unsigned>((items + threads - 1) / threads);
}

FASTFID_DEVICE int64_t global_thread() { return blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; }

enum class Reduce { sum, max, min };

template <Reduce Op>
FASTFID_DEVICE double combine(double a, double b) {
    if (Op == Reduce::sum) return a + b;
    if (Op == Reduce::max) return a > b ? a : b;
    return a < b ? a : b;
}

// Reduces `value` over the block; every thread gets the result. Every thread must call it.
// `scratch` is a __shared__ array of blockDim.x doubles (a power of two), free for reuse after.
template <Reduce Op>
FASTFID_DEVICE double block_reduce(double value, double* scratch) {
    const unsigned t = threadIdx.x;
    __syncthreads();  // the previous reduction's readers are done with scratch
    scratch[t] = value;
    __syncthreads();
    for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
        if (t < half) scratch[t] = combine<Op>(scratch[t], scratch[t + half]);
        __syncthreads();
    }
    return scratch[0];
}

// Sums `value` over the block into *total with one atomic; every thread must call it.
FASTFID_DEVICE void block_sum_into(double value, double* scratch, double* total) {
    const double sum = block_reduce<Reduce::sum>(value, scratch);
    if (threadIdx.x == 0) atomicAdd(total, sum);
}

// Warp-wide D += A·B on float64 8 × 8 × 4 tiles, for each pair of this lane's A fragments a[i] and B
// fragments b[j] (fragment layout of the PTX ISA, "mma.m8n8k4 with .f64": A[r][k] in lane 4r + k,
// B[k][c] in lane 4c + k, D[r][2t + {0, 1}] in lane 4r + t). On the FP64 tensor cores (DMMA) of
// sm_80 and later; the host never launches a kernel using it elsewhere.
template <int I, int J>
FASTFID_DEVICE void warp_mma_f64(double (&acc)[I][J][2], const double (&a)[I], const double (&b)[J]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    FASTFID_UNROLL
    for (int i = 0; i < I; ++i) {
        FASTFID_UNROLL
        for (int j = 0; j < J; ++j)
            asm volatile("mma.sync.aligned.m8n8k4.row.col.f64.f64.f64.f64 {%0, %1}, {%2}, {%3}, {%0, %1};"
                         : "+d"(acc[i][j][0]), "+d"(acc[i][j][1])
                         : "d"(a[i]), "d"(b[j]));
    }
#elif defined(__CUDA_ARCH__)
    __trap();
#elif !defined(__CUDACC__)
    simt::warp_mma_m8n8k4_f64(&acc[0][0][0], a, I, b, J);
#else
    (void)acc, (void)a, (void)b;  // nvcc's host pass: device code only
#endif
}

// A float rounded to TF32 (10 explicit mantissa bits), to nearest with ties away from zero, as
// cvt.rna.tf32.f32 does; kept in a float's bits, its low 13 bits zero. For finite inputs.
FASTFID_DEVICE float to_tf32(float x) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    uint32_t bits;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(bits) : "f"(x));
    return __uint_as_float(bits);
#else
    uint32_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    bits = (bits + 0x1000u) & ~0x1fffu;  // add half the dropped unit to the magnitude, then truncate
    return float_from_bits(bits);
#endif
}

// Warp-wide D += A·B on TF32 16 × 8 × 8 tiles with float32 accumulators (mma.m16n8k8.tf32), for each
// pair of this lane's A fragments a[i] (a0..a3) and B fragments b[j] (b0, b1); fragment layout of the
// PTX ISA, "mma.m16n8k8": with g = lane / 4 and t = lane % 4, a0..a3 = A[g][t], A[g + 8][t], A[g][t + 4],
// A[g + 8][t + 4]; b0, b1 = B[t][g], B[t + 4][g]; c0..c3 = D[g][2t], D[g][2t + 1], D[g + 8][2t],
// D[g + 8][2t + 1]. The operands must already be TF32 values (to_tf32). sm_80 and later.
template <int I, int J>
FASTFID_DEVICE void warp_mma_tf32(float (&acc)[I][J][4], const float (&a)[I][4], const float (&b)[J][2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    FASTFID_UNROLL
    for (int i = 0; i < I; ++i) {
        FASTFID_UNROLL
        for (int j = 0; j < J; ++j)
            asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                         "{%8, %9}, {%0, %1, %2, %3};"
                         : "+f"(acc[i][j][0]), "+f"(acc[i][j][1]), "+f"(acc[i][j][2]), "+f"(acc[i][j][3])
                         : "r"(__float_as_uint(a[i][0])), "r"(__float_as_uint(a[i][1])), "r"(__float_as_uint(a[i][2])),
                           "r"(__float_as_uint(a[i][3])), "r"(__float_as_uint(b[j][0])), "r"(__float_as_uint(b[j][1])));
    }
#elif defined(__CUDA_ARCH__)
    __trap();
#elif !defined(__CUDACC__)
    simt::warp_mma_m16n8k8_tf32(&acc[0][0][0], &a[0][0], I, &b[0][0], J);
#else
    (void)acc, (void)a, (void)b;  // nvcc's host pass: device code only
#endif
}

// A float rounded to bfloat16 (8 significant bits), to nearest with ties to even, as
// cvt.rn.bf16.f32 does; returned as its 16 bits. For finite inputs.
FASTFID_DEVICE uint16_t to_bfloat16_bits(float x) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    uint16_t bits;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(bits) : "f"(x));
    return bits;
#else
    uint32_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    bits += 0x7fffu + ((bits >> 16) & 1u);  // half the dropped unit, less one unless the kept part is odd
    return static_cast<uint16_t>(bits >> 16);
#endif
}

// Two 16-bit values in one register as mma takes them: `first` (the lower k, or column) in the low half.
FASTFID_DEVICE uint32_t pack_pair(uint16_t first, uint16_t second) {
    return static_cast<uint32_t>(first) | (static_cast<uint32_t>(second) << 16);
}

enum class HalfType { float16, bfloat16 };

// Warp-wide D += A·B on 16 × 8 × 16 tiles of float16 or bfloat16 with float32 accumulators
// (mma.m16n8k16, HMMA), for each pair of this lane's A fragments a[i] (4 registers of 2 values) and B
// fragments b[j] (2 registers); fragment layout of the PTX ISA, "mma.m16n8k16" with .f16/.bf16: with
// g = lane / 4 and t = lane % 4, a[i][0] = A[g][2t, 2t + 1], a[i][1] = A[g + 8][2t, 2t + 1],
// a[i][2] = A[g][2t + 8, 2t + 9], a[i][3] = A[g + 8][2t + 8, 2t + 9]; b[j][0] = B[2t, 2t + 1][g],
// b[j][1] = B[2t + 8, 2t + 9][g] (pack_pair's order); the accumulators as mma.m16n8k8's. sm_80 and later.
template <HalfType Type, int I, int J>
FASTFID_DEVICE void warp_mma_16bit(float (&acc)[I][J][4], const uint32_t (&a)[I][4], const uint32_t (&b)[J][2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    FASTFID_UNROLL
    for (int i = 0; i < I; ++i) {
        FASTFID_UNROLL
        for (int j = 0; j < J; ++j) {
            if constexpr (Type == HalfType::bfloat16)
                asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                             "{%8, %9}, {%0, %1, %2, %3};"
                             : "+f"(acc[i][j][0]), "+f"(acc[i][j][1]), "+f"(acc[i][j][2]), "+f"(acc[i][j][3])
                             : "r"(a[i][0]), "r"(a[i][1]), "r"(a[i][2]), "r"(a[i][3]), "r"(b[j][0]), "r"(b[j][1]));
            else
                asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                             "{%8, %9}, {%0, %1, %2, %3};"
                             : "+f"(acc[i][j][0]), "+f"(acc[i][j][1]), "+f"(acc[i][j][2]), "+f"(acc[i][j][3])
                             : "r"(a[i][0]), "r"(a[i][1]), "r"(a[i][2]), "r"(a[i][3]), "r"(b[j][0]), "r"(b[j][1]));
        }
    }
#elif defined(__CUDA_ARCH__)
    __trap();
#elif !defined(__CUDACC__)
    simt::warp_mma_m16n8k16(&acc[0][0][0], &a[0][0], I, &b[0][0], J, Type == HalfType::bfloat16);
#else
    (void)acc, (void)a, (void)b;  // nvcc's host pass: device code only
#endif
}

}  // namespace fastfid::kernels

// The probe run once per device before the kernels are trusted there: out[i] = i + 0.5.
FASTFID_KERNEL void fastfid_probe(double* out, int count) {
    const int i = static_cast<int>(threadIdx.x);
    if (i < count) out[i] = i + 0.5;
}

FASTFID_KERNEL void fastfid_fill_zero(double* data, int64_t size) {
    const int64_t i = fastfid::kernels::global_thread();
    if (i < size) data[i] = 0.0;
}
