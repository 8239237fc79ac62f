// fastfid._cuda.selftest: kernels that exist only to test the SIMT emulation and the kernels' building
// blocks (the fragment layouts of each mma, the GEMM tiles, the roundings), kept out of the production
// module's namespace. Each runs on the emulated driver, on the CPU.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda/frechet_driver.hpp"
#include "cuda/stats_driver.hpp"
#include "simt/simt.hpp"

namespace py = pybind11;

namespace {

// Self-checks of the SIMT emulation itself, so the tests can show what it catches.
// A barrier inside a branch that only some threads take: undefined behaviour on a GPU.
void divergent_barrier_kernel() {
    if (threadIdx.x % 2 == 0) __syncthreads();
}

// A read of a neighbour's shared slot with the barrier missing: the value read depends on the
// schedule, so running both schedules exposes the race.
void missing_barrier_kernel(int mark, int* out) {
    __shared__ int slots[64];
    slots[threadIdx.x] = mark;
    out[threadIdx.x] = slots[(threadIdx.x + 1) % blockDim.x];  // needs __syncthreads() before it
}

// One warp-wide mma.m8n8k4 on float64 with the PTX ISA's fragment layout: each lane loads its
// fragments from row-major A (8 × 4), B (4 × 8) and C (8 × 8) and stores its part of D. `lanes`
// below 32 leaves the other lanes out of the mma (undefined behaviour on a GPU).
void mma_kernel(const double* a, const double* b, const double* c, double* d, unsigned lanes) {
    const unsigned lane = threadIdx.x, group = lane / 4, member = lane % 4;
    double acc[1][1][2] = {{{c[group * 8 + 2 * member], c[group * 8 + 2 * member + 1]}}};
    const double fragment_a[1] = {a[group * 4 + member]};  // A[row = lane / 4][k = lane % 4]
    const double fragment_b[1] = {b[member * 8 + group]};  // B[k = lane % 4][col = lane / 4]
    if (lane >= lanes) return;
    fastfid::kernels::warp_mma_f64(acc, fragment_a, fragment_b);
    d[group * 8 + 2 * member] = acc[0][0][0];
    d[group * 8 + 2 * member + 1] = acc[0][0][1];
}

// One warp-wide mma.m16n8k8 on TF32 with float32 accumulators, likewise: A (16 × 8), B (8 × 8), C (16 × 8).
void mma_tf32_kernel(const float* a, const float* b, const float* c, float* d) {
    const unsigned lane = threadIdx.x, g = lane / 4, t = lane % 4;
    float acc[1][1][4] = {{{c[g * 8 + 2 * t], c[g * 8 + 2 * t + 1], c[(g + 8) * 8 + 2 * t], c[(g + 8) * 8 + 2 * t + 1]}}};
    const float fragment_a[1][4] = {{a[g * 8 + t], a[(g + 8) * 8 + t], a[g * 8 + t + 4], a[(g + 8) * 8 + t + 4]}};
    const float fragment_b[1][2] = {{b[t * 8 + g], b[(t + 4) * 8 + g]}};
    fastfid::kernels::warp_mma_tf32(acc, fragment_a, fragment_b);
    d[g * 8 + 2 * t] = acc[0][0][0];
    d[g * 8 + 2 * t + 1] = acc[0][0][1];
    d[(g + 8) * 8 + 2 * t] = acc[0][0][2];
    d[(g + 8) * 8 + 2 * t + 1] = acc[0][0][3];
}

// One warp-wide mma.m16n8k16 on float16 or bfloat16 (16-bit patterns) with float32 accumulators:
// A (16 × 16), B (16 × 8), C (16 × 8), each lane loading its fragments as the PTX ISA lays them out.
void mma_16bit_kernel(const uint16_t* a, const uint16_t* b, const float* c, float* d, bool bfloat16) {
    using fastfid::kernels::pack_pair;
    const unsigned lane = threadIdx.x, g = lane / 4, t = lane % 4;
    float acc[1][1][4] = {{{c[g * 8 + 2 * t], c[g * 8 + 2 * t + 1], c[(g + 8) * 8 + 2 * t], c[(g + 8) * 8 + 2 * t + 1]}}};
    const auto at = [&](unsigned r, unsigned k) { return pack_pair(a[r * 16 + k], a[r * 16 + k + 1]); };
    const uint32_t fragment_a[1][4] = {{at(g, 2 * t), at(g + 8, 2 * t), at(g, 2 * t + 8), at(g + 8, 2 * t + 8)}};
    const uint32_t fragment_b[1][2] = {{pack_pair(b[2 * t * 8 + g], b[(2 * t + 1) * 8 + g]),
                                        pack_pair(b[(2 * t + 8) * 8 + g], b[(2 * t + 9) * 8 + g])}};
    using fastfid::kernels::HalfType;
    if (bfloat16) fastfid::kernels::warp_mma_16bit<HalfType::bfloat16>(acc, fragment_a, fragment_b);
    else fastfid::kernels::warp_mma_16bit<HalfType::float16>(acc, fragment_a, fragment_b);
    d[g * 8 + 2 * t] = acc[0][0][0];
    d[g * 8 + 2 * t + 1] = acc[0][0][1];
    d[(g + 8) * 8 + 2 * t] = acc[0][0][2];
    d[(g + 8) * 8 + 2 * t + 1] = acc[0][0][3];
}

// C = A B (d × d, row-major) by the distance's GEMM tiles in one of their variants; symmetric: the
// upper tiles only, mirrored.
template <fastfid::kernels::Products P>
void gemm_kernel(const double* a, const double* b, double* c, int64_t d, bool symmetric) {
    fastfid::kernels::Epilogue epilogue;
    epilogue.symmetric = symmetric;
    fastfid::kernels::gemm_tile<P>(a, b, c, d, epilogue);
}

}  // namespace

