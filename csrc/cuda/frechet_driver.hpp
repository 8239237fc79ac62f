// Host-side sequence of the Fréchet distance on the device (kernels in frechet_kernels.cuh): every
// launch is enqueued on the caller's stream without waiting, the stopping rule of Newton–Schulz
// included, and the one wait is the copy of the result record (FrechetRecord, 200 bytes) at the end.
#pragma once

#include <algorithm>
#include <stdexcept>

#include "cuda/frechet_kernels.cuh"
#include "cuda/runtime.hpp"

namespace fastfid::device {

using kernels::FrechetRecord;

struct NewtonSchulzOptions {
    double tolerance = 1e-12;  // stop when ‖Y_{k+1} − Y_k‖_F / ‖Y_k‖_F ≤ tolerance
    int max_iterations = 100;
};

// Device addresses; the means may be null (then ‖μ₁ − μ₂‖² counts as 0), and so may the roots.
struct FrechetBuffers {
    const double* mean1;
    const double* sigma1;  // d × d, row-major, float64
    const double* mean2;
    const double* sigma2;
    double* workspace;         // frechet_workspace_doubles(d)
    double* sqrt_out;          // (Σ₁Σ₂)^½, or null
    double* inverse_sqrt_out;  // (Σ₁Σ₂)^−½, or null
};

constexpr int64_t frechet_workspace_doubles(int64_t d) {
    return kernels::kStateDoubles + 2 * kernels::kCheckBlocks * kernels::kCheckFields + 7 * d * d;
}

inline FrechetRecord frechet_distance_on(Device& device, int64_t d, const FrechetBuffers& b,
                                         const NewtonSchulzOptions& options) {
    using namespace kernels;
    if (d < 1) throw std::invalid_argument("the covariances must be at least 1 × 1");
    if (options.max_iterations < 0) throw std::invalid_argument("max_iterations must be >= 0");
    const int64_t size = d * d;
    auto* state = reinterpret_cast<FrechetState*>(b.workspace);
    double* partials = b.workspace + kStateDoubles;
    double* matrices = partials + 2 * kCheckBlocks * kCheckFields;
    const NewtonSchulzSlots slots{matrices, size};

    const dim3 elementwise(kElementwiseThreads), reduction(kReductionThreads), tile(kTileThreads);
    const dim3 elements(blocks_for(size, kElementwiseThreads));
    const auto side = static_cast<unsigned>((d + kTile - 1) / kTile);
    const unsigned check_blocks = std::min(blocks_for(size, kReductionThreads), static_cast<unsigned>(kCheckBlocks));

    device.launch(kernel::fastfid_fill_zero, dim3(blocks_for(kStateDoubles, kElementwiseThreads)), elementwise,
                  b.workspace, static_cast<int64_t>(kStateDoubles));
    device.launch(kernel::fastfid_covariance_checks, dim3(check_blocks, 2), reduction, b.sigma1, b.sigma2, d, partials);
    device.launch(kernel::fastfid_fd_begin, dim3(1), reduction, b.mean1, b.mean2, d, state, partials,
                  static_cast<int>(check_blocks));
    device.launch(kernel::fastfid_gemm_scaled, dim3(side, side), tile, b.sigma1, b.sigma2, matrices, d,
                  state);  // into Y₀
    device.launch(kernel::fastfid_sum_of_squares, dim3(std::min(blocks_for(size, kReductionThreads), 1024u)),
                  reduction, static_cast<const double*>(matrices), size, &state->norm_squared);
    device.launch(kernel::fastfid_ns_begin, dim3(1), dim3(1), state, options.tolerance, options.max_iterations);
    device.launch(kernel::fastfid_ns_start, elements, elementwise, slots, state, d);
    for (int iteration = 0; iteration < options.max_iterations; ++iteration) {
        device.launch(kernel::fastfid_ns_t, dim3(side, side), tile, slots, state, d);
        device.launch(kernel::fastfid_ns_products, dim3(side, side, 2), tile, slots, state, d);
        device.launch(kernel::fastfid_ns_stop, dim3(1), dim3(1), state);
    }
    device.launch(kernel::fastfid_fd_finish, dim3(1), reduction, slots, state, d);
    if (b.sqrt_out) device.launch(kernel::fastfid_ns_rescale, elements, elementwise, slots, state, size, b.sqrt_out, 1);
    if (b.inverse_sqrt_out)
        device.launch(kernel::fastfid_ns_rescale, elements, elementwise, slots, state, size, b.inverse_sqrt_out, -1);
    FrechetRecord record;
    device.copy_to_host(&record, &state->record, sizeof record);
    return record;
}

}  // namespace fastfid::device
