// Kernels of the streaming statistics on the device. The state is (count, mean μ, co-moment
// C = Σ (x − μ)(x − μ)ᵀ, upper triangle of a row-major d × d array), all float64, as on the CPU.
//
// One batch X (n × d) is added in three stream-ordered launches, none of which waits for the host,
// and none of which writes a d × d scratch:
//   choose_shift   s = μ, or the batch's first row when the state is empty; S = 0; notes the count
//                  the batch starts from; clears the flag
//   batch_sums     S = Σ (x − s) over the rows (column blocks × row slices, added atomically),
//                  flagging any non-finite value: every feature is read, widened, shifted and
//                  checked here, before anything of the state changes
//   batch_syrk     unless flagged: C += (X − s)ᵀ(X − s) − S Sᵀ / n' on the upper tiles, straight into
//                  C (row slices add atomically; slice 0 subtracts the rank-one term), μ = s + S / n'
//                  (the diagonal tiles of slice 0) and the count n' = count + n, or the batch
//                  counted as skipped (one thread)
// The state changes in the last launch only, so a batch holding NaN/Inf, or a launch the driver
// refuses, leaves it exactly as it was. batch_syrk comes in three variants with one contract: FP64
// FMAs on the CUDA cores (64 threads, an 8 × 8 register tile each), the FP64 tensor cores (DMMA,
// sm_80/90/100: 4 warps, a 32 × 32 warp tile of 8 × 8 × 4 mma each), both exact float64; and, on
// request, the fast variant: TF32 or split-bf16 tensor-core products with float32 partial sums
// (batch_syrk_fast, not exact).
#pragma once

#include <type_traits>

#include "cuda/kernel_prelude.cuh"
#include "cuda/tile_product.cuh"

namespace fastfid::kernels {

constexpr int kSumThreads = 256;
constexpr int kSumRows = 256;  // rows per block of batch_sums

template <class Load>
FASTFID_DEVICE double feature_at(const FeatureBlock& x, int64_t row, int64_t col) {
    return Load::load(static_cast<const typename Load::Storage*>(x.data) + row * x.row_stride + col * x.col_stride);
}

template <class Load>
FASTFID_DEVICE void choose_shift(const FeatureBlock& x, const double* mean, double* shift, double* sums,
                                 long long* counters) {
    const int64_t j = global_thread();
    if (j == 0) {  // nothing else of this launch touches these two slots
        counters[kBatchCount] = counters[kCount];
        counters[kBatchFlag] = 0;
    }
    if (j >= x.cols) return;
    shift[j] = counters[kCount] == 0 ? feature_at<Load>(x, 0, j) : mean[j];
    sums[j] = 0;
}

template <class Load>
FASTFID_DEVICE void batch_sums(const FeatureBlock& x, const double* shift, double* sums, long long* counters) {
    const int64_t j = global_thread();
    if (j >= x.cols) return;
    const double s = shift[j];
    double partial = 0;
    bool finite = true;
    // Blocks of kSumRows rows, grid-stride over grid.y (at most 65535 on a GPU).
    for (int64_t begin = static_cast<int64_t>(blockIdx.y) * kSumRows; begin < x.rows;
         begin += static_cast<int64_t>(gridDim.y) * kSumRows) {
        const int64_t end = begin + kSumRows < x.rows ? begin + kSumRows : x.rows;
        for (int64_t row = begin; row < end; ++row) {
            const double value = feature_at<Load>(x, row, j) - s;
            finite = finite && is_finite(value);
            partial += value;
        }
    }
    if (!finite) counters[kBatchFlag] = 1;  // benign race: every writer stores 1
    if (gridDim.y > 1) atomicAdd(sums + j, partial);
    else sums[j] = partial;
}

// What batch_syrk's blocks share: where the tile is, which rows, what n' is, and the commit.
struct SyrkTile {
    int64_t d, ti, tj, row_begin, row_end;
    double total;  // n' = count + n
    bool sliced, first_slice;

