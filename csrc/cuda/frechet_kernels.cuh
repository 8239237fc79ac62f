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

enum FrechetStatus : int {
    kStatusOk = 0,
    kStatusInvalidInput = 1,
    kStatusProductNotFinite = 2,
    kStatusProductZero = 3,
    kStatusNeedsExact = 4,  // the symmetric route's bound exceeds the tolerance: the host takes the exact route
    kStatusNoFactor = 5,    // neither covariance has a Cholesky factor (both singular): likewise
};

// What the host reads back, in one copy, at the end of a distance.
struct FrechetRecord {
    double distance, trace_sqrt, mean_term, scale, step, iterations, converged, status, nonfinite_means, bound;
    double trace[2], nonfinite[2], asymmetry[2], largest_variance[2], smallest_variance[2];
};

struct FrechetState {
    FrechetRecord record;
    double unit[2];       // u₁, u₂
    double norm_squared;  // ‖M‖²_F of the scaled product
    double change, norm;  // this round's ‖Y_{k+1} − Y_k‖²_F and ‖Y_k‖²_F
    NewtonSchulzStop stop;
    double coefficient[2];  // T = coefficient[0]·I + coefficient[1]·Z Y this round
    double lower_bound;     // scaled iteration: the square roots of Y₀'s eigenvalues lie in [lower_bound, 1]
    double trace_products[2], norms_squared[2];  // the symmetric route's correction and bound
    int current, best, iterations, max_iterations, done, scaled, side;
    int stalled;  // rounds since the best step last improved
};

constexpr int kStateDoubles = 64;
// The symmetric route stops after kStallRounds rounds without a better step, counted once the best
// step is below kStallFrom (before that, the scaled iteration's steps rise and fall).
constexpr int kStallRounds = 3;
constexpr double kStallFrom = 1e-3;
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

// The coefficients of T for this round: ½(3I − Z Y), or, scaled, ½α(3I − α² Z Y) with
// α = √(3 / (1 + l + l²)), which maps [l, 1] onto [f(αl), 1] with f(x) = ½x(3 − x²) equioscillating.
FASTFID_DEVICE double scaling_for(double l) { return sqrt(3.0 / (1.0 + l + l * l)); }

FASTFID_DEVICE void set_coefficients(FrechetState& state) {
    const double alpha = state.scaled ? scaling_for(state.lower_bound) : 1.0;
    state.coefficient[0] = 1.5 * alpha;
    state.coefficient[1] = -0.5 * alpha * alpha * alpha;
}

// tr Y_best over the block (every thread gets it; 0 unless the record's status is ok).
FASTFID_DEVICE double trace_of_best(const NewtonSchulzSlots& slots, const FrechetState& state, int64_t d,
                                    double* scratch) {
    const double* y = slots.y(state.best);
    double partial = 0;
    if (state.record.status == kStatusOk)
        for (int64_t i = threadIdx.x; i < d; i += blockDim.x) partial += y[i * d + i];
    return block_reduce<Reduce::sum>(partial, scratch);
}

FASTFID_DEVICE int next_slot(int current, int best) {
    return current != 0 && best != 0 ? 0 : (current != 1 && best != 1 ? 1 : 2);
}

// What a product's tile does with its accumulators: C = α·(A B) + β·addend + γ·I (addend may be
// null), and optionally ‖C − A‖²_F into *change and ‖A‖²_F into *norm (the Newton–Schulz step).
// symmetric: C is symmetric (so are the addend and A where read): the launch covers the upper
// tiles only (blockIdx.x through triangle_tile), each entry with i ≤ j computed once and written to
// (i, j) and (j, i), so that half the products give an exactly symmetric C.
// Uniform over a launch, so a block's threads take the same branches.
struct Epilogue {
    double alpha = 1.0, beta = 0.0, gamma = 0.0;
    const double* addend = nullptr;
    double* change = nullptr;
    double* norm = nullptr;
    bool symmetric = false;
};

// How a GEMM kernel multiplies: FP64 FMAs (64 threads), the FP64 tensor cores (DMMA, 128 threads),
// or 3×TF32 on the TF32 tensor cores (128 threads; float32-class products, for Newton–Schulz only:
// the symmetric route's float64 correction and bound take the result from there).
enum class Products { fma, dmma, tf32x3 };
FASTFID_HOST_DEVICE constexpr int gemm_threads(Products products) { return products == Products::fma ? kTileThreads : kTensorThreads; }
// 3×TF32's float32 partial sums are added to float64 accumulators every this many staged depths.
constexpr int kSplitFlushSteps = 4;

