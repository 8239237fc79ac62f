#include "cpu/trace_sqrt.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "core/newton_schulz_stop.hpp"
#include "cpu/blas.hpp"

namespace fastfid::cpu {
namespace {

// Entries may differ from their mirror by this much, relative to the largest diagonal entry:
// float32 covariances from a non-symmetric GEMM differ by a few ulps (~1e-7); a real asymmetry
// (a non-covariance passed by mistake) is of order 1.
constexpr double kSymmetryTolerance = 1e-5;

// Above this rank fraction, L padded with zero columns and LAPACK's dsygst (≈ d³ flops) beat
// dsymm + gemmt on the d × r factor (≈ 2d²r + d r² flops): the costs cross near r = 0.4·d.
constexpr double kPaddedCongruenceRankFraction = 0.4;

std::string describe(const char* name, const std::string& problem) { return std::string(name) + " " + problem; }

// A ← Fᵀ (Σ₂ / other_scale) F, r × r in the leading block of `work` (column-major, leading
// dimension d, lower triangle). other_scale is a power of two, so the division is exact.
void congruence(const PsdFactor& f, const SymmetricView& other, double other_scale, std::vector<double>& work) {
    const int64_t d = f.dim, r = f.rank;
    const blas::Int n = blas::checked_int(d), rb = blas::checked_int(r);
    const double inverse_scale = 1.0 / other_scale;
    // Σ₂ permuted like Σ₁: Fᵀ Σ₂ F = Lᵀ (Pᵀ Σ₂ P) L. Only the lower triangle is needed; column j
    // of it is gathered from row p_j of Σ₂ (symmetric), so the random reads stay within one row.
    std::vector<double> permuted(static_cast<size_t>(d * d));
    for (int64_t j = 0; j < d; ++j) {
        const int64_t pj = f.pivot[j];
        for (int64_t i = j; i < d; ++i) permuted[i + j * d] = other.at(pj, f.pivot[i]) * inverse_scale;
    }
    if (static_cast<double>(r) >= kPaddedCongruenceRankFraction * static_cast<double>(d)) {
        blas::congruence_lower(n, permuted.data(), f.lower.data());
        work.swap(permuted);
        return;
    }
    std::vector<double> product(static_cast<size_t>(d * r));  // Σ₂ₚ L, d × r
    blas::symm_lower_left(n, rb, permuted.data(), n, f.lower.data(), n, product.data(), n);
    work.assign(static_cast<size_t>(d * r), 0.0);
    blas::gemmt_lower(true, rb, n, 1.0, f.lower.data(), n, product.data(), n, 0.0, work.data(), n);
}

// A power of two near the largest diagonal entry (1 for a zero matrix): dividing by it is exact.
double power_of_two_scale(const SymmetricView& s) {
    double largest = 0;
    for (int64_t i = 0; i < s.dim; ++i) largest = std::max(largest, std::abs(s.at(i, i)));
    return largest > 0 && std::isfinite(largest) ? std::ldexp(1.0, std::ilogb(largest)) : 1.0;
}

TraceResult trace_by_eigenvalues(const PsdFactor& f, std::vector<double>& a) {
    const int64_t r = f.rank;
    std::vector<double> eigenvalues(static_cast<size_t>(r));
    blas::symmetric_eigen_lower(blas::checked_int(r), a.data(), blas::checked_int(f.dim), eigenvalues.data(), nullptr);
    TraceResult result;
    result.rank = r;
    result.max_eigenvalue = r ? eigenvalues.back() : 0.0;
    // Ascending order: small terms are added first.
    for (double lambda : eigenvalues) {
        if (lambda < 0) {
            ++result.clamped;
            result.most_negative = std::min(result.most_negative, lambda);
        } else {
            result.trace_sqrt += std::sqrt(lambda);
        }
    }
    return result;
}

void mirror_lower(double* a, int64_t n, int64_t lda) {
    for (int64_t j = 0; j < n; ++j)
        for (int64_t i = j + 1; i < n; ++i) a[j + i * lda] = a[i + j * lda];
}

double frobenius(const double* a, int64_t n, int64_t lda) {
    double total = 0;
    for (int64_t j = 0; j < n; ++j)
        for (int64_t i = 0; i < n; ++i) total += a[i + j * lda] * a[i + j * lda];
    return std::sqrt(total);
}

// Coupled Newton–Schulz on A/c, c = ‖A‖_F: T = ½(3I − ZY), Y ← YT, Z ← TZ; Y → (A/c)^½.
// Y, Z and T are polynomials in A, symmetric and commuting in exact arithmetic, but the products
// are taken in full: forcing symmetry on each iterate (one triangle, mirrored) was measured to
// make the iteration diverge on ill-conditioned A, where the rounding parts carry the correction.
// It stops on the relative step ‖Y_{k+1} − Y_k‖_F / ‖Y_k‖_F, not on ‖I − ZY‖: null and tiny
// eigenvalues keep the latter near 1 forever while adding nothing to tr Y (the device twin,
// cuda/newton_schulz_driver.hpp, iterates on a singular Σ₁Σ₂ whenever n ≤ d).
TraceResult trace_by_newton_schulz(const PsdFactor& f, std::vector<double>& a_work, const TraceOptions& options) {
    const int64_t r = f.rank, d = f.dim;
    TraceResult result;
    result.rank = r;
    if (r == 0) return result;
    const blas::Int n = blas::checked_int(r);
    const size_t size = static_cast<size_t>(r * r);
    std::vector<double> y(size), z(size, 0.0), t(size), next_y(size), next_z(size), best(size);
    for (int64_t j = 0; j < r; ++j)
        for (int64_t i = j; i < r; ++i) y[i + j * r] = a_work[i + j * d];
    mirror_lower(y.data(), r, r);
    const double scale = frobenius(y.data(), r, r);
    result.max_eigenvalue = scale;
    if (scale == 0) return result;
    for (double& v : y) v /= scale;
    for (int64_t i = 0; i < r; ++i) z[i + i * r] = 1.0;
    best = y;

    auto stop = NewtonSchulzStop::with_tolerance(options.tolerance);
    for (int iteration = 0; iteration < options.max_iterations; ++iteration) {
        blas::gemm_square(n, -0.5, z.data(), y.data(), 0.0, t.data());  // T = 1.5 I − 0.5 Z Y
        for (int64_t i = 0; i < r; ++i) t[i + i * r] += 1.5;
        blas::gemm_square(n, 1.0, y.data(), t.data(), 0.0, next_y.data());
        blas::gemm_square(n, 1.0, t.data(), z.data(), 0.0, next_z.data());
        double change = 0, norm = 0;
        for (size_t e = 0; e < size; ++e) {
            change += (next_y[e] - y[e]) * (next_y[e] - y[e]);
            norm += y[e] * y[e];
        }
        const double step = std::sqrt(change / norm);
        y.swap(next_y);
        z.swap(next_z);
        result.iterations = iteration + 1;
        const auto verdict = stop.observe(step);
        if (verdict.best) best = y;
        if (verdict.stop) break;
    }
    result.step = stop.best_step < NewtonSchulzStop::kNoStepYet ? stop.best_step : std::numeric_limits<double>::infinity();
    result.converged = stop.converged;
    double trace = 0;
    for (int64_t i = 0; i < r; ++i) trace += best[i + i * r];
    result.trace_sqrt = std::sqrt(scale) * std::max(trace, 0.0);
    return result;
}

}  // namespace

void validate_covariance(const SymmetricView& s, const char* name) {
    const int64_t d = s.dim;
    double max_diagonal = 0;
    for (int64_t i = 0; i < d; ++i) max_diagonal = std::max(max_diagonal, std::abs(s.at(i, i)));
    const double allowed = kSymmetryTolerance * max_diagonal;
    constexpr int64_t block = 64;
    for (int64_t ib = 0; ib < d; ib += block)
        for (int64_t jb = 0; jb <= ib; jb += block)
            for (int64_t i = ib; i < std::min(ib + block, d); ++i)
                for (int64_t j = jb; j < std::min(jb + block, i + 1); ++j) {
                    const double lower = s.at(i, j), upper = s.at(j, i);
                    if (!std::isfinite(lower) || !std::isfinite(upper))
                        throw std::invalid_argument(describe(name, "contains NaN or Inf values"));
                    if (std::abs(lower - upper) > allowed) {
                        std::ostringstream message;
                        message << "is not symmetric: entries (" << i << ", " << j << ") and (" << j << ", " << i
                                << ") are " << lower << " and " << upper;
                        throw std::invalid_argument(describe(name, message.str()));
                    }
                }
}

namespace {

// The lower triangle of Σ / scale into a, column-major d × d (upper part left as it is).
void copy_lower_scaled(const SymmetricView& s, double scale, std::vector<double>& a) {
    const int64_t d = s.dim;
    const double inverse = 1.0 / scale;
    for (int64_t j = 0; j < d; ++j)
        for (int64_t i = j; i < d; ++i) a[i + j * d] = s.at(i, j) * inverse;
}

// The unpivoted factor, accepted only when its smallest pivot is above the rank threshold of the
// pivoted one (dpstrf's default: d·eps·max diag), so both agree on which matrices are singular.
bool unpivoted_factor(PsdFactor& f, double max_diagonal) {
    const int64_t d = f.dim;
    if (!blas::cholesky_lower(blas::checked_int(d), f.lower.data())) return false;
    const double threshold = static_cast<double>(d) * std::numeric_limits<double>::epsilon() * max_diagonal;
    for (int64_t i = 0; i < d; ++i)
        if (f.lower[i + i * d] * f.lower[i + i * d] <= threshold) return false;
    f.rank = d;
    f.pivot.resize(d);
    for (int64_t i = 0; i < d; ++i) f.pivot[i] = static_cast<int32_t>(i);
    return true;
}

}  // namespace

PsdFactor PsdFactor::compute(const SymmetricView& s, const char* name) {
    const int64_t d = s.dim;
    const blas::Int n = blas::checked_int(d);
    PsdFactor f;
    f.dim = d;
    f.scale = power_of_two_scale(s);
    f.lower.assign(static_cast<size_t>(d * d), 0.0);
    std::vector<double> diagonal(d);
    for (int64_t j = 0; j < d; ++j) {
        diagonal[j] = s.at(j, j) / f.scale;
        f.trace += s.at(j, j);
    }
    const double max_diagonal = d ? *std::max_element(diagonal.begin(), diagonal.end()) : 0.0;
    const double min_diagonal = d ? *std::min_element(diagonal.begin(), diagonal.end()) : 0.0;
    if (min_diagonal < -kNonPsdTolerance * std::max(max_diagonal, 0.0) || (d && max_diagonal < 0))
        throw std::invalid_argument(describe(name, "is not positive semidefinite: it has a negative variance on its diagonal"));

    copy_lower_scaled(s, f.scale, f.lower);
    if (d == 0 || unpivoted_factor(f, max_diagonal)) return f;

    f.pivoted = true;
    copy_lower_scaled(s, f.scale, f.lower);  // dpotrf overwrote it before failing
    std::vector<blas::Int> pivot(d);
    std::vector<double> work(2 * static_cast<size_t>(d));
    f.rank = blas::pivoted_cholesky_lower(n, f.lower.data(), pivot.data(), work.data());
    f.pivot.resize(d);
    for (int64_t i = 0; i < d; ++i) f.pivot[i] = pivot[i] - 1;

    // dpstrf stops once every remaining pivot is ≤ d·eps·max diag; the remaining Schur-complement
    // diagonal, diag(Σ)[p_i] − Σ_k L[i,k]², must then be ≥ 0 up to rounding, else Σ is indefinite.
    const int64_t r = f.rank;
    for (int64_t i = r; i < d; ++i) {
        double schur = diagonal[f.pivot[i]];
        for (int64_t k = 0; k < r; ++k) schur -= f.lower[i + k * d] * f.lower[i + k * d];
        if (schur < -kNonPsdTolerance * max_diagonal)
            throw std::invalid_argument(describe(name, "is not positive semidefinite (pivoted Cholesky met a negative pivot)"));
    }
    // Keep exactly L: zero the strict upper triangle and the columns past the rank.
    for (int64_t j = 0; j < d; ++j)
        for (int64_t i = 0; i < d; ++i)
            if (i < j || j >= r) f.lower[i + j * d] = 0.0;
    return f;
}

TraceResult trace_sqrt_product(const PsdFactor& factor, const SymmetricView& other, const TraceOptions& options) {
    if (other.dim != factor.dim)
        throw std::invalid_argument("sigma1 is " + std::to_string(factor.dim) + "x" + std::to_string(factor.dim) +
                                    " but sigma2 is " + std::to_string(other.dim) + "x" + std::to_string(other.dim));
    std::vector<double> a;
    if (factor.rank == 0) return TraceResult{};
    // Both sides are divided by powers of two near their largest variance, so that LAPACK meets
    // numbers near 1 whatever the units (1e200·I, spectra over 1e-300…1e300); the eigenvalues
    // of A are then those of the true one divided by scale₁·scale₂, exactly.
    const double other_scale = power_of_two_scale(other);
    congruence(factor, other, other_scale, a);
    TraceResult result = options.method == TraceMethod::eigh ? trace_by_eigenvalues(factor, a)
                                                             : trace_by_newton_schulz(factor, a, options);
    if (options.method == TraceMethod::eigh && result.most_negative < -kNonPsdTolerance * result.max_eigenvalue)
        throw std::invalid_argument("sigma2 is not positive semidefinite: an eigenvalue of L^T sigma2 L is " +
                                    std::to_string(result.most_negative) + " against a largest one of " +
                                    std::to_string(result.max_eigenvalue));
    const double product_scale = factor.scale * other_scale;
    result.trace_sqrt *= std::sqrt(factor.scale) * std::sqrt(other_scale);
    result.max_eigenvalue *= product_scale;
    result.most_negative *= product_scale;
    if (!std::isfinite(result.trace_sqrt))
        throw std::runtime_error("tr sqrt(sigma1 sigma2) is not finite in float64 (values beyond 1e308)");
    return result;
}

namespace {

// Q diag(f(λ)) Qᵀ, full (both triangles), column-major d × d; `scaled` is scratch.
std::vector<double> spectral_function(const std::vector<double>& q, const std::vector<double>& root_of_f, int64_t d) {
    std::vector<double> scaled(q);
    for (int64_t j = 0; j < d; ++j)
        for (int64_t i = 0; i < d; ++i) scaled[i + j * d] *= root_of_f[j];
    std::vector<double> result(static_cast<size_t>(d * d));
    blas::syrk_lower(blas::checked_int(d), blas::checked_int(d), scaled.data(), result.data());
    mirror_lower(result.data(), d, d);
    return result;
}

// M[p_i][p_j] = M_p[i][j], symmetrised against rounding; the result is symmetric, so its
// row-major and column-major layouts are the same.
std::vector<double> unpermute_symmetric(const std::vector<double>& permuted, const std::vector<int32_t>& pivot) {
    const int64_t d = static_cast<int64_t>(pivot.size());
    std::vector<double> out(static_cast<size_t>(d * d));
    for (int64_t j = 0; j < d; ++j)
        for (int64_t i = 0; i < d; ++i)
            out[pivot[i] + pivot[j] * d] = 0.5 * (permuted[i + j * d] + permuted[j + i * d]);
    return out;
}

}  // namespace

TransportMaps transport_maps(const PsdFactor& factor, const SymmetricView& other, bool forward, bool inverse) {
    const int64_t d = factor.dim;
    if (other.dim != d) throw std::invalid_argument("sigma1 and sigma2 have different sizes");
    if (factor.rank < d)
        throw std::invalid_argument("sigma1 is singular (rank " + std::to_string(factor.rank) + " of " +
                                    std::to_string(d) + "): the transport map needs a nonsingular covariance, "
                                    "from at least d + 1 samples");
    const blas::Int n = blas::checked_int(d);
    std::vector<double> a;
    congruence(factor, other, 1.0, a);  // rank d: the padded route, d × d lower triangle
    std::vector<double> eigenvalues(static_cast<size_t>(d)), q(static_cast<size_t>(d * d));
    blas::symmetric_eigen_lower(n, a.data(), n, eigenvalues.data(), q.data());
    const double largest = d ? eigenvalues.back() : 0.0;
    if (d && eigenvalues.front() < -kNonPsdTolerance * largest)
        throw std::invalid_argument("sigma2 is not positive semidefinite: an eigenvalue of L^T sigma2 L is " +
                                    std::to_string(eigenvalues.front()) + " against a largest one of " +
                                    std::to_string(largest));
    // L factors Σ₁ / s (s = factor.scale), so A = s·Lᵀ Σ₂ L: with its eigenvalues λ' = λ / s,
    // T = s^−½ L⁻ᵀ Q Λ'^½ Qᵀ L⁻¹ and T⁻¹ = s^½ L Q Λ'^−½ Qᵀ Lᵀ (the factors of s go into λ^¼ below).
    const double s = factor.scale;
    TransportMaps maps;
    std::vector<double> quarter(static_cast<size_t>(d));  // λ^¼: Q diag(λ^¼) squared is Q Λ^½ Qᵀ
    for (int64_t i = 0; i < d; ++i) {
        const double lambda = std::max(eigenvalues[i], 0.0);
        maps.trace_sqrt += std::sqrt(lambda);
        quarter[i] = std::sqrt(std::sqrt(lambda));
    }
    maps.trace_sqrt *= std::sqrt(s);
    const double forward_weight = std::sqrt(std::sqrt(1.0 / s)), inverse_weight = std::sqrt(std::sqrt(s));
    if (forward) {
        std::vector<double> weighted(quarter);
        for (double& v : weighted) v *= forward_weight;
        std::vector<double> t = spectral_function(q, weighted, d);
        blas::solve_lower(true, true, n, factor.lower.data(), t.data());    // L⁻ᵀ (Q Λ^½ Qᵀ)
        blas::solve_lower(false, false, n, factor.lower.data(), t.data());  // ... L⁻¹
        maps.forward = unpermute_symmetric(t, factor.pivot);
    }
    if (inverse) {
        // λ below d·eps of the largest is rounding of a zero: Σ₂ is singular on Σ₁'s range.
        if (d && eigenvalues.front() <= static_cast<double>(d) * 2.2e-16 * largest)
            throw std::invalid_argument("sigma2 is singular: the inverse transport map (the gradient for sigma2) "
                                        "needs a nonsingular covariance, from at least d + 1 samples");
        std::vector<double> inverse_quarter(quarter);
        for (double& v : inverse_quarter) v = inverse_weight / v;
        std::vector<double> t = spectral_function(q, inverse_quarter, d);
        blas::multiply_lower(true, false, n, factor.lower.data(), t.data());  // L (Q Λ^−½ Qᵀ)
        blas::multiply_lower(false, true, n, factor.lower.data(), t.data());  // ... Lᵀ
        maps.inverse = unpermute_symmetric(t, factor.pivot);
    }
    return maps;
}

}  // namespace fastfid::cpu
