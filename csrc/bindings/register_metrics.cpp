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
        [](const py::array& x, const py::array& y) {
            const FeatureMatrix a = feature_matrix(x), b = feature_matrix(y);
            py::gil_scoped_release release;
            return cpu::polynomial_mmd(a, b);
        },
        py::arg("x"), py::arg("y"), "Unbiased MMD^2 with the kernel (a^T b / d + 1)^3 (KID).");
}

}  // namespace fastfid::bindings
