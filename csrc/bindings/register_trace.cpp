#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "bindings/arrays.hpp"
#include "cpu/trace_sqrt.hpp"

namespace fastfid::bindings {

namespace {

cpu::TraceMethod parse_method(const std::string& name) {
    if (name == "eigh") return cpu::TraceMethod::eigh;
    if (name == "newton_schulz") return cpu::TraceMethod::newton_schulz;
    throw std::invalid_argument("unknown trace method '" + name + "': use 'eigh' or 'newton_schulz'");
}

}  // namespace

void register_trace(py::module_& m) {
    m.def(
        "validate_covariance",
        [](const Float64Array& sigma, const std::string& name) {
            const SymmetricView view = symmetric_view(sigma, name.c_str());
            py::gil_scoped_release release;
            cpu::validate_covariance(view, name.c_str());
        },
        py::arg("sigma"), py::arg("name"), "Raise ValueError unless sigma is finite and symmetric.");

    py::class_<cpu::PsdFactor>(m, "PsdFactor", "Cholesky factor sigma = scale P L L^T P^T of a validated covariance (pivoted only when semidefinite).")
        .def(py::init([](const Float64Array& sigma, const std::string& name) {
                 const SymmetricView view = symmetric_view(sigma, name.c_str());
                 py::gil_scoped_release release;
                 return cpu::PsdFactor::compute(view, name.c_str());
             }),
             py::arg("sigma"), py::arg("name") = "sigma1")
        .def_readonly("dim", &cpu::PsdFactor::dim)
        .def_readonly("rank", &cpu::PsdFactor::rank)
        .def_readonly("trace", &cpu::PsdFactor::trace)
        .def_readonly("scale", &cpu::PsdFactor::scale)
        .def_readonly("pivoted", &cpu::PsdFactor::pivoted);

    m.def(
        "trace_sqrt_product",
        [](const cpu::PsdFactor& factor, const Float64Array& other, const std::string& method, double tolerance,
           int max_iterations) {
            const SymmetricView view = symmetric_view(other, "sigma2");
            cpu::TraceOptions options{parse_method(method), tolerance, max_iterations};
            cpu::TraceResult r;
            {
                py::gil_scoped_release release;
                r = cpu::trace_sqrt_product(factor, view, options);
            }
            py::dict out;
            out["trace_sqrt"] = r.trace_sqrt;
            out["rank"] = r.rank;
            out["clamped"] = r.clamped;
            out["most_negative"] = r.most_negative;
            out["max_eigenvalue"] = r.max_eigenvalue;
            out["iterations"] = r.iterations;
            out["step"] = r.step;
            out["converged"] = r.converged;
            return out;
        },
        py::arg("factor"), py::arg("sigma2"), py::kw_only(), py::arg("method") = "eigh",
        py::arg("tolerance") = 1e-12, py::arg("max_iterations") = 100,
        "tr sqrt(sigma1 sigma2) from the factor of sigma1 and a validated sigma2; returns a dict of diagnostics.");
    m.def(
        "transport_maps",
        [](const cpu::PsdFactor& factor, const Float64Array& other, bool forward, bool inverse) {
            const SymmetricView view = symmetric_view(other, "sigma2");
            cpu::TransportMaps maps;
            {
                py::gil_scoped_release release;
                maps = cpu::transport_maps(factor, view, forward, inverse);
            }
            const auto as_array = [d = factor.dim](std::vector<double>& data) -> py::object {
                if (data.empty()) return py::none();
                Float64Array out({d, d});
                std::copy(data.begin(), data.end(), out.mutable_data());
                return std::move(out);
            };
            return py::make_tuple(maps.trace_sqrt, as_array(maps.forward), as_array(maps.inverse));
        },
        py::arg("factor"), py::arg("sigma2"), py::kw_only(), py::arg("forward") = true, py::arg("inverse") = false,
        "(tr sqrt(sigma1 sigma2), T, T^-1) with T the optimal-transport map from N(0, sigma1) to N(0, sigma2) "
        "(None where not asked for); sigma1 must be nonsingular, and sigma2 too for T^-1.");
}

}  // namespace fastfid::bindings
