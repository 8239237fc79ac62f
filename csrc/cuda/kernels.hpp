// Every kernel entry point, by name, for the host code: the list that the fatbin (cuda/kernels.cu)
// and the emulated driver (simt/driver.cpp) both provide, and typed references the host drivers
// launch through Device::launch (cuda/runtime.hpp), which checks their arguments at compile time.
#pragma once

#include "cuda/frechet_kernels.cuh"
#include "cuda/stats_kernels.cuh"

#define FASTFID_KERNEL_LIST(X)                                                                     \
    X(fastfid_probe)                                                                                \
    X(fastfid_fill_zero)                                                                            \
    X(fastfid_choose_shift_float16)                                                                 \
    X(fastfid_choose_shift_bfloat16)                                                                \
    X(fastfid_choose_shift_float32)                                                                 \
    X(fastfid_choose_shift_float64)                                                                 \
    X(fastfid_batch_sums_float16)                                                                   \
    X(fastfid_batch_sums_bfloat16)                                                                  \
    X(fastfid_batch_sums_float32)                                                                   \
    X(fastfid_batch_sums_float64)                                                                   \
    X(fastfid_batch_syrk_fma_float16)                                                               \
    X(fastfid_batch_syrk_fma_bfloat16)                                                              \
    X(fastfid_batch_syrk_fma_float32)                                                               \
    X(fastfid_batch_syrk_fma_float64)                                                               \
    X(fastfid_batch_syrk_tensor_float16)                                                            \
    X(fastfid_batch_syrk_tensor_bfloat16)                                                           \
    X(fastfid_batch_syrk_tensor_float32)                                                            \
    X(fastfid_batch_syrk_tensor_float64)                                                            \
    X(fastfid_batch_syrk_fast_float16)                                                              \
    X(fastfid_batch_syrk_fast_bfloat16)                                                             \
    X(fastfid_batch_syrk_fast_float32)                                                              \
    X(fastfid_batch_syrk_fast_float64)                                                              \
    X(fastfid_merge_note)                                                                           \
    X(fastfid_merge_apply)                                                                          \
    X(fastfid_covariance_checks)                                                                    \
    X(fastfid_fd_begin)                                                                             \
    X(fastfid_gemm_scaled)                                                                          \
    X(fastfid_gemm_scaled_tensor)                                                                   \
    X(fastfid_sum_of_squares)                                                                       \
    X(fastfid_ns_begin)                                                                             \
    X(fastfid_ns_start)                                                                             \
    X(fastfid_ns_t)                                                                                 \
    X(fastfid_ns_t_tensor)                                                                          \
    X(fastfid_ns_t_tf32x3)                                                                          \
    X(fastfid_ns_products)                                                                          \
    X(fastfid_ns_products_tensor)                                                                   \
    X(fastfid_ns_products_tf32x3)                                                                   \
    X(fastfid_ns_stop)                                                                              \
    X(fastfid_fd_finish)                                                                            \
    X(fastfid_ns_rescale)                                                                           \
    X(fastfid_sym_choose)                                                                           \
    X(fastfid_sym_left)                                                                             \
    X(fastfid_sym_left_tensor)                                                                      \
    X(fastfid_sym_right)                                                                            \
    X(fastfid_sym_right_tensor)                                                                     \
    X(fastfid_sym_residual)                                                                         \
    X(fastfid_sym_residual_tensor)                                                                  \
    X(fastfid_sym_products)                                                                         \
    X(fastfid_sym_products_tensor)                                                                  \
    X(fastfid_sym_wz)                                                                               \
    X(fastfid_sym_wz_tensor)                                                                        \
    X(fastfid_sym_reductions)                                                                       \
    X(fastfid_sym_finish)

namespace fastfid::device {

template <class Signature>
struct KernelRef;

// A kernel known by its C name; the signature types the launch's arguments.
template <class... Params>
struct KernelRef<void(Params...)> {
    const char* name;
};

namespace kernel {
#define FASTFID_KERNEL_REF(name) inline constexpr KernelRef<decltype(::name)> name{#name};
FASTFID_KERNEL_LIST(FASTFID_KERNEL_REF)
#undef FASTFID_KERNEL_REF
}  // namespace kernel

}  // namespace fastfid::device
