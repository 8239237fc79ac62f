// Kernels of the Fréchet distance on the device, float64 throughout:
//
//   covariance_checks   per block: non-finite entries, largest |S − Sᵀ|, smallest and largest
//                       variance, trace (partials, reduced by fd_begin)
//   fd_begin            one block: the checks, ‖μ₁ − μ₂‖², the traces, and the powers of two u₁, u₂
//                       near each covariance's largest variance
//   gemm_scaled         M = (Σ₁/u₁)(Σ₂/u₂) into Y slot 0 (exact scalings: no overflow or underflow
//                       for covariances anywhere in float64's range);  sum_of_squares: ‖M‖²_F
//   ns_begin            one thread: the start of the iteration, or none (refused inputs, M = 0)
//   ns_start            Y₀ = M/c (c = ‖M‖_F), Z₀ = I
//   per iteration       ns_t: T = ½(3I − Z Y);  ns_products: Y ← Y T and Z ← T Z (grid.z = 2),
//                       reducing ‖Y_{k+1} − Y_k‖² and ‖Y_k‖²;  ns_stop: one thread applies the
//                       stopping rule (core/newton_schulz_stop.hpp) and picks the slots
//   fd_finish           one block: tr √(Σ₁Σ₂) = √(u₁u₂c) · tr Y_best and the distance, into the record
//
// Y → (M/c)^½ and Z → (M/c)^−½. M's eigenvalues are those of the symmetric semidefinite
// Σ₁^½ Σ₂ Σ₁^½, so after Frobenius scaling they lie in [0, 1], where the coupled iteration converges.
// The host enqueues max_iterations rounds without waiting; once the rule has stopped, the later
// rounds' kernels return at their first instruction. Three (Y, Z) slots rotate so that the best
// pair so far is never overwritten: each round writes the slot that is neither current nor best.
#pragma once

#include "core/newton_schulz_stop.hpp"
#include "cuda/kernel_prelude.cuh"
#include "cuda/tile_product.cuh"

