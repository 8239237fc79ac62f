#include "cpu/neighbours.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <queue>
#include <stdexcept>
#include <string>

#include "cpu/blas.hpp"
#include "cpu/stats.hpp"

namespace fastfid::cpu {
namespace {

constexpr int64_t kBlock = 1024;  // rows per block: a 1024 × 1024 float64 block is 8 MiB

// A block of rows widened to float64, with their squared norms.
struct RowBlock {
    int64_t first = 0, rows = 0;
    std::vector<double> values, norms;

    void load(const FeatureMatrix& x, int64_t begin) {
        first = begin;
        rows = std::min(kBlock, x.rows - begin);
        values.resize(static_cast<size_t>(rows * x.cols));
        norms.assign(static_cast<size_t>(rows), 0.0);
        rows_as_float64(x, begin, rows, values.data());
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t j = 0; j < x.cols; ++j) norms[r] += values[r * x.cols + j] * values[r * x.cols + j];
    }
};

// Calls visit(a_block, b_block, products) for every pair of row blocks, where products is the
// row-major a_rows × b_rows matrix of inner products aᵢᵀbⱼ (one BLAS product per pair).
template <class Visit>
void for_each_product_block(const FeatureMatrix& a, const FeatureMatrix& b, Visit visit) {
    if (a.cols != b.cols)
        throw std::invalid_argument("the two feature sets have different dims: " + std::to_string(a.cols) + " and " +
                                    std::to_string(b.cols));
    const blas::Int d = blas::checked_int(a.cols);
    RowBlock p, q;
    std::vector<double> products;
    for (int64_t a0 = 0; a0 < a.rows; a0 += kBlock) {
        p.load(a, a0);
        for (int64_t b0 = 0; b0 < b.rows; b0 += kBlock) {
            q.load(b, b0);
            products.resize(static_cast<size_t>(p.rows * q.rows));
            blas::gemm_abt_rowmajor(blas::checked_int(p.rows), blas::checked_int(q.rows), d, p.values.data(),
                                    q.values.data(), products.data());
            visit(p, q, products);
        }
    }
}

// The same with squared distances ‖q‖² + ‖c‖² − 2 qᵀc (clamped at 0 against rounding).
template <class Visit>
void for_each_distance_block(const FeatureMatrix& queries, const FeatureMatrix& centres, Visit visit) {
    for_each_product_block(queries, centres, [&](const RowBlock& q, const RowBlock& c, std::vector<double>& squared) {
        for (int64_t i = 0; i < q.rows; ++i)
            for (int64_t j = 0; j < c.rows; ++j) {
                double& v = squared[i * c.rows + j];
                v = std::max(q.norms[i] + c.norms[j] - 2.0 * v, 0.0);
            }
        visit(q, c, static_cast<const std::vector<double>&>(squared));
    });
}

}  // namespace

std::vector<double> kth_neighbour_radii(const FeatureMatrix& x, int64_t k) {
    if (k < 1 || k >= x.rows)
        throw std::invalid_argument("k = " + std::to_string(k) + " nearest neighbours need more than k samples (have " +
                                    std::to_string(x.rows) + ")");
    // Per row, a max-heap of its k smallest squared distances so far.
    std::vector<std::priority_queue<double>> nearest(static_cast<size_t>(x.rows));
    for_each_distance_block(x, x, [&](const RowBlock& q, const RowBlock& c, const std::vector<double>& squared) {
        for (int64_t i = 0; i < q.rows; ++i) {
            auto& heap = nearest[q.first + i];
            for (int64_t j = 0; j < c.rows; ++j) {
                if (q.first + i == c.first + j) continue;  // itself
                const double v = squared[i * c.rows + j];
                if (static_cast<int64_t>(heap.size()) < k) heap.push(v);
                else if (v < heap.top()) {
                    heap.pop();
                    heap.push(v);
                }
            }
        }
    });
    std::vector<double> radii(static_cast<size_t>(x.rows));
    for (int64_t i = 0; i < x.rows; ++i) radii[i] = std::sqrt(nearest[i].top());
    return radii;
}

BallMembership ball_membership(const FeatureMatrix& queries, const FeatureMatrix& centres,
                               const std::vector<double>& radii) {
    if (static_cast<int64_t>(radii.size()) != centres.rows)
        throw std::invalid_argument("one radius per centre is needed");
    BallMembership result;
    result.inside.assign(static_cast<size_t>(queries.rows), 0);
    result.nearest.assign(static_cast<size_t>(centres.rows), std::numeric_limits<double>::infinity());
    std::vector<double> squared_radii(radii.size());
    for (size_t i = 0; i < radii.size(); ++i) squared_radii[i] = radii[i] * radii[i];
    for_each_distance_block(queries, centres, [&](const RowBlock& q, const RowBlock& c, const std::vector<double>& squared) {
        for (int64_t i = 0; i < q.rows; ++i) {
            int64_t inside = 0;
            for (int64_t j = 0; j < c.rows; ++j) {
                const double v = squared[i * c.rows + j];
                inside += v <= squared_radii[c.first + j];
                double& best = result.nearest[c.first + j];
                best = std::min(best, v);
            }
            result.inside[q.first + i] += inside;
        }
    });
    for (double& v : result.nearest) v = std::sqrt(v);
    return result;
}

