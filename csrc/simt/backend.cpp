// The device entry points run by the SIMT emulation: the same drivers and kernels as the CUDA
// build, with host memory standing in for device memory.
#include <cstring>

#include "cuda/device_api.hpp"
#include "cuda/newton_schulz_driver.hpp"
#include "cuda/stats_driver.hpp"
#include "simt/simt.hpp"

namespace fastfid::device::simt_backend {

namespace {

struct EmulatedDevice {
    template <class... Params, class... Args>
    void launch(void (*kernel)(Params...), dim3 grid, dim3 block, Args... args) {
        simt::launch(kernel, grid, block, args...);
    }
    void copy_to_host(void* destination, const void* source, size_t bytes) { std::memcpy(destination, source, bytes); }
    void copy(void* destination, const void* source, size_t bytes) { std::memcpy(destination, source, bytes); }
};

}  // namespace

void accumulate(const Context&, const FeatureBlock& features, FeatureType type, const StatsBuffers& state,
                int64_t row_slices) {
    EmulatedDevice device;
    accumulate_batch(device, features, type, state, row_slices);
}

void merge(const Context&, int64_t dim, const StatsBuffers& into, const StatsBuffers& other) {
    EmulatedDevice device;
    merge_states(device, dim, into, other);
}

NewtonSchulzResult newton_schulz(const Context&, const double* sigma1, const double* sigma2, int64_t dim,
                                 double* workspace, double* sqrt_out, double* inverse_sqrt_out,
                                 const NewtonSchulzOptions& options) {
    EmulatedDevice device;
    return newton_schulz_trace(device, sigma1, sigma2, dim, workspace, sqrt_out, inverse_sqrt_out, options);
}

}  // namespace fastfid::device::simt_backend
