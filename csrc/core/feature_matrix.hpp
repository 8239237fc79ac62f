// Views of caller-owned memory handed to the native core. Nothing here owns or copies data.
#pragma once

#include <cstdint>

namespace fastfid {

enum class ScalarType { float16, float32, float64 };

// A read-only n × d matrix of features with arbitrary strides (counted in elements, not bytes),
// so C-ordered, Fortran-ordered and sliced arrays are read in place.
struct FeatureMatrix {
    const void* data;
    int64_t rows;
    int64_t cols;
    int64_t row_stride;
    int64_t col_stride;
    ScalarType type;
};

// A read-only d × d float64 matrix that is meant to be symmetric (a covariance).
struct SymmetricView {
    const double* data;
    int64_t dim;
    int64_t row_stride;
    int64_t col_stride;

    double at(int64_t i, int64_t j) const { return data[i * row_stride + j * col_stride]; }
};

}  // namespace fastfid