namespace fastfid::kernels {

enum FrechetStatus : int { kStatusOk = 0, kStatusInvalidInput = 1, kStatusProductNotFinite = 2, kStatusProductZero = 3 };

// What the host reads back, in one copy, at the end of a distance.
struct FrechetRecord {
    double distance, trace_sqrt, mean_term, scale, step, iterations, converged, status, nonfinite_means;
    double trace[2], nonfinite[2], asymmetry[2], largest_variance[2], smallest_variance[2];
};

struct FrechetState {
    FrechetRecord record;
    double unit[2];       // u₁, u₂
    double norm_squared;  // ‖M‖²_F of the scaled product
    double change, norm;  // this round's ‖Y_{k+1} − Y_k‖²_F and ‖Y_k‖²_F
    NewtonSchulzStop stop;
    int current, best, iterations, max_iterations, done;
};

constexpr int kStateDoubles = 64;
static_assert(sizeof(FrechetState) <= kStateDoubles * sizeof(double), "FrechetState outgrew its workspace slot");
constexpr int kCheckBlocks = 128;  // most blocks of covariance_checks per covariance
enum CheckField : int { kNonfinite = 0, kAsymmetry, kSmallestVariance, kLargestVariance, kTrace, kCheckFields };

// The iteration's buffers: three (Y, Z) slots and T, each d × d row-major, one after another
// (addressed by arithmetic: an array of pointers indexed at run time would go to local memory).
struct NewtonSchulzSlots {
    double* matrices;  // Y₀ Y₁ Y₂ Z₀ Z₁ Z₂ T
    int64_t size;      // d²
    FASTFID_DEVICE double* y(int slot) const { return matrices + slot * size; }
    FASTFID_DEVICE double* z(int slot) const { return matrices + (3 + slot) * size; }
    FASTFID_DEVICE double* t() const { return matrices + 6 * size; }
};

FASTFID_DEVICE int next_slot(int current, int best) {
    return current != 0 && best != 0 ? 0 : (current != 1 && best != 1 ? 1 : 2);
}

enum class GemmEpilogue : int {
    store,            // C = A B
    newton_schulz_t,  // C = 1.5 I − 0.5 A B
    store_with_step,  // C = A B, adding ‖C − A‖²_F to *change and ‖A‖²_F to *norm unless change is null
};

// One 64 × 64 tile of a d × d product, picked by blockIdx.x (columns) and blockIdx.y (rows).
template <GemmEpilogue Epilogue>
FASTFID_DEVICE void gemm_tile(const double* a, const double* b, double* c, int64_t d, double* change, double* norm,
                              double a_factor = 1.0, double b_factor = 1.0) {
    __shared__ StagedPanel a_tile;  // a_tile[k][i] = A[i0 + i][k0 + k]
    __shared__ StagedPanel b_tile;  // b_tile[k][j] = B[k0 + k][j0 + j]
    __shared__ double scratch[kTileThreads];
    const int64_t i0 = static_cast<int64_t>(blockIdx.y) * kTile, j0 = static_cast<int64_t>(blockIdx.x) * kTile;

    MicroTile acc = {};
    for (int64_t k0 = 0; k0 < d; k0 += kTileDepth) {
        for (int e = threadIdx.x; e < kTileDepth * kTile; e += kTileThreads) {
            const int ai = e / kTileDepth, ak = e % kTileDepth;  // A read along its rows
            a_tile[ak][ai] = (i0 + ai < d && k0 + ak < d) ? a[(i0 + ai) * d + k0 + ak] * a_factor : 0.0;
            const int bk = e / kTile, bj = e % kTile;            // B read along its rows
            b_tile[bk][bj] = (k0 + bk < d && j0 + bj < d) ? b[(k0 + bk) * d + j0 + bj] * b_factor : 0.0;
        }
        __syncthreads();
        add_tile_products(a_tile, b_tile, acc);
        __syncthreads();
    }

    double step_change = 0, step_norm = 0;
    for (int i = 0; i < kMicroTile; ++i) {
        const int64_t gi = i0 + micro_row(i);
        for (int j = 0; j < kMicroTile; ++j) {
            const int64_t gj = j0 + micro_col(j);
            if (gi >= d || gj >= d) continue;
            if (Epilogue == GemmEpilogue::newton_schulz_t) {
                c[gi * d + gj] = (gi == gj ? 1.5 : 0.0) - 0.5 * acc[i][j];
            } else {
                c[gi * d + gj] = acc[i][j];
            }
            if (Epilogue == GemmEpilogue::store_with_step && change != nullptr) {
                const double previous = a[gi * d + gj];
                step_change += (acc[i][j] - previous) * (acc[i][j] - previous);
                step_norm += previous * previous;
            }
        }
    }
    if (Epilogue == GemmEpilogue::store_with_step && change != nullptr) {  // uniform per block: all take part
        block_sum_into(step_change, scratch, change);
        block_sum_into(step_norm, scratch, norm);
    }
}

// One covariance's share of the checks: this block's elements, grid-stride.
FASTFID_DEVICE void check_covariance(const double* sigma, int64_t d, double* partials) {
    __shared__ double scratch[kReductionThreads];
    double nonfinite = 0, asymmetry = 0, smallest = 0, largest = 0, trace = 0;
    bool any_diagonal = false;
    for (int64_t e = global_thread(); e < d * d; e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t i = e / d, j = e % d;
        const double value = sigma[e];
        if (!is_finite(value)) {
            nonfinite += 1;
            continue;
        }
        if (i < j) {
            const double gap = value - sigma[j * d + i];
            const double size = gap < 0 ? -gap : gap;
            asymmetry = size > asymmetry ? size : asymmetry;  // NaN (a non-finite mirror) is counted above
        } else if (i == j) {
            smallest = any_diagonal && smallest < value ? smallest : value;
            const double magnitude = value < 0 ? -value : value;
            largest = any_diagonal && largest > magnitude ? largest : magnitude;
            any_diagonal = true;
            trace += value;
        }
    }
    // A block without diagonal entries must not pull the smallest variance to 0.
    if (!any_diagonal) smallest = 1.7976931348623157e308;
    const double block_nonfinite = block_reduce<Reduce::sum>(nonfinite, scratch);
    const double block_asymmetry = block_reduce<Reduce::max>(asymmetry, scratch);
    const double block_smallest = block_reduce<Reduce::min>(smallest, scratch);
    const double block_largest = block_reduce<Reduce::max>(largest, scratch);
    const double block_trace = block_reduce<Reduce::sum>(trace, scratch);
    if (threadIdx.x == 0) {
        double* out = partials + (static_cast<int64_t>(blockIdx.y) * gridDim.x + blockIdx.x) * kCheckFields;
        out[kNonfinite] = block_nonfinite;
        out[kAsymmetry] = block_asymmetry;
        out[kSmallestVariance] = block_smallest;
        out[kLargestVariance] = block_largest;
        out[kTrace] = block_trace;
    }
}

}  // namespace fastfid::kernels

