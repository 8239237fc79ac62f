// fastfid._cuda: the CUDA kernels (csrc/cuda), built when nvcc is available.
#include <pybind11/pybind11.h>

#include "bindings/register_device.hpp"

namespace {
struct CudaBackend {
    static constexpr auto accumulate = &fastfid::device::cuda_backend::accumulate;
    static constexpr auto merge = &fastfid::device::cuda_backend::merge;
    static constexpr auto newton_schulz = &fastfid::device::cuda_backend::newton_schulz;
};
}  // namespace

PYBIND11_MODULE(_cuda, m) {
    m.doc() = "fastfid's CUDA kernels: streaming statistics and Newton-Schulz on the caller's stream";
    fastfid::bindings::register_device_api<CudaBackend>(m);
}
