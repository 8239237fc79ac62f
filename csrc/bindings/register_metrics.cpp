#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/arrays.hpp"
#include "cpu/half_distances.hpp"
#include "cpu/neighbours.hpp"

namespace fastfid::bindings {

namespace {

const float* float32_vector(const py::array_t<float>& a, int64_t size, const char* name) {
    if (a.ndim() != 1 || a.shape(0) != size || !(a.flags() & py::array::c_style))
        throw std::invalid_argument(std::string(name) + " must be a contiguous float32 vector of " + std::to_string(size) +
                                    " values");
    return a.data();
}

}  // namespace

void register_metrics(py::module_& m) {
    m.def(
        "adm_half_distances",
        [](py::array_t<float> products, const py::array_t<float>& norm_u, const py::array_t<float>& norm_v,
           int threads) {
            if (products.ndim() != 2 || !(products.flags() & py::array::c_style) || !products.writeable())
                throw std::invalid_argument("products must be a writable C-contiguous float32 matrix");
            const int64_t rows = products.shape(0), cols = products.shape(1);
            const float* u = float32_vector(norm_u, rows, "norm_u");
            const float* v = float32_vector(norm_v, cols, "norm_v");
            float* p = products.mutable_data();
            py::gil_scoped_release release;
            cpu::adm_half_distances(p, rows, cols, u, v, threads);
        },
        py::arg("products").noconvert(), py::arg("norm_u").noconvert(), py::arg("norm_v").noconvert(),
        py::arg("threads") = 1,
        "In place: ADM's float16 squared distances from float32 sums of half products and half norms.");
    m.def("round_to_half", [](const py::array_t<float, py::array::c_style>& x) {
        py::array_t<float> out(x.request().shape);
        const float* in = x.data();
        float* o = out.mutable_data();
        for (py::ssize_t i = 0; i < x.size(); ++i) o[i] = cpu::round_to_half(in[i]);
        return out;
    }, py::arg("x").noconvert(), "float32 values rounded to binary16 (as floats); for the tests.");
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
    m.def(
        "gaussian_kernel_sum",
        [](const py::array& a, const py::array& b, double sigma) {
            const FeatureMatrix x = feature_matrix(a), y = feature_matrix(b);
            if (x.cols != y.cols) throw std::invalid_argument("the two sets of embeddings have different dims");
            py::gil_scoped_release release;
            return cpu::gaussian_kernel_sum(x, y, sigma);
        },
        py::arg("a"), py::arg("b"), py::arg("sigma"),
        "Sum over all pairs, the diagonal included, of exp(-|a_i - b_j|^2 / (2 sigma^2)), in float64.");
}

}  // namespace fastfid::bindings
