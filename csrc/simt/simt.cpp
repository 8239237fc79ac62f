#include "simt/simt.hpp"

#include "core/half.hpp"

#include <ucontext.h>

#include <algorithm>
#include <cmath>

#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

thread_local dim3 threadIdx;
thread_local dim3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

namespace simt {

namespace {

// Kernels keep a few dozen scalars and a small register tile: 64 KiB is ample.
constexpr size_t kFiberStackBytes = 64 * 1024;
constexpr unsigned kMaxThreadsPerBlock = 1024;  // CUDA's limit

enum class FiberState { runnable, at_block_barrier, at_warp_barrier, finished };

struct Fiber {
    ucontext_t context;
    dim3 index;
    FiberState state = FiberState::runnable;
    long long barriers = 0;  // __syncthreads() reached so far in this block (counted where a fault drops one)
};

struct Block {
    std::vector<Fiber> fibers;
    std::unique_ptr<char[]> stacks;
    ucontext_t scheduler;
    size_t running = 0;
    const std::function<void()>* body = nullptr;
    std::exception_ptr error;
    std::vector<double> exchange;  // what the lanes of a warp hand each other in a warp-wide operation
};

thread_local Block* current_block = nullptr;
thread_local Schedule current_schedule = Schedule::forward;
thread_local Faults current_faults;

long long linear_block() { return blockIdx.x + 1LL * gridDim.x * (blockIdx.y + 1LL * gridDim.y * blockIdx.z); }

void fiber_main() {
    Block& block = *current_block;
    try {
        (*block.body)();
    } catch (...) {
        if (!block.error) block.error = std::current_exception();
    }
    block.fibers[block.running].state = FiberState::finished;
    // returning resumes uc_link, the scheduler
}

std::string block_name(const dim3& b) {
    return "(" + std::to_string(b.x) + ", " + std::to_string(b.y) + ", " + std::to_string(b.z) + ")";
}

// Releases the fibers waiting at a barrier that all of its participants have reached: the block's
// __syncthreads (every fiber of the block), a warp's __syncwarp (every fiber of the warp). A fiber
// that has returned never arrives: a barrier it skipped deadlocks, which run_block reports.
void release_barriers(Block& block) {
    const size_t n = block.fibers.size();
    bool all_at_block = true;
    for (const Fiber& f : block.fibers) all_at_block = all_at_block && f.state == FiberState::at_block_barrier;
    if (all_at_block)
        for (Fiber& f : block.fibers) f.state = FiberState::runnable;
    for (size_t warp = 0; warp < n; warp += kWarpSize) {
        const size_t end = warp + kWarpSize < n ? warp + kWarpSize : n;
        bool all_at_warp = true;
        for (size_t i = warp; i < end; ++i) all_at_warp = all_at_warp && block.fibers[i].state == FiberState::at_warp_barrier;
        if (all_at_warp)
            for (size_t i = warp; i < end; ++i) block.fibers[i].state = FiberState::runnable;
    }
}

void run_block(Block& block) {
    const size_t n = block.fibers.size();
    for (size_t i = 0; i < n; ++i) {
        Fiber& f = block.fibers[i];
        f.state = FiberState::runnable;
        f.barriers = 0;
        if (getcontext(&f.context) != 0) throw std::runtime_error("simt: getcontext failed");
        f.context.uc_stack.ss_sp = block.stacks.get() + i * kFiberStackBytes;
        f.context.uc_stack.ss_size = kFiberStackBytes;
        f.context.uc_link = &block.scheduler;
        makecontext(&f.context, fiber_main, 0);
    }
    for (;;) {
        for (size_t step = 0; step < n; ++step) {
            const size_t i = current_schedule == Schedule::forward ? step : n - 1 - step;
            Fiber& f = block.fibers[i];
            if (f.state != FiberState::runnable) continue;
            block.running = i;
            threadIdx = f.index;
            swapcontext(&block.scheduler, &f.context);
            if (block.error) std::rethrow_exception(block.error);
        }
        size_t finished = 0;
        for (const Fiber& f : block.fibers) finished += f.state == FiberState::finished;
        if (finished == n) return;
        release_barriers(block);
        bool runnable = false;
        for (const Fiber& f : block.fibers) runnable = runnable || f.state == FiberState::runnable;
        if (!runnable)
            throw std::logic_error("simt: a barrier (__syncthreads or a warp-wide operation) was reached by only "
                                   "some threads of block " + block_name(blockIdx) + " (undefined behaviour on a GPU)");
    }
}

void wait_at(FiberState barrier) {
    Block* block = current_block;
    if (block == nullptr) throw std::logic_error("simt: a barrier was called outside a kernel");
    Fiber& f = block->fibers[block->running];
    f.state = barrier;
    swapcontext(&f.context, &block->scheduler);
}

}  // namespace

void set_schedule(Schedule schedule) { current_schedule = schedule; }
void set_faults(const Faults& faults) { current_faults = faults; }

// __syncthreads(), unless the injected faults drop this one.
void sync_block() {
    Block* block = current_block;
    if (block != nullptr && linear_block() == current_faults.barrier_block &&
        block->fibers[block->running].barriers++ == current_faults.dropped_barrier)
        return;
    wait_at(FiberState::at_block_barrier);
}
Schedule schedule() { return current_schedule; }

void run_grid(dim3 grid, dim3 block_dim, const std::function<void()>& thread_body) {
    const unsigned long long threads = 1ULL * block_dim.x * block_dim.y * block_dim.z;
    if (threads == 0 || threads > kMaxThreadsPerBlock)
        throw std::invalid_argument("simt: a block must have 1 to 1024 threads");
    if (current_block != nullptr) throw std::logic_error("simt: a kernel cannot launch another kernel");
    Block block;
    block.body = &thread_body;
    block.fibers.resize(threads);
    block.stacks.reset(new char[threads * kFiberStackBytes]);
    size_t i = 0;
    for (unsigned z = 0; z < block_dim.z; ++z)
        for (unsigned y = 0; y < block_dim.y; ++y)
            for (unsigned x = 0; x < block_dim.x; ++x) block.fibers[i++].index = dim3(x, y, z);

    gridDim = grid;
    blockDim = block_dim;
    current_block = &block;
    try {
        for (unsigned z = 0; z < grid.z; ++z)
            for (unsigned y = 0; y < grid.y; ++y)
                for (unsigned x = 0; x < grid.x; ++x) {
                    blockIdx = dim3(x, y, z);
                    if (linear_block() == current_faults.skipped_block) continue;
                    run_block(block);
                }
    } catch (...) {
        current_block = nullptr;
        throw;
    }
    current_block = nullptr;
}

}  // namespace simt

