// The reference row gathers: values, int32 and int64 indices, out-of-range indices (zero rows,
// counted once, never read), pairs of different dtypes, strided source rows, bad input.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "common/expect_error.h"
#include "common/host_tensor.h"
#include "kiln/ops/gather.h"

namespace kiln {
namespace {

using testing::expect_error;
using testing::HostTensor;

template <typename I>
TensorView index_view(std::vector<I>& idx) {
  return TensorView(idx.data(), sizeof(I) == 8 ? DType::i64 : DType::i32, Device::cpu(),
                    {static_cast<int64_t>(idx.size())});
}

TensorView counter(int32_t& c) {
  return TensorView(&c, DType::i32, Device::cpu(), {1});
}

TEST(GatherRef, CopiesRowsAndCountsBadIndices) {
  std::mt19937_64 rng(1);
  HostTensor src(DType::bf16, {6, 2, 4});
  src.randn(rng);
  std::vector<int64_t> idx = {5, 0, -1, 6, 2, 5, int64_t{1} << 40};
  HostTensor out(DType::bf16, {7, 2, 4});
  int32_t bad = 3;  // counts add to what is there
  gather_rows(out.view(), src.view(), index_view(idx), counter(bad));
  EXPECT_EQ(bad, 3 + 3);
  for (size_t m = 0; m < idx.size(); ++m) {
    const bool ok = idx[m] >= 0 && idx[m] < 6;
    for (int c = 0; c < 8; ++c) {
      const double want = ok ? src.at(idx[m] * 2 + c / 4, c % 4) : 0.0;
      EXPECT_EQ(out.at(m * 2 + c / 4, c % 4), want) << m << "," << c;
    }
  }
  EXPECT_EQ(last_receipt().op, "gather_rows");
}

TEST(GatherRef, PairWithDifferentDtypesCountsOnce) {
  std::mt19937_64 rng(2);
  HostTensor k(DType::bf16, {4, 2, 8}), v(DType::f32, {4, 3});
  k.randn(rng);
  v.randn(rng);
  std::vector<int32_t> idx = {3, -2, 1};
  HostTensor ok_out(DType::bf16, {3, 2, 8}), ov_out(DType::f32, {3, 3});
  int32_t bad = 0;
  gather_rows_pair(ok_out.view(), ov_out.view(), k.view(), v.view(), index_view(idx), counter(bad));
  EXPECT_EQ(bad, 1);
  for (int c = 0; c < 3; ++c) {
    EXPECT_EQ(ov_out.at(0, c), v.at(3, c));
    EXPECT_EQ(ov_out.at(1, c), 0.0);
    EXPECT_EQ(ov_out.at(2, c), v.at(1, c));
  }
  EXPECT_EQ(ok_out.at(2 * 2 + 1, 7), k.at(1 * 2 + 1, 7));
}

TEST(GatherRef, StridedSourceRows) {
  std::mt19937_64 rng(3);
  HostTensor wide(DType::f32, {5, 10});
  wide.randn(rng);
  const int64_t sizes[] = {5, 6}, strides[] = {10, 1};
  const TensorView src(wide.bytes.data(), DType::f32, Device::cpu(), sizes, strides);
  std::vector<int32_t> idx = {4, 4, 0};
  HostTensor out(DType::f32, {3, 6});
  int32_t bad = 0;
  gather_rows(out.view(), src, index_view(idx), counter(bad));
  EXPECT_EQ(bad, 0);
  for (int c = 0; c < 6; ++c) {
    EXPECT_EQ(out.at(0, c), wide.at(4, c));
    EXPECT_EQ(out.at(2, c), wide.at(0, c));
  }
}

// An absent counter is a call that asks for no count: bad indices still give zero rows.
TEST(GatherRef, AbsentCounterCountsNothingAndStillZeroesBadRows) {
  std::mt19937_64 rng(4);
  HostTensor src(DType::f32, {4, 3}), out(DType::f32, {3, 3});
  src.randn(rng);
  out.poison();
  std::vector<int32_t> idx = {2, 4, -1};
  gather_rows(out.view(), src.view(), index_view(idx), TensorView());
  for (int c = 0; c < 3; ++c) {
    EXPECT_EQ(out.at(0, c), src.at(2, c));
    EXPECT_EQ(out.at(1, c), 0.0);
    EXPECT_EQ(out.at(2, c), 0.0);
  }
}

TEST(GatherRef, BadInputIsReported) {
  HostTensor src(DType::f32, {4, 3}), out(DType::f32, {2, 3}), wrong(DType::f32, {2, 4});
  std::vector<int32_t> idx = {0, 1};
  std::vector<float> fidx = {0, 1};
  int32_t bad = 0;
  int64_t bad64 = 0;
  const TensorView f_index(fidx.data(), DType::f32, Device::cpu(), {2});
  expect_error([&] { gather_rows(out.view(), src.view(), f_index, counter(bad)); },
               "gather_rows: argument 'index'");
  expect_error([&] { gather_rows(wrong.view(), src.view(), index_view(idx), counter(bad)); },
               "gather_rows: argument 'out': expected shape [2, 3]");
  expect_error(
      [&] {
        gather_rows(out.view(), src.view(), index_view(idx),
                    TensorView(&bad64, DType::i64, Device::cpu(), {1}));
      },
      "gather_rows: argument 'bad_indices'");
  const int64_t sizes[] = {4, 3}, strides[] = {1, 4};
  const TensorView transposed(src.bytes.data(), DType::f32, Device::cpu(), sizes, strides);
  expect_error([&] { gather_rows(out.view(), transposed, index_view(idx), counter(bad)); },
               "gather_rows: argument 'src': expected contiguous trailing dims");
}

}  // namespace
}  // namespace kiln
