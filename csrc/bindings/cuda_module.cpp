// fastfid._cuda: the device path's host code (csrc/cuda) with its two drivers: the system's CUDA
// driver, loaded at first use, and the CPU emulation of it (csrc/simt), which the tests and
// fastfid.testing.emulated_cuda() use. Buffers travel as integer addresses (torch's data_ptr()), so
// this module needs neither torch nor the CUDA toolkit's headers; fastfid/_device.py checks every
// tensor before its address is passed here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda/frechet_driver.hpp"
#include "cuda/runtime.hpp"
#include "cuda/stats_driver.hpp"
#include "simt/driver.hpp"
#include "simt/simt.hpp"

namespace py = pybind11;
using namespace fastfid::device;

extern "C" const unsigned char fastfid_kernel_image[];
extern "C" const unsigned long long fastfid_kernel_image_size;

namespace {

template <class T>
T* address(std::uintptr_t value) {
    return reinterpret_cast<T*>(value);
}

// A Runtime as Python holds it: the system's lives for the process, an emulated one as long as
// its Python object.
struct Backend {
    std::shared_ptr<Runtime> runtime;
    Runtime& operator*() const { return *runtime; }
};

const char kEmulatedImage[] = "fastfid emulated kernel image";

py::dict as_dict(const FrechetRecord& r) {
    py::dict out;
    out["distance"] = r.distance;
    out["trace_sqrt"] = r.trace_sqrt;
    out["mean_term"] = r.mean_term;
    out["scale"] = r.scale;
    out["step"] = r.step;
    out["iterations"] = static_cast<int>(r.iterations);
    out["converged"] = r.converged != 0;
    out["status"] = static_cast<int>(r.status);
    out["nonfinite_means"] = static_cast<long long>(r.nonfinite_means);
    out["bound"] = r.bound;
    for (int side = 0; side < 2; ++side) {
        const std::string suffix = std::to_string(side + 1);
        out[("trace" + suffix).c_str()] = r.trace[side];
        out[("nonfinite" + suffix).c_str()] = static_cast<long long>(r.nonfinite[side]);
        out[("asymmetry" + suffix).c_str()] = r.asymmetry[side];
        out[("largest_variance" + suffix).c_str()] = r.largest_variance[side];
        out[("smallest_variance" + suffix).c_str()] = r.smallest_variance[side];
    }
    return out;
}

PyObject* cuda_error_type = nullptr;

void register_backend(py::module_& m) {
    py::class_<Backend>(m, "Backend", "A CUDA driver (the system's or the emulation's) with fastfid's kernels.")
        .def_property_readonly("name", [](const Backend& b) { return b.runtime->name(); })
        .def("probe", [](const Backend& b, int device) {
                 py::gil_scoped_release release;
                 (*b).probe(device);
             }, py::arg("device"), "Load the kernels on a device and run a probe kernel there; raises CudaError.")
        .def("architecture", [](const Backend& b, int device) { return (*b).architecture(device); },
             py::arg("device"), "'sm_XY' of a device, '' if it cannot be asked.")
        .def("accumulate",
             [](const Backend& b, std::uintptr_t features, int feature_type, int64_t rows, int64_t cols,
                int64_t row_stride, int64_t col_stride, std::uintptr_t mean, std::uintptr_t comoment,
                std::uintptr_t counters, std::uintptr_t workspace, int64_t row_slices, int variant, int device,
                std::uintptr_t stream) {
                 if (feature_type < 0 || feature_type > 3) throw std::invalid_argument("unknown feature type code");
                 if (variant < 0 || variant > 2) throw std::invalid_argument("unknown statistics variant");
                 const FeatureBlock block{address<const void>(features), rows, cols, row_stride, col_stride};
                 const StatsBuffers state{address<double>(mean), address<double>(comoment),
                                          address<long long>(counters), address<double>(workspace)};
                 py::gil_scoped_release release;
                 Device scope(*b, device, stream, "accumulate");
                 accumulate_batch(scope, block, static_cast<FeatureType>(feature_type), state, row_slices,
                                  static_cast<StatsVariant>(variant));
             },
             py::arg("features"), py::arg("feature_type"), py::arg("rows"), py::arg("cols"), py::arg("row_stride"),
             py::arg("col_stride"), py::kw_only(), py::arg("mean"), py::arg("comoment"), py::arg("counters"),
             py::arg("workspace"), py::arg("row_slices") = 0, py::arg("variant") = 0, py::arg("device") = 0,
             py::arg("stream") = 0,
             "Enqueue the addition of a batch of features (element strides; type 0 float16, 1 bfloat16, 2 float32, "
             "3 float64) to a device state; variant 0: FP64 FMAs, 1: FP64 tensor cores (sm_80/90/100), 2: the fast "
             "mode, TF32 (float32/float64 batches) or split-bf16 (float16/bfloat16) tensor-core products with float32 "
             "partial sums (not exact). A batch holding NaN/Inf is counted as skipped and "
             "changes nothing else.")
        .def("describe",
             [](const Backend& b, int device) {
                 Runtime::Description description;
                 {
                     py::gil_scoped_release release;
                     description = (*b).describe(device);
                 }
                 py::dict out;
                 out["name"] = description.name;
                 out["driver_version"] = description.driver_version;
                 out["architecture"] = (*b).architecture(device);
                 return out;
             },
             py::arg("device"), "The GPU's name, the driver's CUDA version (e.g. 12080) and 'sm_XY' ('' and 0 if unknown).")
        .def("fp64_tensor_cores",
             [](const Backend& b, int device) {
                 // DMMA runs at twice the FP64 FMA rate on A100 (sm_80), H100 (sm_90) and B200 (sm_100); the
                 // other architectures have no FP64 tensor cores worth using.
                 const std::string arch = (*b).architecture(device);
                 return arch == "sm_80" || arch == "sm_90" || arch.rfind("sm_10", 0) == 0;
             },
             py::arg("device"), "Whether the statistics should use the FP64 tensor cores on this device.")
        .def("merge",
             [](const Backend& b, int64_t dim, std::uintptr_t mean, std::uintptr_t comoment, std::uintptr_t counters,
                std::uintptr_t workspace, std::uintptr_t other_mean, std::uintptr_t other_comoment,
                std::uintptr_t other_counters, int device, std::uintptr_t stream) {
                 const StatsBuffers into{address<double>(mean), address<double>(comoment),
                                         address<long long>(counters), address<double>(workspace)};
                 const StatsBuffers other{address<double>(other_mean), address<double>(other_comoment),
                                          address<long long>(other_counters), nullptr};
                 py::gil_scoped_release release;
                 Device scope(*b, device, stream, "merge");
                 merge_states(scope, dim, into, other);
             },
             py::arg("dim"), py::kw_only(), py::arg("mean"), py::arg("comoment"), py::arg("counters"),
             py::arg("workspace"), py::arg("other_mean"), py::arg("other_comoment"), py::arg("other_counters"),
             py::arg("device") = 0, py::arg("stream") = 0,
             "Enqueue Chan's merge of the other device state into this one (workspace: stats_workspace_doubles).")
        .def("frechet_distance",
             [](const Backend& b, std::uintptr_t mean1, std::uintptr_t sigma1, std::uintptr_t mean2,
                std::uintptr_t sigma2, int64_t dim, std::uintptr_t workspace, std::uintptr_t sqrt_out,
                std::uintptr_t inverse_sqrt_out, double tolerance, int max_iterations, bool tensor_cores, int device,
                std::uintptr_t stream) {
                 const FrechetBuffers buffers{address<const double>(mean1), address<const double>(sigma1),
                                              address<const double>(mean2), address<const double>(sigma2),
                                              address<double>(workspace), address<double>(sqrt_out),
                                              address<double>(inverse_sqrt_out)};
                 FrechetRecord record;
                 {
                     py::gil_scoped_release release;
                     Device scope(*b, device, stream, "frechet_distance");
                     record = frechet_distance_on(scope, dim, buffers,
                                                  NewtonSchulzOptions{tolerance, max_iterations, tensor_cores});
                 }
                 return as_dict(record);
             },
             py::arg("mean1"), py::arg("sigma1"), py::arg("mean2"), py::arg("sigma2"), py::arg("dim"), py::kw_only(),
             py::arg("workspace"), py::arg("sqrt_out") = 0, py::arg("inverse_sqrt_out") = 0,
             py::arg("tolerance") = 1e-12, py::arg("max_iterations") = 100, py::arg("tensor_cores") = false,
             py::arg("device") = 0, py::arg("stream") = 0,
             "FD between N(mean1, sigma1) and N(mean2, sigma2) (float64, row-major d x d; means may be 0) by coupled "
             "Newton-Schulz on sigma1 @ sigma2, with the inputs' checks, all on the device; one read of the result "
             "record at the end. Optionally writes (sigma1 sigma2)^(1/2) and ^(-1/2). Returns the record as a dict.")
        .def("frechet_symmetric",
             [](const Backend& b, std::uintptr_t mean1, std::uintptr_t sigma1, std::uintptr_t mean2,
                std::uintptr_t sigma2, std::uintptr_t scaled1, std::uintptr_t scaled2, std::uintptr_t factor1,
                std::uintptr_t factor2, std::uintptr_t info1, std::uintptr_t info2, std::uintptr_t units, int64_t dim,
                std::uintptr_t workspace, double tolerance, int max_iterations, bool tensor_cores, bool tf32x3,
                int device, std::uintptr_t stream) {
                 const FrechetBuffers buffers{address<const double>(mean1), address<const double>(sigma1),
                                              address<const double>(mean2), address<const double>(sigma2),
                                              address<double>(workspace), nullptr, nullptr};
                 const SymmetricBuffers inputs{address<const double>(scaled1), address<const double>(scaled2),
                                               address<const double>(factor1), address<const double>(factor2),
                                               address<const int>(info1), address<const int>(info2),
                                               address<const double>(units)};
                 FrechetRecord record;
                 {
                     py::gil_scoped_release release;
                     Device scope(*b, device, stream, "frechet_distance");
                     record = frechet_symmetric_on(scope, dim, buffers, inputs, max_iterations, tolerance, tensor_cores,
                                                   tf32x3);
                 }
                 return as_dict(record);
             },
             py::arg("mean1"), py::arg("sigma1"), py::arg("mean2"), py::arg("sigma2"), py::kw_only(),
             py::arg("scaled1"), py::arg("scaled2"), py::arg("factor1"), py::arg("factor2"), py::arg("info1"),
             py::arg("info2"), py::arg("units"), py::arg("dim"), py::arg("workspace"), py::arg("tolerance") = 1e-8,
             py::arg("max_iterations") = 100, py::arg("tensor_cores") = false, py::arg("tf32x3") = false,
             py::arg("device") = 0, py::arg("stream") = 0,
             "FD with the trace term by scaled Newton-Schulz on A = L^T S L (S1 = sigma1/u1 = L1 L1^T or the other "
             "side), corrected in float64 with a bound on the distance's error; tensor_cores: the float64 GEMMs on "
             "the FP64 tensor cores; tf32x3: Newton-Schulz's products in 3xTF32. Status 4 (bound above "
             "tolerance * (tr sigma1 + tr sigma2)) or 5 (no factor) asks for the exact route. A is left in the "
             "workspace after the checks' partials. One read of the result record.")
        .def("stream_wait",
             [](const Backend& b, int device, std::uintptr_t waiting, std::uintptr_t signalling) {
                 py::gil_scoped_release release;
                 (*b).stream_wait(device, waiting, signalling);
             },
             py::arg("device"), py::arg("waiting"), py::arg("signalling"),
             "Make stream `waiting` wait, on the device, for the work enqueued so far on `signalling`.");

    m.def("system_backend",
          [](const std::string& library) { return Backend{std::shared_ptr<Runtime>(&system_runtime(library), [](Runtime*) {})}; },
          py::arg("library") = "libcuda.so.1",
          "The system's CUDA driver (loaded at first use; a Backend whose calls raise CudaError if it cannot be).");
    m.def("emulated_backend",
          [] {
              const void* image = fastfid_kernel_image_size > 0 ? static_cast<const void*>(fastfid_kernel_image)
                                                                : static_cast<const void*>(kEmulatedImage);
              return Backend{std::make_shared<Runtime>("emulated", &fastfid::simt_driver::table(), "", image)};
          },
          "A new Backend over the emulated driver: CPU memory addresses stand for device ones.");
}

void register_emulator(py::module_& m) {
    namespace driver = fastfid::simt_driver;
    py::module_ e = m.def_submodule("emulator", "Steering of the emulated CUDA driver, for tests.");
    e.def("reset", &driver::reset, py::arg("devices") = 1, py::arg("capability") = 90,
          "Back to `devices` GPUs of compute capability `capability` (e.g. 89 for sm_89), no injected errors, zero "
          "counts, empty log, current device 0.");
    e.def("inject", &driver::inject, py::arg("call"), py::arg("code"), py::arg("skip") = 0,
          "The (skip + 1)-th call from now of driver function `call` (e.g. 'cuModuleLoadData') returns `code`.");
    e.def(
        "inject_fault",
        [](const std::string& kernel, const std::string& kind, int skip, long long where, long long barrier) {
            const driver::FaultKind code = kind == "flip_bit"       ? driver::FaultKind::flip_bit
                                           : kind == "skip_block"   ? driver::FaultKind::skip_block
                                           : kind == "drop_barrier" ? driver::FaultKind::drop_barrier
                                                                    : throw std::invalid_argument(
                                                                          "kind must be 'flip_bit', 'skip_block' or "
                                                                          "'drop_barrier', got '" + kind + "'");
            driver::inject_fault(kernel, code, skip, where, barrier);
        },
        py::arg("kernel"), py::arg("kind"), py::arg("skip") = 0, py::arg("where") = 0, py::arg("barrier") = 0,
        "Wrong values, not an error code: the (skip + 1)-th launch from now of `kernel` reports success but 'flip_bit' "
        "flips bit 52 of element `where` of its first double* argument after it ran, 'skip_block' leaves block "
        "`where` unrun, 'drop_barrier' drops the `barrier`-th __syncthreads() of block `where` (a stale read).");
    e.def("inject_asynchronous", &driver::inject_asynchronous, py::arg("code"),
          "The next synchronisation reports `code`, as a kernel's asynchronous fault would.");
    e.def("counters", [] {
        const driver::Counters c = driver::counters();
        py::dict out;
        out["launches"] = c.launches;
        out["device_to_host_copies"] = c.device_to_host_copies;
        out["device_to_host_bytes"] = c.device_to_host_bytes;
        out["synchronisations"] = c.synchronisations;
        out["live_allocations"] = c.live_allocations;
        out["events_recorded"] = c.events_recorded;
        out["stream_waits"] = c.stream_waits;
        return out;
    });
    e.def("log", &driver::log, "One line per launch, copy to the host, event record and stream wait.");
    e.def("set_current_device", &driver::set_current_device, py::arg("device"),
          "Make `device` this thread's current one, as torch.cuda.set_device would.");
    e.def("current_device", &driver::current_device);
    e.def(
        "set_schedule",
        [](const std::string& order) {
            if (order != "forward" && order != "reverse")
                throw std::invalid_argument("schedule must be 'forward' or 'reverse'");
            simt::set_schedule(order == "forward" ? simt::Schedule::forward : simt::Schedule::reverse);
        },
        py::arg("order"), "Order in which the emulated threads of a block run between barriers, on this OS thread.");
}

}  // namespace