    // The launch's preamble: false when the batch is flagged (block 0 then counts it as skipped).
    FASTFID_DEVICE bool begin(const FeatureBlock& x, int64_t rows_per_slice, long long* counters) {
        if (counters[kBatchFlag] != 0) {
            if (blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0) counters[kSkippedBatches] += 1;
            return false;
        }
        d = x.cols;
        triangle_tile(blockIdx.x, (d + kTile - 1) / kTile, ti, tj);
        row_begin = static_cast<int64_t>(blockIdx.y) * rows_per_slice;
        row_end = row_begin + rows_per_slice < x.rows ? row_begin + rows_per_slice : x.rows;
        total = static_cast<double>(counters[kBatchCount] + x.rows);
        sliced = gridDim.y > 1;
        first_slice = blockIdx.y == 0;
        return true;
    }

    // C[gi][gj] += the block's partial product, less the rank-one term once (upper triangle only).
    FASTFID_DEVICE void add(double* comoment, const double* sums, int64_t gi, int64_t gj, double value) const {
        if (gi >= d || gj >= d || gi > gj) return;
        if (first_slice) value -= sums[gi] * sums[gj] / total;
        double* out = comoment + gi * d + gj;
        if (sliced) atomicAdd(out, value);
        else *out += value;
    }
    // add() for an output at (row, column) within the tile, as the for_each_*_output helpers visit.
    FASTFID_DEVICE auto adder(double* comoment, const double* sums) const {
        return [this, comoment, sums](int row, int column, double value) {
            add(comoment, sums, ti * kTile + row, tj * kTile + column, value);
        };
    }

