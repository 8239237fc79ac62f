// Host-side loop of the coupled Newton–Schulz iteration (kernels in newton_schulz_kernels.cuh),
// shared by the CUDA build and the emulation. Per iteration it reads two doubles back from the
// device to decide whether to stop; everything else stays on the device.
//
// The stopping test is the relative step ‖Y_{k+1} − Y_k‖_F / ‖Y_k‖_F, as in the CPU core: with
// n ≤ d samples Σ₁Σ₂ is singular, its null eigenvalues keep ‖I − ZY‖ near 1 forever (and the
// non-normal Σ₁Σ₂ can make it grow) while they add nothing to tr Y, which converges regardless.
#pragma once

#include <cmath>
#include <stdexcept>

#include "core/newton_schulz_stop.hpp"
#include "cuda/device_api.hpp"
#include "cuda/newton_schulz_kernels.cuh"

namespace fastfid::device {

using kernels::blocks_for;

template <class Device>
void read_doubles(Device& device, double* destination, const double* address, int count) {
    device.copy_to_host(destination, address, count * sizeof(double));
}

template <class Device>
NewtonSchulzResult newton_schulz_trace(Device& device, const double* sigma1, const double* sigma2, int64_t d,
                                       double* workspace, double* sqrt_out, double* inverse_sqrt_out,
                                       const NewtonSchulzOptions& options) {
    using namespace kernels;
    if (d < 1) throw std::invalid_argument("the covariances must be at least 1 × 1");
    if (options.max_iterations < 0) throw std::invalid_argument("max_iterations must be >= 0");
    const int64_t size = d * d;
    double* y[2] = {workspace, workspace + size};
    double* z[2] = {workspace + 2 * size, workspace + 3 * size};
    double* t = workspace + 4 * size;
    double* saved_y = workspace + 5 * size;
    double* saved_z = workspace + 6 * size;
    double* norm_squared = workspace + 7 * size;
    double* trace = norm_squared + 1;
    double* steps = trace + 1;  // two slots per iteration: no clearing inside the loop
    const auto elements = dim3(blocks_for(size, kElementwiseThreads));
    const auto square_tiles = [d](unsigned products) {
        const auto side = static_cast<unsigned>((d + kTile - 1) / kTile);
        return dim3(side, side, products);
    };
    const int64_t scalars = 2 + 2 * static_cast<int64_t>(options.max_iterations);
    const unsigned reduction_blocks = blocks_for(size, kReductionThreads);

    device.launch(fill_zero_kernel, dim3(blocks_for(scalars, kElementwiseThreads)), dim3(kElementwiseThreads),
                  norm_squared, scalars);
    device.launch(gemm_kernel<GemmEpilogue::store>, square_tiles(1), dim3(kTileThreads),
                  GemmBatch{{sigma1, nullptr}, {sigma2, nullptr}, {y[0], nullptr}}, d, static_cast<double*>(nullptr));
    device.launch(sum_of_squares_kernel, dim3(reduction_blocks < 1024 ? reduction_blocks : 1024),
                  dim3(kReductionThreads), static_cast<const double*>(y[0]), size, norm_squared);
    device.launch(start_kernel, elements, dim3(kElementwiseThreads), y[0], z[0], d,
                  static_cast<const double*>(norm_squared));

    NewtonSchulzResult result;
    double c_squared = 0;
    read_doubles(device, &c_squared, norm_squared, 1);
    result.scale = std::sqrt(c_squared);
    if (!std::isfinite(c_squared)) throw std::invalid_argument("sigma1 @ sigma2 is not finite");
    if (c_squared == 0) {  // Σ₁Σ₂ = 0: the trace and the square root are 0
        if (inverse_sqrt_out) throw std::invalid_argument("sigma1 @ sigma2 is 0: it has no inverse square root");
        result.converged = true;
        if (sqrt_out) device.launch(fill_zero_kernel, elements, dim3(kElementwiseThreads), sqrt_out, size);
        return result;
    }

    // Y_k and Z_k live in y[current], z[current]; the best pair so far in y[i]/z[i] or saved_*.
    int current = 0;
    const double* best_y = y[0];
    const double* best_z = z[0];
    NewtonSchulzStop stop(options.tolerance);
    for (int iteration = 0; iteration < options.max_iterations; ++iteration) {
        device.launch(gemm_kernel<GemmEpilogue::newton_schulz_t>, square_tiles(1), dim3(kTileThreads),
                      GemmBatch{{z[current], nullptr}, {y[current], nullptr}, {t, nullptr}}, d,
                      static_cast<double*>(nullptr));
        const int next = 1 - current;
        if (best_y == y[next]) {  // this step overwrites the best pair: keep a copy
            device.copy(saved_y, y[next], size * sizeof(double));
            device.copy(saved_z, z[next], size * sizeof(double));
            best_y = saved_y;
            best_z = saved_z;
        }
        double* step_sums = steps + 2 * iteration;
        device.launch(gemm_kernel<GemmEpilogue::store_with_step>, square_tiles(2), dim3(kTileThreads),
                      GemmBatch{{y[current], t}, {t, z[current]}, {y[next], z[next]}}, d, step_sums);
        double sums[2];
        read_doubles(device, sums, step_sums, 2);
        const double step = std::sqrt(sums[0] / sums[1]);
        current = next;
        result.iterations = iteration + 1;
        const auto verdict = stop.observe(step);
        if (verdict.best) {
            best_y = y[current];
            best_z = z[current];
        }
        if (verdict.stop) break;
    }
    result.step = stop.best_step();
    result.converged = stop.converged();
    device.launch(trace_kernel, dim3(1), dim3(kReductionThreads), best_y, d, trace);
    double trace_y = 0;
    read_doubles(device, &trace_y, trace, 1);
    result.trace_sqrt = std::sqrt(result.scale) * (trace_y > 0 ? trace_y : 0.0);
    if (sqrt_out)
        device.launch(rescale_kernel, elements, dim3(kElementwiseThreads), best_y, sqrt_out, size,
                      static_cast<const double*>(norm_squared), 1);
    if (inverse_sqrt_out)
        device.launch(rescale_kernel, elements, dim3(kElementwiseThreads), best_z, inverse_sqrt_out, size,
                      static_cast<const double*>(norm_squared), -1);
    return result;
}

}  // namespace fastfid::device
