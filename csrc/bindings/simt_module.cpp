// fastfid._simt: the CUDA kernels run on the CPU by the SIMT emulation (csrc/simt), with the same
// Python interface as fastfid._cuda. For tests: it proves the kernels' logic without a GPU.
#include <pybind11/pybind11.h>

#include <string>

#include "bindings/register_device.hpp"
#include "simt/simt.hpp"

namespace py = pybind11;

namespace {
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
}