    // μ on the diagonal tiles of slice 0 (`column` within the tile), the count in block 0.
    FASTFID_DEVICE void commit(const FeatureBlock& x, int column, const double* shift, const double* sums, double* mean,
                               long long* counters) const {
        const int64_t j = ti * kTile + column;
        if (first_slice && ti == tj && column < kTile && j < d) mean[j] = shift[j] + sums[j] / total;
        if (blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0) counters[kCount] = counters[kBatchCount] + x.rows;
    }
};

// Stages rows [r0, r0 + 16) of the tile's two column panels, widened to float64 and shifted
// (zeros past the ends). Panels are [kTileDepth][stride].
template <class Load, int Threads>
FASTFID_DEVICE void stage_panels(const FeatureBlock& x, const SyrkTile& tile, const double* shift, int64_t r0,
                                 double* left, double* right, int stride) {
    for (int e = threadIdx.x; e < kTileDepth * kTile; e += Threads) {
        const int k = e / kTile, c = e % kTile;
        const int64_t row = r0 + k;
        const int64_t col_left = tile.ti * kTile + c, col_right = tile.tj * kTile + c;
        left[k * stride + c] = row < tile.row_end && col_left < tile.d ? feature_at<Load>(x, row, col_left) - shift[col_left] : 0.0;
        right[k * stride + c] = row < tile.row_end && col_right < tile.d ? feature_at<Load>(x, row, col_right) - shift[col_right] : 0.0;
    }
}

// FP64 FMAs: 64 threads, thread t owning the 8 × 8 outputs at rows t / 8 + 8i, columns t % 8 + 8j.
template <class Load>
FASTFID_DEVICE void batch_syrk_fma(const FeatureBlock& x, const double* shift, const double* sums,
                                   int64_t rows_per_slice, double* mean, double* comoment, long long* counters) {
    __shared__ StagedPanel left;   // left[k][c] = x[r0 + k][ti·64 + c] − shift
    __shared__ StagedPanel right;  // the same for the columns of tile tj
    SyrkTile tile;
    if (!tile.begin(x, rows_per_slice, counters)) return;  // uniform: the flag is final before this launch
    MicroTile acc = {};
    for (int64_t r0 = tile.row_begin; r0 < tile.row_end; r0 += kTileDepth) {
        stage_panels<Load, kTileThreads>(x, tile, shift, r0, &left[0][0], &right[0][0], kTile);
        __syncthreads();
        add_tile_products(left, right, acc);
        __syncthreads();
    }
    for_each_micro_output(acc, tile.adder(comoment, sums));
    tile.commit(x, static_cast<int>(threadIdx.x), shift, sums, mean, counters);
}

// FP64 tensor cores: 4 warps, warp w owning the 32 × 32 quarter (w / 2, w % 2) of the tile as 4 × 4
// mma tiles of 8 × 8; per 4 staged rows each lane loads 4 A and 4 B fragments.
template <class Load>
FASTFID_DEVICE void batch_syrk_tensor(const FeatureBlock& x, const double* shift, const double* sums,
                                      int64_t rows_per_slice, double* mean, double* comoment, long long* counters) {
    __shared__ double left[kTileDepth * kTensorStride];
    __shared__ double right[kTileDepth * kTensorStride];
    SyrkTile tile;
    if (!tile.begin(x, rows_per_slice, counters)) return;
    const int warp = static_cast<int>(threadIdx.x) / 32;
    const int warp_row = (warp / 2) * 32, warp_col = (warp % 2) * 32;
    double acc[4][4][2] = {};
    for (int64_t r0 = tile.row_begin; r0 < tile.row_end; r0 += kTileDepth) {
        stage_panels<Load, kTensorThreads>(x, tile, shift, r0, left, right, kTensorStride);
        __syncthreads();
        // A = (X − s)ᵀ restricted to the tile's rows: A[r][k] = left[k][r]; B[k][c] = right[k][c].
        add_tile_products_tensor(left, right, warp_row, warp_col, acc);
        __syncthreads();
    }
    for_each_dmma_output(warp_row, warp_col, acc, tile.adder(comoment, sums));
    // 128 threads commit 64 columns: the first 64 take one each.
    tile.commit(x, static_cast<int>(threadIdx.x) < kTile ? static_cast<int>(threadIdx.x) : kTile, shift, sums, mean,
                counters);
}

// The opt-in fast variant, on the tensor cores with float32 partial sums over at most kFastRows rows,
// each then added to float64 accumulators; 4 warps, warp w owning the 32 × 32 quarter (w / 2, w % 2)
// as 2 × 4 mma tiles of 16 × 8. float32/float64 batches: each centred feature rounded to TF32
// (mma.m16n8k8). float16/bfloat16 batches: split-bf16 on the BF16 tensor cores (HMMA,
// mma.m16n8k16): v = float(x − s) as hi = bf16(v) and lo = bf16(v − hi), and the four products of
// (hi + lo)(hi + lo). Not exact: see the README's bounds.
constexpr int kFastRows = 256;

template <class Load>
constexpr bool kSplitBfloat16 = sizeof(typename Load::Storage) == 2;

// Stages rows [r0, r0 + 16) of the tile's column panels, centred, as the variant's operands.
template <class Load, class Panels>
FASTFID_DEVICE void stage_fast_panels(const FeatureBlock& x, const SyrkTile& tile, const double* shift, int64_t r0,
                                      Panels& panels) {
    for (int e = threadIdx.x; e < 2 * kTileDepth * kTile; e += kTensorThreads) {
        const int side = e / (kTileDepth * kTile), k = e / kTile % kTileDepth, c = e % kTile;
        const int64_t row = r0 + k, col = (side == 0 ? tile.ti : tile.tj) * kTile + c;
        const float v = row < tile.row_end && col < tile.d
            ? static_cast<float>(feature_at<Load>(x, row, col) - shift[col]) : 0.0f;
        panels.store(side, k * kFloatStride + c, v);
    }
}

struct Tf32Panels {
    float values[2][kTileDepth * kFloatStride];  // [left, right][k][c]
    FASTFID_DEVICE void store(int side, int at, float v) { values[side][at] = to_tf32(v); }
    FASTFID_DEVICE void add_products(int warp_row, int warp_col, FloatTile& partial) const {
        FASTFID_UNROLL
        for (int k0 = 0; k0 < kTileDepth; k0 += 8) {
            float a[2][4], b[4][2];
            load_tf32_fragments(values[0], values[1], k0, warp_row, warp_col, a, b);
            warp_mma_tf32(partial, a, b);
        }
    }
};

struct SplitBfloat16Panels {
    uint16_t hi[2][kTileDepth * kFloatStride], lo[2][kTileDepth * kFloatStride];  // bf16 bits, [side][k][c]
    FASTFID_DEVICE void store(int side, int at, float v) {
        hi[side][at] = to_bfloat16_bits(v);
        lo[side][at] = to_bfloat16_bits(v - bfloat16_to_float(hi[side][at]));  // v − hi: exact in float32
    }
    // This lane's fragments of one depth-16 step (mma.m16n8k16): A[r][k] = left[k][r], B[k][c] = right[k][c].
    static FASTFID_DEVICE void fragments(const uint16_t* left, const uint16_t* right, int warp_row, int warp_col,
                                         uint32_t (&a)[2][4], uint32_t (&b)[4][2]) {
        const int lane = static_cast<int>(threadIdx.x) % 32, group = lane / 4, k = 2 * (lane % 4);
        const auto pair = [](const uint16_t* panel, int k0, int column) {
            return pack_pair(panel[k0 * kFloatStride + column], panel[(k0 + 1) * kFloatStride + column]);
        };
        FASTFID_UNROLL
        for (int i = 0; i < 2; ++i) {
            const int r = warp_row + 16 * i + group;
            a[i][0] = pair(left, k, r);
            a[i][1] = pair(left, k, r + 8);
            a[i][2] = pair(left, k + 8, r);
            a[i][3] = pair(left, k + 8, r + 8);
        }
        FASTFID_UNROLL
        for (int j = 0; j < 4; ++j) {
            b[j][0] = pair(right, k, warp_col + 8 * j + group);
            b[j][1] = pair(right, k + 8, warp_col + 8 * j + group);
        }
    }
    FASTFID_DEVICE void add_products(int warp_row, int warp_col, FloatTile& partial) const {
        uint32_t a_hi[2][4], a_lo[2][4], b_hi[4][2], b_lo[4][2];
        fragments(hi[0], hi[1], warp_row, warp_col, a_hi, b_hi);
        fragments(lo[0], lo[1], warp_row, warp_col, a_lo, b_lo);
        // All four products, the small ones first. Without lo·lo (≈ 2⁻¹⁸ of a square, always positive)
        // the diagonal came out biased: FID 4e-6 relative off in the emulation, where TF32's unbiased
        // rounding gave 1e-7.
        warp_mma_16bit<HalfType::bfloat16>(partial, a_lo, b_lo);
        warp_mma_16bit<HalfType::bfloat16>(partial, a_lo, b_hi);
        warp_mma_16bit<HalfType::bfloat16>(partial, a_hi, b_lo);
        warp_mma_16bit<HalfType::bfloat16>(partial, a_hi, b_hi);
    }
};

template <class Load>
FASTFID_DEVICE void batch_syrk_fast(const FeatureBlock& x, const double* shift, const double* sums,
                                    int64_t rows_per_slice, double* mean, double* comoment, long long* counters) {
    using Panels = typename std::conditional<kSplitBfloat16<Load>, SplitBfloat16Panels, Tf32Panels>::type;
    __shared__ Panels panels;
    SyrkTile tile;
    if (!tile.begin(x, rows_per_slice, counters)) return;
    const int warp = static_cast<int>(threadIdx.x) / 32;
    const int warp_row = (warp / 2) * 32, warp_col = (warp % 2) * 32;
    FloatTile partial = {};
    double acc[2][4][4] = {};
    int64_t rows_in_partial = 0;
    for (int64_t r0 = tile.row_begin; r0 < tile.row_end; r0 += kTileDepth) {
        stage_fast_panels<Load>(x, tile, shift, r0, panels);
        __syncthreads();
        panels.add_products(warp_row, warp_col, partial);
        __syncthreads();
        rows_in_partial += kTileDepth;
        if (rows_in_partial >= kFastRows) {
            flush_partials(partial, acc);
            rows_in_partial = 0;
        }
    }
    flush_partials(partial, acc);
    for_each_m16n8_output(warp_row, warp_col, acc, tile.adder(comoment, sums));
    tile.commit(x, static_cast<int>(threadIdx.x) < kTile ? static_cast<int>(threadIdx.x) : kTile, shift, sums, mean,
                counters);
}

}  // namespace fastfid::kernels

