// SIMT emulation: runs the CUDA kernels of csrc/cuda on the CPU, compiled by the host compiler,
// so that their logic is tested where there is no GPU.
//
// What it provides, under the CUDA names: dim3, threadIdx / blockIdx / blockDim / gridDim,
// __global__ / __device__ / __forceinline__ / __launch_bounds__ (no-ops), __shared__ (one copy
// per block), __syncthreads(), __syncwarp() and atomicAdd on double; and the tensor cores' warp-wide
// mma.m8n8k4 on float64, mma.m16n8k8 on TF32 and mma.m16n8k16 on float16/bfloat16
// (simt::warp_mma_*), with the PTX ISA's fragment layouts.
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
void __syncwarp();
double atomicAdd(double* address, double value);
unsigned long long atomicAdd(unsigned long long* address, unsigned long long value);

namespace simt {

constexpr unsigned kWarpSize = 32;

enum class Schedule { forward, reverse };

// Warp-wide D += A·B on float64 tiles, as a GPU's mma.sync.aligned.m8n8k4.row.col.f64 computes it
// for every pair (A tile i, B tile j): this lane holds a[i] (A's fragment a0 of tile i), b[j] (B's
// b0 of tile j) and accumulators[(i·b_tiles + j)·2 + {0, 1}] (c0, c1 of D tile (i, j)). Each
// product D[r][c] += Σ_k A[r][k]·B[k][c] is summed in k order by fused multiply-adds. Every lane of
// the warp must call it (a warp-wide barrier before and after the exchange).
void warp_mma_m8n8k4_f64(double* accumulators, const double* a, int a_tiles, const double* b, int b_tiles);

// Warp-wide D += A·B on TF32 tiles with float32 accumulators, as mma.sync.aligned.m16n8k8.row.col
// .f32.tf32.tf32.f32 for every pair (A tile i, B tile j): this lane holds a[4i .. 4i + 3] (a0..a3 of
// tile i), b[2j], b[2j + 1] (b0, b1 of tile j) and accumulators[(i·b_tiles + j)·4 + {0..3}] (c0..c3).
// The operands are TF32 values, so each product is exact in float32; the model sums them onto C in
// k order with float32 rounding (NVIDIA leaves the hardware's order and rounding unspecified: error
// bounds that hold for any order of float32 sums cover both). Every lane of the warp must call it.
void warp_mma_m16n8k8_tf32(float* accumulators, const float* a, int a_tiles, const float* b, int b_tiles);

// Warp-wide D += A·B on float16 (or bfloat16) tiles with float32 accumulators, as mma.sync.aligned
// .m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32 for every pair (A tile i, B tile j): this lane holds
// a[4i .. 4i + 3] and b[2j], b[2j + 1], each two 16-bit values (the first in the low half), and the
// accumulators as for TF32. Products of two such values are exact in float32; the model sums them
// onto C in k order with float32 rounding, as for TF32. Every lane of the warp must call it.
void warp_mma_m16n8k16(float* accumulators, const uint32_t* a, int a_tiles, const uint32_t* b, int b_tiles,
                       bool bfloat16);

// Wrong values a broken GPU or a kernel's latent race would give, injected into the launches of this OS
// thread by the emulated driver (fastfid's validation must catch them): the block of linear index
// `skipped_block` does not run (a tile left unwritten); in block `barrier_block`, every thread's
// `dropped_barrier`-th __syncthreads() (from 0) returns at once, as if the barrier were missing, so
// that reads of shared memory see what the previous phase or block left there (a stale read). -1: none.
struct Faults {
    long long skipped_block = -1;
    long long barrier_block = -1;
    long long dropped_barrier = -1;
};
void set_faults(const Faults& faults);

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
