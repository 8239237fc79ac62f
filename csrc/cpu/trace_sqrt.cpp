#include "cpu/trace_sqrt.hpp"

#include <algorithm>
#include <cmath>
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

// A ← Fᵀ Σ₂ F, r × r in the leading block of `work` (column-major, leading dimension d, lower triangle).
void congruence(const PsdFactor& f, const SymmetricView& other, std::vector<double>& work) {
    const int64_t d = f.dim, r = f.rank;
    const blas::Int n = blas::checked_int(d), rb = blas::checked_int(r);
    // Σ₂ permuted like Σ₁: Fᵀ Σ₂ F = Lᵀ (Pᵀ Σ₂ P) L. Only the lower triangle is needed; column j
    // of it is gathered from row p_j of Σ₂ (symmetric), so the random reads stay within one row.
    std::vector<double> permuted(static_cast<size_t>(d * d));
    for (int64_t j = 0; j < d; ++j) {
        const int64_t pj = f.pivot[j];
        for (int64_t i = j; i < d; ++i) permuted[i + j * d] = other.at(pj, f.pivot[i]);
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

    NewtonSchulzStop stop(options.tolerance);
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
    result.step = stop.best_step();
    result.converged = stop.converged();
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

PsdFactor PsdFactor::compute(const SymmetricView& s, const char* name) {
    const int64_t d = s.dim;
    const blas::Int n = blas::checked_int(d);
    PsdFactor f;
    f.dim = d;
    f.lower.resize(static_cast<size_t>(d * d));
    std::vector<double> diagonal(d);
    for (int64_t j = 0; j < d; ++j) {
        diagonal[j] = s.at(j, j);
        f.trace += diagonal[j];
        for (int64_t i = j; i < d; ++i) f.lower[i + j * d] = s.at(i, j);
    }
    const double max_diagonal = d ? *std::max_element(diagonal.begin(), diagonal.end()) : 0.0;
    const double min_diagonal = d ? *std::min_element(diagonal.begin(), diagonal.end()) : 0.0;
    if (min_diagonal < -kNonPsdTolerance * std::max(max_diagonal, 0.0) || (d && max_diagonal < 0))
        throw std::invalid_argument(describe(name, "is not positive semidefinite: it has a negative variance on its diagonal"));

    std::vector<blas::Int> pivot(d);
    std::vector<double> work(2 * static_cast<size_t>(d));
    f.rank = d ? blas::pivoted_cholesky_lower(n, f.lower.data(), pivot.data(), work.data()) : 0;
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
    // Newton–Schulz cannot tell an indefinite Σ₂ from a slowly converging one; a pivoted Cholesky
    // of Σ₂ can, for a few per cent of the iteration's cost. (eigh sees it in the eigenvalues.)
    if (options.method == TraceMethod::newton_schulz) PsdFactor::compute(other, "sigma2");
    std::vector<double> a;
    if (factor.rank == 0) return TraceResult{};
    congruence(factor, other, a);
    TraceResult result = options.method == TraceMethod::eigh ? trace_by_eigenvalues(factor, a)
                                                             : trace_by_newton_schulz(factor, a, options);
    if (options.method == TraceMethod::eigh && result.most_negative < -kNonPsdTolerance * result.max_eigenvalue)
        throw std::invalid_argument("sigma2 is not positive semidefinite: an eigenvalue of L^T sigma2 L is " +
                                    std::to_string(result.most_negative) + " against a largest one of " +
                                    std::to_string(result.max_eigenvalue));
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
    congruence(factor, other, a);  // rank d: the padded route, d × d lower triangle
    std::vector<double> eigenvalues(static_cast<size_t>(d)), q(static_cast<size_t>(d * d));
    blas::symmetric_eigen_lower(n, a.data(), n, eigenvalues.data(), q.data());
    const double largest = d ? eigenvalues.back() : 0.0;
    if (d && eigenvalues.front() < -kNonPsdTolerance * largest)
        throw std::invalid_argument("sigma2 is not positive semidefinite: an eigenvalue of L^T sigma2 L is " +
                                    std::to_string(eigenvalues.front()) + " against a largest one of " +
                                    std::to_string(largest));
    TransportMaps maps;
    std::vector<double> quarter(static_cast<size_t>(d));  // λ^¼: Q diag(λ^¼) squared is Q Λ^½ Qᵀ
    for (int64_t i = 0; i < d; ++i) {
        const double lambda = std::max(eigenvalues[i], 0.0);
        maps.trace_sqrt += std::sqrt(lambda);
        quarter[i] = std::sqrt(std::sqrt(lambda));
    }
    if (forward) {
        std::vector<double> t = spectral_function(q, quarter, d);
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
        for (double& v : inverse_quarter) v = 1.0 / v;
        std::vector<double> t = spectral_function(q, inverse_quarter, d);
        blas::multiply_lower(true, false, n, factor.lower.data(), t.data());  // L (Q Λ^−½ Qᵀ)
        blas::multiply_lower(false, true, n, factor.lower.data(), t.data());  // ... Lᵀ
        maps.inverse = unpermute_symmetric(t, factor.pivot);
    }
    return maps;
}

}  // namespace fastfid::cpu
