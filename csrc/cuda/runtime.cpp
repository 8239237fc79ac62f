#include "cuda/runtime.hpp"

#include <dlfcn.h>

#include <memory>
#include <vector>

// The fatbin (kernel_image.cpp, generated) or nothing (no_kernel_image.cpp).
extern "C" const unsigned char fastfid_kernel_image[];
extern "C" const unsigned long long fastfid_kernel_image_size;

namespace fastfid::device {

const char* driver_code_name(CUresult code) {
    switch (code) {
        case kSuccess: return "CUDA_SUCCESS";
        case kInvalidValue: return "CUDA_ERROR_INVALID_VALUE";
        case kOutOfMemory: return "CUDA_ERROR_OUT_OF_MEMORY";
        case kNotInitialized: return "CUDA_ERROR_NOT_INITIALIZED";
        case kStubLibrary: return "CUDA_ERROR_STUB_LIBRARY";
        case kCallRequiresNewerDriver: return "CUDA_ERROR_CALL_REQUIRES_NEWER_DRIVER";
        case kNoDevice: return "CUDA_ERROR_NO_DEVICE";
        case kInvalidDevice: return "CUDA_ERROR_INVALID_DEVICE";
        case kInvalidImage: return "CUDA_ERROR_INVALID_IMAGE";
        case kInvalidContext: return "CUDA_ERROR_INVALID_CONTEXT";
        case kNoBinaryForGpu: return "CUDA_ERROR_NO_BINARY_FOR_GPU";
        case kInvalidPtx: return "CUDA_ERROR_INVALID_PTX";
        case kJitCompilerNotFound: return "CUDA_ERROR_JIT_COMPILER_NOT_FOUND";
        case kUnsupportedPtxVersion: return "CUDA_ERROR_UNSUPPORTED_PTX_VERSION";
        case kInvalidHandle: return "CUDA_ERROR_INVALID_HANDLE";
        case kNotFound: return "CUDA_ERROR_NOT_FOUND";
        case kIllegalAddress: return "CUDA_ERROR_ILLEGAL_ADDRESS";
        case kLaunchOutOfResources: return "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES";
        case kLaunchFailed: return "CUDA_ERROR_LAUNCH_FAILED";
        case kSystemDriverMismatch: return "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH";
        case kCompatNotSupportedOnDevice: return "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE";
        case kUnknown: return "CUDA_ERROR_UNKNOWN";
        default: return nullptr;
    }
}

namespace {

// What a user can do about the failures that depend on the machine rather than on fastfid.
std::string hint_for(CUresult code) {
    switch (code) {
        case kNoBinaryForGpu:
            return "this build has no kernel image for this GPU's architecture; rebuild fastfid with "
                   "-Ccmake.define.CMAKE_CUDA_ARCHITECTURES=native";
        case kUnsupportedPtxVersion:
        case kInvalidPtx:
        case kJitCompilerNotFound:
        case kCallRequiresNewerDriver:
        case kSystemDriverMismatch:
        case kCompatNotSupportedOnDevice:
            return "the NVIDIA driver is older than the CUDA toolkit fastfid was built with; update the driver or "
                   "rebuild fastfid with the local toolkit";
        case kStubLibrary:
            return "the libcuda.so.1 found is the toolkit's stub, not an NVIDIA driver";
        case kNoDevice:
            return "no CUDA GPU is visible to this process";
        case kOutOfMemory:
            return "the GPU is out of memory";
        default:
            return "";
    }
}

}  // namespace

Runtime::Runtime(std::string name, const DriverTable* table, std::string load_error, const void* image)
    : name_(std::move(name)), has_table_(table != nullptr), load_error_(std::move(load_error)), image_(image) {
    if (table) table_ = *table;
}

void Runtime::fail(CUresult code, const char* call, const char* operation, int device, const std::string& hint,
                   bool asynchronous) {
    const char* name = nullptr;
    if (has_table_ && table_.get_error_name && table_.get_error_name(code, &name) != kSuccess) name = nullptr;
    if (name == nullptr) name = driver_code_name(code);
    const std::string code_name = name ? name : "CUDA error " + std::to_string(code);
    std::string message = "fastfid: " + std::string(call) + " failed during " + operation + " on cuda:" +
                          std::to_string(device) + ": " + code_name;
    const std::string advice = hint.empty() ? hint_for(code) : hint;
    if (!advice.empty()) message += " (" + advice + ")";
    throw CudaError(code, code_name, message, asynchronous);
}

const DriverTable& Runtime::driver(const char* operation, int device) {
    if (!has_table_)
        throw CudaError(kNotInitialized, "DRIVER_NOT_LOADED",
                        "fastfid: the NVIDIA driver could not be loaded for " + std::string(operation) + " on cuda:" +
                            std::to_string(device) + ": " + load_error_);
    return table_;
}

Runtime::Loaded& Runtime::loaded(int device, const char* operation) {
    std::lock_guard<std::mutex> lock(mutex_);
    const DriverTable& d = driver(operation, device);
    if (!initialised_) {
        check(d.init(0), "cuInit", operation, device);
        initialised_ = true;
    }
    auto found = devices_.find(device);
    if (found != devices_.end() && found->second.module != nullptr) return found->second;
    if (image_ == nullptr)
        throw CudaError(kNoBinaryForGpu, "NO_KERNEL_IMAGE",
                        "fastfid: this build has no CUDA kernel image (it was built without nvcc)");
    Loaded& entry = devices_[device];
    if (entry.context == nullptr) {
        CUdevice handle = 0;
        check(d.device_get(&handle, device), "cuDeviceGet", operation, device);
        check(d.primary_context_retain(&entry.context, handle), "cuDevicePrimaryCtxRetain", operation, device);
    }
    check(d.context_push(entry.context), "cuCtxPushCurrent", operation, device);
    CUmodule module = nullptr;
    const CUresult status = d.module_load_data(&module, image_);
    std::vector<std::pair<std::string, CUfunction>> functions;
    CUresult lookup = kSuccess;
    const char* missing = nullptr;
    if (status == kSuccess) {
#define FASTFID_RESOLVE(kernel_name)                                                             \
    if (lookup == kSuccess) {                                                                    \
        CUfunction function = nullptr;                                                           \
        lookup = d.module_get_function(&function, module, #kernel_name);                         \
        if (lookup == kSuccess) functions.emplace_back(#kernel_name, function);                  \
        else missing = #kernel_name;                                                             \
    }
        FASTFID_KERNEL_LIST(FASTFID_RESOLVE)
#undef FASTFID_RESOLVE
    }
    CUcontext popped = nullptr;
    d.context_pop(&popped);
    check(status, "cuModuleLoadData", operation, device);
    if (lookup != kSuccess) fail(lookup, (std::string("cuModuleGetFunction(") + missing + ")").c_str(), operation, device);
    entry.module = module;
    entry.functions.insert(functions.begin(), functions.end());
    return entry;
}

std::string Runtime::architecture(int device) {
    if (!has_table_) return "";
    std::lock_guard<std::mutex> lock(mutex_);
    if (!initialised_ && table_.init(0) != kSuccess) return "";
    initialised_ = true;
    CUdevice handle = 0;
    int major = 0, minor = 0;
    if (table_.device_get(&handle, device) != kSuccess ||
        table_.device_get_attribute(&major, kAttributeComputeCapabilityMajor, handle) != kSuccess ||
        table_.device_get_attribute(&minor, kAttributeComputeCapabilityMinor, handle) != kSuccess)
        return "";
    return "sm_" + std::to_string(major) + std::to_string(minor);
}

Runtime::Description Runtime::describe(int device) {
    Description out;
    if (!has_table_) return out;
    std::lock_guard<std::mutex> lock(mutex_);
    if (!initialised_ && table_.init(0) != kSuccess) return out;
    initialised_ = true;
    if (table_.driver_get_version == nullptr || table_.driver_get_version(&out.driver_version) != kSuccess)
        out.driver_version = 0;
    CUdevice handle = 0;
    std::array<char, 256> name{};
    if (table_.device_get_name != nullptr && table_.device_get(&handle, device) == kSuccess &&
        table_.device_get_name(name.data(), static_cast<int>(name.size() - 1), handle) == kSuccess)
        out.name = name.data();
    return out;
}

void Runtime::enter(int device, const char* operation) {
    const Loaded& entry = loaded(device, operation);
    check(table_.context_push(entry.context), "cuCtxPushCurrent", operation, device);
}

void Runtime::leave() {
    CUcontext popped = nullptr;
    table_.context_pop(&popped);  // cannot fail for a context this thread pushed
}

void Runtime::launch(int device, const char* kernel, dim3 grid, dim3 block, void** parameters, std::uintptr_t stream,
                     const char* operation) {
    CUfunction function;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        function = devices_.at(device).functions.at(kernel);
    }
    check(table_.launch_kernel(function, grid.x, grid.y, grid.z, block.x, block.y, block.z, 0,
                               reinterpret_cast<CUstream>(stream), parameters, nullptr),
          (std::string("cuLaunchKernel(") + kernel + ")").c_str(), operation, device);
}

void Runtime::copy_to_host(int device, void* destination, const void* source, size_t bytes, std::uintptr_t stream,
                           const char* operation) {
    const auto handle = reinterpret_cast<CUstream>(stream);
    CUresult status = table_.copy_device_to_host(destination, reinterpret_cast<CUdeviceptr>(source), bytes, handle);
    if (status == kSuccess) status = table_.stream_synchronize(handle);
    if (status != kSuccess)
        fail(status, "the synchronisation that reads the result", operation, device,
             "an error of a kernel enqueued earlier on this stream, fastfid's or another library's, surfaced here",
             true);
}

void Runtime::stream_wait(int device, std::uintptr_t waiting, std::uintptr_t signalling) {
    const char* operation = "ordering two streams";
    Device scope(*this, device, waiting, operation);
    CUevent event = nullptr;
    check(table_.event_create(&event, kEventDisableTiming), "cuEventCreate", operation, device);
    CUresult status = table_.event_record(event, reinterpret_cast<CUstream>(signalling));
    if (status == kSuccess) status = table_.stream_wait_event(reinterpret_cast<CUstream>(waiting), event, 0);
    table_.event_destroy(event);  // released once the wait is satisfied
    check(status, "cuEventRecord / cuStreamWaitEvent", operation, device);
}

void Runtime::probe(int device) {
    const char* operation = "the probe of fastfid's kernels";
    Device scope(*this, device, 0, operation);
    constexpr int kValues = 32;
    CUdeviceptr buffer = 0;
    check(table_.memory_allocate(&buffer, kValues * sizeof(double)), "cuMemAlloc", operation, device);
    std::array<double, kValues> values{};
    try {
        void* out = reinterpret_cast<void*>(buffer);
        scope.launch(kernel::fastfid_probe, dim3(1), dim3(kValues), static_cast<double*>(out), kValues);
        scope.copy_to_host(values.data(), out, sizeof values);
    } catch (...) {
        table_.memory_free(buffer);
        throw;
    }
    table_.memory_free(buffer);
    for (int i = 0; i < kValues; ++i)
        if (values[i] != i + 0.5)
            throw CudaError(kUnknown, "PROBE_MISMATCH",
                            "fastfid: the probe kernel ran on cuda:" + std::to_string(device) +
                                " but wrote wrong values; its kernels are not used there");
}

// --- the system's driver ---------------------------------------------------------------------------
namespace {

template <class Function>
bool resolve(void* library, const char* symbol, Function& slot, std::string& missing) {
    slot = reinterpret_cast<Function>(dlsym(library, symbol));
    if (slot == nullptr && missing.empty()) missing = symbol;
    return slot != nullptr;
}

std::unique_ptr<Runtime> load_system_runtime(const std::string& library) {
    const void* image = fastfid_kernel_image_size > 0 ? fastfid_kernel_image : nullptr;
    void* handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
        const char* reason = dlerror();
        return std::make_unique<Runtime>("cuda", nullptr,
                                         library + " could not be loaded (" + (reason ? reason : "no reason given") +
                                             "): no NVIDIA driver is installed for this process",
                                         image);
    }
    DriverTable t{};
    std::string missing;
    resolve(handle, "cuInit", t.init, missing);
    resolve(handle, "cuDeviceGet", t.device_get, missing);
    resolve(handle, "cuDeviceGetAttribute", t.device_get_attribute, missing);
    resolve(handle, "cuDevicePrimaryCtxRetain", t.primary_context_retain, missing);
    resolve(handle, "cuCtxPushCurrent_v2", t.context_push, missing);
    resolve(handle, "cuCtxPopCurrent_v2", t.context_pop, missing);
    resolve(handle, "cuModuleLoadData", t.module_load_data, missing);
    resolve(handle, "cuModuleGetFunction", t.module_get_function, missing);
    resolve(handle, "cuLaunchKernel", t.launch_kernel, missing);
    resolve(handle, "cuMemAlloc_v2", t.memory_allocate, missing);
    resolve(handle, "cuMemFree_v2", t.memory_free, missing);
    resolve(handle, "cuMemcpyDtoHAsync_v2", t.copy_device_to_host, missing);
    resolve(handle, "cuStreamSynchronize", t.stream_synchronize, missing);
    resolve(handle, "cuEventCreate", t.event_create, missing);
    resolve(handle, "cuEventRecord", t.event_record, missing);
    resolve(handle, "cuStreamWaitEvent", t.stream_wait_event, missing);
    resolve(handle, "cuEventDestroy_v2", t.event_destroy, missing);
    resolve(handle, "cuGetErrorName", t.get_error_name, missing);
    // Optional: a report can do without them, a computation never needs them.
    std::string optional;
    resolve(handle, "cuDriverGetVersion", t.driver_get_version, optional);
    resolve(handle, "cuDeviceGetName", t.device_get_name, optional);
    if (!missing.empty())  // the handle stays open: another part of the process may use the driver
        return std::make_unique<Runtime>("cuda", nullptr,
                                         library + " lacks " + missing + ": the NVIDIA driver is too old", image);
    return std::make_unique<Runtime>("cuda", &t, "", image);
}

}  // namespace

Runtime& system_runtime(const std::string& library) {
    static std::mutex mutex;
    static std::map<std::string, std::unique_ptr<Runtime>> runtimes;  // one per library path, for the process
    std::lock_guard<std::mutex> lock(mutex);
    auto& slot = runtimes[library];
    if (!slot) slot = load_system_runtime(library);
    return *slot;
}

}  // namespace fastfid::device
