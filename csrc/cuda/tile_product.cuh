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

}  // namespace fastfid::kernels
