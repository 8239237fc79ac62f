// Kernels of the streaming statistics on the device. The state is (count, mean μ, co-moment
// C = Σ (x − μ)(x − μ)ᵀ, upper triangle of a row-major d × d array), all float64, as on the CPU.
//
// One batch X (n × d) is added in three stream-ordered launches, none of which waits for the host:
//   choose_shift        s = μ, or the batch's first row when the state is empty; notes the count
//                       the batch starts from and clears the flag
//   batch_comoment      B = Σ (x − s)(x − s)ᵀ (upper tiles only) and S = Σ (x − s), float64,
//                       flagging any non-finite value
//   apply_batch         unless flagged: C += B − S Sᵀ / n',  μ = s + S / n'   (n' = count + n), and
//                       the count, or the batch counted as skipped (one thread)
// With B separate from C, a batch holding NaN/Inf leaves the state exactly as it was; and the state
// changes in one launch only, so a launch refused by the driver leaves it whole too.
#pragma once

#include "cuda/kernel_prelude.cuh"
#include "cuda/tile_product.cuh"

namespace fastfid::kernels {

template <class Load>
FASTFID_DEVICE double feature_at(const FeatureBlock& x, int64_t row, int64_t col) {
    return Load::load(static_cast<const typename Load::Storage*>(x.data) + row * x.row_stride + col * x.col_stride);
}

template <class Load>
FASTFID_DEVICE void choose_shift(const FeatureBlock& x, const double* mean, double* shift, long long* counters) {
    const int64_t j = global_thread();
    if (j == 0) {  // nothing else of this launch reads these two slots
        counters[kBatchCount] = counters[kCount];
        counters[kBatchFlag] = 0;
    }
    if (j >= x.cols) return;
    shift[j] = counters[kCount] == 0 ? feature_at<Load>(x, 0, j) : mean[j];
}

// Upper-triangular tile t (row-major over tiles with ti ≤ tj) -> (ti, tj).
FASTFID_DEVICE void triangle_tile(int64_t t, int64_t tiles_per_side, int64_t& ti, int64_t& tj) {
    ti = 0;
    while (t >= tiles_per_side - ti) {
        t -= tiles_per_side - ti;
        ++ti;
    }
    tj = ti + t;
}

// grid.x: one block per upper tile; grid.y: slices of rows_per_slice rows, added atomically.
// `batch` (d × d) and `sums` (d) must be zero when grid.y > 1; with one slice they are written.
template <class Load>
FASTFID_DEVICE void batch_comoment(const FeatureBlock& x, const double* shift, int64_t rows_per_slice, double* batch,
                                   double* sums, long long* counters) {
    __shared__ StagedPanel left;   // left[k][c] = x[r0 + k][ti·64 + c] − shift
    __shared__ StagedPanel right;  // the same for the columns of tile tj
    const int64_t d = x.cols;
    const int64_t tiles_per_side = (d + kTile - 1) / kTile;
    int64_t ti, tj;
    triangle_tile(blockIdx.x, tiles_per_side, ti, tj);
    const int64_t row_begin = blockIdx.y * rows_per_slice;
    const int64_t row_end = row_begin + rows_per_slice < x.rows ? row_begin + rows_per_slice : x.rows;
    const bool diagonal = ti == tj;

    MicroTile acc = {};
    double column_sum = 0;  // diagonal tiles: thread c sums column ti·64 + c
    bool finite = true;
    for (int64_t r0 = row_begin; r0 < row_end; r0 += kTileDepth) {
        // Stage 16 rows × 64 columns of each side, widened to float64 and shifted.
        for (int e = threadIdx.x; e < kTileDepth * kTile; e += kTileThreads) {
            const int k = e / kTile, c = e % kTile;
            const int64_t row = r0 + k;
            const int64_t col_left = ti * kTile + c, col_right = tj * kTile + c;
            double a = 0, b = 0;
            if (row < row_end && col_left < d) a = feature_at<Load>(x, row, col_left) - shift[col_left];
            if (row < row_end && col_right < d) b = feature_at<Load>(x, row, col_right) - shift[col_right];
            finite = finite && is_finite(a) && is_finite(b);
            left[k][c] = a;
            right[k][c] = b;
        }
        __syncthreads();
        add_tile_products(left, right, acc);
        if (diagonal)
            for (int k = 0; k < kTileDepth; ++k) column_sum += right[k][threadIdx.x];
        __syncthreads();
    }
    if (!finite) counters[kBatchFlag] = 1;  // benign race: every writer stores 1

    const bool sliced = gridDim.y > 1;
    for (int i = 0; i < kMicroTile; ++i) {
        const int64_t gi = ti * kTile + micro_row(i);
        for (int j = 0; j < kMicroTile; ++j) {
            const int64_t gj = tj * kTile + micro_col(j);
            if (gi >= d || gj >= d || gi > gj) continue;
            double* out = batch + gi * d + gj;
            if (sliced) atomicAdd(out, acc[i][j]);
            else *out = acc[i][j];
        }
    }
    const int64_t gc = ti * kTile + threadIdx.x;
    if (diagonal && gc < d) {
        if (sliced) atomicAdd(sums + gc, column_sum);
        else sums[gc] = column_sum;
    }
}

}  // namespace fastfid::kernels