// Stages depth k0 .. k0 + 15 of A's rows i0 .. i0 + 63 (of Aᵀ's with TransposeA) and of B's columns
// j0 .. j0 + 63, scaled, as store(is_left, k, index, value) with zeros past the ends.
template <bool TransposeA, int Threads, class Store>
FASTFID_DEVICE void stage_operands(const double* a, const double* b, int64_t d, int64_t i0, int64_t j0, int64_t k0,
                                   double a_factor, double b_factor, const Store& store) {
    for (int e = threadIdx.x; e < kTileDepth * kTile; e += Threads) {
        if (TransposeA) {  // Aᵀ[i][k] = A[k][i], read along A's rows
            const int ak = e / kTile, ai = e % kTile;
            store(true, ak, ai, (i0 + ai < d && k0 + ak < d) ? a[(k0 + ak) * d + i0 + ai] * a_factor : 0.0);
        } else {  // A read along its rows
            const int ai = e / kTileDepth, ak = e % kTileDepth;
            store(true, ak, ai, (i0 + ai < d && k0 + ak < d) ? a[(i0 + ai) * d + k0 + ak] * a_factor : 0.0);
        }
        const int bk = e / kTile, bj = e % kTile;  // B read along its rows
        store(false, bk, bj, (k0 + bk < d && j0 + bj < d) ? b[(k0 + bk) * d + j0 + bj] * b_factor : 0.0);
    }
}

// A tile's outputs through the epilogue: C = α·(A B) + β·addend + γ·I, and the step's sums.
struct TileOutput {
    const double* a;
    double* c;
    int64_t d;
    const Epilogue& epilogue;
    double change = 0, norm = 0;

    FASTFID_DEVICE void put(int64_t gi, int64_t gj, double product) {
        if (gi >= d || gj >= d || (epilogue.symmetric && gi > gj)) return;
        double value = epilogue.alpha * product + (gi == gj ? epilogue.gamma : 0.0);
        if (epilogue.addend != nullptr) value += epilogue.beta * epilogue.addend[gi * d + gj];
        c[gi * d + gj] = value;
        const bool mirrored = epilogue.symmetric && gi != gj;
        if (mirrored) c[gj * d + gi] = value;
        if (epilogue.change != nullptr) {
            const double previous = a[gi * d + gj], weight = mirrored ? 2.0 : 1.0;
            change += weight * (value - previous) * (value - previous);
            norm += weight * previous * previous;
        }
    }
    // Every thread of the block calls it (uniform: the epilogue is the launch's).
    FASTFID_DEVICE void finish(double* scratch) {
        if (epilogue.change == nullptr) return;
        block_sum_into(change, scratch, epilogue.change);
        block_sum_into(norm, scratch, epilogue.norm);
    }
};

