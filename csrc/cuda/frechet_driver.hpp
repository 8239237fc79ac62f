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
    bool tensor_cores = false;  // the GEMMs on the FP64 tensor cores (sm_80/90/100) rather than FP64 FMAs
};

// The GEMM kernels of one variant, and the block they run in.
struct GemmKernels {
    dim3 block;
    KernelRef<decltype(::fastfid_gemm_scaled)> gemm_scaled;
    KernelRef<decltype(::fastfid_sym_left)> sym_left;
    KernelRef<decltype(::fastfid_sym_right)> sym_right;
    KernelRef<decltype(::fastfid_sym_residual)> sym_residual;
    KernelRef<decltype(::fastfid_sym_products)> sym_products;
    KernelRef<decltype(::fastfid_sym_wz)> sym_wz;

    static GemmKernels of(bool tensor_cores) {
        using namespace kernel;
        if (tensor_cores)
            return {dim3(kernels::kTensorThreads), fastfid_gemm_scaled_tensor, fastfid_sym_left_tensor,
                    fastfid_sym_right_tensor, fastfid_sym_residual_tensor, fastfid_sym_products_tensor,
                    fastfid_sym_wz_tensor};
        return {dim3(kernels::kTileThreads), fastfid_gemm_scaled, fastfid_sym_left, fastfid_sym_right,
                fastfid_sym_residual, fastfid_sym_products, fastfid_sym_wz};
    }
};

// Newton–Schulz's two GEMM kernels in one variant, and the block they run in.
struct IterationKernels {
    dim3 block;
    KernelRef<decltype(::fastfid_ns_t)> ns_t;
    KernelRef<decltype(::fastfid_ns_products)> ns_products;