#define FASTFID_STATS_KERNELS_FOR(suffix, Load)                                                                  \
    FASTFID_KERNEL void fastfid_choose_shift_##suffix(fastfid::kernels::FeatureBlock x, const double* mean,       \
                                                      double* shift, double* sums, long long* counters) {        \
        fastfid::kernels::choose_shift<fastfid::kernels::Load>(x, mean, shift, sums, counters);                  \
    }                                                                                                             \
    FASTFID_KERNEL void __launch_bounds__(fastfid::kernels::kSumThreads)                                          \
    fastfid_batch_sums_##suffix(fastfid::kernels::FeatureBlock x, const double* shift, double* sums,             \
                                long long* counters) {                                                           \
        fastfid::kernels::batch_sums<fastfid::kernels::Load>(x, shift, sums, counters);                          \
    }                                                                                                             \
    FASTFID_KERNEL void __launch_bounds__(fastfid::kernels::kTileThreads)                                         \
    fastfid_batch_syrk_fma_##suffix(fastfid::kernels::FeatureBlock x, const double* shift, const double* sums,   \
                                    int64_t rows_per_slice, double* mean, double* comoment, long long* counters) { \
        fastfid::kernels::batch_syrk_fma<fastfid::kernels::Load>(x, shift, sums, rows_per_slice, mean, comoment,  \
                                                                 counters);                                      \
    }                                                                                                             \
    FASTFID_KERNEL void __launch_bounds__(fastfid::kernels::kTensorThreads)                                       \
    fastfid_batch_syrk_tensor_##suffix(fastfid::kernels::FeatureBlock x, const double* shift, const double* sums, \
                                       int64_t rows_per_slice, double* mean, double* comoment,                   \
                                       long long* counters) {                                                    \
        fastfid::kernels::batch_syrk_tensor<fastfid::kernels::Load>(x, shift, sums, rows_per_slice, mean,        \
                                                                    comoment, counters);                         \
    }                                                                                                             \
    FASTFID_KERNEL void __launch_bounds__(fastfid::kernels::kTensorThreads)                                       \
    fastfid_batch_syrk_fast_##suffix(fastfid::kernels::FeatureBlock x, const double* shift, const double* sums,   \
                                     int64_t rows_per_slice, double* mean, double* comoment, long long* counters) { \
        fastfid::kernels::batch_syrk_fast<fastfid::kernels::Load>(x, shift, sums, rows_per_slice, mean, comoment, \
                                                                  counters);                                     \
    }

