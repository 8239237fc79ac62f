// Pairwise passes over two feature sets for the distribution metrics (KID, precision/recall,
// density/coverage): distances and kernels come from BLAS products of row blocks, so an n × m
// matrix never exists whole (50,000 × 50,000 would be 20 GB), only 1024 × 1024 blocks of it.
#pragma once

#include <cstdint>
#include <vector>

#include "core/feature_matrix.hpp"

namespace fastfid::cpu {

// Distance from every row of x to its k-th nearest other row (itself excluded).
std::vector<double> kth_neighbour_radii(const FeatureMatrix& x, int64_t k);

struct BallMembership {
    std::vector<int64_t> inside;   // per query: centres c with ‖q − c‖ ≤ radius_c
    std::vector<double> nearest;   // per centre: distance to its nearest query
};

BallMembership ball_membership(const FeatureMatrix& queries, const FeatureMatrix& centres,
                               const std::vector<double>& radii);

// Unbiased MMD² between x and y with the polynomial kernel k(a, b) = (γ aᵀb + c)^degree; γ = 0 means
// 1 / d. KID is degree 3, γ = 1 / d, c = 1.
double polynomial_mmd(const FeatureMatrix& x, const FeatureMatrix& y, int degree = 3, double gamma = 0,
                      double coef0 = 1);

// The same with the Gaussian kernel k(a, b) = exp(−‖a − b‖² / (2σ²)).
double gaussian_mmd(const FeatureMatrix& x, const FeatureMatrix& y, double sigma);

// Σ over every pair (i, j), the diagonal included, of exp(−‖aᵢ − bⱼ‖² / (2σ²)), in float64: the
// sums of the biased MMD² (CMMD's), from which a reference's own sum can be kept.
double gaussian_kernel_sum(const FeatureMatrix& a, const FeatureMatrix& b, double sigma);

}  // namespace fastfid::cpu
