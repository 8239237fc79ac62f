#include "cpu/stats.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/half.hpp"
#include "cpu/blas.hpp"

namespace fastfid::cpu {
namespace {

// Rows per panel: 4 MiB of float64, 256 rows at d = 2048, which fits the L3 cache while SYRK
// consumes it. Measured at 50,000 × 2048: 128 to 2048 rows all land within 10% of each other
// (2.3–2.5 s, the float64 SYRK roofline of the machine); 256 was the fastest.
int64_t panel_rows(int64_t dim) { return std::clamp<int64_t>((int64_t{1} << 19) / std::max<int64_t>(dim, 1), 64, 4096); }

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

void convert(const FeatureMatrix& x, int64_t first, int64_t rows, const double* shift, double* panel, double* sums) {
    switch (x.type) {
        case ScalarType::float16: return convert_panel<uint16_t>(x, first, rows, shift, panel, sums);
        case ScalarType::float32: return convert_panel<float>(x, first, rows, shift, panel, sums);
        case ScalarType::float64: return convert_panel<double>(x, first, rows, shift, panel, sums);
    }
}

// A NaN or Inf anywhere in a panel makes its column sums non-finite, so checking the d sums
// validates the whole panel for free.
bool all_finite(const double* values, int64_t n) {
    double probe = 0;
    for (int64_t i = 0; i < n; ++i) probe += values[i] - values[i];  // 0 unless some value is NaN/Inf
    return probe == 0;
}

[[noreturn]] void throw_non_finite() {
    throw std::invalid_argument("features contain NaN or Inf values");
}

}  // namespace

void accumulate(const StatsState& state, const FeatureMatrix& x) {
    const int64_t d = state.dim;
    if (x.cols != d)
        throw std::invalid_argument("features have " + std::to_string(x.cols) + " columns, the statistics have dim " +
                                    std::to_string(d));
    if (x.rows < 1) throw std::invalid_argument("the batch of features is empty");
    const blas::Int n_blas = blas::checked_int(d);
    const int64_t n_old = *state.count;
    const int64_t n_new = n_old + x.rows;
    const int64_t panel = std::min(panel_rows(d), x.rows);

    // Centre on a shift close to the mean so that no large sums of squares cancel: the running
    // mean, or for an empty accumulator the mean of the first panel.
    std::vector<double> shift(state.mean, state.mean + d);
    std::vector<double> buffer(static_cast<size_t>(panel * d));
    std::vector<double> sums(d, 0.0);
    if (n_old == 0) {
        convert(x, 0, panel, shift.data(), buffer.data(), sums.data());
        if (!all_finite(sums.data(), d)) throw_non_finite();
        for (int64_t j = 0; j < d; ++j) shift[j] += sums[j] / static_cast<double>(panel);
        std::fill(sums.begin(), sums.end(), 0.0);
    }

    // One panel: validated before it touches the state. Several: accumulate aside and commit only
    // once every panel was finite, so a failed update leaves the state as it was.
    const bool single_panel = panel == x.rows;
    std::vector<double> staging;
    double* target = state.comoment;
    if (!single_panel) {
        staging.assign(static_cast<size_t>(d * d), 0.0);
        target = staging.data();
    }
    for (int64_t first = 0; first < x.rows; first += panel) {
        const int64_t rows = std::min(panel, x.rows - first);
        convert(x, first, rows, shift.data(), buffer.data(), sums.data());
        if (single_panel && !all_finite(sums.data(), d)) throw_non_finite();
        blas::syrk_upper_rowmajor(n_blas, blas::checked_int(rows), 1.0, buffer.data(), target);
    }
    if (!single_panel) {
        if (!all_finite(sums.data(), d)) throw_non_finite();
        for (int64_t i = 0; i < d; ++i)
            for (int64_t j = i; j < d; ++j) state.comoment[i * d + j] += staging[i * d + j];
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
