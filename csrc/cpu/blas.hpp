// The few BLAS/LAPACK routines the CPU core uses, from the scipy-openblas32 wheel. Its headers
// carry the library's `scipy_` symbol prefix; these wrappers keep that detail in one place.
// All matrices handed to LAPACK here are column-major.
#pragma once

#include <cblas.h>
#include <lapacke.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace fastfid::blas {

using Int = blasint;  // 32-bit: scipy-openblas32 is an LP64 build

inline Int checked_int(int64_t value) {
    if (value > INT32_MAX) throw std::invalid_argument("dimension " + std::to_string(value) + " is too large for 32-bit BLAS");
    return static_cast<Int>(value);
}

inline void check_info(lapack_int info, const char* routine) {
    if (info < 0) throw std::runtime_error(std::string(routine) + ": illegal argument " + std::to_string(-info));
}

// C += alpha · Aᵀ A on the upper triangle, A row-major k × n (rows are samples).
inline void syrk_upper_rowmajor(Int n, Int k, double alpha, const double* a, double* c) {
    scipy_cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, n, k, alpha, a, n, 1.0, c, n);
}

// C += alpha · x xᵀ on the upper triangle, C row-major n × n.
inline void syr_upper_rowmajor(Int n, double alpha, const double* x, double* c) {
    scipy_cblas_dsyr(CblasRowMajor, CblasUpper, n, alpha, x, 1, c, n);
}

// Σ = L Lᵀ (lower triangle, in place); false unless Σ is positive definite to LAPACK.
inline bool cholesky_lower(Int n, double* a) {
    const lapack_int info = scipy_LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, 'L', n, a, n);
    check_info(info, "dpotrf");
    return info == 0;
}

// The BLAS threads of this library instance (numpy's own BLAS is a different one, untouched).
inline void set_threads(int threads) { scipy_openblas_set_num_threads(threads); }
inline int threads() { return scipy_openblas_get_num_threads(); }

// Σ = P L Lᵀ Pᵀ, semidefinite allowed: returns the numerical rank; piv is 1-based.
inline Int pivoted_cholesky_lower(Int n, double* a, Int* piv, double* work) {
    Int rank = 0;
    lapack_int info = scipy_LAPACKE_dpstrf_work(LAPACK_COL_MAJOR, 'L', n, a, n, piv, &rank, -1.0, work);
    check_info(info, "dpstrf");
    return rank;
}

// A ← Lᵀ A L using the lower triangles of A and L (LAPACK dsygst, itype 3).
inline void congruence_lower(Int n, double* a, const double* l) {
    check_info(scipy_LAPACKE_dsygst_work(LAPACK_COL_MAJOR, 3, 'L', n, a, n, l, n), "dsygst");
}

// C = A · B with A symmetric (lower triangle), A n × n, B n × m, C n × m.
inline void symm_lower_left(Int n, Int m, const double* a, Int lda, const double* b, Int ldb, double* c, Int ldc) {
    scipy_cblas_dsymm(CblasColMajor, CblasLeft, CblasLower, n, m, 1.0, a, lda, b, ldb, 0.0, c, ldc);
}

// C = alpha · op(A) op(B) + beta · C, lower triangle of the square result only.
inline void gemmt_lower(bool trans_a, Int n, Int k, double alpha, const double* a, Int lda, const double* b, Int ldb,
                        double beta, double* c, Int ldc) {
    scipy_cblas_dgemmt(CblasColMajor, CblasLower, trans_a ? CblasTrans : CblasNoTrans, CblasNoTrans, n, k, alpha,
                       a, lda, b, ldb, beta, c, ldc);
}

// C = A Bᵀ, row-major: A m × k, B n × k, C m × n.
inline void gemm_abt_rowmajor(Int m, Int n, Int k, const double* a, const double* b, double* c) {
    scipy_cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0, a, k, b, k, 0.0, c, n);
}

// C = alpha · A B + beta · C, all n × n column-major.
inline void gemm_square(Int n, double alpha, const double* a, const double* b, double beta, double* c) {
    scipy_cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, n, n, n, alpha, a, n, b, n, beta, c, n);
}

// Eigenvalues (ascending) of the symmetric matrix whose lower triangle is in a (destroyed), and
// with q non-null its eigenvectors as the columns of q (n × n).
// dsyevr (tridiagonal reduction + dsterf) measured faster here than dsyevd and the two-stage
// dsyevd_2stage at d = 2048 for values only (0.29 s against 0.37 s and 0.46 s).
inline void symmetric_eigen_lower(Int n, double* a, Int lda, double* w, double* q) {
    if (n == 0) return;
    Int found = 0;
    std::vector<Int> support(2 * static_cast<size_t>(n));
    double work_query = 0;
    Int iwork_query = 0;
    auto call = [&](double* work, Int lwork, Int* iwork, Int liwork) {
        return scipy_LAPACKE_dsyevr_work(LAPACK_COL_MAJOR, q ? 'V' : 'N', 'A', 'L', n, a, lda, 0.0, 0.0, 0, 0, 0.0,
                                         &found, w, q, q ? n : 1, support.data(), work, lwork, iwork, liwork);
    };
    check_info(call(&work_query, -1, &iwork_query, -1), "dsyevr");
    std::vector<double> work(static_cast<size_t>(work_query) + 1);
    std::vector<Int> iwork(static_cast<size_t>(iwork_query) + 1);
    const lapack_int info = call(work.data(), static_cast<Int>(work.size()), iwork.data(), static_cast<Int>(iwork.size()));
    check_info(info, "dsyevr");
    if (info > 0) throw std::runtime_error("dsyevr: the eigenvalue computation did not converge");
}

// C = A Aᵀ (lower triangle), A n × k column-major.
inline void syrk_lower(Int n, Int k, const double* a, double* c) {
    scipy_cblas_dsyrk(CblasColMajor, CblasLower, CblasNoTrans, n, k, 1.0, a, n, 0.0, c, n);
}

// B ← op(L)⁻¹ B (left) or B op(L)⁻¹ (right), L lower triangular n × n, B n × n, column-major.
inline void solve_lower(bool left, bool transpose, Int n, const double* l, double* b) {
    scipy_cblas_dtrsm(CblasColMajor, left ? CblasLeft : CblasRight, CblasLower, transpose ? CblasTrans : CblasNoTrans,
                      CblasNonUnit, n, n, 1.0, l, n, b, n);
}

// B ← op(L) B (left) or B op(L) (right), L lower triangular n × n, B n × n, column-major.
inline void multiply_lower(bool left, bool transpose, Int n, const double* l, double* b) {
    scipy_cblas_dtrmm(CblasColMajor, left ? CblasLeft : CblasRight, CblasLower, transpose ? CblasTrans : CblasNoTrans,
                      CblasNonUnit, n, n, 1.0, l, n, b, n);
}

}  // namespace fastfid::blas
