// The stopping rule of the coupled Newton–Schulz iteration, shared by the CPU core
// (cpu/trace_sqrt.cpp) and the device driver (cuda/newton_schulz_driver.hpp).
//
// It watches the relative step ‖Y_{k+1} − Y_k‖_F / ‖Y_k‖_F: converged at `tolerance`; diverged when
// the step is not finite or exceeds 10³ × the best one (rounding amplified through the growing Z
// of null or tiny eigenvalues). The caller keeps the iterate of the best step and returns it.
#pragma once

#include <cmath>
#include <limits>

namespace fastfid {

class NewtonSchulzStop {
public:
    explicit NewtonSchulzStop(double tolerance) : tolerance_(tolerance) {}

    struct Verdict {
        bool best;  // this iterate is the best so far: keep it
        bool stop;
    };

    Verdict observe(double step) {
        if (!std::isfinite(step)) return {false, true};
        if (step <= best_step_) {
            best_step_ = step;
            converged_ = step <= tolerance_;
            return {true, converged_};
        }
        return {false, step > kDivergenceRatio * best_step_};
    }

    double best_step() const { return best_step_; }
    bool converged() const { return converged_; }

private:
    static constexpr double kDivergenceRatio = 1e3;
    double tolerance_;
    double best_step_ = std::numeric_limits<double>::infinity();
    bool converged_ = false;
};

}  // namespace fastfid
