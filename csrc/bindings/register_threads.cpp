#include <pybind11/pybind11.h>

#include <stdexcept>

#include "cpu/blas.hpp"

namespace py = pybind11;

namespace fastfid::bindings {

void register_threads(py::module_& m) {
    m.def(
        "set_blas_threads",
        [](int threads) {
            if (threads < 1) throw std::invalid_argument("the number of BLAS threads must be at least 1");
            blas::set_threads(threads);
        },
        py::arg("threads"), "Threads of the BLAS/LAPACK library the core links (not numpy's).");
    m.def("blas_threads", &blas::threads, "Threads the core's BLAS/LAPACK library uses now.");
}

}  // namespace fastfid::bindings
