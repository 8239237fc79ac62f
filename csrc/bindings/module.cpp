// fastfid._core: the native CPU core. Each area registers itself; this file only wires them.
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace fastfid::bindings {
void register_stats(py::module_& m);
void register_trace(py::module_& m);
void register_metrics(py::module_& m);
void register_threads(py::module_& m);
}  // namespace fastfid::bindings

PYBIND11_MODULE(_core, m) {
    m.doc() = "fastfid's native core: streaming feature statistics, the trace term tr sqrt(S1 S2), pairwise metrics";
    fastfid::bindings::register_stats(m);
    fastfid::bindings::register_trace(m);
    fastfid::bindings::register_metrics(m);
    fastfid::bindings::register_threads(m);
}
