#include "ref/rope.h"

#include "core/element.h"

namespace kiln::ref {
namespace {

using element::load;
using element::store;

// One head of q or k at token t: rotated by the angles of `row` (cos | sin, or nullptr for a bad
// position: the head is passed through), its tail [R, D) copied when out of place.
void rope_head(const RopeProblem& p, const RopeHeads& x, int64_t t, int64_t h, const float* row) {
  const int64_t in = t * x.in_token_stride + h * x.in_head_stride;
  const int64_t out = t * x.out_token_stride + h * x.out_head_stride;
  const int64_t half = p.rotary_dim / 2;
  const int64_t copied_from = row == nullptr ? 0 : p.rotary_dim;
  if (row != nullptr) {
    const double sign = p.inverse ? -1.0 : 1.0;
    for (int64_t i = 0; i < half; ++i) {
      const int64_t a = p.layout == RopeLayout::neox ? i : 2 * i;
      const int64_t b = p.layout == RopeLayout::neox ? i + half : 2 * i + 1;
      const double c = row[i], s = sign * row[half + i];
      const double x1 = load(x.in, p.dtype, in + a), x2 = load(x.in, p.dtype, in + b);
      store(x.out, p.dtype, out + a, x1 * c - x2 * s);
      store(x.out, p.dtype, out + b, x2 * c + x1 * s);
    }
  }
  if (x.in_place()) return;
  for (int64_t d = copied_from; d < p.head_dim; ++d) {
    store(x.out, p.dtype, out + d, load(x.in, p.dtype, in + d));
  }
}

}  // namespace

void rope(const RopeProblem& p) {
  for (int64_t t = 0; t < p.tokens; ++t) {
    const int64_t pos = p.positions[t];
    const bool ok = pos >= 0 && pos < p.max_position;
    if (!ok && p.bad_positions != nullptr) ++*p.bad_positions;
    const float* row = ok ? p.cos_sin + pos * p.rotary_dim : nullptr;
    for (const RopeHeads* x : {&p.q, &p.k}) {
      for (int64_t h = 0; h < x->heads; ++h) rope_head(p, *x, t, h, row);
    }
  }
}

}  // namespace kiln::ref
