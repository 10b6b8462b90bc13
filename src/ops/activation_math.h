#pragma once
// The scalar math of the activation family, one definition for the float64 reference and the
// fp32 CUDA kernels (F = double or float).
#include <cmath>

#include "core/hd.h"

namespace kiln::act {

// exp, tanh, erf in the precision of F (the single-precision functions for float on the GPU).
KILN_HD double exp_(double v) {
  return ::exp(v);
}
KILN_HD float exp_(float v) {
  return ::expf(v);
}
KILN_HD double tanh_(double v) {
  return ::tanh(v);
}
KILN_HD float tanh_(float v) {
  return ::tanhf(v);
}
KILN_HD double erf_(double v) {
  return ::erf(v);
}
KILN_HD float erf_(float v) {
  return ::erff(v);
}

enum class Kind { relu2, swiglu, gelu_erf, gelu_tanh };

// The name receipts give the kind.
inline constexpr const char* kind_name(Kind k) {
  switch (k) {
    case Kind::relu2:
      return "relu2";
    case Kind::swiglu:
      return "swiglu";
    case Kind::gelu_erf:
      return "gelu_erf";
    default:
      return "gelu_tanh";
  }
}

template <typename F>
KILN_HD F sigmoid(F g) {
  return F(1) / (F(1) + exp_(-g));  // exp(-g) = inf for very negative g gives 0, not NaN
}

// GELU and its derivative in both forms.
template <typename F>
KILN_HD void gelu(bool tanh_form, F h, F& value, F& slope) {
  if (tanh_form) {
    const F k = F(0.7978845608028654);  // sqrt(2 / pi)
    const F c = F(0.044715);
    const F t = tanh_(k * (h + c * h * h * h));
    value = F(0.5) * h * (F(1) + t);
    slope = F(0.5) * (F(1) + t) + F(0.5) * h * (F(1) - t * t) * k * (F(1) + F(3) * c * h * h);
  } else {
    const F cdf = F(0.5) * (F(1) + erf_(h * F(0.7071067811865476)));
    value = h * cdf;
    slope = cdf + h * exp_(F(-0.5) * h * h) * F(0.3989422804014327);  // 1 / sqrt(2 pi)
  }
}

// Forward: a = x (relu2), gate (swiglu) or h (gelu); b = up or g (unused by relu2).
template <typename F>
KILN_HD F forward(Kind kind, F a, F b) {
  switch (kind) {
    case Kind::relu2: {
      const F r = a > F(0) ? a : F(0);
      return r * r;
    }
    case Kind::swiglu:
      return a * sigmoid(a) * b;
    default: {
      F value, slope;
      gelu(kind == Kind::gelu_tanh, a, value, slope);
      return value * (b + F(1));
    }
  }
}

// Backward: da, db from dy (db unused by relu2).
template <typename F>
KILN_HD void backward(Kind kind, F a, F b, F dy, F& da, F& db) {
  switch (kind) {
    case Kind::relu2:
      da = dy * F(2) * (a > F(0) ? a : F(0));
      db = F(0);
      return;
    case Kind::swiglu: {
      const F s = sigmoid(a);
      da = dy * b * s * (F(1) + a * (F(1) - s));
      db = dy * a * s;
      return;
    }
    default: {
      F value, slope;
      gelu(kind == Kind::gelu_tanh, a, value, slope);
      da = dy * (b + F(1)) * slope;
      db = dy * value;
      return;
    }
  }
}

}  // namespace kiln::act
