// Host-side orchestration of the statistics kernels, run on a Device (cuda/runtime.hpp) whether its
// driver is the system's or the emulation's. Every call only enqueues work on the caller's stream;
// none waits for the device.
#pragma once

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
    double* workspace;    // stats_workspace_doubles(d)
};

constexpr int64_t stats_workspace_doubles(int64_t d) { return d * d + 2 * d; }

// Enough blocks to fill a large GPU about twice (132 SMs on an H100, several blocks each).
constexpr int64_t kTargetBlocks = 1024;


inline void accumulate_batch(Device& device, const FeatureBlock& x, FeatureType type, const StatsBuffers& s,
                             int64_t row_slices) {
    using namespace kernels;
    if (x.rows < 1 || x.cols < 1) throw std::invalid_argument("features must have at least one row and one column");
    const int64_t d = x.cols, n = x.rows;
    double* batch = s.workspace;  // d × d, then the sums (d), then the shift (d)
    double* sums = batch + d * d;
    double* shift = sums + d;
    const int64_t tiles_per_side = (d + kTile - 1) / kTile;
    const int64_t tiles = tiles_per_side * (tiles_per_side + 1) / 2;
    if (row_slices <= 0) row_slices = (kTargetBlocks + tiles - 1) / tiles;  // few tiles: split the rows
    const int64_t max_slices = (n + kTileDepth - 1) / kTileDepth;
    row_slices = row_slices < max_slices ? row_slices : max_slices;
    int64_t rows_per_slice = (n + row_slices - 1) / row_slices;
    rows_per_slice = (rows_per_slice + kTileDepth - 1) / kTileDepth * kTileDepth;
    row_slices = (n + rows_per_slice - 1) / rows_per_slice;

    const dim3 shift_grid(blocks_for(d, kElementwiseThreads)), elementwise(kElementwiseThreads);
    const dim3 tile_grid(static_cast<unsigned>(tiles), static_cast<unsigned>(row_slices));
    const auto enqueue = [&](auto choose_shift, auto batch_comoment) {
        device.launch(choose_shift, shift_grid, elementwise, x, static_cast<const double*>(s.mean), shift, s.counters);
        if (row_slices > 1)  // slices add atomically into zeroed B and S
            device.launch(kernel::fastfid_fill_zero, dim3(blocks_for(d * d + d, kElementwiseThreads)), elementwise,
                          batch, d * d + d);
        device.launch(batch_comoment, tile_grid, dim3(kTileThreads), x, static_cast<const double*>(shift),
                      rows_per_slice, batch, sums, s.counters);
    };
    switch (type) {
        case FeatureType::float16:
            enqueue(kernel::fastfid_choose_shift_float16, kernel::fastfid_batch_comoment_float16);
            break;
        case FeatureType::bfloat16:
            enqueue(kernel::fastfid_choose_shift_bfloat16, kernel::fastfid_batch_comoment_bfloat16);
            break;
        case FeatureType::float32:
            enqueue(kernel::fastfid_choose_shift_float32, kernel::fastfid_batch_comoment_float32);
            break;
        case FeatureType::float64:
            enqueue(kernel::fastfid_choose_shift_float64, kernel::fastfid_batch_comoment_float64);
            break;
        default:
            throw std::invalid_argument("unknown feature type");
    }
    device.launch(kernel::fastfid_apply_batch, dim3(blocks_for(d * d, kElementwiseThreads)), elementwise, d, n,
                  static_cast<const double*>(batch), static_cast<const double*>(sums),
                  static_cast<const double*>(shift), s.mean, s.comoment, s.counters);
}

inline void merge_states(Device& device, int64_t d, const StatsBuffers& into, const StatsBuffers& other) {
    using namespace kernels;
    const dim3 elementwise(kElementwiseThreads);
    device.launch(kernel::fastfid_merge_comoment, dim3(blocks_for(d * d, kElementwiseThreads)), elementwise, d,
                  into.mean, into.comoment, into.counters, other.mean, other.comoment, other.counters);
    device.launch(kernel::fastfid_merge_mean, dim3(blocks_for(d, kElementwiseThreads)), elementwise, d, into.mean,
                  into.counters, other.mean, other.counters);
    device.launch(kernel::fastfid_merge_counters, dim3(1), dim3(1), into.counters, other.counters);
}

}  // namespace fastfid::device
