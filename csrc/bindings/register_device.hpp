// Python bindings of the device entry points (device_api.hpp). Buffers travel as integer
// addresses (torch's data_ptr()), so this module needs neither torch nor the CUDA headers at
// build time; fastfid/_device.py checks every tensor before its address is passed here.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>

#include "cuda/device_api.hpp"

namespace fastfid::bindings {

namespace py = pybind11;

template <class T>
T* address(std::uintptr_t value) {
    return reinterpret_cast<T*>(value);
}

// Backend: a struct with static accumulate, merge and newton_schulz (device_api.hpp's signatures).
template <class Backend>
void register_device_api(py::module_& m) {
    using namespace device;
    m.def("stats_workspace_doubles", &stats_workspace_doubles, py::arg("dim"),
          "float64 scratch elements one batch needs (d² + 2d).");
    m.def("newton_schulz_workspace_doubles", &newton_schulz_workspace_doubles, py::arg("dim"),
          py::arg("max_iterations"), "float64 scratch elements of newton_schulz (7d² + 2 max_iterations + 2).");
    m.def(
        "accumulate",
        [](std::uintptr_t features, int feature_type, int64_t rows, int64_t cols, int64_t row_stride,
           int64_t col_stride, std::uintptr_t mean, std::uintptr_t comoment, std::uintptr_t counters,
           std::uintptr_t workspace, int64_t row_slices, int device, std::uintptr_t stream) {
            if (feature_type < 0 || feature_type > 3) throw std::invalid_argument("unknown feature type code");
            const FeatureBlock block{address<const void>(features), rows, cols, row_stride, col_stride};
            const StatsBuffers state{address<double>(mean), address<double>(comoment), address<long long>(counters),
                                     address<double>(workspace)};
            py::gil_scoped_release release;
            Backend::accumulate(Context{device, stream}, block, static_cast<FeatureType>(feature_type), state,
                                row_slices);
        },
        py::arg("features"), py::arg("feature_type"), py::arg("rows"), py::arg("cols"), py::arg("row_stride"),
        py::arg("col_stride"), py::kw_only(), py::arg("mean"), py::arg("comoment"), py::arg("counters"),
        py::arg("workspace"), py::arg("row_slices") = 0, py::arg("device") = 0, py::arg("stream") = 0,
        "Enqueue the addition of a batch of features (element strides; type 0 float16, 1 bfloat16, 2 float32, "
        "3 float64) to a device state. A batch holding NaN/Inf is counted as skipped and changes nothing else.");
    m.def(
        "merge",
        [](int64_t dim, std::uintptr_t mean, std::uintptr_t comoment, std::uintptr_t counters,
           std::uintptr_t other_mean, std::uintptr_t other_comoment, std::uintptr_t other_counters, int device,
           std::uintptr_t stream) {
            const StatsBuffers into{address<double>(mean), address<double>(comoment), address<long long>(counters),
                                    nullptr};
            const StatsBuffers other{address<double>(other_mean), address<double>(other_comoment),
                                     address<long long>(other_counters), nullptr};
            py::gil_scoped_release release;
            Backend::merge(Context{device, stream}, dim, into, other);
        },
        py::arg("dim"), py::kw_only(), py::arg("mean"), py::arg("comoment"), py::arg("counters"),
        py::arg("other_mean"), py::arg("other_comoment"), py::arg("other_counters"), py::arg("device") = 0,
        py::arg("stream") = 0, "Enqueue Chan's merge of the other device state into this one.");
    m.def(
        "newton_schulz",
        [](std::uintptr_t sigma1, std::uintptr_t sigma2, int64_t dim, std::uintptr_t workspace,
           std::uintptr_t sqrt_out, std::uintptr_t inverse_sqrt_out, double tolerance, int max_iterations,
           int device, std::uintptr_t stream) {
            NewtonSchulzResult result;
            {
                py::gil_scoped_release release;
                result = Backend::newton_schulz(Context{device, stream}, address<const double>(sigma1),
                                                address<const double>(sigma2), dim, address<double>(workspace),
                                                address<double>(sqrt_out), address<double>(inverse_sqrt_out),
                                                NewtonSchulzOptions{tolerance, max_iterations});
            }
            py::dict out;
            out["trace_sqrt"] = result.trace_sqrt;
            out["scale"] = result.scale;
            out["step"] = result.step;
            out["iterations"] = result.iterations;
            out["converged"] = result.converged;
            return out;
        },
        py::arg("sigma1"), py::arg("sigma2"), py::arg("dim"), py::kw_only(), py::arg("workspace"),
        py::arg("sqrt_out") = 0, py::arg("inverse_sqrt_out") = 0, py::arg("tolerance") = 1e-12,
        py::arg("max_iterations") = 100, py::arg("device") = 0, py::arg("stream") = 0,
        "tr sqrt(sigma1 @ sigma2) by coupled Newton-Schulz on the device (float64, row-major d x d inputs); "
        "optionally writes (sigma1 sigma2)^(1/2) and ^(-1/2). Returns trace_sqrt, scale, step, iterations, "
        "converged.");
}

}  // namespace fastfid::bindings
