// IEEE 754 binary16 -> double, exact (every half is representable as a double).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

namespace fastfid {

inline double half_to_double(uint16_t bits) {
    const int sign = (bits >> 15) ? -1 : 1;
    const int exponent = (bits >> 10) & 0x1f;
    const int mantissa = bits & 0x3ff;
    if (exponent == 0) return sign * std::ldexp(static_cast<double>(mantissa), -24);  // subnormal or zero
    if (exponent == 31)
        return mantissa ? std::numeric_limits<double>::quiet_NaN()
                        : sign * std::numeric_limits<double>::infinity();
    return sign * std::ldexp(static_cast<double>(mantissa | 0x400), exponent - 25);
}

}  // namespace fastfid