void register_selftests(py::module_& m) {
    py::module_ selftest = m.def_submodule("selftest", "Test-only kernels on the emulated driver (the tests' checks of "
                                                       "the emulation and of the kernels' building blocks).");
    selftest.def("divergent_barrier", [] { simt::launch(divergent_barrier_kernel, dim3(1), dim3(8)); },
          "Runs a kernel whose barrier only half the threads reach; raises.");
    selftest.def(
        "missing_barrier",
        [](int mark) {
            std::vector<int> out(64, 0);
            simt::launch(missing_barrier_kernel, dim3(1), dim3(64), mark, out.data());
            return out;
        },
        py::arg("mark"),
        "Runs a kernel in which each thread stores `mark` and, lacking a barrier, reads its neighbour's slot; "
        "returns what each thread read (schedule-dependent).");
    selftest.def(
        "mma_f64",
        [](const std::vector<double>& a, const std::vector<double>& b, const std::vector<double>& c, unsigned lanes) {
            if (a.size() != 32 || b.size() != 32 || c.size() != 64)
                throw std::invalid_argument("A is 8 x 4, B is 4 x 8, C is 8 x 8 (row-major, flattened)");
            std::vector<double> d(64, 0.0);
            simt::launch(mma_kernel, dim3(1), dim3(32), a.data(), b.data(), c.data(), d.data(), lanes);
            return d;
        },
        py::arg("a"), py::arg("b"), py::arg("c"), py::arg("lanes") = 32,
        "D = A B + C by one emulated warp-wide mma.m8n8k4.f64, each lane loading and storing its fragments as the "
        "PTX ISA lays them out.");
    selftest.def(
        "mma_tf32",
        [](const std::vector<float>& a, const std::vector<float>& b, const std::vector<float>& c) {
            if (a.size() != 128 || b.size() != 64 || c.size() != 128)
                throw std::invalid_argument("A is 16 x 8, B is 8 x 8, C is 16 x 8 (row-major, flattened)");
            std::vector<float> d(128, 0.0f);
            simt::launch(mma_tf32_kernel, dim3(1), dim3(32), a.data(), b.data(), c.data(), d.data());
            return d;
        },
        py::arg("a"), py::arg("b"), py::arg("c"),
        "D = A B + C by one emulated warp-wide mma.m16n8k8.tf32 (operands must be TF32 values).");
    selftest.def("to_tf32", &fastfid::kernels::to_tf32, py::arg("x"), "x rounded to TF32 as cvt.rna.tf32.f32 does.");
    selftest.def("to_bfloat16", [](float x) { return fastfid::bfloat16_to_float(fastfid::kernels::to_bfloat16_bits(x)); },
          py::arg("x"), "x rounded to bfloat16 as cvt.rn.bf16.f32 does.");
    selftest.def(
        "mma_16bit",
        [](const std::vector<uint16_t>& a, const std::vector<uint16_t>& b, const std::vector<float>& c, bool bfloat16) {
            if (a.size() != 256 || b.size() != 128 || c.size() != 128)
                throw std::invalid_argument("A is 16 x 16, B is 16 x 8 (16-bit patterns), C is 16 x 8 (row-major, flattened)");
            std::vector<float> d(128, 0.0f);
            simt::launch(mma_16bit_kernel, dim3(1), dim3(32), a.data(), b.data(), c.data(), d.data(), bfloat16);
            return d;
        },
        py::arg("a"), py::arg("b"), py::arg("c"), py::arg("bfloat16"),
        "D = A B + C by one emulated warp-wide mma.m16n8k16 on float16 (or bfloat16) bit patterns.");
    selftest.def(
        "gemm",
        [](py::array_t<double, py::array::c_style | py::array::forcecast> a,
           py::array_t<double, py::array::c_style | py::array::forcecast> b, const std::string& products,
           bool symmetric) {
            using fastfid::kernels::Products;
            const int64_t d = a.shape(0);
            if (a.ndim() != 2 || b.ndim() != 2 || a.shape(1) != d || b.shape(0) != d || b.shape(1) != d)
                throw std::invalid_argument("A and B must be d x d");
            py::array_t<double> c({d, d});
            const auto side = static_cast<unsigned>((d + fastfid::kernels::kTile - 1) / fastfid::kernels::kTile);
            const dim3 grid = symmetric ? dim3(static_cast<unsigned>(fastfid::kernels::triangle_tiles(d)))
                                        : dim3(side, side);
            const auto run = [&](auto variant) {
                constexpr Products kVariant = decltype(variant)::value;
                simt::launch(gemm_kernel<kVariant>, grid, dim3(fastfid::kernels::gemm_threads(kVariant)), a.data(),
                             b.data(), c.mutable_data(), d, symmetric);
            };
            if (products == "fma") run(std::integral_constant<Products, Products::fma>{});
            else if (products == "dmma") run(std::integral_constant<Products, Products::dmma>{});
            else if (products == "tf32x3") run(std::integral_constant<Products, Products::tf32x3>{});
            else throw std::invalid_argument("products must be 'fma', 'dmma' or 'tf32x3'");
            return c;
        },
        py::arg("a"), py::arg("b"), py::arg("products"), py::arg("symmetric") = false,
        "A @ B by the distance kernels' GEMM tiles on the emulation: 'fma', 'dmma' or 'tf32x3'; symmetric: only "
        "the upper tiles, mirrored.");
}
