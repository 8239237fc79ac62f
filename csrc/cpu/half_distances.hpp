// ADM's float16 squared distances from a block of float32 products: the op-by-op roundings of its
// TensorFlow graph (every op's result rounded to binary16) fused into one pass over the block.
#pragma once

#include <cstdint>

namespace fastfid::cpu {

// x rounded to the nearest binary16 value (ties to even), returned as the float it is exactly;
// beyond half's range ±inf, NaN stays NaN. A float op on two halves rounded so is the correctly
// rounded half op (float carries more than twice half's precision).
float round_to_half(float x);

// In place, for the row-major rows × cols block p of float32 sums of half products uᵢ·vⱼ:
//   p ← max(half(half(norm_u[i] − half(2·half(p))) + norm_v[j]), 0), NaN kept,
// where the norms are half values. Rows are split over `threads` threads.
void adm_half_distances(float* p, int64_t rows, int64_t cols, const float* norm_u, const float* norm_v,
                        int threads);

}  // namespace fastfid::cpu