// grid (blocks ≤ kCheckBlocks, 2): blockIdx.y picks the covariance.
FASTFID_KERNEL void __launch_bounds__(fastfid::kernels::kReductionThreads)
fastfid_covariance_checks(const double* sigma1, const double* sigma2, int64_t d, double* partials) {
    fastfid::kernels::check_covariance(blockIdx.y == 0 ? sigma1 : sigma2, d, partials);
}

// C = (A/u₁)(B/u₂), the units from fd_begin (powers of two: the scaling is exact).
FASTFID_KERNEL void __launch_bounds__(fastfid::kernels::kTileThreads)
fastfid_gemm_scaled(const double* a, const double* b, double* c, int64_t d,
                    const fastfid::kernels::FrechetState* state) {
    using namespace fastfid::kernels;
    gemm_tile<GemmEpilogue::store>(a, b, c, d, nullptr, nullptr, 1.0 / state->unit[0], 1.0 / state->unit[1]);
}

// *total += Σ data[e]² over e < size (grid-stride loop, one atomic per block).
FASTFID_KERNEL void __launch_bounds__(fastfid::kernels::kReductionThreads)
fastfid_sum_of_squares(const double* data, int64_t size, double* total) {
    using namespace fastfid::kernels;
    __shared__ double scratch[kReductionThreads];
    double partial = 0;
    for (int64_t e = global_thread(); e < size; e += static_cast<int64_t>(gridDim.x) * blockDim.x)
        partial += data[e] * data[e];
    block_sum_into(partial, scratch, total);
}

