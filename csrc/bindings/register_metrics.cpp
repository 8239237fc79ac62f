#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/arrays.hpp"
#include "cpu/neighbours.hpp"

namespace fastfid::bindings {

void register_metrics(py::module_& m) {
    m.def(
        "kth_neighbour_radii",
        [](const py::array& features, int64_t k) {
            const FeatureMatrix x = feature_matrix(features);
            std::vector<double> radii;
            {
                py::gil_scoped_release release;
                radii = cpu::kth_neighbour_radii(x, k);
            }
            return py::array_t<double>(static_cast<py::ssize_t>(radii.size()), radii.data());
        },
        py::arg("features"), py::arg("k"), "Distance from every sample to its k-th nearest other sample.");
    m.def(
        "ball_membership",
        [](const py::array& queries, const py::array& centres, const std::vector<double>& radii) {
            const FeatureMatrix q = feature_matrix(queries), c = feature_matrix(centres);
            cpu::BallMembership result;
            {
                py::gil_scoped_release release;
                result = cpu::ball_membership(q, c, radii);
            }
            return py::make_tuple(
                py::array_t<int64_t>(static_cast<py::ssize_t>(result.inside.size()), result.inside.data()),
                py::array_t<double>(static_cast<py::ssize_t>(result.nearest.size()), result.nearest.data()));
        },
        py::arg("queries"), py::arg("centres"), py::arg("radii"),
        "(per query: centres whose ball holds it, per centre: distance to its nearest query).");
    m.def(
        "polynomial_mmd",
        [](const py::array& x, const py::array& y, int degree, double gamma, double coef0) {
            const FeatureMatrix a = feature_matrix(x), b = feature_matrix(y);
            py::gil_scoped_release release;
            return cpu::polynomial_mmd(a, b, degree, gamma, coef0);
        },
        py::arg("x"), py::arg("y"), py::arg("degree") = 3, py::arg("gamma") = 0.0, py::arg("coef0") = 1.0,
        "Unbiased MMD^2 with the kernel (gamma a^T b + coef0)^degree; gamma 0 means 1 / dim (KID: the defaults).");
    m.def(
        "gaussian_mmd",
        [](const py::array& x, const py::array& y, double sigma) {
            const FeatureMatrix a = feature_matrix(x), b = feature_matrix(y);
            py::gil_scoped_release release;
            return cpu::gaussian_mmd(a, b, sigma);
        },
        py::arg("x"), py::arg("y"), py::arg("sigma"), "Unbiased MMD^2 with the kernel exp(-|a - b|^2 / (2 sigma^2)).");
}

}  // namespace fastfid::bindings
