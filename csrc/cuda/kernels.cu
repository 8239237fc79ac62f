// The one translation unit nvcc compiles: every kernel, into the fatbin that the host code loads
// through the driver API (CMakeLists.txt embeds it in fastfid._cuda).
#include "cuda/frechet_kernels.cuh"
#include "cuda/stats_kernels.cuh"
