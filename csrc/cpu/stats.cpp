#include "cpu/stats.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/half.hpp"
#include "cpu/blas.hpp"

namespace fastfid::cpu {
namespace {

template <typename T>
inline double load(const T* p) { return static_cast<double>(*p); }
template <>
inline double load<uint16_t>(const uint16_t* p) { return half_to_double(*p); }

// panel[r, j] = x[first + r, j] − shift[j]  and  sums[j] += panel[r, j], for r < rows.
template <typename T>
void convert_panel(const FeatureMatrix& x, int64_t first, int64_t rows, const double* shift, double* panel,
                   double* sums) {
    const T* base = static_cast<const T*>(x.data);
    const int64_t d = x.cols;
    if (x.col_stride == 1 || x.rows == 1) {
        for (int64_t r = 0; r < rows; ++r) {
            const T* row = base + (first + r) * x.row_stride;
            double* out = panel + r * d;
            const int64_t step = x.col_stride;
            for (int64_t j = 0; j < d; ++j) {
                const double v = load(row + j * step) - shift[j];
                out[j] = v;
                sums[j] += v;
            }
        }
    } else {
        // Column-major or otherwise strided input: walk down columns, which is contiguous there.
        for (int64_t j = 0; j < d; ++j) {
            const T* column = base + j * x.col_stride + first * x.row_stride;
            double total = 0;
            for (int64_t r = 0; r < rows; ++r) {
                const double v = load(column + r * x.row_stride) - shift[j];
                panel[r * d + j] = v;
                total += v;
            }
            sums[j] += total;
        }
    }
}

// Float64 features beyond ±1e150 are refused with NaN and Inf: their squares, summed over up to
// 1e8 samples, would overflow the co-moment (float32 and float16 cannot reach it).
constexpr double kLargestFeature = 1e150;

// 1 if the value is NaN or ±Inf (or, for float64, beyond kLargestFeature). Written as an OR-able comparison, not a floating-point sum
// (a serial chain), so the scan vectorises: float16 by its exponent bits, float and double by
// !(|v| ≤ max), which SSE2 compares in bulk (64-bit integer compares would need SSE4.1).
// The flag has the value's width, so compare lanes and OR lanes line up.
template <typename T>
using Flag = std::conditional_t<sizeof(T) == 8, uint64_t, std::conditional_t<sizeof(T) == 4, uint32_t, uint16_t>>;
inline Flag<uint16_t> non_finite(const uint16_t* value) { return (*value & 0x7c00u) == 0x7c00u; }
template <typename T>
inline Flag<T> non_finite(const T* value) {
    if constexpr (std::is_same_v<T, double>) return !(std::fabs(*value) <= kLargestFeature);
    return !(std::fabs(*value) <= std::numeric_limits<T>::max());
}

// A read-only pass over a whole batch: ahead of a multi-panel update so that a NaN in its last
// row cannot leave the state half-updated, and for the small batches FeatureStats gathers. It
// walks in memory order: along rows for C-ordered batches, down columns for Fortran-ordered ones.
template <typename T>
bool batch_finite(const FeatureMatrix& x) {
    const bool by_rows = std::abs(x.col_stride) <= std::abs(x.row_stride);
    const int64_t outer = by_rows ? x.rows : x.cols, inner = by_rows ? x.cols : x.rows;
    const int64_t outer_stride = by_rows ? x.row_stride : x.col_stride;
    const int64_t inner_stride = by_rows ? x.col_stride : x.row_stride;
    const T* base = static_cast<const T*>(x.data);
    for (int64_t o = 0; o < outer; ++o) {
        const T* line = base + o * outer_stride;
        Flag<T> bad = 0;
        if (inner_stride == 1) {  // the common, contiguous case: a loop the compiler vectorises
            for (int64_t i = 0; i < inner; ++i) bad |= non_finite(line + i);
        } else {
            for (int64_t i = 0; i < inner; ++i) bad |= non_finite(line + i * inner_stride);
        }
        if (bad) return false;
    }
    return true;
}

// Calls f with a value of the type the features are stored in (uint16_t holds float16 bits).
template <typename F>
decltype(auto) with_scalar_type(ScalarType type, F&& f) {
    switch (type) {
        case ScalarType::float16: return f(uint16_t{});
        case ScalarType::float32: return f(float{});
        case ScalarType::float64: break;
    }
    return f(double{});
}

void convert(const FeatureMatrix& x, int64_t first, int64_t rows, const double* shift, double* panel, double* sums) {
    with_scalar_type(x.type, [&](auto type) { convert_panel<decltype(type)>(x, first, rows, shift, panel, sums); });
}

// A NaN or Inf anywhere in a panel makes its column sums non-finite, so checking the d sums
// validates the whole panel for free.
bool all_finite(const double* values, int64_t n) {
    double probe = 0;
    for (int64_t i = 0; i < n; ++i) probe += values[i] - values[i];  // 0 unless some value is NaN/Inf
    return probe == 0;
}

[[noreturn]] void throw_non_finite() {
    throw std::invalid_argument("features contain NaN or Inf values (or float64 values beyond ±1e150, whose squares "
                                "overflow the covariance)");
}

}  // namespace

void rows_as_float64(const FeatureMatrix& x, int64_t first, int64_t rows, double* out) {
    const std::vector<double> zero(static_cast<size_t>(x.cols), 0.0);
    std::vector<double> sums(static_cast<size_t>(x.cols), 0.0);
    convert(x, first, rows, zero.data(), out, sums.data());
}

void require_finite(const FeatureMatrix& x) {
    if (!with_scalar_type(x.type, [&](auto type) { return batch_finite<decltype(type)>(x); })) throw_non_finite();
}

int64_t panel_rows(int64_t dim) { return std::clamp<int64_t>((int64_t{1} << 19) / std::max<int64_t>(dim, 1), 64, 4096); }

void accumulate(const StatsState& state, const FeatureMatrix& x) {
    const int64_t d = state.dim;
    if (x.cols != d)
        throw std::invalid_argument("features have " + std::to_string(x.cols) + " columns, the statistics have dim " +
                                    std::to_string(d));
    if (x.rows < 1) throw std::invalid_argument("the batch of features is empty");
    const blas::Int n_blas = blas::checked_int(d);
    const int64_t n_old = *state.count;
    if (n_old > std::numeric_limits<int64_t>::max() - x.rows)
        throw std::overflow_error("the sample count overflows a 64-bit count (a corrupt statistics file?)");
    const int64_t n_new = n_old + x.rows;
    const int64_t panel = std::min(panel_rows(d), x.rows);

    // Centre on a shift close to the mean so that no large sums of squares cancel: the running
    // mean, or for an empty accumulator the mean of the first panel.
    std::vector<double> shift(state.mean, state.mean + d);
    std::vector<double> buffer(static_cast<size_t>(panel * d));
    std::vector<double> sums(d, 0.0);
    if (x.type == ScalarType::float64) require_finite(x);
    if (n_old == 0) {
        convert(x, 0, panel, shift.data(), buffer.data(), sums.data());
        if (!all_finite(sums.data(), d)) throw_non_finite();
        for (int64_t j = 0; j < d; ++j) shift[j] += sums[j] / static_cast<double>(panel);
        std::fill(sums.begin(), sums.end(), 0.0);
    }

    // Nothing touches the state before the whole batch is known to be finite: a single panel is
    // checked through its column sums, several panels by a scan ahead of the first SYRK.
    // Float64 batches are always scanned: their column sums cannot show a finite value too large to square.
    const bool single_panel = panel == x.rows;
    if (!single_panel && x.type != ScalarType::float64) require_finite(x);
    for (int64_t first = 0; first < x.rows; first += panel) {
        const int64_t rows = std::min(panel, x.rows - first);
        convert(x, first, rows, shift.data(), buffer.data(), sums.data());
        if (single_panel && !all_finite(sums.data(), d)) throw_non_finite();
        blas::syrk_upper_rowmajor(n_blas, blas::checked_int(rows), 1.0, buffer.data(), state.comoment);
    }

    // With S = Σ (x − k) over the batch and k = the old mean (or μ = k when the state was empty):
    // C ← C_old + Σ (x − k)(x − k)ᵀ − S Sᵀ / n_new   and   μ ← k + S / n_new.
    blas::syr_upper_rowmajor(n_blas, -1.0 / static_cast<double>(n_new), sums.data(), state.comoment);
    for (int64_t j = 0; j < d; ++j) state.mean[j] = shift[j] + sums[j] / static_cast<double>(n_new);
    *state.count = n_new;
}

void merge(const StatsState& state, int64_t other_count, const double* other_mean, const double* other_comoment) {
    const int64_t d = state.dim;
    const int64_t n_a = *state.count;
    if (other_count < 0 || n_a > std::numeric_limits<int64_t>::max() - other_count)
        throw std::overflow_error("merged sample count " + std::to_string(n_a) + " + " + std::to_string(other_count) +
                                  " overflows a 64-bit count (a corrupt statistics file?)");
    const int64_t n = n_a + other_count;
    if (other_count == 0) return;
    std::vector<double> delta(d);
    for (int64_t j = 0; j < d; ++j) delta[j] = other_mean[j] - state.mean[j];
    const double weight = static_cast<double>(n_a) * static_cast<double>(other_count) / static_cast<double>(n);
    for (int64_t i = 0; i < d; ++i) {
        const double scaled = weight * delta[i];
        double* row = state.comoment + i * d;
        const double* other_row = other_comoment + i * d;
        for (int64_t j = i; j < d; ++j) row[j] += other_row[j] + scaled * delta[j];
    }
    const double share = static_cast<double>(other_count) / static_cast<double>(n);
    for (int64_t j = 0; j < d; ++j) state.mean[j] += delta[j] * share;
    *state.count = n;
}

void symmetrize_upper(double* matrix, int64_t dim) {
    // Blocked transpose-copy keeps both the read and the write side in cache.
    constexpr int64_t block = 64;
    for (int64_t ib = 0; ib < dim; ib += block)
        for (int64_t jb = 0; jb <= ib; jb += block)
            for (int64_t i = ib; i < std::min(ib + block, dim); ++i)
                for (int64_t j = jb; j < std::min({jb + block, dim, i}); ++j) matrix[i * dim + j] = matrix[j * dim + i];
}

}  // namespace fastfid::cpu
