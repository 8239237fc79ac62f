#include "simt/driver.hpp"

#include "simt/simt.hpp"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <type_traits>
#include <unordered_map>
#include <utility>

namespace fastfid::simt_driver {

using namespace device;

namespace {

using Thunk = void (*)(dim3, dim3, void**);
using Output = double* (*)(void**);  // a kernel's first double* argument, or null

template <class... Params, size_t... I>
void run_unpacked(void (*kernel)(Params...), dim3 grid, dim3 block, void** arguments, std::index_sequence<I...>) {
    simt::launch(kernel, grid, block, *static_cast<std::remove_reference_t<Params>*>(arguments[I])...);
}

template <class... Params>
void run_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, void** arguments) {
    run_unpacked(kernel, grid, block, arguments, std::index_sequence_for<Params...>{});
}

template <auto Kernel>
void thunk(dim3 grid, dim3 block, void** arguments) {
    run_kernel(Kernel, grid, block, arguments);
}

template <class Param>
double* as_output(void* argument) {
    if constexpr (std::is_same_v<Param, double*>) return *static_cast<double**>(argument);
    else return nullptr;
}

template <class... Params, size_t... I>
double* first_output(void** arguments, std::index_sequence<I...>) {
    double* found = nullptr;
    ((found = found != nullptr ? found : as_output<Params>(arguments[I])), ...);
    return found;
}

template <class... Params>
double* output_of(void (*)(Params...), void** arguments) {
    return first_output<Params...>(arguments, std::index_sequence_for<Params...>{});
}

template <auto Kernel>
double* output(void** arguments) {
    return output_of(Kernel, arguments);
}

template <class... Params>
constexpr bool has_output(void (*)(Params...)) {
    return (std::is_same_v<Params, double*> || ...);
}

struct Entry {
    Thunk run;
    Output output;
    bool has_output;
};

const std::unordered_map<std::string, Entry>& kernels() {
    static const std::unordered_map<std::string, Entry> table = {
#define FASTFID_EMULATED_KERNEL(name) {#name, {&thunk<&::name>, &output<&::name>, has_output(&::name)}},
        FASTFID_KERNEL_LIST(FASTFID_EMULATED_KERNEL)
#undef FASTFID_EMULATED_KERNEL
    };
    return table;
}

struct Function {
    std::string name;
    Entry kernel;
    int device;
};

// Wrong values injected into one launch of a kernel (fastfid's validation must catch them).
struct Fault {
    std::string kernel;
    FaultKind kind;
    int skip;
    long long where;  // the block skipped or missing a barrier, or the element whose bit flips
    long long barrier;
};

struct Injection {
    std::string call;
    CUresult code;
    int skip;
};

struct State {
    std::mutex mutex;
    int devices = 1;
    int capability = 90;  // what the architecture decides (the kernels' variants): all are emulated alike
    std::vector<Injection> injections;
    std::vector<Fault> faults;
    CUresult asynchronous = kSuccess;
    Counters counters;
    std::vector<std::string> log;
    std::deque<Function> functions;  // handles stay valid: a deque never moves its elements
    unsigned long long events = 0;
};

State& state() {
    static State s;
    return s;
}

// Contexts are device + 1; the base is what torch's runtime would have made current on this thread.
thread_local int base_device = 0;
thread_local std::vector<int> pushed;

CUcontext context_of(int device) { return reinterpret_cast<CUcontext>(static_cast<std::uintptr_t>(device + 1)); }
int device_of(CUcontext context) { return static_cast<int>(reinterpret_cast<std::uintptr_t>(context)) - 1; }
int current() { return pushed.empty() ? base_device : pushed.back(); }

// The first pending injection for `name` (an entry's `field`) whose skips have run out, removed;
// an earlier one for `name` counts down one skip instead. The caller holds no lock.
template <class Entry>
std::optional<Entry> take_due(std::vector<Entry> State::*pending, std::string Entry::*field, const std::string& name) {
    State& s = state();
    std::lock_guard<std::mutex> lock(s.mutex);
    auto& entries = s.*pending;
    for (auto it = entries.begin(); it != entries.end(); ++it) {
        if ((*it).*field != name) continue;
        if (it->skip > 0) {
            --it->skip;
            return std::nullopt;
        }
        const Entry entry = *it;
        entries.erase(it);
        return entry;
    }
    return std::nullopt;
}

// An injected failure for this call, if one is due.
CUresult injected(const char* call) {
    const std::optional<Injection> due = take_due(&State::injections, &Injection::call, call);
    return due ? due->code : kSuccess;
}

// The fault injected into this launch of `kernel`, if one is due.
std::optional<Fault> due_fault(const std::string& kernel) {
    return take_due(&State::faults, &Fault::kernel, kernel);
}

void note(const std::string& line) {
    State& s = state();
    std::lock_guard<std::mutex> lock(s.mutex);
    s.log.push_back(line);
}

std::string hex(const void* pointer) {
    std::ostringstream out;
    out << pointer;
    return out.str();
}

#define FASTFID_INJECTABLE(call)                   \
    if (const CUresult code = injected(call)) return code

CUresult init(unsigned) {
    FASTFID_INJECTABLE("cuInit");
    return kSuccess;
}
CUresult device_get(CUdevice* device, int ordinal) {
    FASTFID_INJECTABLE("cuDeviceGet");
    if (ordinal < 0 || ordinal >= state().devices) return kInvalidDevice;
    *device = ordinal;
    return kSuccess;
}
CUresult device_get_attribute(int* value, int attribute, CUdevice) {
    if (attribute == kAttributeComputeCapabilityMajor) *value = state().capability / 10;
    else if (attribute == kAttributeComputeCapabilityMinor) *value = state().capability % 10;
    else return kInvalidValue;
    return kSuccess;
}
CUresult primary_context_retain(CUcontext* context, CUdevice device) {
    FASTFID_INJECTABLE("cuDevicePrimaryCtxRetain");
    *context = context_of(device);
    return kSuccess;
}
CUresult context_push(CUcontext context) {
    FASTFID_INJECTABLE("cuCtxPushCurrent");
    pushed.push_back(device_of(context));
    return kSuccess;
}
CUresult context_pop(CUcontext* context) {
    if (pushed.empty()) return kInvalidContext;
    *context = context_of(pushed.back());
    pushed.pop_back();
    return kSuccess;
}
CUresult module_load_data(CUmodule* module, const void* image) {
    FASTFID_INJECTABLE("cuModuleLoadData");
    if (image == nullptr) return kInvalidImage;
    *module = reinterpret_cast<CUmodule>(static_cast<std::uintptr_t>(current() + 1));
    return kSuccess;
}
CUresult module_get_function(CUfunction* function, CUmodule module, const char* name) {
    FASTFID_INJECTABLE("cuModuleGetFunction");
    const auto found = kernels().find(name);
    if (found == kernels().end()) return kNotFound;
    State& s = state();
    std::lock_guard<std::mutex> lock(s.mutex);
    s.functions.push_back({name, found->second, static_cast<int>(reinterpret_cast<std::uintptr_t>(module)) - 1});
    *function = reinterpret_cast<CUfunction>(&s.functions.back());
    return kSuccess;
}
CUresult launch_kernel(CUfunction handle, unsigned grid_x, unsigned grid_y, unsigned grid_z, unsigned block_x,
                       unsigned block_y, unsigned block_z, unsigned shared_bytes, CUstream stream, void** parameters,
                       void** extra) {
    FASTFID_INJECTABLE("cuLaunchKernel");
    const auto* function = reinterpret_cast<const Function*>(handle);
    // A function belongs to the module of one context: launched under another, a driver refuses it.
    if (function->device != current()) return kInvalidHandle;
    if (extra != nullptr || shared_bytes != 0 || parameters == nullptr) return kInvalidValue;
    // CUDA's launch limits, which a GPU would enforce: grid.y and grid.z up to 65535, 1024 threads a block.
    if (grid_x == 0 || grid_y == 0 || grid_z == 0 || grid_y > 65535 || grid_z > 65535 ||
        static_cast<unsigned long long>(block_x) * block_y * block_z > 1024)
        return kInvalidValue;
    {
        State& s = state();
        std::lock_guard<std::mutex> lock(s.mutex);
        s.counters.launches += 1;
        s.log.push_back("cuLaunchKernel " + function->name + " device=" + std::to_string(current()) +
                        " stream=" + hex(stream));
    }
    const std::optional<Fault> fault = due_fault(function->name);
    simt::Faults faults;
    if (fault && fault->kind == FaultKind::skip_block) faults.skipped_block = fault->where;
    if (fault && fault->kind == FaultKind::drop_barrier) {
        faults.barrier_block = fault->where;
        faults.dropped_barrier = fault->barrier;
    }
    simt::set_faults(faults);
    try {
        function->kernel.run(dim3(grid_x, grid_y, grid_z), dim3(block_x, block_y, block_z), parameters);
    } catch (...) {
        simt::set_faults({});
        throw;
    }
    simt::set_faults({});
    if (fault && fault->kind == FaultKind::flip_bit) {
        // One bit of the kernel's first double* output flips after it ran: bit 52, the lowest of the
        // exponent, doubles or halves a non-zero value (a flipped bit that matters).
        double* out = function->kernel.output(parameters);
        std::uint64_t bits;
        std::memcpy(&bits, out + fault->where, sizeof bits);
        bits ^= std::uint64_t{1} << 52;
        std::memcpy(out + fault->where, &bits, sizeof bits);
    }
    return kSuccess;
}
CUresult memory_allocate(CUdeviceptr* pointer, size_t bytes) {
    FASTFID_INJECTABLE("cuMemAlloc");
    *pointer = reinterpret_cast<CUdeviceptr>(new double[(bytes + sizeof(double) - 1) / sizeof(double)]);
    std::lock_guard<std::mutex> lock(state().mutex);
    state().counters.live_allocations += 1;
    return kSuccess;
}
CUresult memory_free(CUdeviceptr pointer) {
    delete[] reinterpret_cast<double*>(pointer);
    std::lock_guard<std::mutex> lock(state().mutex);
    state().counters.live_allocations -= 1;
    return kSuccess;
}
CUresult copy_device_to_host(void* destination, CUdeviceptr source, size_t bytes, CUstream stream) {
    FASTFID_INJECTABLE("cuMemcpyDtoHAsync");
    std::memcpy(destination, reinterpret_cast<const void*>(source), bytes);
    State& s = state();
    std::lock_guard<std::mutex> lock(s.mutex);
    s.counters.device_to_host_copies += 1;
    s.counters.device_to_host_bytes += static_cast<long long>(bytes);
    s.log.push_back("cuMemcpyDtoHAsync bytes=" + std::to_string(bytes) + " device=" + std::to_string(current()) +
                    " stream=" + hex(stream));
    return kSuccess;
}
CUresult stream_synchronize(CUstream) {
    FASTFID_INJECTABLE("cuStreamSynchronize");
    State& s = state();
    std::lock_guard<std::mutex> lock(s.mutex);
    s.counters.synchronisations += 1;
    return std::exchange(s.asynchronous, kSuccess);
}
CUresult event_create(CUevent* event, unsigned) {
    std::lock_guard<std::mutex> lock(state().mutex);
    *event = reinterpret_cast<CUevent>(static_cast<std::uintptr_t>(++state().events));
    return kSuccess;
}
CUresult event_record(CUevent event, CUstream stream) {
    FASTFID_INJECTABLE("cuEventRecord");
    State& s = state();
    std::lock_guard<std::mutex> lock(s.mutex);
    s.counters.events_recorded += 1;
    s.log.push_back("cuEventRecord event=" + hex(event) + " stream=" + hex(stream));
    return kSuccess;
}
CUresult stream_wait_event(CUstream stream, CUevent event, unsigned) {
    FASTFID_INJECTABLE("cuStreamWaitEvent");
    State& s = state();
    std::lock_guard<std::mutex> lock(s.mutex);
    s.counters.stream_waits += 1;
    s.log.push_back("cuStreamWaitEvent event=" + hex(event) + " stream=" + hex(stream));
    return kSuccess;
}
CUresult event_destroy(CUevent) { return kSuccess; }
CUresult get_error_name(CUresult code, const char** name) {
    *name = driver_code_name(code);
    return *name ? kSuccess : kInvalidValue;
}
CUresult driver_get_version(int* version) {
    *version = kEmulatedDriverVersion;
    return kSuccess;
}
CUresult device_get_name(char* name, int length, CUdevice device) {
    if (device < 0 || device >= state().devices || length < 1) return kInvalidValue;
    const std::string text = "fastfid emulated GPU (sm_" + std::to_string(state().capability) + ")";
    std::snprintf(name, static_cast<size_t>(length), "%s", text.c_str());
    return kSuccess;
}

#undef FASTFID_INJECTABLE

}  // namespace

