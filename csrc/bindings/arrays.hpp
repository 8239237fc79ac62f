// Turning numpy arrays into the core's views. Python (fastfid/_arrays.py) has already checked
// dtypes and shapes for the user; these checks guard the native boundary itself.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "core/feature_matrix.hpp"

namespace fastfid::bindings {

namespace py = pybind11;

// numpy marks explicitly non-native arrays with the other endianness character.
constexpr char kForeignByteOrder = __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__ ? '<' : '>';

inline int64_t element_stride(const py::array& a, int axis) {
    const auto bytes = a.strides(axis), size = static_cast<py::ssize_t>(a.itemsize());
    if (bytes % size != 0) throw std::invalid_argument("array strides must be multiples of the item size");
    return bytes / size;
}

inline FeatureMatrix feature_matrix(const py::array& a) {
    if (a.ndim() != 2) throw std::invalid_argument("features must be a 2-D array (samples × dim), got " + std::to_string(a.ndim()) + " dimensions");
    if (a.dtype().kind() != 'f' || a.dtype().byteorder() == kForeignByteOrder)
        throw std::invalid_argument("features must be native-endian float16, float32 or float64");
    ScalarType type;
    switch (a.itemsize()) {
        case 2: type = ScalarType::float16; break;
        case 4: type = ScalarType::float32; break;
        case 8: type = ScalarType::float64; break;
        default: throw std::invalid_argument("features must be float16, float32 or float64");
    }
    return FeatureMatrix{a.data(), a.shape(0), a.shape(1), element_stride(a, 0), element_stride(a, 1), type};
}

using Float64Array = py::array_t<double>;  // no forcecast: callers pass float64

inline SymmetricView symmetric_view(const Float64Array& a, const char* name) {
    if (a.ndim() != 2 || a.shape(0) != a.shape(1))
        throw std::invalid_argument(std::string(name) + " must be a square 2-D matrix");
    return SymmetricView{a.data(), a.shape(0), element_stride(a, 0), element_stride(a, 1)};
}

// A C-contiguous float64 state buffer of shape (rows,) when cols == 0, else (rows, cols).
inline const double* state_buffer(const Float64Array& a, int64_t rows, int64_t cols, const char* name) {
    const bool shape_ok = cols == 0 ? (a.ndim() == 1 && a.shape(0) == rows)
                                    : (a.ndim() == 2 && a.shape(0) == rows && a.shape(1) == cols);
    if (!shape_ok || !(a.flags() & py::array::c_style))
        throw std::invalid_argument(std::string(name) + " must be a C-contiguous float64 buffer of the statistics' shape");
    return a.data();
}

inline double* writable_state_buffer(Float64Array& a, int64_t rows, int64_t cols, const char* name) {
    state_buffer(a, rows, cols, name);
    if (!a.writeable()) throw std::invalid_argument(std::string(name) + " must be writable");
    return a.mutable_data();
}

}  // namespace fastfid::bindings
