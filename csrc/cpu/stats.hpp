// Streaming, mergeable feature statistics: count n, mean μ and co-moment C = Σ (x − μ)(x − μ)ᵀ.
// The state lives in caller-owned float64 buffers; only the upper triangle of C (row-major,
// i ≤ j) is maintained, the lower one is filled by symmetrize_upper when a result is wanted.
#pragma once

#include <cstdint>

#include "core/feature_matrix.hpp"

namespace fastfid::cpu {

struct StatsState {
    int64_t dim;
    int64_t* count;
    double* mean;       // dim
    double* comoment;   // dim × dim, row-major, upper triangle valid
};

// Rows converted and added per SYRK call: 4 MiB of float64, 256 rows at d = 2048, which fits the
// L3 cache while SYRK consumes it. Measured at 50,000 × 2048: 128 to 2048 rows land within 10% of
// each other (2.3–2.5 s, the float64 SYRK roofline of the machine); 256 was the fastest. Batches
// smaller than this pay for re-reading the d × d co-moment on every call, so callers buffer them.
int64_t panel_rows(int64_t dim);

// Throws std::invalid_argument("features contain NaN or Inf values") unless every value is finite.
void require_finite(const FeatureMatrix& batch);

// Adds a batch of n ≥ 1 rows. Throws std::invalid_argument (leaving the state unchanged) on a
// dimension mismatch or a NaN/Inf value.
void accumulate(const StatsState& state, const FeatureMatrix& batch);

// state ← state ∪ other (Chan, Golub & LeVeque), exact up to rounding. other's co-moment is read
// on its upper triangle.
void merge(const StatsState& state, int64_t other_count, const double* other_mean, const double* other_comoment);

// out[r, j] = x[first + r, j] widened to float64 (row-major, rows × d): the blocks that the
// distance and kernel passes (neighbours.cpp) hand to BLAS.
void rows_as_float64(const FeatureMatrix& x, int64_t first, int64_t rows, double* out);

// Copies the upper triangle onto the lower one.
void symmetrize_upper(double* matrix, int64_t dim);

}  // namespace fastfid::cpu
