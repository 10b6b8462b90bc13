// CUDA FP8 quantization and dequantization against the reference, bit for bit: the kernels do
// the contract's fp32 operations (absmax, clamp, scale = amax / fp8_max, x * (1 / scale), a
// round-to-nearest-even saturating conversion), so values and scales must be the same bits (a
// NaN only has to be a NaN). Sweep: f32/bf16/f16 x e4m3/e5m2 x every granularity (per-tensor
// dynamic and static, row, group with row-major and MN-major scales, block) x N in {1, 127, 128,
// 129, 4095, 8192} x M in {1, 3, 1000}, strided rows at M = 3, and N = 20000 at M = 3; each with
// an all-zero row (the floor scale) where M >= 3. Outputs are poisoned before each run. Then
// dequantization of the device's output, also bit for bit, NaN injected, per-tensor determinism,
// and one input of more than 2^31 elements.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda/device_buffer.h"
#include "kiln/ops/quantize.h"

namespace kiln {
namespace {

using testing::DeviceBuffer;
using testing::HostTensor;
using testing::Mirrored;
using G = QuantGranularity;

enum class Mode { tensor, tensor_static, row, group, group_mn, block };

G granularity(Mode m) {
  constexpr G g[] = {G::tensor, G::tensor, G::row, G::group, G::group, G::block};
  return g[static_cast<int>(m)];
}

struct Case {
  DType dtype, fp8;
  Mode mode;
  int64_t m, n, pad = 0;  // pad > 0: rows (of x, values, out) n + pad apart
  std::string name() const {
    const char* modes[] = {"tensor", "tensor_static", "row", "group", "group_mn", "block"};
    return std::string(dtype_name(dtype)) + "_" + std::string(dtype_name(fp8)) + "_" +
           modes[static_cast<int>(mode)] + "_m" + std::to_string(m) + "_n" + std::to_string(n) +
           (pad ? "_pitch" + std::to_string(n + pad) : "");
  }
};

// A scales buffer of `g` for [m, n] and its view: row-major, or MN-major ([G, M4] storage seen
// as [M, G] with strides [1, M4]).
struct Scales {
  int64_t rows = 1, cols = 1, row_stride = 1, col_stride = 1;
  bool per_tensor = false;  // one scale, seen as [1]; the other granularities keep both dims
  std::vector<float> host;
  Scales(G g, int64_t m, int64_t n, bool mn_major) : per_tensor(g == G::tensor) {
    const int64_t groups = (n + 127) / 128;
    if (g == G::row) rows = m;
    if (g == G::group) rows = m, cols = groups;
    if (g == G::block) rows = (m + 127) / 128, cols = groups;
    row_stride = cols;
    if (mn_major) {
      row_stride = 1;
      col_stride = (rows + 3) / 4 * 4;
    }
    host.assign(mn_major ? cols * col_stride : rows * cols, -1.f);
  }
  TensorView view(void* data, Device d) {
    const int64_t sizes[2] = {rows, cols}, strides[2] = {row_stride, col_stride};
    if (per_tensor) return TensorView(data, DType::f32, d, {1});
    return TensorView(data, DType::f32, d, sizes, strides);
  }
  float at(int64_t i, int64_t j) const { return host[i * row_stride + j * col_stride]; }
};

// Every element of got equal to want: the same bits, or both NaN (NaN encodings differ: the
// hardware writes canonical NaNs, the host conversions keep payloads).
void expect_same_bits(const HostTensor& got, const HostTensor& want, const std::string& what) {
  const size_t es = dtype_size(want.dtype);
  int misses = 0;
  for (int64_t r = 0; r < want.rows() && misses < 5; ++r) {
    for (int64_t c = 0; c < want.cols() && misses < 5; ++c) {
      const size_t gi = (r * got.row_pitch + c) * es, wi = (r * want.row_pitch + c) * es;
      if (std::memcmp(&got.bytes[gi], &want.bytes[wi], es) == 0) continue;
      if (std::isnan(got.at(r, c)) && std::isnan(want.at(r, c))) continue;
      ADD_FAILURE() << what << " (" << r << ", " << c << "): got " << got.at(r, c) << ", want "
                    << want.at(r, c);
      ++misses;
    }
  }
}

void run_case(const Case& c, bool inject_nan) {
  const G g = granularity(c.mode);
  const Device gpu = Device::cuda(0);
  std::mt19937_64 rng(c.m * 131 + c.n * 7 + static_cast<int>(c.mode));
  HostTensor xh(c.dtype, {c.m, c.n}, c.n + c.pad);
  xh.randn(rng, 0.0, 3.0);
  if (c.m >= 3) {
    for (int64_t j = 0; j < c.n; ++j) xh.set(1, j, 0.0);  // an all-zero row: the floor scale
  }
  if (inject_nan) {
    for (int64_t r = 0; r < c.m; r += 2) xh.set(r, (r * 37) % c.n, NAN);
  }
  Mirrored x(xh), values(HostTensor(c.fp8, {c.m, c.n}, c.n + c.pad));
  x.upload();
  // Outputs poisoned: NaN, or with NaN in x a finite pattern, so an expected NaN is written.
  auto poison = [&](Mirrored& t) {
    if (!inject_nan) return t.poison();
    std::fill(t.host.bytes.begin(), t.host.bytes.end(), uint8_t{0x33});
    t.upload();
  };
  poison(values);
  Scales sh(g, c.m, c.n, c.mode == Mode::group_mn);
  DeviceBuffer sd(gpu, sh.host.size() * 4);
  sd.fill_nan();
  HostTensor vh(c.fp8, {c.m, c.n}, c.n + c.pad);
  Scales sref = sh;
  QuantConfig config;
  config.granularity = g;
  if (c.mode == Mode::tensor_static) {
    sh.host[0] = sref.host[0] = 0.75f * static_cast<float>(c.n % 7 + 1) / 448.f;  // saturates
    sd.upload(sh.host.data(), 4);
    quantize_fp8_static(values.view(), x.view(), sh.view(sd.data(), gpu));
    quantize_fp8_static(vh.view(), xh.view(), sref.view(sref.host.data(), Device::cpu()));
  } else {
    DeviceBuffer ws(gpu, quantize_fp8_workspace_size(x.view(), config));
    quantize_fp8(values.view(), sh.view(sd.data(), gpu), x.view(), config,
                 Workspace{ws.data(), ws.bytes()});
    EXPECT_EQ(last_receipt().backend, "cuda");
    testing::cuda_ok(cudaDeviceSynchronize(), "quantize_fp8");
    quantize_fp8(vh.view(), sref.view(sref.host.data(), Device::cpu()), xh.view(), config);
  }
  testing::cuda_ok(cudaDeviceSynchronize(), "quantize_fp8");
  values.download();
  sd.download(sh.host.data(), sh.host.size() * 4);
  expect_same_bits(values.host, vh, "values");
  for (int64_t i = 0; i < sh.rows; ++i) {
    for (int64_t j = 0; j < sh.cols; ++j) {
      EXPECT_EQ(sh.at(i, j), sref.at(i, j)) << "scale (" << i << ", " << j << ")";
    }
  }
  // Dequantize the device's values and scales back to x's dtype, against the reference doing
  // the same from the same values.
  Mirrored out(HostTensor(c.dtype, {c.m, c.n}, c.n + c.pad));
  poison(out);
  dequantize_fp8(out.view(), values.view(), sh.view(sd.data(), gpu), g);
  EXPECT_EQ(last_receipt().backend, "cuda");
  HostTensor out_ref(c.dtype, {c.m, c.n});
  dequantize_fp8(out_ref.view(), values.host.view(), sh.view(sh.host.data(), Device::cpu()), g);
  testing::cuda_ok(cudaDeviceSynchronize(), "dequantize_fp8");
  out.download();
  expect_same_bits(out.host, out_ref, "dequantized");
}

class QuantizeCuda : public ::testing::TestWithParam<Case> {};

TEST_P(QuantizeCuda, MatchesReferenceBitForBit) {
  if (!testing::have_gpu()) GTEST_FAIL() << "no CUDA device: run the GPU tests on a GPU";
  run_case(GetParam(), false);
}

std::vector<Case> sweep() {
  std::vector<Case> cases;
  for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
    for (DType fp8 : {DType::f8e4m3, DType::f8e5m2}) {
      for (Mode mode : {Mode::tensor, Mode::tensor_static, Mode::row, Mode::group, Mode::group_mn,
                        Mode::block}) {
        for (int64_t n : {1, 127, 128, 129, 4095, 8192}) {
          for (int64_t m : testing::sweep_rows()) cases.push_back({dtype, fp8, mode, m, n});
          // Strided rows: aligned (pitch n + 8) and, for odd n, unaligned.
          cases.push_back({dtype, fp8, mode, 3, n, 8});
        }
        // Rows too wide for a block's registers (16-bit: 2500 accesses > 256 x 8): the
        // streaming path of row tiles (f32 and unaligned blocks stream at every N above).
        cases.push_back({dtype, fp8, mode, 3, 20000});
      }
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Sweep, QuantizeCuda, ::testing::ValuesIn(sweep()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name();
                         });

TEST(QuantizeCudaExtra, NanStaysNanInEveryMode) {
  ASSERT_TRUE(testing::have_gpu());
  for (Mode mode : {Mode::tensor, Mode::tensor_static, Mode::row, Mode::group, Mode::block}) {
    for (DType fp8 : {DType::f8e4m3, DType::f8e5m2}) {
      run_case({DType::bf16, fp8, mode, 130, 300}, true);
    }
  }
}

TEST(QuantizeCudaExtra, PerTensorScaleIsTheSameBitsEveryRun) {
  ASSERT_TRUE(testing::have_gpu());
  const Device gpu = Device::cuda(0);
  std::mt19937_64 rng(3);
  HostTensor xh(DType::bf16, {4096, 4096});
  xh.randn(rng, 0.0, 2.0);
  Mirrored x(xh), values(HostTensor(DType::f8e4m3, {4096, 4096}));
  x.upload();
  QuantConfig config;
  config.granularity = G::tensor;
  DeviceBuffer ws(gpu, quantize_fp8_workspace_size(x.view(), config)), scale(gpu, 4);
  float first = 0;
  for (int run = 0; run < 5; ++run) {
    scale.fill_nan();
    quantize_fp8(values.view(), TensorView(scale.data(), DType::f32, gpu, {1}), x.view(), config,
                 Workspace{ws.data(), ws.bytes()});
    testing::cuda_ok(cudaDeviceSynchronize(), "quantize_fp8");
    float s = 0;
    scale.download(&s, 4);
    if (run == 0) first = s;
    EXPECT_EQ(s, first) << "run " << run;
  }
  float amax = 0;
  for (int64_t r = 0; r < 4096; ++r) {
    for (int64_t c = 0; c < 4096; ++c) amax = std::fmax(amax, std::fabs(xh.at(r, c)));
  }
  EXPECT_EQ(first, amax / 448.f);
}

// Rows [first, first + count) of a contiguous [M, N] host tensor, as their own tensor.
HostTensor slice_rows(const HostTensor& t, int64_t first, int64_t count) {
  HostTensor out(t.dtype, {count, t.cols()});
  const size_t row = t.cols() * dtype_size(t.dtype);
  std::memcpy(out.bytes.data(), t.bytes.data() + first * row, count * row);
  return out;
}

TEST(QuantizeCudaExtra, MoreThan2Pow31Elements) {
  ASSERT_TRUE(testing::have_gpu());
  // 262152 x 8192 bf16 = 2^31 + 65536 elements: offsets past 2^31 must not wrap, in the group
  // tiles, the dequantization, the absmax pass and the per-tensor quantization. Checked on the
  // first and last 64 rows (rows are independent given the scale); the per-tensor scale against
  // the absmax of all of x.
  const int64_t m = (int64_t{1} << 31) / 8192 + 8, n = 8192, groups = n / 128, rows = 64;
  const Device gpu = Device::cuda(0);
  std::mt19937_64 rng(8);
  HostTensor xh(DType::bf16, {m, n});
  xh.randn(rng, 0.0, 3.0);
  xh.set(m - 1, n - 1, 1000.0);  // the tensor's absmax, in its last element
  Mirrored x(std::move(xh)), values(HostTensor(DType::f8e4m3, {m, n}));
  Mirrored out(HostTensor(DType::bf16, {m, n}));
  DeviceBuffer sd(gpu, m * groups * 4);
  x.upload();
  values.poison();
  out.poison();
  sd.fill_nan();
  const TensorView scales(sd.data(), DType::f32, gpu, {m, groups});
  QuantConfig config;
  quantize_fp8(values.view(), scales, x.view(), config);
  dequantize_fp8(out.view(), values.view(), scales, G::group);
  testing::cuda_ok(cudaDeviceSynchronize(), "quantize_fp8 / dequantize_fp8 (group)");
  values.download();
  out.download();
  for (int64_t first : {int64_t{0}, m - rows}) {
    const std::string from = " from row " + std::to_string(first);
    HostTensor xs = slice_rows(x.host, first, rows), want(DType::f8e4m3, {rows, n});
    HostTensor out_want(DType::bf16, {rows, n});
    std::vector<float> s_got(rows * groups), s_want(rows * groups);
    sd.download(s_got.data(), s_got.size() * 4, first * groups * 4);
    const TensorView s_view(s_want.data(), DType::f32, Device::cpu(), {rows, groups});
    quantize_fp8(want.view(), s_view, xs.view(), config);
    expect_same_bits(slice_rows(values.host, first, rows), want, "group values" + from);
    EXPECT_EQ(s_got, s_want) << "group scales" << from;
    dequantize_fp8(out_want.view(), want.view(), s_view, G::group);
    expect_same_bits(slice_rows(out.host, first, rows), out_want, "dequantized" + from);
  }
  // Per tensor: the absmax pass must see the last element.
  QuantConfig tensor;
  tensor.granularity = G::tensor;
  DeviceBuffer ws(gpu, quantize_fp8_workspace_size(x.view(), tensor));
  values.poison();
  quantize_fp8(values.view(), TensorView(sd.data(), DType::f32, gpu, {1}), x.view(), tensor,
               Workspace{ws.data(), ws.bytes()});
  testing::cuda_ok(cudaDeviceSynchronize(), "quantize_fp8 (tensor)");
  values.download();
  float scale = 0;
  sd.download(&scale, 4);
  EXPECT_EQ(scale, 1000.f / 448.f);
  for (int64_t first : {int64_t{0}, m - rows}) {
    HostTensor want(DType::f8e4m3, {rows, n});
    quantize_fp8_static(want.view(), slice_rows(x.host, first, rows).view(),
                        TensorView(&scale, DType::f32, Device::cpu(), {1}));
    expect_same_bits(slice_rows(values.host, first, rows), want,
                     "tensor values from row " + std::to_string(first));
  }
}

}  // namespace
}  // namespace kiln
