// The stopping rule of the coupled Newton–Schulz iteration, shared by the CPU core
// (cpu/trace_sqrt.cpp) and the device kernels (cuda/frechet_kernels.cuh), where it runs on the GPU
// so that the host never waits inside the iteration.
//
// It watches the relative step ‖Y_{k+1} − Y_k‖_F / ‖Y_k‖_F: converged at `tolerance`; diverged when
// the step is not finite or exceeds 10³ × the best one (rounding amplified through the growing Z
// of null or tiny eigenvalues). The caller keeps the iterate of the best step and returns it.
// A plain aggregate, so that it lives in device memory as it is.
#pragma once

#include "core/half.hpp"  // FASTFID_HOST_DEVICE

namespace fastfid {

struct NewtonSchulzStop {
    static constexpr double kDivergenceRatio = 1e3;
    static constexpr double kNoStepYet = 1.7976931348623157e308;  // DBL_MAX: any finite step is better

    struct Verdict {
        bool best;  // this iterate is the best so far: keep it
        bool stop;
    };

    double tolerance;
    double best_step = kNoStepYet;
    bool converged = false;

    FASTFID_HOST_DEVICE static NewtonSchulzStop with_tolerance(double tolerance) { return {tolerance, kNoStepYet, false}; }

    FASTFID_HOST_DEVICE Verdict observe(double step) {
        if (!(step - step == 0.0)) return {false, true};  // NaN or Inf (no fast-math in this build)
        if (step <= best_step) {
            best_step = step;
            converged = step <= tolerance;
            return {true, converged};
        }
        return {false, step > kDivergenceRatio * best_step};
    }
};

}  // namespace fastfid
