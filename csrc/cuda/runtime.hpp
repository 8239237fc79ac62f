// The host side of the device path: a CUDA driver (the system's libcuda.so.1, or the CPU emulation
// of the driver in csrc/simt) reached only through a DriverTable, the kernel image, and what each
// device has loaded. The host drivers (stats_driver.hpp, frechet_driver.hpp) run on it unchanged in
// both cases, so every line of them, launches and copies included, runs in the CPU test suite.
//
// Each call enters the device by pushing its primary context (the one torch's runtime uses) and
// pops it on the way out, so the caller's current device is what it was. Work goes on the caller's
// stream; the only waits are the copies to the host that return results.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>

#include "cuda/driver_api.hpp"
#include "cuda/kernels.hpp"

namespace fastfid::device {

class Runtime {
public:
    // `table` null: the driver could not be loaded, and `load_error` says why (raised at first use).
    // `image`: the fatbin, or null when this build has none.
    Runtime(std::string name, const DriverTable* table, std::string load_error, const void* image);
    Runtime(const Runtime&) = delete;
    Runtime& operator=(const Runtime&) = delete;

    const std::string& name() const { return name_; }

    // Loads the kernels on `device` and runs a probe kernel there, waiting for it; throws CudaError
    // naming the cause (no driver, no kernel image for this GPU, a PTX the driver cannot compile, ...).
    void probe(int device);
    // "sm_XY" of a device, "" if it cannot be asked.
    std::string architecture(int device);
    // The GPU's name ("" if it cannot be asked) and the driver's CUDA version (e.g. 12080; 0 if unknown).
    struct Description {
        std::string name;
        int driver_version = 0;
    };
    Description describe(int device);

    void enter(int device, const char* operation);
    void leave();
    void launch(int device, const char* kernel, dim3 grid, dim3 block, void** parameters, std::uintptr_t stream,
                const char* operation);
    // Copies to the host and waits for the stream: where an earlier kernel's asynchronous error surfaces.
    void copy_to_host(int device, void* destination, const void* source, size_t bytes, std::uintptr_t stream,
                      const char* operation);
    // `waiting` waits (on the device) for the work enqueued so far on `signalling`.
    void stream_wait(int device, std::uintptr_t waiting, std::uintptr_t signalling);

private:
    struct Loaded {
        CUcontext context = nullptr;
        CUmodule module = nullptr;
        std::unordered_map<std::string, CUfunction> functions;
    };

    const DriverTable& driver(const char* operation, int device);
    Loaded& loaded(int device, const char* operation);  // initialises the driver and loads the module
    [[noreturn]] void fail(CUresult code, const char* call, const char* operation, int device,
                           const std::string& hint = "", bool asynchronous = false);
    void check(CUresult code, const char* call, const char* operation, int device) {
        if (code != kSuccess) fail(code, call, operation, device);
    }

    std::string name_;
    DriverTable table_{};
    bool has_table_;
    std::string load_error_;
    const void* image_;
    std::mutex mutex_;
    bool initialised_ = false;
    std::map<int, Loaded> devices_;
};

// One operation on one device and stream: the device is entered for the object's lifetime.
class Device {
public:
    Device(Runtime& runtime, int device, std::uintptr_t stream, const char* operation)
        : runtime_(runtime), device_(device), stream_(stream), operation_(operation) {
        runtime_.enter(device_, operation_);
    }
    ~Device() { runtime_.leave(); }
    Device(const Device&) = delete;
    Device& operator=(const Device&) = delete;

    template <class... Params, class... Args>
    void launch(KernelRef<void(Params...)> kernel, dim3 grid, dim3 block, Args... args) {
        static_assert(sizeof...(Params) == sizeof...(Args), "wrong number of kernel arguments");
        std::tuple<Params...> values(static_cast<Params>(args)...);
        std::array<void*, sizeof...(Params) + 1> pointers{};
        std::apply([&pointers](auto&... value) {
            size_t i = 0;
            ((pointers[i++] = static_cast<void*>(&value)), ...);
        }, values);
        runtime_.launch(device_, kernel.name, grid, block, pointers.data(), stream_, operation_);
    }
    void copy_to_host(void* destination, const void* source, size_t bytes) {
        runtime_.copy_to_host(device_, destination, source, bytes, stream_, operation_);
    }

private:
    Runtime& runtime_;
    int device_;
    std::uintptr_t stream_;
    const char* operation_;
};

// The system's driver, loaded from `library` (a Runtime that raises at first use if it cannot be).
Runtime& system_runtime(const std::string& library);

}  // namespace fastfid::device