// register_selftests.cpp: the test-only kernels, as the submodule fastfid._cuda.selftest.
void register_selftests(py::module_& m);

PYBIND11_MODULE(_cuda, m) {
    m.doc() = "fastfid's device path: statistics and Frechet distances on a CUDA driver's GPU (or the emulated one)";
    cuda_error_type = PyErr_NewException("fastfid._cuda.CudaError", PyExc_RuntimeError, nullptr);
    m.attr("CudaError") = py::handle(cuda_error_type);
    py::register_exception_translator([](std::exception_ptr error) {
        try {
            if (error) std::rethrow_exception(error);
        } catch (const CudaError& e) {
            py::object instance = py::reinterpret_borrow<py::object>(cuda_error_type)(e.what());
            instance.attr("code") = e.code();
            instance.attr("name") = e.name();
            instance.attr("asynchronous") = e.asynchronous();
            PyErr_SetObject(cuda_error_type, instance.ptr());
        }
    });
    register_backend(m);
    register_emulator(m);
    register_selftests(m);
    m.attr("kernel_image_size") = fastfid_kernel_image_size;
    m.attr("kernel_architectures") = FASTFID_KERNEL_ARCHITECTURES;  // CMAKE_CUDA_ARCHITECTURES, comma-separated
    m.def("kernel_image", [] {
        return py::bytes(reinterpret_cast<const char*>(fastfid_kernel_image), fastfid_kernel_image_size);
    }, "The embedded fatbin (empty when built without nvcc).");
    m.attr("counter_slots") = static_cast<int>(fastfid::kernels::kCounterSlots);
    // The codes Python passes and reads, from the enums themselves (fastfid/_device reads them here).
    py::dict feature_types;
    feature_types["float16"] = static_cast<int>(fastfid::kernels::FeatureType::float16);
    feature_types["bfloat16"] = static_cast<int>(fastfid::kernels::FeatureType::bfloat16);
    feature_types["float32"] = static_cast<int>(fastfid::kernels::FeatureType::float32);
    feature_types["float64"] = static_cast<int>(fastfid::kernels::FeatureType::float64);
    m.attr("feature_types") = feature_types;
    py::dict counters;
    counters["count"] = static_cast<int>(fastfid::kernels::kCount);
    counters["skipped_batches"] = static_cast<int>(fastfid::kernels::kSkippedBatches);
    counters["batch_flag"] = static_cast<int>(fastfid::kernels::kBatchFlag);
    m.attr("counters") = counters;
    py::dict statuses;
    statuses["ok"] = static_cast<int>(fastfid::kernels::kStatusOk);
    statuses["invalid_input"] = static_cast<int>(fastfid::kernels::kStatusInvalidInput);
    statuses["product_not_finite"] = static_cast<int>(fastfid::kernels::kStatusProductNotFinite);
    statuses["product_zero"] = static_cast<int>(fastfid::kernels::kStatusProductZero);
    statuses["needs_exact"] = static_cast<int>(fastfid::kernels::kStatusNeedsExact);
    statuses["no_factor"] = static_cast<int>(fastfid::kernels::kStatusNoFactor);
    m.attr("statuses") = statuses;
    py::dict stats_variants;
    stats_variants["fma"] = static_cast<int>(StatsVariant::fma);
    stats_variants["fp64_tensor_cores"] = static_cast<int>(StatsVariant::fp64_tensor_cores);
    stats_variants["fast"] = static_cast<int>(StatsVariant::fast);
    m.attr("stats_variants") = stats_variants;
    m.def("stats_workspace_doubles", &stats_workspace_doubles, py::arg("dim"),
          "float64 scratch elements of a batch or a merge (2d + 2).");
    m.def("frechet_workspace_doubles", &frechet_workspace_doubles, py::arg("dim"),
          "float64 scratch elements of frechet_distance.");
    m.def("symmetric_workspace_doubles", &symmetric_workspace_doubles, py::arg("dim"),
          "float64 scratch elements of frechet_symmetric.");
    m.attr("symmetric_matrix_offset") = static_cast<int64_t>(fastfid::kernels::kStateDoubles + 2 * fastfid::kernels::kCheckBlocks * fastfid::kernels::kCheckFields);
}