namespace {

// Σ over the pairs (i, j) of two row sets, i ≠ j when `same`, of k(aᵢ, bⱼ) = kernel(aᵢᵀbⱼ, i, j).
template <typename Kernel>
double kernel_sum(const FeatureMatrix& a, const FeatureMatrix& b, bool same, const Kernel& kernel) {
    double total = 0;
    for_each_product_block(a, b, [&](const RowBlock& p, const RowBlock& q, const std::vector<double>& products) {
        for (int64_t i = 0; i < p.rows; ++i)
            for (int64_t j = 0; j < q.rows; ++j) {
                if (same && p.first + i == q.first + j) continue;
                total += kernel(products[i * q.rows + j], p.first + i, q.first + j);
            }
    });
    return total;
}

// The unbiased within-set terms and the cross term of every KID implementation (Bińkowski et al.).
template <typename Kernel>
double unbiased_mmd(const FeatureMatrix& x, const FeatureMatrix& y, const Kernel& kernel) {
    if (x.cols != y.cols) throw std::invalid_argument("the two feature sets have different dims");
    if (x.rows < 2 || y.rows < 2) throw std::invalid_argument("an unbiased MMD needs at least 2 samples per set");
    const double m = static_cast<double>(x.rows), n = static_cast<double>(y.rows);
    return kernel_sum(x, x, true, kernel) / (m * (m - 1)) + kernel_sum(y, y, true, kernel) / (n * (n - 1)) -
           2.0 * kernel_sum(x, y, false, kernel) / (m * n);
}

}  // namespace

double polynomial_mmd(const FeatureMatrix& x, const FeatureMatrix& y, int degree, double gamma, double coef0) {
    if (degree < 1) throw std::invalid_argument("the kernel degree must be a positive integer");
    if (!(gamma > 0) && gamma != 0) throw std::invalid_argument("gamma must be positive (0: 1 / dim)");
    const double scale = gamma > 0 ? gamma : 1.0 / static_cast<double>(x.cols);
    if (degree == 3)  // KID's kernel: two multiplications instead of a pow per pair
        return unbiased_mmd(x, y, [&](double dot, int64_t, int64_t) { const double k = dot * scale + coef0; return k * k * k; });
    return unbiased_mmd(x, y, [&](double dot, int64_t, int64_t) { return std::pow(dot * scale + coef0, degree); });
}

double gaussian_kernel_sum(const FeatureMatrix& a, const FeatureMatrix& b, double sigma) {
    if (!(sigma > 0) || !std::isfinite(sigma)) throw std::invalid_argument("sigma must be positive and finite");
    const double scale = -0.5 / (sigma * sigma);
    double total = 0;
    for_each_distance_block(a, b, [&](const RowBlock& p, const RowBlock& q, const std::vector<double>& squared) {
        for (int64_t i = 0; i < p.rows; ++i)
            for (int64_t j = 0; j < q.rows; ++j) total += std::exp(scale * squared[i * q.rows + j]);
    });
    return total;
}

double gaussian_mmd(const FeatureMatrix& x, const FeatureMatrix& y, double sigma) {
    if (!(sigma > 0) || !std::isfinite(sigma)) throw std::invalid_argument("sigma must be positive and finite");
    if (x.cols != y.cols) throw std::invalid_argument("the two feature sets have different dims");
    if (x.rows < 2 || y.rows < 2) throw std::invalid_argument("an unbiased MMD needs at least 2 samples per set");
    const double scale = -0.5 / (sigma * sigma);
    const auto sum = [scale](const FeatureMatrix& a, const FeatureMatrix& b, bool same) {
        double total = 0;
        for_each_distance_block(a, b, [&](const RowBlock& p, const RowBlock& q, const std::vector<double>& squared) {
            for (int64_t i = 0; i < p.rows; ++i)
                for (int64_t j = 0; j < q.rows; ++j)
                    if (!(same && p.first + i == q.first + j)) total += std::exp(scale * squared[i * q.rows + j]);
        });
        return total;
    };
    const double m = static_cast<double>(x.rows), n = static_cast<double>(y.rows);
    return sum(x, x, true) / (m * (m - 1)) + sum(y, y, true) / (n * (n - 1)) - 2.0 * sum(x, y, false) / (m * n);
}

}  // namespace fastfid::cpu
