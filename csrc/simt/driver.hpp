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

// Back to `devices` emulated GPUs of compute capability `capability` (major·10 + minor, e.g. 89),
// no injected errors, zero counts, an empty log; each thread's current device is 0.
void reset(int devices, int capability);
// The (skip + 1)-th call from now of driver function `call` (e.g. "cuModuleLoadData") returns `code`.
void inject(const std::string& call, int code, int skip);
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