const DriverTable& table() {
    static const DriverTable t = {init, device_get, device_get_attribute,
                                  primary_context_retain, context_push, context_pop, module_load_data,
                                  module_get_function, launch_kernel, memory_allocate, memory_free,
                                  copy_device_to_host, stream_synchronize, event_create,
                                  event_record, stream_wait_event, event_destroy, get_error_name,
                                  driver_get_version, device_get_name};
    return t;
}

void reset(int devices, int capability) {
    State& s = state();
    std::lock_guard<std::mutex> lock(s.mutex);
    s.devices = devices;
    s.capability = capability;
    s.injections.clear();
    s.faults.clear();
    s.asynchronous = kSuccess;
    const long long live = s.counters.live_allocations;
    s.counters = Counters{};
    s.counters.live_allocations = live;  // memory still held is still held
    s.log.clear();
    base_device = 0;
}

void inject(const std::string& call, int code, int skip) {
    std::lock_guard<std::mutex> lock(state().mutex);
    state().injections.push_back({call, code, skip});
}

void inject_fault(const std::string& kernel, FaultKind kind, int skip, long long where, long long barrier) {
    const auto found = kernels().find(kernel);
    if (found == kernels().end()) throw std::invalid_argument("no kernel is named " + kernel);
    if (kind == FaultKind::flip_bit && !found->second.has_output)
        throw std::invalid_argument(kernel + " has no double* argument whose bit could flip");
    if (skip < 0 || where < 0 || barrier < 0) throw std::invalid_argument("skip, where and barrier must be >= 0");
    std::lock_guard<std::mutex> lock(state().mutex);
    state().faults.push_back({kernel, kind, skip, where, barrier});
}

void inject_asynchronous(int code) {
    std::lock_guard<std::mutex> lock(state().mutex);
    state().asynchronous = code;
}

Counters counters() {
    std::lock_guard<std::mutex> lock(state().mutex);
    return state().counters;
}

std::vector<std::string> log() {
    std::lock_guard<std::mutex> lock(state().mutex);
    return state().log;
}

void set_current_device(int device) { base_device = device; }
int current_device() { return current(); }

}  // namespace fastfid::simt_driver