FASTFID_STATS_KERNELS_FOR(float16, LoadFloat16)
FASTFID_STATS_KERNELS_FOR(bfloat16, LoadBfloat16)
FASTFID_STATS_KERNELS_FOR(float32, LoadFloat32)
FASTFID_STATS_KERNELS_FOR(float64, LoadFloat64)
#undef FASTFID_STATS_KERNELS_FOR

// Chan's merge of state B into state A in two launches, the state changing in the second only (so a
// launch the driver refuses leaves it whole): 1 notes μ_A and the counts in the scratch; 2, over the
// upper triangle, C_A += C_B + δ δᵀ n_A n_B / n with δ = μ_B − μ_A (the noted μ_A), and its first d
// threads μ_A = μ_A + δ n_B / n, thread 0 the counts.
FASTFID_KERNEL void fastfid_merge_note(int64_t d, const double* mean, const long long* counters,
                                       const long long* other_counters, double* snapshot) {
    using namespace fastfid::kernels;
    const int64_t i = global_thread();
    if (i < d) snapshot[i] = mean[i];
    if (i == 0) {
        snapshot[d] = static_cast<double>(counters[kCount]);
        snapshot[d + 1] = static_cast<double>(other_counters[kCount]);
    }
}

FASTFID_KERNEL void fastfid_merge_apply(int64_t d, double* mean, double* comoment, long long* counters,
                                        const double* other_mean, const double* other_comoment,
                                        const long long* other_counters, const double* snapshot) {
    using namespace fastfid::kernels;
    const int64_t e = global_thread();
    if (e == 0) {
        counters[kCount] += other_counters[kCount];
        counters[kSkippedBatches] += other_counters[kSkippedBatches];
    }
    const double na = snapshot[d], nb = snapshot[d + 1];
    if (nb == 0 || e >= d * d) return;
    const double weight = na * nb / (na + nb);
    if (e < d) mean[e] = snapshot[e] + (other_mean[e] - snapshot[e]) * (nb / (na + nb));
    const int64_t i = e / d, j = e % d;
    if (i > j) return;
    comoment[e] += other_comoment[e] + (other_mean[i] - snapshot[i]) * (other_mean[j] - snapshot[j]) * weight;
}
