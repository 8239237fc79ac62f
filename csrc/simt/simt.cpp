#include "simt/simt.hpp"

#include <ucontext.h>

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

enum class FiberState { runnable, at_barrier, finished };

struct Fiber {
    ucontext_t context;
    dim3 index;
    FiberState state = FiberState::runnable;
};

struct Block {
    std::vector<Fiber> fibers;
    std::unique_ptr<char[]> stacks;
    ucontext_t scheduler;
    size_t running = 0;
    const std::function<void()>* body = nullptr;
    std::exception_ptr error;
};

thread_local Block* current_block = nullptr;
thread_local Schedule current_schedule = Schedule::forward;

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

void run_block(Block& block) {
    const size_t n = block.fibers.size();
    for (size_t i = 0; i < n; ++i) {
        Fiber& f = block.fibers[i];
        f.state = FiberState::runnable;
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
            if (f.state == FiberState::finished) continue;
            f.state = FiberState::runnable;
            block.running = i;
            threadIdx = f.index;
            swapcontext(&block.scheduler, &f.context);
            if (block.error) std::rethrow_exception(block.error);
        }
        size_t finished = 0;
        for (const Fiber& f : block.fibers) finished += f.state == FiberState::finished;
        if (finished == n) return;
        if (finished != 0)
            throw std::logic_error("simt: __syncthreads() was reached by only some threads of block " +
                                   block_name(blockIdx) + " (undefined behaviour on a GPU)");
    }
}

}  // namespace

void set_schedule(Schedule schedule) { current_schedule = schedule; }
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
                    run_block(block);
                }
    } catch (...) {
        current_block = nullptr;
        throw;
    }
    current_block = nullptr;
}

}  // namespace simt

void __syncthreads() {
    simt::Block* block = simt::current_block;
    if (block == nullptr) throw std::logic_error("simt: __syncthreads() called outside a kernel");
    simt::Fiber& f = block->fibers[block->running];
    f.state = simt::FiberState::at_barrier;
    swapcontext(&f.context, &block->scheduler);
}

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
