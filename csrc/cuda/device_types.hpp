// Plain types shared by the kernels, their drivers and the bindings (no CUDA built-ins here).
#pragma once

#include <cstdint>

namespace fastfid::kernels {

// Features arrive in these types; half and bfloat16 are read as raw bits and widened exactly.
enum class FeatureType : int { float16 = 0, bfloat16 = 1, float32 = 2, float64 = 3 };

// An n × d block of features in device memory.
struct FeatureBlock {
    const void* data;
    int64_t rows, cols;
    int64_t row_stride, col_stride;  // in elements
};

// The statistics' scalar counters, int64 on the device.
enum Counter : int { kCount = 0, kSkippedBatches = 1, kBatchFlag = 2, kCounterSlots = 3 };

}  // namespace fastfid::kernels
