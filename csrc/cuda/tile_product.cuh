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

}  // namespace fastfid::kernels
