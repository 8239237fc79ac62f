// Host-side orchestration of the statistics kernels, run on a Device (cuda/runtime.hpp) whether its
// driver is the system's or the emulation's. Every call only enqueues work on the caller's stream;
// none waits for the device.
#pragma once

#include <algorithm>
#include <stdexcept>

#include "cuda/device_types.hpp"
#include "cuda/runtime.hpp"

namespace fastfid::device {

using kernels::FeatureBlock;
using kernels::FeatureType;

// The statistics' state and the scratch one batch needs (device addresses owned by the caller).
struct StatsBuffers {
    double* mean;         // d
    double* comoment;     // d × d, upper triangle valid
    long long* counters;  // kernels::kCounterSlots
    double* workspace;    // stats_workspace_doubles(d): the shift and the column sums, or a merge's snapshot
};

constexpr int64_t stats_workspace_doubles(int64_t d) { return 2 * d + 2; }

// Enough blocks to fill a large GPU about twice (132 SMs on an H100, several blocks each).
constexpr int64_t kTargetBlocks = 1024;

template <class ChooseShift, class BatchSums, class Syrk>
void enqueue_batch(Device& device, const FeatureBlock& x, const StatsBuffers& s, int64_t row_slices, ChooseShift choose,
                   BatchSums sum, Syrk syrk, unsigned syrk_threads) {
    using namespace kernels;
    const int64_t d = x.cols, n = x.rows;
    double* shift = s.workspace;
    double* sums = shift + d;
    const int64_t tiles = triangle_tiles(d);
    if (row_slices <= 0) row_slices = (kTargetBlocks + tiles - 1) / tiles;  // few tiles: split the rows
    const int64_t max_slices = (n + kTileDepth - 1) / kTileDepth;
    row_slices = row_slices < max_slices ? row_slices : max_slices;
    int64_t rows_per_slice = (n + row_slices - 1) / row_slices;
    rows_per_slice = (rows_per_slice + kTileDepth - 1) / kTileDepth * kTileDepth;
    row_slices = (n + rows_per_slice - 1) / rows_per_slice;

    const dim3 columns(blocks_for(d, kSumThreads));
    device.launch(choose, columns, dim3(kSumThreads), x, static_cast<const double*>(s.mean), shift, sums, s.counters);
    const unsigned row_blocks = std::min(blocks_for(n, kSumRows), 65535u);  // CUDA's limit on grid.y
    device.launch(sum, dim3(columns.x, row_blocks), dim3(kSumThreads), x,
                  static_cast<const double*>(shift), sums, s.counters);
    device.launch(syrk, dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(row_slices)), dim3(syrk_threads), x,
                  static_cast<const double*>(shift), static_cast<const double*>(sums), rows_per_slice, s.mean,
                  s.comoment, s.counters);
}

// How batch_syrk computes: exact float64 by FMAs or on the FP64 tensor cores, or the opt-in fast mode.
enum class StatsVariant : int { fma = 0, fp64_tensor_cores = 1, fast = 2 };

inline void accumulate_batch(Device& device, const FeatureBlock& x, FeatureType type, const StatsBuffers& s,
                             int64_t row_slices, StatsVariant variant) {
    using namespace kernels;
    if (x.rows < 1 || x.cols < 1) throw std::invalid_argument("features must have at least one row and one column");
#define FASTFID_ENQUEUE(suffix)                                                                                  \
    switch (variant) {                                                                                           \
        case StatsVariant::fma:                                                                                  \
            return enqueue_batch(device, x, s, row_slices, kernel::fastfid_choose_shift_##suffix,                \
                                 kernel::fastfid_batch_sums_##suffix, kernel::fastfid_batch_syrk_fma_##suffix,  \
                                 kTileThreads);                                                                  \
        case StatsVariant::fp64_tensor_cores:                                                                    \
            return enqueue_batch(device, x, s, row_slices, kernel::fastfid_choose_shift_##suffix,                \
                                 kernel::fastfid_batch_sums_##suffix, kernel::fastfid_batch_syrk_tensor_##suffix, \
                                 kTensorThreads);                                                                \
        case StatsVariant::fast:                                                                                 \
            return enqueue_batch(device, x, s, row_slices, kernel::fastfid_choose_shift_##suffix,                \
                                 kernel::fastfid_batch_sums_##suffix, kernel::fastfid_batch_syrk_fast_##suffix,  \
                                 kTensorThreads);                                                                \
    }                                                                                                            \
    throw std::invalid_argument("unknown statistics variant")
    switch (type) {
        case FeatureType::float16: FASTFID_ENQUEUE(float16);
        case FeatureType::bfloat16: FASTFID_ENQUEUE(bfloat16);
        case FeatureType::float32: FASTFID_ENQUEUE(float32);
        case FeatureType::float64: FASTFID_ENQUEUE(float64);
    }
#undef FASTFID_ENQUEUE
    throw std::invalid_argument("unknown feature type");
}

// `into.workspace` holds the snapshot (d + 2 doubles).
inline void merge_states(Device& device, int64_t d, const StatsBuffers& into, const StatsBuffers& other) {
    using namespace kernels;
    const dim3 elementwise(kElementwiseThreads);
    device.launch(kernel::fastfid_merge_note, dim3(blocks_for(d, kElementwiseThreads)), elementwise, d, into.mean,
                  into.counters, other.counters, into.workspace);
    device.launch(kernel::fastfid_merge_apply, dim3(blocks_for(d * d, kElementwiseThreads)), elementwise, d,
                  into.mean, into.comoment, into.counters, other.mean, other.comoment, other.counters,
                  static_cast<const double*>(into.workspace));
}

}  // namespace fastfid::device