// One block: reduces the checks' partials, computes ‖μ₁ − μ₂‖² (means may be null: 0), refuses
// invalid inputs and picks the units.
FASTFID_KERNEL void __launch_bounds__(fastfid::kernels::kReductionThreads)
fastfid_fd_begin(const double* mu1, const double* mu2, int64_t d, fastfid::kernels::FrechetState* state,
                 const double* partials, int check_blocks) {
    using namespace fastfid::kernels;
    __shared__ double scratch[kReductionThreads];
    FrechetRecord& record = state->record;
    for (int side = 0; side < 2; ++side) {
        double nonfinite = 0, asymmetry = 0, smallest = 1.7976931348623157e308, largest = 0, trace = 0;
        for (int b = threadIdx.x; b < check_blocks; b += blockDim.x) {
            const double* p = partials + (static_cast<int64_t>(side) * check_blocks + b) * kCheckFields;
            nonfinite += p[kNonfinite];
            asymmetry = p[kAsymmetry] > asymmetry ? p[kAsymmetry] : asymmetry;
            smallest = p[kSmallestVariance] < smallest ? p[kSmallestVariance] : smallest;
            largest = p[kLargestVariance] > largest ? p[kLargestVariance] : largest;
            trace += p[kTrace];
        }
        nonfinite = block_reduce<Reduce::sum>(nonfinite, scratch);
        asymmetry = block_reduce<Reduce::max>(asymmetry, scratch);
        smallest = block_reduce<Reduce::min>(smallest, scratch);
        largest = block_reduce<Reduce::max>(largest, scratch);
        trace = block_reduce<Reduce::sum>(trace, scratch);
        if (threadIdx.x == 0) {
            record.nonfinite[side] = nonfinite;
            record.asymmetry[side] = asymmetry;
            record.smallest_variance[side] = smallest;
            record.largest_variance[side] = largest;
            record.trace[side] = trace;
            // The power of two at or below the largest variance (the largest entry of a covariance),
            // 1 for a zero matrix: Σ/u then has entries of order 1.
            int exponent = 0;
            frexp(largest, &exponent);
            state->unit[side] = largest > 0 && is_finite(largest) ? ldexp(1.0, exponent - 1) : 1.0;
        }
    }
    double squares = 0, nonfinite_means = 0;
    if (mu1 != nullptr)
        for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
            if (!is_finite(mu1[i]) || !is_finite(mu2[i])) nonfinite_means += 1;
            else squares += (mu1[i] - mu2[i]) * (mu1[i] - mu2[i]);
        }
    squares = block_reduce<Reduce::sum>(squares, scratch);
    nonfinite_means = block_reduce<Reduce::sum>(nonfinite_means, scratch);
    if (threadIdx.x != 0) return;
    record.mean_term = squares;
    record.nonfinite_means = nonfinite_means;
    bool valid = nonfinite_means == 0;
    for (int side = 0; side < 2; ++side) {
        const double floor = record.largest_variance[side] > 1e-300 ? record.largest_variance[side] : 1e-300;
        // The CPU core's symmetry test (trace_sqrt.cpp): asymmetry beyond 1e-5 of the largest variance.
        valid = valid && record.nonfinite[side] == 0 && record.asymmetry[side] <= 1e-5 * floor &&
                record.smallest_variance[side] >= 0;
    }
    record.status = valid ? kStatusOk : kStatusInvalidInput;
}

// One thread: whether the iteration runs, and its start.
FASTFID_KERNEL void fastfid_ns_begin(fastfid::kernels::FrechetState* state, double tolerance, int max_iterations) {
    using namespace fastfid::kernels;
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    FrechetRecord& record = state->record;
    const double norm_squared = state->norm_squared;
    state->stop = fastfid::NewtonSchulzStop::with_tolerance(tolerance);
    state->current = state->best = state->iterations = 0;
    state->max_iterations = max_iterations;
    state->change = state->norm = 0;
    // c = ‖M‖_F of the scaled product; ‖Σ₁Σ₂‖_F = u₁u₂c (a diagnostic: it may leave float64's range).
    record.scale = sqrt(norm_squared);
    if (record.status != kStatusOk) {
    } else if (!is_finite(norm_squared)) {
        record.status = kStatusProductNotFinite;
    } else if (norm_squared == 0) {
        record.status = kStatusProductZero;
    }
    state->done = record.status != kStatusOk || max_iterations == 0;
}

// Y₀ = M / c in place (unless M is 0 or the inputs were refused), Z₀ = I.
FASTFID_KERNEL void fastfid_ns_start(fastfid::kernels::NewtonSchulzSlots slots,
                                     const fastfid::kernels::FrechetState* state, int64_t d) {
    using namespace fastfid::kernels;
    const int64_t e = global_thread();
    if (e >= d * d) return;
    if (state->record.status == kStatusOk) slots.y(0)[e] /= state->record.scale;
    slots.z(0)[e] = e / d == e % d ? 1.0 : 0.0;
}

