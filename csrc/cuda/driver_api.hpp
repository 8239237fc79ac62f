// The few CUDA driver API entry points fastfid's device path calls, as a table of function
// pointers: filled from the system's libcuda.so.1 (runtime.cpp) or from the CPU emulation of the
// driver (simt/driver.cpp). The types and codes are the driver API's own (cuda.h), restated here so
// that this code builds without the CUDA toolkit and links no CUDA runtime: fastfid's kernels then
// need only an NVIDIA driver, whatever CUDA build torch carries.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace fastfid::device {

using CUresult = int;
using CUdevice = int;
using CUdeviceptr = unsigned long long;
using CUcontext = struct CUctx_st*;
using CUmodule = struct CUmod_st*;
using CUfunction = struct CUfunc_st*;
using CUstream = struct CUstream_st*;
using CUevent = struct CUevent_st*;

// cuda.h's values for the codes fastfid names or the emulation injects.
enum DriverCode : CUresult {
    kSuccess = 0,
    kInvalidValue = 1,
    kOutOfMemory = 2,
    kNotInitialized = 3,
    kStubLibrary = 34,
    kCallRequiresNewerDriver = 36,
    kNoDevice = 100,
    kInvalidDevice = 101,
    kInvalidImage = 200,
    kInvalidContext = 201,
    kNoBinaryForGpu = 209,
    kInvalidPtx = 218,
    kJitCompilerNotFound = 221,
    kUnsupportedPtxVersion = 222,
    kInvalidHandle = 400,
    kNotFound = 500,
    kIllegalAddress = 700,
    kLaunchOutOfResources = 701,
    kLaunchFailed = 719,
    kSystemDriverMismatch = 803,
    kCompatNotSupportedOnDevice = 804,
    kUnknown = 999,
};

constexpr int kAttributeComputeCapabilityMajor = 75;
constexpr int kAttributeComputeCapabilityMinor = 76;
constexpr unsigned kEventDisableTiming = 0x2;

// Error names of the codes above (what cuGetErrorName gives), for the emulation and for messages
// when the driver itself cannot be asked.
const char* driver_code_name(CUresult code);

struct DriverTable {
    CUresult (*init)(unsigned flags);
    CUresult (*device_get)(CUdevice* device, int ordinal);
    CUresult (*device_get_attribute)(int* value, int attribute, CUdevice device);
    CUresult (*primary_context_retain)(CUcontext* context, CUdevice device);
    CUresult (*context_push)(CUcontext context);
    CUresult (*context_pop)(CUcontext* context);
    CUresult (*module_load_data)(CUmodule* module, const void* image);
    CUresult (*module_get_function)(CUfunction* function, CUmodule module, const char* name);
    CUresult (*launch_kernel)(CUfunction function, unsigned grid_x, unsigned grid_y, unsigned grid_z,
                              unsigned block_x, unsigned block_y, unsigned block_z, unsigned shared_bytes,
                              CUstream stream, void** parameters, void** extra);
    CUresult (*memory_allocate)(CUdeviceptr* pointer, size_t bytes);
    CUresult (*memory_free)(CUdeviceptr pointer);
    CUresult (*copy_device_to_host)(void* destination, CUdeviceptr source, size_t bytes, CUstream stream);
    CUresult (*stream_synchronize)(CUstream stream);
    CUresult (*event_create)(CUevent* event, unsigned flags);
    CUresult (*event_record)(CUevent event, CUstream stream);
    CUresult (*stream_wait_event)(CUstream stream, CUevent event, unsigned flags);
    CUresult (*event_destroy)(CUevent event);
    CUresult (*get_error_name)(CUresult code, const char** name);
    // What a report names (fastfid selftest, the validation's cache key): never needed to compute.
    CUresult (*driver_get_version)(int* version);
    CUresult (*device_get_name)(char* name, int length, CUdevice device);
};

// A failed driver call, raised to Python as fastfid's CudaError (a RuntimeError) with the code.
// `asynchronous`: reported at a synchronisation, so caused by a kernel enqueued earlier; the
// context may be lost, and no other route on that device can be trusted to run.
class CudaError : public std::runtime_error {
public:
    CudaError(CUresult code, std::string name, const std::string& message, bool asynchronous = false)
        : std::runtime_error(message), code_(code), name_(std::move(name)), asynchronous_(asynchronous) {}
    CUresult code() const { return code_; }
    const std::string& name() const { return name_; }
    bool asynchronous() const { return asynchronous_; }

private:
    CUresult code_;
    std::string name_;
    bool asynchronous_;
};

}  // namespace fastfid::device