void __syncthreads() { simt::sync_block(); }
void __syncwarp() { simt::wait_at(simt::FiberState::at_warp_barrier); }

namespace simt {

unsigned linear_thread() { return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z); }

namespace {

// Hands this lane's values to its warp: returns the warp's exchange, lane l's values at
// [l·count, (l + 1)·count), once every lane has deposited (a warp-wide barrier). The caller reads
// it, then calls __syncwarp() so that no lane overwrites its slot before every lane has read.
const double* share_with_warp(const std::vector<double>& values) {
    Block* block = current_block;
    if (block == nullptr) throw std::logic_error("simt: mma called outside a kernel");
    if (block->fibers.size() % kWarpSize != 0)
        throw std::logic_error("simt: mma needs whole warps (the block has " + std::to_string(block->fibers.size()) +
                               " threads)");
    const size_t count = values.size();
    if (block->exchange.size() < block->fibers.size() * count) block->exchange.resize(block->fibers.size() * count);
    const unsigned linear = linear_thread(), lane = linear % kWarpSize;
    std::copy(values.begin(), values.end(), block->exchange.begin() + static_cast<std::ptrdiff_t>(linear * count));
    __syncwarp();
    return block->exchange.data() + (linear - lane) * count;
}

// D += A·B over `depth` for every pair of tiles of an m16n8 mma, from the warp's shared fragments
// (a_at(tile, r, k), b_at(tile, k, c)): exact products (of TF32 or 16-bit values) summed onto this
// lane's c0..c3 = D[g][2t], D[g][2t + 1], D[g + 8][2t], D[g + 8][2t + 1] in k order, in float32.
template <class AAt, class BAt>
void add_m16n8_products(float* accumulators, int a_tiles, int b_tiles, unsigned depth, const AAt& a_at,
                        const BAt& b_at) {
    const unsigned lane = linear_thread() % kWarpSize, group = lane / 4, member = lane % 4;
    for (int i = 0; i < a_tiles; ++i)
        for (int j = 0; j < b_tiles; ++j)
            for (unsigned h = 0; h < 4; ++h) {
                const unsigned row = group + 8 * (h / 2), col = 2 * member + h % 2;
                float& d = accumulators[(i * b_tiles + j) * 4 + h];
                for (unsigned k = 0; k < depth; ++k) d += a_at(i, row, k) * b_at(j, k, col);
            }
    __syncwarp();
}

}  // namespace