#define FASTFID_STATS_KERNELS_FOR(suffix, Load)                                                                 \
    FASTFID_KERNEL void fastfid_choose_shift_##suffix(fastfid::kernels::FeatureBlock x, const double* mean,      \
                                                      double* shift, long long* counters) {                     \
        fastfid::kernels::choose_shift<fastfid::kernels::Load>(x, mean, shift, counters);                       \
    }                                                                                                            \
    FASTFID_KERNEL void __launch_bounds__(fastfid::kernels::kTileThreads)                                        \
    fastfid_batch_comoment_##suffix(fastfid::kernels::FeatureBlock x, const double* shift, int64_t rows_per_slice, \
                                    double* batch, double* sums, long long* counters) {                         \
        fastfid::kernels::batch_comoment<fastfid::kernels::Load>(x, shift, rows_per_slice, batch, sums, counters); \
    }

FASTFID_STATS_KERNELS_FOR(float16, LoadFloat16)
FASTFID_STATS_KERNELS_FOR(bfloat16, LoadBfloat16)
FASTFID_STATS_KERNELS_FOR(float32, LoadFloat32)
FASTFID_STATS_KERNELS_FOR(float64, LoadFloat64)
#undef FASTFID_STATS_KERNELS_FOR

// Over the upper triangle, one thread per element; the diagonal threads also update μ, and thread 0
// commits the count (every other thread reads the batch's starting count, which nothing changes here).
FASTFID_KERNEL void fastfid_apply_batch(int64_t d, int64_t batch_rows, const double* batch, const double* sums,
                                        const double* shift, double* mean, double* comoment, long long* counters) {
    using namespace fastfid::kernels;
    const int64_t e = global_thread();
    const bool flagged = counters[kBatchFlag] != 0;
    if (e == 0) {
        if (flagged) counters[kSkippedBatches] += 1;
        else counters[kCount] = counters[kBatchCount] + batch_rows;
    }
    if (e >= d * d || flagged) return;
    const int64_t i = e / d, j = e % d;
    if (i > j) return;
    const double total = static_cast<double>(counters[kBatchCount] + batch_rows);
    comoment[e] += batch[e] - sums[i] * sums[j] / total;
    if (i == j) mean[i] = shift[i] + sums[i] / total;
}

// Chan's merge of state B into state A, in three launches (each reads what the next one changes).
// 1: C_A += C_B + δ δᵀ n_A n_B / n over the upper triangle, δ = μ_B − μ_A.
FASTFID_KERNEL void fastfid_merge_comoment(int64_t d, const double* mean, double* comoment, const long long* counters,
                                           const double* other_mean, const double* other_comoment,
                                           const long long* other_counters) {
    using namespace fastfid::kernels;
    const int64_t e = global_thread();
    if (e >= d * d) return;
    const int64_t i = e / d, j = e % d;
    if (i > j) return;
    const double na = static_cast<double>(counters[kCount]), nb = static_cast<double>(other_counters[kCount]);
    if (nb == 0) return;
    const double weight = na * nb / (na + nb);
    comoment[e] += other_comoment[e] + (other_mean[i] - mean[i]) * (other_mean[j] - mean[j]) * weight;
}

// 2: μ_A += δ n_B / n.
FASTFID_KERNEL void fastfid_merge_mean(int64_t d, double* mean, const long long* counters, const double* other_mean,
                                       const long long* other_counters) {
    using namespace fastfid::kernels;
    const int64_t i = global_thread();
    if (i >= d) return;
    const double na = static_cast<double>(counters[kCount]), nb = static_cast<double>(other_counters[kCount]);
    if (nb == 0) return;
    mean[i] += (other_mean[i] - mean[i]) * (nb / (na + nb));
}

// 3: the counts.
FASTFID_KERNEL void fastfid_merge_counters(long long* counters, const long long* other_counters) {
    using namespace fastfid::kernels;
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    counters[kCount] += other_counters[kCount];
    counters[kSkippedBatches] += other_counters[kSkippedBatches];
}
