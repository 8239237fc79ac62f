// Kernels of the coupled Newton–Schulz iteration for the square root of M = Σ₁Σ₂ (d × d, float64,
// row-major). Y₀ = M/c, Z₀ = I with c = ‖M‖_F; each step
//     T = ½(3I − Z Y)          one GEMM whose epilogue forms T
//     Y ← Y T,  Z ← T Z        one launch computing both products (grid.z = 2), whose epilogue
//                              reduces ‖Y_{k+1} − Y_k‖²_F and ‖Y_k‖²_F for the stopping test
// so Y → (M/c)^½ and Z → (M/c)^−½. M's eigenvalues are those of the symmetric semidefinite
// Σ₁^½ Σ₂ Σ₁^½, so after Frobenius scaling they lie in [0, 1], where the iteration converges.
#pragma once

#include "cuda/kernel_prelude.cuh"
#include "cuda/tile_product.cuh"

namespace fastfid::kernels {

enum class GemmEpilogue : int {
    store,             // C = A B
    newton_schulz_t,   // C = 1.5 I − 0.5 A B
    store_with_step,   // C = A B; product 0 adds ‖C − A‖²_F to reduction[0] and ‖A‖²_F to reduction[1]
};

// Up to two independent products of one launch, selected by blockIdx.z.
struct GemmBatch {
    const double* a[2];
    const double* b[2];
    double* c[2];
};

template <GemmEpilogue Epilogue>
__global__ void __launch_bounds__(kTileThreads)
gemm_kernel(GemmBatch batch, int64_t d, double* reduction) {
    __shared__ StagedPanel a_tile;  // a_tile[k][i] = A[i0 + i][k0 + k]
    __shared__ StagedPanel b_tile;  // b_tile[k][j] = B[k0 + k][j0 + j]
    __shared__ double scratch[kTileThreads];
    const bool first = blockIdx.z == 0;  // selects, rather than indexes: keeps the pointers in registers
    const double* a = first ? batch.a[0] : batch.a[1];
    const double* b = first ? batch.b[0] : batch.b[1];
    double* c = first ? batch.c[0] : batch.c[1];
    const int64_t i0 = static_cast<int64_t>(blockIdx.y) * kTile, j0 = static_cast<int64_t>(blockIdx.x) * kTile;

    MicroTile acc = {};
    for (int64_t k0 = 0; k0 < d; k0 += kTileDepth) {
        for (int e = threadIdx.x; e < kTileDepth * kTile; e += kTileThreads) {
            const int ai = e / kTileDepth, ak = e % kTileDepth;  // A read along its rows
            a_tile[ak][ai] = (i0 + ai < d && k0 + ak < d) ? a[(i0 + ai) * d + k0 + ak] : 0.0;
            const int bk = e / kTile, bj = e % kTile;            // B read along its rows
            b_tile[bk][bj] = (k0 + bk < d && j0 + bj < d) ? b[(k0 + bk) * d + j0 + bj] : 0.0;
        }
        __syncthreads();
        add_tile_products(a_tile, b_tile, acc);
        __syncthreads();
    }

    const bool track_step = Epilogue == GemmEpilogue::store_with_step && first;
    double change = 0, norm = 0;
    for (int i = 0; i < kMicroTile; ++i) {
        const int64_t gi = i0 + micro_row(i);
        for (int j = 0; j < kMicroTile; ++j) {
            const int64_t gj = j0 + micro_col(j);
            if (gi >= d || gj >= d) continue;
            if (Epilogue == GemmEpilogue::newton_schulz_t) {
                c[gi * d + gj] = (gi == gj ? 1.5 : 0.0) - 0.5 * acc[i][j];
            } else {
                c[gi * d + gj] = acc[i][j];
            }
            if (track_step) {
                const double previous = a[gi * d + gj];
                change += (acc[i][j] - previous) * (acc[i][j] - previous);
                norm += previous * previous;
            }
        }
    }
    if (track_step) {  // uniform per block: every thread of it takes part in the reductions
        block_sum_into(change, scratch, reduction);
        block_sum_into(norm, scratch, reduction + 1);
    }
}

constexpr int kReductionThreads = 256;

// *total += Σ data[e]² over e < size (grid-stride loop, one atomic per block).
__global__ void __launch_bounds__(kReductionThreads)
sum_of_squares_kernel(const double* data, int64_t size, double* total) {
    __shared__ double scratch[kReductionThreads];
    double partial = 0;
    for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < size;
         e += static_cast<int64_t>(gridDim.x) * blockDim.x)
        partial += data[e] * data[e];
    block_sum_into(partial, scratch, total);
}

// *total += Σ m[i][i] (one block).
__global__ void __launch_bounds__(kReductionThreads)
trace_kernel(const double* m, int64_t d, double* total) {
    __shared__ double scratch[kReductionThreads];
    double partial = 0;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) partial += m[i * d + i];
    block_sum_into(partial, scratch, total);
}

// Y₀ = M / √(*norm_squared) in place, Z₀ = I.
__global__ void start_kernel(double* y, double* z, int64_t d, const double* norm_squared) {
    const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
    if (e >= d * d) return;
    y[e] /= sqrt(*norm_squared);
    z[e] = e / d == e % d ? 1.0 : 0.0;
}

// out = in · (*norm_squared)^(power / 4): power 1 gives √c·Y = M^½, power −1 gives Z/√c = M^−½.
__global__ void rescale_kernel(const double* in, double* out, int64_t size, const double* norm_squared, int power) {
    const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
    if (e >= size) return;
    const double root_c = sqrt(sqrt(*norm_squared));
    out[e] = power > 0 ? in[e] * root_c : in[e] / root_c;
}

}  // namespace fastfid::kernels
