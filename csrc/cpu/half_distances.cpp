#include "cpu/half_distances.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

namespace fastfid::cpu {

float round_to_half(float x) {
    uint32_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    const uint32_t magnitude = bits & 0x7fffffffu;
    if (magnitude >= 0x7f800000u) return x;  // inf, NaN
    if (magnitude < 0x38800000u) {           // below 2^-14: half's subnormals, multiples of 2^-24
        return std::nearbyint(x * 16777216.0f) * 5.9604644775390625e-8f;  // exact scalings; ties to even
    }
    // Keep 10 of the 23 mantissa bits, ties to even; a carry moves into the exponent as it should.
    bits += 0x0fffu + ((bits >> 13) & 1u);
    bits &= ~0x1fffu;
    float rounded;
    std::memcpy(&rounded, &bits, sizeof rounded);
    return std::fabs(rounded) > 65504.0f ? std::copysign(INFINITY, x) : rounded;
}

namespace {

void distance_rows(float* p, int64_t first, int64_t last, int64_t cols, const float* norm_u, const float* norm_v) {
    for (int64_t i = first; i < last; ++i) {
        float* row = p + i * cols;
        const float nu = norm_u[i];
        for (int64_t j = 0; j < cols; ++j) {
            const float doubled = round_to_half(2.0f * round_to_half(row[j]));
            const float d = round_to_half(round_to_half(nu - doubled) + norm_v[j]);
            row[j] = d < 0.0f ? 0.0f : d;  // NaN fails the test and stays, as TensorFlow's maximum keeps it
        }
    }
}

}  // namespace

void adm_half_distances(float* p, int64_t rows, int64_t cols, const float* norm_u, const float* norm_v,
                        int threads) {
    const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(threads, rows));
    if (parts == 1) {
        distance_rows(p, 0, rows, cols, norm_u, norm_v);
        return;
    }
    std::vector<std::thread> workers;
    const int64_t step = (rows + parts - 1) / parts;
    for (int64_t first = step; first < rows; first += step)
        workers.emplace_back(distance_rows, p, first, std::min(rows, first + step), cols, norm_u, norm_v);
    distance_rows(p, 0, std::min(rows, step), cols, norm_u, norm_v);
    for (auto& worker : workers) worker.join();
}

}  // namespace fastfid::cpu