    static IterationKernels of(kernels::Products products) {
        using namespace kernel;
        const dim3 block(kernels::gemm_threads(products));
        switch (products) {
            case kernels::Products::dmma: return {block, fastfid_ns_t_tensor, fastfid_ns_products_tensor};
            case kernels::Products::tf32x3: return {block, fastfid_ns_t_tf32x3, fastfid_ns_products_tf32x3};
            default: return {block, fastfid_ns_t, fastfid_ns_products};
        }
    }
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

// What both routes start with: clear the state, check both covariances (partials after the state),
// reduce the checks with ‖μ₁ − μ₂‖² and the traces.
inline void enqueue_checks(Device& device, int64_t d, const FrechetBuffers& b) {
    using namespace kernels;
    auto* state = reinterpret_cast<FrechetState*>(b.workspace);
    double* partials = b.workspace + kStateDoubles;
    const unsigned check_blocks =
        std::min(blocks_for(d * d, kReductionThreads), static_cast<unsigned>(kCheckBlocks));
    device.launch(kernel::fastfid_fill_zero, dim3(blocks_for(kStateDoubles, kElementwiseThreads)),
                  dim3(kElementwiseThreads), b.workspace, static_cast<int64_t>(kStateDoubles));
    device.launch(kernel::fastfid_covariance_checks, dim3(check_blocks, 2), dim3(kReductionThreads), b.sigma1,
                  b.sigma2, d, partials);
    device.launch(kernel::fastfid_fd_begin, dim3(1), dim3(kReductionThreads), b.mean1, b.mean2, d, state,
                  static_cast<const double*>(partials), static_cast<int>(check_blocks));
}

// max_iterations rounds of the coupled iteration, enqueued without waiting (the stop kernel decides).
inline void enqueue_iterations(Device& device, const IterationKernels& gemm,
                               const kernels::NewtonSchulzSlots& slots, kernels::FrechetState* state, int64_t d,
                               int max_iterations) {
    const auto side = static_cast<unsigned>((d + kernels::kTile - 1) / kernels::kTile);
    for (int iteration = 0; iteration < max_iterations; ++iteration) {
        device.launch(gemm.ns_t, dim3(side, side), gemm.block, slots, state, d);
        device.launch(gemm.ns_products, dim3(side, side, 2), gemm.block, slots, state, d);
        device.launch(kernel::fastfid_ns_stop, dim3(1), dim3(1), state);
    }
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

    const GemmKernels gemm = GemmKernels::of(options.tensor_cores);
    const dim3 elementwise(kElementwiseThreads), reduction(kReductionThreads), tile = gemm.block;
    const dim3 elements(blocks_for(size, kElementwiseThreads));
    const auto side = static_cast<unsigned>((d + kTile - 1) / kTile);

    enqueue_checks(device, d, b);
    device.launch(gemm.gemm_scaled, dim3(side, side), tile, b.sigma1, b.sigma2, matrices, d,
                  state);  // into Y₀
    device.launch(kernel::fastfid_sum_of_squares, dim3(std::min(blocks_for(size, kReductionThreads), 1024u)),
                  reduction, static_cast<const double*>(matrices), size, &state->norm_squared);
    device.launch(kernel::fastfid_ns_begin, dim3(1), dim3(1), state, options.tolerance, options.max_iterations, 0.0);
    device.launch(kernel::fastfid_ns_start, elements, elementwise, slots, static_cast<const double*>(matrices), state,
                  d);
    enqueue_iterations(device, IterationKernels::of(options.tensor_cores ? kernels::Products::dmma : kernels::Products::fma),
                       slots, state, d, options.max_iterations);
    device.launch(kernel::fastfid_fd_finish, dim3(1), reduction, slots, state, d);
    if (b.sqrt_out) device.launch(kernel::fastfid_ns_rescale, elements, elementwise, slots, state, size, b.sqrt_out, 1);
    if (b.inverse_sqrt_out)
        device.launch(kernel::fastfid_ns_rescale, elements, elementwise, slots, state, size, b.inverse_sqrt_out, -1);
    FrechetRecord record;
    device.copy_to_host(&record, &state->record, sizeof record);
    return record;
}

// The symmetric route's inputs beyond FrechetBuffers' (whose roots it never writes): each covariance
// divided by its unit, their lower Cholesky factors (either may have failed: info ≠ 0), and the units.
struct SymmetricBuffers {
    const double* scaled1;
    const double* scaled2;
    const double* factor1;
    const double* factor2;
    const int* info1;
    const int* info2;
    const double* units;  // u₁, u₂
};

// Newton–Schulz stops at this relative step; the correction and its bound take it from there.
constexpr double kSymmetricStep = 1e-6;
// The scaled iteration's assumed lower end of √(eigenvalues of A/‖A‖_F): smaller ones converge
// later, which the bound sees.
constexpr double kSymmetricLowerBound = 1e-4;

constexpr int64_t symmetric_workspace_doubles(int64_t d) { return frechet_workspace_doubles(d) + d * d; }

// The trace term by the scaled iteration on A = Lᵀ S L (the factored side's L), corrected in float64,
// with a bound; status kStatusNeedsExact or kStatusNoFactor hands it to the host's exact route.
// tensor_cores: the float64 GEMMs on DMMA; tf32x3: Newton–Schulz's products in 3×TF32 (else as the others).
inline FrechetRecord frechet_symmetric_on(Device& device, int64_t d, const FrechetBuffers& b, const SymmetricBuffers& f,
                                          int max_iterations, double tolerance, bool tensor_cores, bool tf32x3) {
    using namespace kernels;
    if (d < 1) throw std::invalid_argument("the covariances must be at least 1 × 1");
    if (max_iterations < 0) throw std::invalid_argument("max_iterations must be >= 0");
    const int64_t size = d * d;
    auto* state = reinterpret_cast<FrechetState*>(b.workspace);
    double* partials = b.workspace + kStateDoubles;
    double* a = partials + 2 * kCheckBlocks * kCheckFields;
    double* matrices = a + size;
    const NewtonSchulzSlots slots{matrices, size};

    const GemmKernels gemm = GemmKernels::of(tensor_cores);
    const dim3 elementwise(kElementwiseThreads), reduction(kReductionThreads), tile = gemm.block;
    const dim3 elements(blocks_for(size, kElementwiseThreads));
    const auto side = static_cast<unsigned>((d + kTile - 1) / kTile);
    const unsigned reduction_blocks = std::min(blocks_for(size, kReductionThreads), 1024u);

    enqueue_checks(device, d, b);
    device.launch(kernel::fastfid_sym_choose, dim3(1), dim3(1), state, f.info1, f.info2, f.units);
    device.launch(gemm.sym_left, dim3(side, side), tile, f.factor1, f.scaled1, f.factor2, f.scaled2,
                  slots.t(), state, d);  // G = Lᵀ S, in T's slot until the iteration needs it
    const dim3 upper(static_cast<unsigned>(triangle_tiles(d)));  // the symmetric products' tiles
    device.launch(gemm.sym_right, upper, tile, static_cast<const double*>(slots.t()), f.factor1, f.factor2, a, state,
                  d);
    device.launch(kernel::fastfid_sum_of_squares, dim3(reduction_blocks), reduction, static_cast<const double*>(a),
                  size, &state->norm_squared);
    device.launch(kernel::fastfid_ns_begin, dim3(1), dim3(1), state, kSymmetricStep, max_iterations,
                  kSymmetricLowerBound);
    device.launch(kernel::fastfid_ns_start, elements, elementwise, slots, static_cast<const double*>(a), state, d);
    const auto iteration_products =
        tf32x3 ? kernels::Products::tf32x3 : (tensor_cores ? kernels::Products::dmma : kernels::Products::fma);
    enqueue_iterations(device, IterationKernels::of(iteration_products), slots, state, d, max_iterations);
    device.launch(gemm.sym_residual, dim3(side, side), tile, slots, static_cast<const double*>(a), state, d);
    device.launch(gemm.sym_products, dim3(side, side, 2), tile, slots, state, d);
    device.launch(gemm.sym_wz, dim3(side, side), tile, slots, state, d);
    device.launch(kernel::fastfid_sym_reductions, dim3(reduction_blocks, 4), reduction, slots, state, d);
    device.launch(kernel::fastfid_sym_finish, dim3(1), reduction, slots, state, d, tolerance);
    FrechetRecord record;
    device.copy_to_host(&record, &state->record, sizeof record);
    return record;
}

}  // namespace fastfid::device
