// The trace term tr √(Σ₁ Σ₂) of the Fréchet distance, in float64.
//
// Σ₁Σ₂ is not symmetric, but with any factor Σ₁ = F Fᵀ its eigenvalues are those of the
// symmetric positive semidefinite A = Fᵀ Σ₂ F, so tr √(Σ₁Σ₂) = Σ √λᵢ(A). F comes from a pivoted
// Cholesky factorisation, which is exact for semidefinite Σ₁ of rank r < d and shrinks A to r × r
// (the cost of a Gram-matrix route when there are fewer samples than dimensions).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/feature_matrix.hpp"

namespace fastfid::cpu {

// Relative size, against the largest diagonal entry or eigenvalue, of a negative pivot or
// eigenvalue that is taken as proof that a covariance is not positive semidefinite. A covariance
// computed in float32 carries relative errors up to ~1e-6·√d ≈ 5e-5 at d = 2048, which may show
// as small negative eigenvalues; those are rounding, not a wrong input, and are clamped at 0.
constexpr double kNonPsdTolerance = 1e-4;

// Checks that a covariance is finite and symmetric; throws std::invalid_argument naming `name`.
void validate_covariance(const SymmetricView& sigma, const char* name);

// Σ = scale · P L Lᵀ Pᵀ with L lower trapezoidal d × rank. The unpivoted Cholesky factor is
// tried first (P = I, a fifth of the pivoted one's time); the pivoted one only when it fails or
// meets a pivot that the pivoted factor would call zero (a semidefinite Σ).
struct PsdFactor {
    int64_t dim = 0;
    int64_t rank = 0;
    std::vector<double> lower;       // d × d column-major; columns ≥ rank and the upper part are 0
    std::vector<int32_t> pivot;      // 0-based: row i of L belongs to row pivot[i] of Σ
    double trace = 0;                // tr Σ
    double scale = 1;                // a power of two near the largest variance: L stays far from over/underflow
    bool pivoted = false;            // whether the pivoted factor was needed

    static PsdFactor compute(const SymmetricView& sigma, const char* name);
};

enum class TraceMethod { eigh, newton_schulz };

struct TraceOptions {
    TraceMethod method = TraceMethod::eigh;
    double tolerance = 1e-12;   // Newton–Schulz: stop when ‖Y_{k+1} − Y_k‖_F / ‖Y_k‖_F ≤ tolerance
    int max_iterations = 100;   // Newton–Schulz
};

struct TraceResult {
    double trace_sqrt = 0;       // tr √(Σ₁Σ₂)
    int64_t rank = 0;            // size of the symmetric problem (rank of Σ₁)
    int64_t clamped = 0;         // eigenvalues of A below 0 that were clamped (eigh)
    double most_negative = 0;    // the most negative eigenvalue of A, or 0
    double max_eigenvalue = 0;   // largest eigenvalue of A (eigh) or ‖A‖_F (Newton–Schulz)
    int iterations = 0;          // Newton–Schulz iterations run
    double step = 0;             // Newton–Schulz: the relative step ‖Y_{k+1} − Y_k‖_F / ‖Y_k‖_F that led to it
    bool converged = true;
};

// Both covariances must already have passed validate_covariance (the factor's at compute time).
// eigh sees an indefinite Σ₂ in the eigenvalues; Newton–Schulz cannot tell it from a slowly
// converging one, so for it the caller must have factored Σ₂ too (PsdFactor::compute refuses an
// indefinite matrix), as fastfid.distance does for both sides to pick the one of lower rank.
TraceResult trace_sqrt_product(const PsdFactor& factor, const SymmetricView& other, const TraceOptions& options);

// The optimal-transport map T from N(0, Σ₁) to N(0, Σ₂): the symmetric positive definite T with
// T Σ₁ T = Σ₂, and its inverse (the map back). They are FD's gradients: ∂FD/∂Σ₁ = I − T and
// ∂FD/∂Σ₂ = I − T⁻¹. With Σ₁ = P L Lᵀ Pᵀ and Lᵀ Σ₂ₚ L = Q Λ Qᵀ:
//     T = P L⁻ᵀ Q Λ^½ Qᵀ L⁻¹ Pᵀ,   T⁻¹ = P L Q Λ^−½ Qᵀ Lᵀ Pᵀ,   tr √(Σ₁Σ₂) = Σ √λᵢ.
// T needs Σ₁ nonsingular, T⁻¹ needs Σ₂ nonsingular too; otherwise std::invalid_argument.
struct TransportMaps {
    double trace_sqrt = 0;
    std::vector<double> forward;  // T, d × d (symmetric); empty unless asked for
    std::vector<double> inverse;  // T⁻¹, likewise
};

TransportMaps transport_maps(const PsdFactor& factor, const SymmetricView& other, bool forward, bool inverse);

}  // namespace fastfid::cpu
