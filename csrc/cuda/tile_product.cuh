// The register-tiled inner loop shared by the statistics and the GEMM kernels. A block of 64
// threads (8 × 8) owns a 64 × 64 output tile; thread t holds the 8 × 8 outputs at rows
// t / 8 + 8i and columns t % 8 + 8j. Per staged depth step a thread reads 16 doubles from shared
// memory for 64 FMAs, so the FP64 units, not shared-memory bandwidth, set the pace; the strided
// assignment makes a warp's reads broadcasts or runs of consecutive doubles (no bank conflicts).
#pragma once

#include "cuda/kernel_prelude.cuh"

namespace fastfid::kernels {

constexpr int kTile = 64;
constexpr int kTileDepth = 16;   // rows of the inner dimension staged in shared memory per step
constexpr int kMicroTile = 8;
constexpr int kTileThreads = (kTile / kMicroTile) * (kTile / kMicroTile);
// The FP64 tensor-core variant of a 64 × 64 tile: 4 warps, each a 32 × 32 quarter as 4 × 4 mma tiles.
constexpr int kTensorThreads = 128;
constexpr int kTensorStride = kTile + 4;  // padded panel rows: the mma fragment loads avoid bank conflicts

using StagedPanel = double[kTileDepth][kTile];

// Upper-triangular tile t (row-major over tiles with ti ≤ tj) -> (ti, tj).
FASTFID_DEVICE void triangle_tile(int64_t t, int64_t tiles_per_side, int64_t& ti, int64_t& tj) {
    ti = 0;
    while (t >= tiles_per_side - ti) {
        t -= tiles_per_side - ti;
        ++ti;
    }
    tj = ti + t;
}

// Tiles of the upper triangle of a d × d matrix (host side too).
inline int64_t triangle_tiles(int64_t d) {
    const int64_t side = (d + kTile - 1) / kTile;
    return side * (side + 1) / 2;
}
using MicroTile = double[kMicroTile][kMicroTile];

FASTFID_DEVICE int micro_row(int i) { return static_cast<int>(threadIdx.x) / kMicroTile + kMicroTile * i; }
FASTFID_DEVICE int micro_col(int j) { return static_cast<int>(threadIdx.x) % kMicroTile + kMicroTile * j; }

// acc[i][j] += Σ_k left[k][micro_row(i)] · right[k][micro_col(j)]
FASTFID_DEVICE void add_tile_products(const StagedPanel& left, const StagedPanel& right, MicroTile& acc) {
    FASTFID_UNROLL
    for (int k = 0; k < kTileDepth; ++k) {
        double a[kMicroTile], b[kMicroTile];
        FASTFID_UNROLL
        for (int i = 0; i < kMicroTile; ++i) a[i] = left[k][micro_row(i)];
        FASTFID_UNROLL
        for (int j = 0; j < kMicroTile; ++j) b[j] = right[k][micro_col(j)];
        FASTFID_UNROLL
        for (int i = 0; i < kMicroTile; ++i) {
            FASTFID_UNROLL
            for (int j = 0; j < kMicroTile; ++j) acc[i][j] += a[i] * b[j];
        }
    }
}

// The tensor-core variant's inner loop: acc[i][j] (this lane's 8 × 8 × 4 mma tiles) += the staged
// depth of left[k][r] (A = leftᵀ on the tile's rows) times right[k][c], over the warp's quarter at
// (warp_row, warp_col); panels are [kTileDepth][kTensorStride].
FASTFID_DEVICE void add_tile_products_tensor(const double* left, const double* right, int warp_row, int warp_col,
                                             double (&acc)[4][4][2]) {
    const int lane = static_cast<int>(threadIdx.x) % 32;
    const int group = lane / 4, member = lane % 4;  // PTX's groupID and threadID_in_group
    FASTFID_UNROLL
    for (int k0 = 0; k0 < kTileDepth; k0 += 4) {
        double a[4], b[4];
        FASTFID_UNROLL
        for (int i = 0; i < 4; ++i) a[i] = left[(k0 + member) * kTensorStride + warp_row + 8 * i + group];
        FASTFID_UNROLL
        for (int j = 0; j < 4; ++j) b[j] = right[(k0 + member) * kTensorStride + warp_col + 8 * j + group];
        warp_mma_f64(acc, a, b);
    }
}

// Where this lane's accumulator acc[i][j][c] lands in the tile: (row, column) within it.
FASTFID_DEVICE int tensor_row(int warp_row, int i) { return warp_row + 8 * i + static_cast<int>(threadIdx.x) % 32 / 4; }
FASTFID_DEVICE int tensor_col(int warp_col, int j, int c) {
    return warp_col + 8 * j + 2 * (static_cast<int>(threadIdx.x) % 4) + c;
}

// visit(row, column, value) for each of this thread's outputs within the 64 × 64 tile, by variant: the
// FMA micro tile, the DMMA fragments, or the m16n8 fragments (TF32 and 16-bit mma). Unrolled, so that
// the accumulators stay in registers (every index a constant).
template <class Visit>
FASTFID_DEVICE void for_each_micro_output(const MicroTile& acc, const Visit& visit) {
    FASTFID_UNROLL
    for (int i = 0; i < kMicroTile; ++i) {
        FASTFID_UNROLL
        for (int j = 0; j < kMicroTile; ++j) visit(micro_row(i), micro_col(j), acc[i][j]);
    }
}

template <class Visit>
FASTFID_DEVICE void for_each_dmma_output(int warp_row, int warp_col, const double (&acc)[4][4][2], const Visit& visit) {
    FASTFID_UNROLL
    for (int i = 0; i < 4; ++i) {
        FASTFID_UNROLL
        for (int j = 0; j < 4; ++j) {
            FASTFID_UNROLL
            for (int h = 0; h < 2; ++h) visit(tensor_row(warp_row, i), tensor_col(warp_col, j, h), acc[i][j][h]);
        }
    }
}

// --- TF32 tiles (mma.m16n8k8): the statistics' fast mode and the distance's 3×TF32 products --------
// A warp owns a 32 × 32 quarter of the 64 × 64 tile as 2 × 4 mma tiles of 16 × 8; panels of floats,
// [kTileDepth][kFloatStride], already TF32 values.
constexpr int kFloatStride = kTile + 8;  // padded float panel rows: conflict-free fragment loads
using FloatTile = float[2][4][4];

// This lane's A fragments (rows of the tile: left[k][r]) and B fragments (right[k][c]) of depth
// k0 .. k0 + 7, in warp_mma_tf32's layout.
FASTFID_DEVICE void load_tf32_fragments(const float* left, const float* right, int k0, int warp_row, int warp_col,
                                        float (&a)[2][4], float (&b)[4][2]) {
    const int lane = static_cast<int>(threadIdx.x) % 32, group = lane / 4, member = lane % 4;
    FASTFID_UNROLL
    for (int i = 0; i < 2; ++i) {
        const int r = warp_row + 16 * i + group;
        a[i][0] = left[(k0 + member) * kFloatStride + r];
        a[i][1] = left[(k0 + member) * kFloatStride + r + 8];
        a[i][2] = left[(k0 + member + 4) * kFloatStride + r];
        a[i][3] = left[(k0 + member + 4) * kFloatStride + r + 8];
    }
    FASTFID_UNROLL
    for (int j = 0; j < 4; ++j) {
        b[j][0] = right[(k0 + member) * kFloatStride + warp_col + 8 * j + group];
        b[j][1] = right[(k0 + member + 4) * kFloatStride + warp_col + 8 * j + group];
    }
}

// Where this lane's accumulator acc[i][j][h] of an m16n8 tile (TF32 or 16-bit mma) lands: (row, column) within the tile.
FASTFID_DEVICE int m16n8_row(int warp_row, int i, int h) {
    return warp_row + 16 * i + static_cast<int>(threadIdx.x) % 32 / 4 + 8 * (h / 2);
}
FASTFID_DEVICE int m16n8_col(int warp_col, int j, int h) {
    return warp_col + 8 * j + 2 * (static_cast<int>(threadIdx.x) % 4) + h % 2;
}

// acc += partial, in float64; partial = 0 (the float32 partial sums' flush).
FASTFID_DEVICE void flush_partials(FloatTile& partial, double (&acc)[2][4][4]) {
    FASTFID_UNROLL
    for (int i = 0; i < 2; ++i) {
        FASTFID_UNROLL
        for (int j = 0; j < 4; ++j) {
            FASTFID_UNROLL
            for (int h = 0; h < 4; ++h) {
                acc[i][j][h] += partial[i][j][h];
                partial[i][j][h] = 0.0f;
            }
        }
    }
}

template <class Visit>
FASTFID_DEVICE void for_each_m16n8_output(int warp_row, int warp_col, const double (&acc)[2][4][4], const Visit& visit) {
    FASTFID_UNROLL
    for (int i = 0; i < 2; ++i) {
        FASTFID_UNROLL
        for (int j = 0; j < 4; ++j) {
            FASTFID_UNROLL
            for (int h = 0; h < 4; ++h) visit(m16n8_row(warp_row, i, h), m16n8_col(warp_col, j, h), acc[i][j][h]);
        }
    }
}

// v ≈ hi + lo as two TF32 values (3×TF32): hi = tf32(float(v)), lo = tf32(float(v) − hi), the
// difference exact in float32; |v − hi − lo| ≤ 2⁻²¹·|v| (two roundings to 11 bits) + float's 2⁻²⁴.
FASTFID_DEVICE void split_tf32(double v, float& hi, float& lo) {
    const float f = static_cast<float>(v);
    hi = to_tf32(f);
    lo = to_tf32(f - hi);
}

// acc += the staged depth's A B in 3×TF32: hi·hi + hi·lo + lo·hi (lo·lo, ≤ 2⁻²² of the product, is
// left out), the three on the TF32 tensor cores into float32 accumulators.
FASTFID_DEVICE void add_tile_products_tf32x3(const float* left_hi, const float* left_lo, const float* right_hi,
                                             const float* right_lo, int warp_row, int warp_col, FloatTile& acc) {
    FASTFID_UNROLL
    for (int k0 = 0; k0 < kTileDepth; k0 += 8) {
        float a_hi[2][4], a_lo[2][4], b_hi[4][2], b_lo[4][2];
        load_tf32_fragments(left_hi, right_hi, k0, warp_row, warp_col, a_hi, b_hi);
        load_tf32_fragments(left_lo, right_lo, k0, warp_row, warp_col, a_lo, b_lo);
        warp_mma_tf32(acc, a_lo, b_hi);  // the small terms first
        warp_mma_tf32(acc, a_hi, b_lo);
        warp_mma_tf32(acc, a_hi, b_hi);
    }
}

}  // namespace fastfid::kernels
