// The device entry points on a real GPU: the shared drivers with launches on the caller's stream.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "cuda/device_api.hpp"
#include "cuda/newton_schulz_driver.hpp"
#include "cuda/stats_driver.hpp"

namespace fastfid::device::cuda_backend {

namespace {

void check(cudaError_t status, const char* what) {
    if (status != cudaSuccess)
        throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(status));
}

class CudaDevice {
public:
    explicit CudaDevice(const Context& context) : stream_(reinterpret_cast<cudaStream_t>(context.stream)) {
        check(cudaSetDevice(context.device), "cudaSetDevice");
    }

    template <class... Params, class... Args>
    void launch(void (*kernel)(Params...), dim3 grid, dim3 block, Args... args) {
        kernel<<<grid, block, 0, stream_>>>(args...);
        check(cudaGetLastError(), "a kernel launch");
    }
    void copy_to_host(void* destination, const void* source, size_t bytes) {
        check(cudaMemcpyAsync(destination, source, bytes, cudaMemcpyDeviceToHost, stream_), "cudaMemcpyAsync");
        check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    }
    void copy(void* destination, const void* source, size_t bytes) {
        check(cudaMemcpyAsync(destination, source, bytes, cudaMemcpyDeviceToDevice, stream_), "cudaMemcpyAsync");
    }

private:
    cudaStream_t stream_;
};

}  // namespace

void accumulate(const Context& context, const FeatureBlock& features, FeatureType type, const StatsBuffers& state,
                int64_t row_slices) {
    CudaDevice device(context);
    accumulate_batch(device, features, type, state, row_slices);
}

void merge(const Context& context, int64_t dim, const StatsBuffers& into, const StatsBuffers& other) {
    CudaDevice device(context);
    merge_states(device, dim, into, other);
}

NewtonSchulzResult newton_schulz(const Context& context, const double* sigma1, const double* sigma2, int64_t dim,
                                 double* workspace, double* sqrt_out, double* inverse_sqrt_out,
                                 const NewtonSchulzOptions& options) {
    CudaDevice device(context);
    return newton_schulz_trace(device, sigma1, sigma2, dim, workspace, sqrt_out, inverse_sqrt_out, options);
}

}  // namespace fastfid::device::cuda_backend