// One 64 × 64 tile of a d × d product A B (Aᵀ B when TransposeA), picked by blockIdx.x (columns)
// and blockIdx.y (rows), or by blockIdx.x alone over the upper tiles (a symmetric epilogue); the
// operands are scaled by a_factor and b_factor as they are staged.
template <Products P, bool TransposeA = false>
FASTFID_DEVICE void gemm_tile(const double* a, const double* b, double* c, int64_t d, const Epilogue& epilogue,
                              double a_factor = 1.0, double b_factor = 1.0) {
    constexpr int threads = gemm_threads(P);
    __shared__ double scratch[threads];
    int64_t ti = blockIdx.y, tj = blockIdx.x;
    if (epilogue.symmetric) triangle_tile(blockIdx.x, (d + kTile - 1) / kTile, ti, tj);
    const int64_t i0 = ti * kTile, j0 = tj * kTile;
    const int warp = static_cast<int>(threadIdx.x) / 32;
    const int warp_row = (warp / 2) * 32, warp_col = (warp % 2) * 32;
    TileOutput out{a, c, d, epilogue};
    const auto put = [&](int row, int column, double value) { out.put(i0 + row, j0 + column, value); };

    if constexpr (P == Products::tf32x3) {
        __shared__ float a_hi[kTileDepth * kFloatStride], a_lo[kTileDepth * kFloatStride];
        __shared__ float b_hi[kTileDepth * kFloatStride], b_lo[kTileDepth * kFloatStride];
        const auto store = [&](bool left, int k, int index, double value) {
            split_tf32(value, (left ? a_hi : b_hi)[k * kFloatStride + index], (left ? a_lo : b_lo)[k * kFloatStride + index]);
        };
        FloatTile partial = {};
        double acc[2][4][4] = {};
        int steps = 0;
        for (int64_t k0 = 0; k0 < d; k0 += kTileDepth) {
            stage_operands<TransposeA, threads>(a, b, d, i0, j0, k0, a_factor, b_factor, store);
            __syncthreads();
            add_tile_products_tf32x3(a_hi, a_lo, b_hi, b_lo, warp_row, warp_col, partial);
            __syncthreads();
            if (++steps == kSplitFlushSteps) {
                flush_partials(partial, acc);
                steps = 0;
            }
        }
        flush_partials(partial, acc);
        for_each_m16n8_output(warp_row, warp_col, acc, put);
    } else {
        constexpr int stride = P == Products::dmma ? kTensorStride : kTile;
        __shared__ double a_tile[kTileDepth * stride];  // a_tile[k][i] = A[i0 + i][k0 + k]
        __shared__ double b_tile[kTileDepth * stride];  // b_tile[k][j] = B[k0 + k][j0 + j]
        const auto store = [&](bool left, int k, int index, double value) {
            (left ? a_tile : b_tile)[k * stride + index] = value;
        };
        MicroTile acc = {};               // FMA variant
        double tensor_acc[4][4][2] = {};  // DMMA variant
        for (int64_t k0 = 0; k0 < d; k0 += kTileDepth) {
            stage_operands<TransposeA, threads>(a, b, d, i0, j0, k0, a_factor, b_factor, store);
            __syncthreads();
            if constexpr (P == Products::dmma) {
                add_tile_products_tensor(a_tile, b_tile, warp_row, warp_col, tensor_acc);
            } else {
                add_tile_products(*reinterpret_cast<const StagedPanel*>(a_tile),
                                  *reinterpret_cast<const StagedPanel*>(b_tile), acc);
            }
            __syncthreads();
        }
        if constexpr (P == Products::dmma) for_each_dmma_output(warp_row, warp_col, tensor_acc, put);
        else for_each_micro_output(acc, put);
    }
    out.finish(scratch);
}

// A distance kernel whose work is 64 × 64 GEMM tiles: the body calls gemm_tile<kProducts>, and the
// macros below define it once per variant: `name` (FP64 FMAs), `name_tensor` (DMMA) and, for
// Newton–Schulz's products, `name_tf32x3`.
#define FASTFID_GEMM_VARIANT(name, products, threads, parameters, ...)                                  \
    FASTFID_KERNEL void __launch_bounds__(fastfid::kernels::threads) name parameters {                    \
        constexpr fastfid::kernels::Products kProducts = fastfid::kernels::Products::products;            \
        __VA_ARGS__                                                                                      \
    }
