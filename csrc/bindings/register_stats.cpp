#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "bindings/arrays.hpp"
#include "cpu/stats.hpp"

namespace fastfid::bindings {

namespace {

cpu::StatsState state_of(int64_t& count, Float64Array& mean, Float64Array& comoment) {
    const int64_t d = mean.ndim() == 1 ? mean.shape(0) : -1;
    return cpu::StatsState{d, &count, writable_state_buffer(mean, d, 0, "mean"),
                           writable_state_buffer(comoment, d, d, "comoment")};
}

}  // namespace

void register_stats(py::module_& m) {
    m.def(
        "accumulate",
        [](const py::array& features, int64_t count, Float64Array mean, Float64Array comoment) {
            const FeatureMatrix batch = feature_matrix(features);
            cpu::StatsState state = state_of(count, mean, comoment);
            py::gil_scoped_release release;
            cpu::accumulate(state, batch);
            return count;
        },
        py::arg("features"), py::arg("count"), py::arg("mean"), py::arg("comoment"),
        "Add a batch of features (n × d, float16/32/64, any strides) to the state (count, mean, upper co-moment) "
        "in place; returns the new count. On error the state is unchanged.");
    m.def(
        "merge",
        [](int64_t count, Float64Array mean, Float64Array comoment, int64_t other_count, const Float64Array& other_mean,
           const Float64Array& other_comoment) {
            cpu::StatsState state = state_of(count, mean, comoment);
            const double* om = state_buffer(other_mean, state.dim, 0, "other mean");
            const double* oc = state_buffer(other_comoment, state.dim, state.dim, "other comoment");
            py::gil_scoped_release release;
            cpu::merge(state, other_count, om, oc);
            return count;
        },
        py::arg("count"), py::arg("mean"), py::arg("comoment"), py::arg("other_count"), py::arg("other_mean"),
        py::arg("other_comoment"), "Merge another state into this one in place; returns the new count.");
    m.def(
        "require_finite",
        [](const py::array& features) {
            const FeatureMatrix batch = feature_matrix(features);
            py::gil_scoped_release release;
            cpu::require_finite(batch);
        },
        py::arg("features"), "Raise ValueError unless every feature value is finite.");
    m.def("panel_rows", &cpu::panel_rows, py::arg("dim"),
          "Rows per SYRK panel for this dim; smaller batches are best buffered up to it.");
    m.def(
        "symmetrize_upper",
        [](Float64Array matrix) {
            const int64_t d = matrix.ndim() == 2 ? matrix.shape(0) : -1;
            double* data = writable_state_buffer(matrix, d, d, "matrix");
            py::gil_scoped_release release;
            cpu::symmetrize_upper(data, d);
        },
        py::arg("matrix"), "Copy the upper triangle onto the lower one, in place.");
}

}  // namespace fastfid::bindings