void warp_mma_m8n8k4_f64(double* accumulators, const double* a, int a_tiles, const double* b, int b_tiles) {
    std::vector<double> fragments(a, a + a_tiles);
    fragments.insert(fragments.end(), b, b + b_tiles);
    const size_t stride = fragments.size();
    const double* lanes = share_with_warp(fragments);
    // PTX ISA, "Matrix Fragments for mma.m8n8k4 with .f64": A[row][k] is a0 of lane 4·row + k;
    // B[k][col] is b0 of lane 4·col + k; this lane's c0, c1 are D[lane / 4][2·(lane % 4) + {0, 1}].
    const unsigned lane = linear_thread() % kWarpSize, row = lane / 4;
    for (int i = 0; i < a_tiles; ++i)
        for (int j = 0; j < b_tiles; ++j)
            for (unsigned c = 0; c < 2; ++c) {
                const unsigned col = 2 * (lane % 4) + c;
                double& d = accumulators[(i * b_tiles + j) * 2 + c];
                for (unsigned k = 0; k < 4; ++k)
                    d = std::fma(lanes[(4 * row + k) * stride + i], lanes[(4 * col + k) * stride + a_tiles + j], d);
            }
    __syncwarp();
}

void warp_mma_m16n8k8_tf32(float* accumulators, const float* a, int a_tiles, const float* b, int b_tiles) {
    // Floats widen to doubles exactly and back.
    std::vector<double> fragments(a, a + 4 * a_tiles);
    fragments.insert(fragments.end(), b, b + 2 * b_tiles);
    const size_t stride = fragments.size();
    const double* lanes = share_with_warp(fragments);
    // PTX ISA, "Matrix Fragments for mma.m16n8k8" (.tf32): A[r][k] is element (r ≥ 8) + 2·(k ≥ 4) of
    // the lane of group r % 8 and member k % 4; B[k][c] is element (k ≥ 4) of the lane of group c and
    // member k % 4; this lane's c0..c3 are D[g][2t], D[g][2t + 1], D[g + 8][2t], D[g + 8][2t + 1].
    const auto a_at = [&](int tile, unsigned r, unsigned k) {
        return static_cast<float>(lanes[(4 * (r % 8) + k % 4) * stride + 4 * tile + (r >= 8) + 2 * (k >= 4)]);
    };
    const auto b_at = [&](int tile, unsigned k, unsigned c) {
        return static_cast<float>(lanes[(4 * c + k % 4) * stride + 4 * a_tiles + 2 * tile + (k >= 4)]);
    };
    add_m16n8_products(accumulators, a_tiles, b_tiles, 8, a_at, b_at);
}

void warp_mma_m16n8k16(float* accumulators, const uint32_t* a, int a_tiles, const uint32_t* b, int b_tiles,
                       bool bfloat16) {
    std::vector<double> fragments(a, a + 4 * a_tiles);  // 32-bit registers widen to doubles exactly
    fragments.insert(fragments.end(), b, b + 2 * b_tiles);
    const size_t stride = fragments.size();
    const double* lanes = share_with_warp(fragments);
    const auto value = [&](size_t lane, size_t slot, unsigned half) {
        const auto bits = static_cast<uint16_t>(static_cast<uint32_t>(lanes[lane * stride + slot]) >> (16 * half));
        return bfloat16 ? fastfid::bfloat16_to_float(bits) : fastfid::half_to_float(bits);
    };
    // PTX ISA, "Matrix Fragments for mma.m16n8k16" (.f16/.bf16): A[r][k] is half k % 2 of register
    // (r ≥ 8) + 2·(k ≥ 8) of the lane of group r % 8 and member (k % 8) / 2; B[k][c] is half k % 2 of
    // register (k ≥ 8) of the lane of group c and member (k % 8) / 2; D as for mma.m16n8k8.
    const auto a_at = [&](int tile, unsigned r, unsigned k) {
        return value(4 * (r % 8) + (k % 8) / 2, 4 * tile + (r >= 8) + 2 * (k >= 8), k % 2);
    };
    const auto b_at = [&](int tile, unsigned k, unsigned c) {
        return value(4 * c + (k % 8) / 2, 4 * a_tiles + 2 * tile + (k >= 8), k % 2);
    };
    add_m16n8_products(accumulators, a_tiles, b_tiles, 16, a_at, b_at);
}

}  // namespace simt

// The fibers of a block share one OS thread and switch only at barriers: a plain update is atomic.
double atomicAdd(double* address, double value) {
    const double old = *address;
    *address = old + value;
    return old;
}

unsigned long long atomicAdd(unsigned long long* address, unsigned long long value) {
    const unsigned long long old = *address;
    *address = old + value;
    return old;
}