#define FASTFID_GEMM_KERNEL(name, parameters, ...)                                                     \
    FASTFID_GEMM_VARIANT(name, fma, kTileThreads, parameters, __VA_ARGS__)                               \
    FASTFID_GEMM_VARIANT(name##_tensor, dmma, kTensorThreads, parameters, __VA_ARGS__)
#define FASTFID_ITERATION_KERNEL(name, parameters, ...)                                                \
    FASTFID_GEMM_KERNEL(name, parameters, __VA_ARGS__)                                                   \
    FASTFID_GEMM_VARIANT(name##_tf32x3, tf32x3, kTensorThreads, parameters, __VA_ARGS__)

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
FASTFID_GEMM_KERNEL(fastfid_gemm_scaled, (const double* a, const double* b, double* c, int64_t d,
                    const fastfid::kernels::FrechetState* state),

    using namespace fastfid::kernels;
    gemm_tile<kProducts>(a, b, c, d, Epilogue{}, 1.0 / state->unit[0], 1.0 / state->unit[1]);
)

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
// `lower_bound` > 0: the scaled iteration (Chen & Chow's coefficients for the sign function, whose
// iterate's eigenvalues are the square roots of Z Y's), assuming Y₀'s eigenvalues in [lower_bound², 1].
FASTFID_KERNEL void fastfid_ns_begin(fastfid::kernels::FrechetState* state, double tolerance, int max_iterations,
                                     double lower_bound) {
    using namespace fastfid::kernels;
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    FrechetRecord& record = state->record;
    const double norm_squared = state->norm_squared;
    state->stop = fastfid::NewtonSchulzStop::with_tolerance(tolerance);
    state->current = state->best = state->iterations = state->stalled = 0;
    state->max_iterations = max_iterations;
    state->change = state->norm = 0;
    state->scaled = lower_bound > 0;
    state->lower_bound = lower_bound;
    set_coefficients(*state);
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

// Y₀ = M / c (unless M is 0 or the inputs were refused) from `source` (Y₀ itself: in place), Z₀ = I.
FASTFID_KERNEL void fastfid_ns_start(fastfid::kernels::NewtonSchulzSlots slots, const double* source,
                                     const fastfid::kernels::FrechetState* state, int64_t d) {
    using namespace fastfid::kernels;
    const int64_t e = global_thread();
    if (e >= d * d) return;
    if (state->record.status == kStatusOk) slots.y(0)[e] = source[e] / state->record.scale;
    slots.z(0)[e] = e / d == e % d ? 1.0 : 0.0;
}

// The iteration's three products run in full, though on the symmetric route they are symmetric in
// exact arithmetic: Y·T and T·Z mirrored from their upper halves break Y_{k+1} Z_{k+1}⁻¹ = Y_k Z_k⁻¹,
// and the iteration diverged; T mirrored kept it but made the 3×TF32 route's corrected trace 400
// times worse (both measured under the emulation on ReLU statistics).
FASTFID_ITERATION_KERNEL(fastfid_ns_t, (fastfid::kernels::NewtonSchulzSlots slots, const fastfid::kernels::FrechetState* state, int64_t d),

    using namespace fastfid::kernels;
    if (state->done) return;  // uniform: the stop kernel that set it ran before this launch
    const int current = state->current;
    Epilogue t;  // T = a I + b Z Y
    t.alpha = state->coefficient[1];
    t.gamma = state->coefficient[0];
    gemm_tile<kProducts>(slots.z(current), slots.y(current), slots.t(), d, t);
)

FASTFID_ITERATION_KERNEL(fastfid_ns_products, (fastfid::kernels::NewtonSchulzSlots slots, fastfid::kernels::FrechetState* state, int64_t d),

    using namespace fastfid::kernels;
    if (state->done) return;
    const int current = state->current, next = next_slot(current, state->best);
    // One launch for both products (selected, not branched into: registers and shared memory stay
    // those of one GEMM); only product 0 tracks the step.
    const bool first = blockIdx.z == 0;
    Epilogue store;
    if (first) {
        store.change = &state->change;
        store.norm = &state->norm;
    }
    gemm_tile<kProducts>(first ? slots.y(current) : slots.t(), first ? slots.t() : slots.z(current),
              first ? slots.y(next) : slots.z(next), d, store);
)

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
    state->stalled = verdict.best || state->stop.best_step > kStallFrom ? 0 : state->stalled + 1;
    // The symmetric route also stops where rounding has stalled the step (its floor: float32-class
    // with 3×TF32 products), which its float64 correction and bound take from there.
    state->done = verdict.stop || state->iterations >= state->max_iterations ||
                  (state->scaled && state->stalled >= kStallRounds);
    if (state->scaled) {  // where the interval [l, 1] went: [f(αl), 1]
        const double l = scaling_for(state->lower_bound) * state->lower_bound;
        state->lower_bound = 0.5 * l * (3.0 - l * l);
        set_coefficients(*state);
    }
}

// One block: tr √M = √c · tr Y_best, and the distance.
FASTFID_KERNEL void __launch_bounds__(fastfid::kernels::kReductionThreads)
fastfid_fd_finish(fastfid::kernels::NewtonSchulzSlots slots, fastfid::kernels::FrechetState* state, int64_t d) {
    using namespace fastfid::kernels;
    __shared__ double scratch[kReductionThreads];
    FrechetRecord& record = state->record;
    const double trace_y = trace_of_best(slots, *state, d, scratch);
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

// --- the symmetric route: Newton–Schulz on A = Lᵀ S L, corrected in float64 and bounded -------------
//
// With S₁ = Σ₁/u₁ = L₁L₁ᵀ and S₂ = Σ₂/u₂ (the host's Cholesky factors, either side), A = L₁ᵀ S₂ L₁ is
// symmetric semidefinite with tr √A = tr √(S₁S₂). The scaled iteration gives Y ≈ √(A/c) and
// Z ≈ (A/c)^−½; with X = √c·Y, Z_A = Z/√c and R = A − X², exactly
//     tr √A = tr X + ½ tr(X⁻¹R) − ½ tr(X⁻¹E²),   E = √A − X,
// so tr X + ½ tr(Z_A R) errs by ½ tr((Z_A − X⁻¹) R) − ½ tr(X⁻¹E²). The bound puts twice the size of
// both terms' estimates: |½ tr((Z_A − X⁻¹)R)| ≤ ½ ‖Z_A X − I‖_F ‖Z_A R‖_F, and E ≈ ½ X⁻¹R gives
// ½ tr(X⁻¹E²) ≈ ⅛ tr(W W Z_A) with W = Z_A R; and the float64 rounding of the final sums. The second
// term is an estimate (its first order), hence the factor 2; the accuracy study (README) checks it.

// One thread: the host's units (those it scaled S₁, S₂ by), and which side has a factor (info = 0
// from the host's Cholesky), or none.
FASTFID_KERNEL void fastfid_sym_choose(fastfid::kernels::FrechetState* state, const int* info1, const int* info2,
                                       const double* units) {
    using namespace fastfid::kernels;
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    state->unit[0] = units[0];
    state->unit[1] = units[1];
    if (state->record.status != kStatusOk) return;
    state->side = *info1 == 0 ? 0 : (*info2 == 0 ? 1 : -1);
    if (state->side < 0) state->record.status = kStatusNoFactor;
}

// G = Lᵀ S with the chosen side's factor and the other side's covariance.
FASTFID_GEMM_KERNEL(fastfid_sym_left, (const double* l1, const double* s1, const double* l2, const double* s2, double* g,
                 const fastfid::kernels::FrechetState* state, int64_t d),

    using namespace fastfid::kernels;
    if (state->record.status != kStatusOk) return;
    const bool first = state->side == 0;
    gemm_tile<kProducts, true>(first ? l1 : l2, first ? s2 : s1, g, d, Epilogue{});
)

// A = G L = Lᵀ S L, symmetric: its upper tiles, mirrored (so A is exactly symmetric).
FASTFID_GEMM_KERNEL(fastfid_sym_right, (const double* g, const double* l1, const double* l2, double* a,
                  const fastfid::kernels::FrechetState* state, int64_t d),

    using namespace fastfid::kernels;
    if (state->record.status != kStatusOk) return;
    Epilogue symmetric;
    symmetric.symmetric = true;
    gemm_tile<kProducts>(g, state->side == 0 ? l1 : l2, a, d, symmetric);
)

// R = A − c·Y_best² (into T's slot).
FASTFID_GEMM_KERNEL(fastfid_sym_residual, (fastfid::kernels::NewtonSchulzSlots slots, const double* a,
                     const fastfid::kernels::FrechetState* state, int64_t d),

    using namespace fastfid::kernels;
    if (state->record.status != kStatusOk) return;
    // In full: the iterate Y is symmetric only to rounding, and R mirrored from its upper half would
    // carry Y's asymmetry into the correction uncorrected (measured: bounds 10–100 times larger).
    Epilogue residual;
    residual.alpha = -state->record.scale;
    residual.beta = 1.0;
    residual.addend = a;
    const double* y = slots.y(state->best);
    gemm_tile<kProducts>(y, y, slots.t(), d, residual);
)

// The two slots that hold neither the best pair nor anything still needed: W and the other product.
FASTFID_DEVICE int spare_slot(int best, int which) {
    int seen = 0;
    for (int slot = 0; slot < 3; ++slot) {
        if (slot == best) continue;
        if (seen == which) return slot;
        ++seen;
    }
    return 0;
}

// z = 0: W = Z_A R = (Z_best/√c) R into Y slot `spare 0`; z = 1: V = Z_best Y_best − I into Y slot `spare 1`.
FASTFID_GEMM_KERNEL(fastfid_sym_products, (fastfid::kernels::NewtonSchulzSlots slots, const fastfid::kernels::FrechetState* state, int64_t d),

    using namespace fastfid::kernels;
    if (state->record.status != kStatusOk) return;
    const int best = state->best;
    const bool first = blockIdx.z == 0;
    Epilogue epilogue;
    if (first) epilogue.alpha = 1.0 / sqrt(state->record.scale);
    else epilogue.gamma = -1.0;
    gemm_tile<kProducts>(slots.z(best), first ? slots.t() : slots.y(best), slots.y(spare_slot(best, first ? 0 : 1)), d, epilogue);
)

// W Z_A = W (Z_best/√c) into Z slot `spare 0`.
FASTFID_GEMM_KERNEL(fastfid_sym_wz, (fastfid::kernels::NewtonSchulzSlots slots, const fastfid::kernels::FrechetState* state, int64_t d),

    using namespace fastfid::kernels;
    if (state->record.status != kStatusOk) return;
    const int best = state->best;
    Epilogue epilogue;
    epilogue.alpha = 1.0 / sqrt(state->record.scale);
    gemm_tile<kProducts>(slots.y(spare_slot(best, 0)), slots.z(best), slots.z(spare_slot(best, 0)), d, epilogue);
)

// The reductions of the correction and the bound, grid.y picking which: 0: tr(Z_best R);
// 1: tr(W · W Z_A); 2: ‖V‖²_F; 3: ‖W‖²_F (grid-stride, one atomic per block).
FASTFID_KERNEL void __launch_bounds__(fastfid::kernels::kReductionThreads)
fastfid_sym_reductions(fastfid::kernels::NewtonSchulzSlots slots, fastfid::kernels::FrechetState* state, int64_t d) {
    using namespace fastfid::kernels;
    __shared__ double scratch[kReductionThreads];
    if (state->record.status != kStatusOk) return;
    const int best = state->best, which = static_cast<int>(blockIdx.y);
    // Matrices by their index in the slots' block (Y₀ Y₁ Y₂ Z₀ Z₁ Z₂ T): arithmetic, not a table.
    const int w = spare_slot(best, 0);
    const int first_index = which == 0 ? 3 + best : (which == 2 ? spare_slot(best, 1) : w);
    const int second_index = which == 0 ? 6 : (which == 1 ? 3 + w : first_index);
    const double* first = slots.matrices + first_index * slots.size;
    const double* second = slots.matrices + second_index * slots.size;
    const bool transposed = which < 2;  // tr(P Q) = Σ P[i][j] Q[j][i]; the norms pair an entry with itself
    double partial = 0;
    for (int64_t e = global_thread(); e < d * d; e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t i = e / d, j = e % d;
        partial += first[e] * (transposed ? second[j * d + i] : second[e]);
    }
    double* total = which < 2 ? &state->trace_products[which] : &state->norms_squared[which - 2];
    block_sum_into(partial, scratch, total);
}

// One block: tr √(Σ₁Σ₂) = √(u₁u₂)·(√c tr Y_best + ½ tr(Z_best R)/√c), the bound on the distance's
// error (twice the trace term's), the distance, and whether the bound meets
// tolerance·(tr Σ₁ + tr Σ₂).
FASTFID_KERNEL void __launch_bounds__(fastfid::kernels::kReductionThreads)
fastfid_sym_finish(fastfid::kernels::NewtonSchulzSlots slots, fastfid::kernels::FrechetState* state, int64_t d,
                   double tolerance) {
    using namespace fastfid::kernels;
    __shared__ double scratch[kReductionThreads];
    FrechetRecord& record = state->record;
    const double trace_y = trace_of_best(slots, *state, d, scratch);
    if (threadIdx.x != 0) return;
    record.iterations = state->iterations;
    record.step = state->stop.best_step;
    const double root_units = sqrt(state->unit[0]) * sqrt(state->unit[1]);
    if (record.status == kStatusProductZero) {
        record.trace_sqrt = record.bound = 0;
        record.converged = 1;
        record.status = kStatusOk;
    } else if (record.status == kStatusOk) {
        const double root_c = sqrt(record.scale);
        const double corrected = root_c * trace_y + 0.5 * state->trace_products[0] / root_c;
        const double inverse_term = 0.5 * sqrt(state->norms_squared[0]) * sqrt(state->norms_squared[1]);
        const double second_order = 0.125 * fabs(state->trace_products[1]);
        const double bound = 2.0 * (inverse_term + second_order);
        record.trace_sqrt = root_units * (corrected > 0 ? corrected : 0.0);
        // Plus float64 rounding of the sums that make the distance: (d + 16) ε of what is summed.
        const double rounding = static_cast<double>(d + 16) * 2.220446049250313e-16 *
                                (record.trace[0] + record.trace[1] + record.mean_term);
        record.bound = 2.0 * root_units * bound + rounding;
        record.converged = is_finite(record.bound) && record.bound <= tolerance * (record.trace[0] + record.trace[1]);
        if (!record.converged) record.status = kStatusNeedsExact;
    }
    record.distance = record.mean_term + record.trace[0] + record.trace[1] - 2.0 * record.trace_sqrt;
}
