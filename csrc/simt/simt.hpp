// SIMT emulation: runs the CUDA kernels of csrc/cuda on the CPU, compiled by the host compiler,
// so that their logic is tested where there is no GPU.
//
// What it provides, under the CUDA names: dim3, threadIdx / blockIdx / blockDim / gridDim,
// __global__ / __device__ / __forceinline__ / __launch_bounds__ (no-ops), __shared__ (one copy
// per block), __syncthreads() and atomicAdd on double.
//
// How: every CUDA thread of a block is a fiber (ucontext) on the calling OS thread; the blocks of
// a grid run one after another. A fiber runs until it reaches __syncthreads() or returns, then
// the next one runs; a block is past a barrier when all of its threads have reached it.
//
// Limits, honestly: one legal schedule is tried at a time (threads in index order, or reversed:
// run both to expose a missing barrier), so data races between barriers, warp-synchronous
// assumptions and memory-ordering bugs are not detected in general; shared memory keeps what the
// previous block left (garbage, as on a GPU, but a deterministic one); atomics are trivially
// atomic (one OS thread); the fibers switch through ucontext, about 1 µs a switch, so a kernel
// runs some 10⁴ times slower than on a GPU; nothing about speed,
// occupancy, register pressure or launch limits is checked. A barrier that only some threads of
// a block reach (undefined behaviour in CUDA) is reported as an error.
#pragma once

#include <cstdint>
#include <functional>

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

extern thread_local dim3 threadIdx;
extern thread_local dim3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// One copy per block: the blocks of a grid run one at a time on each OS thread.
#define __shared__ static thread_local

void __syncthreads();
double atomicAdd(double* address, double value);
unsigned long long atomicAdd(unsigned long long* address, unsigned long long value);

namespace simt {

enum class Schedule { forward, reverse };

// The schedule used by launches on this OS thread (tests run kernels under both).
void set_schedule(Schedule schedule);
Schedule schedule();

// Runs `thread_body` once per thread of every block of the grid, as described above.
void run_grid(dim3 grid, dim3 block, const std::function<void()>& thread_body);

// kernel<<<grid, block>>>(args...)
template <class... Params, class... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, Args... args) {
    run_grid(grid, block, [&] { kernel(args...); });
}

}  // namespace simt