FASTFID_KERNEL void __launch_bounds__(fastfid::kernels::kTileThreads)
fastfid_ns_t(fastfid::kernels::NewtonSchulzSlots slots, const fastfid::kernels::FrechetState* state, int64_t d) {
    using namespace fastfid::kernels;
    if (state->done) return;  // uniform: the stop kernel that set it ran before this launch
    const int current = state->current;
    gemm_tile<GemmEpilogue::newton_schulz_t>(slots.z(current), slots.y(current), slots.t(), d, nullptr, nullptr);
}

FASTFID_KERNEL void __launch_bounds__(fastfid::kernels::kTileThreads)
fastfid_ns_products(fastfid::kernels::NewtonSchulzSlots slots, fastfid::kernels::FrechetState* state, int64_t d) {
    using namespace fastfid::kernels;
    if (state->done) return;
    const int current = state->current, next = next_slot(current, state->best);
    // One instantiation for both products (selected, not branched into: registers and shared memory
    // stay those of one GEMM); only product 0 tracks the step.
    const bool first = blockIdx.z == 0;
    gemm_tile<GemmEpilogue::store_with_step>(first ? slots.y(current) : slots.t(), first ? slots.t() : slots.z(current),
                                             first ? slots.y(next) : slots.z(next), d,
                                             first ? &state->change : nullptr, first ? &state->norm : nullptr);
}

// One thread: the stopping rule on this round's step.
FASTFID_KERNEL void fastfid_ns_stop(fastfid::kernels::FrechetState* state) {
    using namespace fastfid::kernels;
    if (threadIdx.x != 0 || blockIdx.x != 0 || state->done) return;
    const double step = sqrt(state->change / state->norm);
    state->change = state->norm = 0;
    state->current = next_slot(state->current, state->best);
    state->iterations += 1;
    const auto verdict = state->stop.observe(step);
    if (verdict.best) state->best = state->current;
    state->done = verdict.stop || state->iterations >= state->max_iterations;
}

// One block: tr √M = √c · tr Y_best, and the distance.
FASTFID_KERNEL void __launch_bounds__(fastfid::kernels::kReductionThreads)
fastfid_fd_finish(fastfid::kernels::NewtonSchulzSlots slots, fastfid::kernels::FrechetState* state, int64_t d) {
    using namespace fastfid::kernels;
    __shared__ double scratch[kReductionThreads];
    FrechetRecord& record = state->record;
    const double* y = slots.y(state->best);
    double partial = 0;
    if (record.status == kStatusOk)
        for (int64_t i = threadIdx.x; i < d; i += blockDim.x) partial += y[i * d + i];
    const double trace_y = block_reduce<Reduce::sum>(partial, scratch);
    if (threadIdx.x != 0) return;
    // √(u₁u₂c) as a product of square roots: u₁u₂ alone may leave float64's range.
    record.trace_sqrt = sqrt(state->unit[0]) * sqrt(state->unit[1]) * sqrt(record.scale) * (trace_y > 0 ? trace_y : 0.0);
    record.distance = record.mean_term + record.trace[0] + record.trace[1] - 2.0 * record.trace_sqrt;
    record.iterations = state->iterations;
    record.converged = state->stop.converged || record.status == kStatusProductZero;
    record.step = record.status == kStatusProductZero ? 0.0 : state->stop.best_step;
}

// out = Y_best · (u₁u₂c)^½ = (Σ₁Σ₂)^½ (power 1), or Z_best / (u₁u₂c)^½ = (Σ₁Σ₂)^−½ (power −1).
FASTFID_KERNEL void fastfid_ns_rescale(fastfid::kernels::NewtonSchulzSlots slots,
                                       const fastfid::kernels::FrechetState* state, int64_t size, double* out,
                                       int power) {
    using namespace fastfid::kernels;
    const int64_t e = global_thread();
    if (e >= size) return;
    const int best = state->best;
    const double root_c = sqrt(state->unit[0]) * sqrt(state->unit[1]) * sqrt(state->record.scale);
    out[e] = power > 0 ? slots.y(best)[e] * root_c : slots.z(best)[e] / root_c;
}
