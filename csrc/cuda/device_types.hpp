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

// The statistics' scalar counters, int64 on the device. kBatchCount is the count a batch in flight
// started from (written by its first launch, read by its last), so that the launch that commits a
// batch can change kCount while its other threads still need the old value.
enum Counter : int { kCount = 0, kSkippedBatches = 1, kBatchFlag = 2, kBatchCount = 3, kCounterSlots = 4 };

}  // namespace fastfid::kernels
