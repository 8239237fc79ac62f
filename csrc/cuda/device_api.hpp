// The device path's entry points, implemented twice from one source: by the CUDA runtime
// (cuda/*.cu, compiled by nvcc) and by the SIMT emulation (simt/backend.cpp, host compiler).
// Buffers are device addresses owned by the caller (torch tensors on the Python side); nothing
// here allocates. Python validates shapes, dtypes and devices before calling.
#pragma once

#include <cstdint>

#include "cuda/device_types.hpp"

namespace fastfid::device {

using kernels::FeatureBlock;
using kernels::FeatureType;

// Where work goes: a CUDA device ordinal and a cudaStream_t (0 = legacy default stream).
struct Context {
    int device = 0;
    std::uintptr_t stream = 0;
};

// The statistics' state and the scratch one batch needs.
struct StatsBuffers {
    double* mean;             // d
    double* comoment;         // d × d, upper triangle valid
    long long* counters;      // kernels::kCounterSlots: count, skipped batches, batch flag
    double* workspace;        // stats_workspace_doubles(d)
};

constexpr int64_t stats_workspace_doubles(int64_t d) { return d * d + 2 * d; }

struct NewtonSchulzOptions {
    double tolerance = 1e-12;  // stop when ‖Y_{k+1} − Y_k‖_F / ‖Y_k‖_F ≤ tolerance
    int max_iterations = 100;
};

struct NewtonSchulzResult {
    double trace_sqrt = 0;   // tr √(Σ₁Σ₂)
    double scale = 0;        // c = ‖Σ₁Σ₂‖_F
    double step = 0;         // the relative step that led to the returned iterate
    int iterations = 0;
    bool converged = false;
};

constexpr int64_t newton_schulz_workspace_doubles(int64_t d, int max_iterations) {
    return 7 * d * d + 2 + 2 * static_cast<int64_t>(max_iterations);
}

#define FASTFID_DEVICE_BACKEND_API                                                                         \
    void accumulate(const Context& context, const FeatureBlock& features, FeatureType type,                \
                    const StatsBuffers& state, int64_t row_slices);                                         \
    void merge(const Context& context, int64_t dim, const StatsBuffers& into, const StatsBuffers& other);  \
    NewtonSchulzResult newton_schulz(const Context& context, const double* sigma1, const double* sigma2,    \
                                     int64_t dim, double* workspace, double* sqrt_out,                     \
                                     double* inverse_sqrt_out, const NewtonSchulzOptions& options);

namespace cuda_backend {
FASTFID_DEVICE_BACKEND_API
}
namespace simt_backend {
FASTFID_DEVICE_BACKEND_API
}
#undef FASTFID_DEVICE_BACKEND_API

}  // namespace fastfid::device
