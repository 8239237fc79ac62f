// Host-side orchestration of the statistics kernels, shared by the CUDA build and the emulation:
// `Device` supplies launch() and the copies (cuda/cuda_device.cuh, simt/emulated_device.hpp).
// Every call only enqueues work on the stream; none waits for the device.
#pragma once

#include <stdexcept>

#include "cuda/device_api.hpp"
#include "cuda/stats_kernels.cuh"

namespace fastfid::device {

using kernels::blocks_for;

// Enough blocks to fill a large GPU about twice (132 SMs on an H100, several blocks each).
constexpr int64_t kTargetBlocks = 1024;

template <class Load, class Device>
void accumulate_as(Device& device, const FeatureBlock& x, const StatsBuffers& s, int64_t row_slices) {
    using namespace kernels;
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

    device.launch(choose_shift_kernel<Load>, dim3(blocks_for(d, kElementwiseThreads)), dim3(kElementwiseThreads), x,
                  static_cast<const double*>(s.mean), shift, static_cast<const long long*>(s.counters));
    if (row_slices > 1)  // slices add atomically into zeroed B and S
        device.launch(fill_zero_kernel, dim3(blocks_for(d * d + d, kElementwiseThreads)), dim3(kElementwiseThreads),
                      batch, d * d + d);
    device.launch(batch_comoment_kernel<Load>, dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(row_slices)),
                  dim3(kTileThreads), x, static_cast<const double*>(shift), rows_per_slice, batch, sums, s.counters);
    device.launch(apply_batch_kernel, dim3(blocks_for(d * d, kElementwiseThreads)), dim3(kElementwiseThreads), d, n,
                  static_cast<const double*>(batch), static_cast<const double*>(sums),
                  static_cast<const double*>(shift), s.mean, s.comoment, static_cast<const long long*>(s.counters));
    device.launch(commit_batch_kernel, dim3(1), dim3(1), n, s.counters);
}

template <class Device>
void accumulate_batch(Device& device, const FeatureBlock& x, FeatureType type, const StatsBuffers& state,
                      int64_t row_slices) {
    if (x.rows < 1 || x.cols < 1) throw std::invalid_argument("features must have at least one row and one column");
    switch (type) {
        case FeatureType::float16: return accumulate_as<kernels::LoadFloat16>(device, x, state, row_slices);
        case FeatureType::bfloat16: return accumulate_as<kernels::LoadBfloat16>(device, x, state, row_slices);
        case FeatureType::float32: return accumulate_as<kernels::LoadFloat32>(device, x, state, row_slices);
        case FeatureType::float64: return accumulate_as<kernels::LoadFloat64>(device, x, state, row_slices);
    }
    throw std::invalid_argument("unknown feature type");
}

template <class Device>
void merge_states(Device& device, int64_t d, const StatsBuffers& into, const StatsBuffers& other) {
    using namespace kernels;
    device.launch(merge_comoment_kernel, dim3(blocks_for(d * d, kElementwiseThreads)), dim3(kElementwiseThreads), d,
                  static_cast<const double*>(into.mean), into.comoment, static_cast<const long long*>(into.counters),
                  static_cast<const double*>(other.mean), static_cast<const double*>(other.comoment),
                  static_cast<const long long*>(other.counters));
    device.launch(merge_mean_kernel, dim3(blocks_for(d, kElementwiseThreads)), dim3(kElementwiseThreads), d, into.mean,
                  static_cast<const long long*>(into.counters), static_cast<const double*>(other.mean),
                  static_cast<const long long*>(other.counters));
    device.launch(merge_counters_kernel, dim3(1), dim3(1), into.counters, static_cast<const long long*>(other.counters));
}

}  // namespace fastfid::device
