// fastfid._simt: the CUDA kernels run on the CPU by the SIMT emulation (csrc/simt), with the same
// Python interface as fastfid._cuda. For tests: it proves the kernels' logic without a GPU.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "bindings/register_device.hpp"
#include "simt/simt.hpp"

namespace py = pybind11;

namespace {

// Self-checks of the emulation itself, so the tests can show what it catches.
// A barrier inside a branch that only some threads take: undefined behaviour on a GPU.
void divergent_barrier_kernel() {
    if (threadIdx.x % 2 == 0) __syncthreads();
}

// A read of a neighbour's shared slot with the barrier missing: the value read depends on the
// schedule, so running both schedules exposes the race.
void missing_barrier_kernel(int mark, int* out) {
    __shared__ int slots[64];
    slots[threadIdx.x] = mark;
    out[threadIdx.x] = slots[(threadIdx.x + 1) % blockDim.x];  // needs __syncthreads() before it
}

struct SimtBackend {
    static constexpr auto accumulate = &fastfid::device::simt_backend::accumulate;
    static constexpr auto merge = &fastfid::device::simt_backend::merge;
    static constexpr auto newton_schulz = &fastfid::device::simt_backend::newton_schulz;
};
}  // namespace

PYBIND11_MODULE(_simt, m) {
    m.doc() = "fastfid's CUDA kernels under the SIMT emulation (host memory addresses, for tests)";
    fastfid::bindings::register_device_api<SimtBackend>(m);
    m.def(
        "set_schedule",
        [](const std::string& order) {
            if (order != "forward" && order != "reverse")
                throw std::invalid_argument("schedule must be 'forward' or 'reverse'");
            simt::set_schedule(order == "forward" ? simt::Schedule::forward : simt::Schedule::reverse);
        },
        py::arg("order"),
        "Order in which the emulated threads of a block run between barriers, on this OS thread.");
    m.def("_selftest_divergent_barrier", [] { simt::launch(divergent_barrier_kernel, dim3(1), dim3(8)); },
          "Runs a kernel whose barrier only half the threads reach; raises.");
    m.def(
        "_selftest_missing_barrier",
        [](int mark) {
            std::vector<int> out(64, 0);
            simt::launch(missing_barrier_kernel, dim3(1), dim3(64), mark, out.data());
            return out;
        },
        py::arg("mark"),
        "Runs a kernel in which each thread stores `mark` and, lacking a barrier, reads its neighbour's slot; "
        "returns what each thread read (schedule-dependent).");
}
