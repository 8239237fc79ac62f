// The CUDA driver, emulated on the CPU: the DriverTable of cuda/driver_api.hpp served by host code,
// with the kernels (compiled for the host) run by the SIMT emulation. fastfid's host code runs on
// it exactly as on libcuda.so.1, and the tests steer it: several devices, each thread's current
// context, errors injected into any call or surfacing at the next synchronisation, and counts of
// what crossed to the host.
#pragma once

#include <string>
#include <vector>

#include "cuda/runtime.hpp"

namespace fastfid::simt_driver {

const device::DriverTable& table();
// What the emulated driver reports as its CUDA version (cuDriverGetVersion): 12.8.
constexpr int kEmulatedDriverVersion = 12080;

// Back to `devices` emulated GPUs of compute capability `capability` (major·10 + minor, e.g. 89),
// no injected errors, zero counts, an empty log; each thread's current device is 0.
void reset(int devices, int capability);
// The (skip + 1)-th call from now of driver function `call` (e.g. "cuModuleLoadData") returns `code`.
void inject(const std::string& call, int code, int skip);
// Wrong values, not error codes: the (skip + 1)-th launch from now of kernel `kernel` (e.g.
// "fastfid_batch_syrk_tensor_float32") runs with a fault and reports success:
//   flip_bit      after it ran, bit 52 of element `where` of its first double* argument flips;
//   skip_block    block `where` (linear index) does not run: a tile left unwritten;
//   drop_barrier  in block `where`, every thread's `barrier`-th __syncthreads() returns at once,
//                 so shared memory is read before it is written (a stale read).
enum class FaultKind { flip_bit, skip_block, drop_barrier };
void inject_fault(const std::string& kernel, FaultKind kind, int skip, long long where, long long barrier);
// The next synchronisation (cuStreamSynchronize) returns `code`, as a kernel's asynchronous fault would.
void inject_asynchronous(int code);

struct Counters {
    long long launches = 0;
    long long device_to_host_copies = 0;
    long long device_to_host_bytes = 0;
    long long synchronisations = 0;
    long long live_allocations = 0;
    long long events_recorded = 0;
    long long stream_waits = 0;
};
Counters counters();
// One line per launch, copy, event and wait: "cuLaunchKernel fastfid_gemm device=0 stream=0x7".
std::vector<std::string> log();

// What torch.cuda.set_device does to this thread: the context current when fastfid is called.
void set_current_device(int device);
int current_device();

}  // namespace fastfid::simt_driver
