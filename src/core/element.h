#pragma once
// Host-side conversions between kiln's element types and double, for the reference backend and
// tests. Rounding to the narrow float types is round-to-nearest-even; fp8 conversions saturate
// to the format's largest finite value (e4m3 has no infinity) and keep NaN.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kiln/core/dtype.h"
#include "kiln/core/error.h"

namespace kiln::element {

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float bf16_to_float(uint16_t h) {
  return bits_float(uint32_t{h} << 16);
}
inline uint16_t float_to_bf16(float f) {
  uint32_t u = float_bits(f);
  if (std::isnan(f)) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fff + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}

inline float f16_to_float(uint16_t h) {
  const uint32_t sign = (h >> 15) & 1, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  float v;
  if (exp == 0) {
    v = std::ldexp(static_cast<float>(man), -24);
  } else if (exp == 31) {
    v = man ? NAN : INFINITY;
  } else {
    v = std::ldexp(static_cast<float>(man | 0x400), static_cast<int>(exp) - 25);
  }
  return sign ? -v : v;
}

// Round a finite |value| to a float format with `man_bits` mantissa bits and minimum normal
// exponent `min_exp` (value = 1.m * 2^e), nearest-even, subnormals included.
inline double round_to_format(double a, int man_bits, int min_exp) {
  if (a == 0) return 0;
  int e;
  std::frexp(a, &e);  // a = f * 2^e, f in [0.5, 1)
  int exp = e - 1;
  if (exp < min_exp) exp = min_exp;
  const double quantum = std::ldexp(1.0, exp - man_bits);
  return std::nearbyint(a / quantum) * quantum;  // default rounding mode is nearest-even
}

inline uint16_t float_to_f16(float f) {
  if (std::isnan(f)) return 0x7e00;
  const uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  double a = round_to_format(std::fabs(static_cast<double>(f)), 10, -14);
  if (a >= 65520.0 || std::isinf(f)) return sign | 0x7c00;
  if (a == 0) return sign;
  int e;
  std::frexp(a, &e);
  int exp = e - 1;
  if (exp < -14) return sign | static_cast<uint16_t>(std::ldexp(a, 24));  // subnormal
  const uint16_t man = static_cast<uint16_t>(std::ldexp(a, 10 - exp) - 1024);
  return sign | static_cast<uint16_t>((exp + 15) << 10) | man;
}

// fp8 from fp32 by bit arithmetic (these run over every element of the reference's and the
// tests' large tensors): round to nearest even with `kMan` mantissa bits and exponent bias
// `kBias`, saturate to the largest finite code `kMaxCode` (of value kMax), NaN to `kNan`.
template <int kMan, int kBias, uint8_t kMaxCode, uint8_t kNan>
inline uint8_t float_to_fp8(float f, float kMax) {
  if (std::isnan(f)) return kNan;
  const uint32_t u = float_bits(f);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80);
  const uint32_t a = u & 0x7fffffff;
  if (bits_float(a) >= kMax) return sign | kMaxCode;  // and infinity
  const int e = static_cast<int>(a >> 23) - 127;
  if (e >= 1 - kBias) {  // normal: keep kMan bits of the mantissa, rounding the rest
    constexpr int kDrop = 23 - kMan;
    const uint32_t r = a + ((1u << (kDrop - 1)) - 1) + ((a >> kDrop) & 1);
    return sign | static_cast<uint8_t>((r >> kDrop) - (static_cast<uint32_t>(127 - kBias) << kMan));
  }
  if (a < 0x00800000) return sign;  // fp32 subnormal: far below half the smallest fp8 one
  // fp8 subnormal: code = round(m * 2^(e - 23) / 2^(1 - kBias - kMan)) for the 24-bit
  // significand m, i.e. m shifted right by `sh` bits, rounded to nearest even.
  const uint32_t m = (a & 0x7fffff) | 0x800000;
  const int sh = 23 + (1 - kBias - kMan) - e;
  if (sh >= 32) return sign;
  const uint32_t q = m >> sh, rem = m & ((1u << sh) - 1), half = 1u << (sh - 1);
  return sign | static_cast<uint8_t>(q + (rem > half || (rem == half && (q & 1))));
}

// fp8 e4m3 (OCP "fn": bias 7, no infinity, max 448, NaN = S.1111.111).
inline float e4m3_to_float(uint8_t b) {
  const uint32_t sign = static_cast<uint32_t>(b & 0x80) << 24, exp = (b >> 3) & 0xf, man = b & 7;
  if (exp == 15 && man == 7) return NAN;
  if (exp == 0) return bits_float(float_bits(static_cast<float>(man) * (1.f / 512)) | sign);
  return bits_float(sign | ((exp + 120) << 23) | (man << 20));
}
inline uint8_t float_to_e4m3(float f) {
  return float_to_fp8<3, 7, 0x7e, 0x7f>(f, 448.f);
}

// fp8 e5m2 (bias 15, has infinity; saturating conversion clamps to 57344).
inline float e5m2_to_float(uint8_t b) {
  const uint32_t sign = static_cast<uint32_t>(b & 0x80) << 24, exp = (b >> 2) & 0x1f, man = b & 3;
  if (exp == 31) return man ? NAN : bits_float(sign | 0x7f800000);
  if (exp == 0) return bits_float(float_bits(static_cast<float>(man) * (1.f / 65536)) | sign);
  return bits_float(sign | ((exp + 112) << 23) | (man << 21));
}
inline uint8_t float_to_e5m2(float f) {
  return float_to_fp8<2, 15, 0x7b, 0x7f>(f, 57344.f);
}

// Reads element `i` (an offset in elements) of a buffer of `dtype` as double.
inline double load(const void* data, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::f32:
      return static_cast<const float*>(data)[i];
    case DType::bf16:
      return bf16_to_float(static_cast<const uint16_t*>(data)[i]);
    case DType::f16:
      return f16_to_float(static_cast<const uint16_t*>(data)[i]);
    case DType::f8e4m3:
      return e4m3_to_float(static_cast<const uint8_t*>(data)[i]);
    case DType::f8e5m2:
      return e5m2_to_float(static_cast<const uint8_t*>(data)[i]);
    case DType::i32:
      return static_cast<const int32_t*>(data)[i];
    case DType::i64:
      return static_cast<double>(static_cast<const int64_t*>(data)[i]);
    case DType::u8:
      return static_cast<const uint8_t*>(data)[i];
    case DType::boolean:
      return static_cast<const uint8_t*>(data)[i] != 0;
  }
  throw Error("element::load: unknown dtype");
}

// Writes `v` to element `i`, rounding as the dtype requires (float types round through float).
inline void store(void* data, DType dtype, int64_t i, double v) {
  const float f = static_cast<float>(v);
  switch (dtype) {
    case DType::f32:
      static_cast<float*>(data)[i] = f;
      return;
    case DType::bf16:
      static_cast<uint16_t*>(data)[i] = float_to_bf16(f);
      return;
    case DType::f16:
      static_cast<uint16_t*>(data)[i] = float_to_f16(f);
      return;
    case DType::f8e4m3:
      static_cast<uint8_t*>(data)[i] = float_to_e4m3(f);
      return;
    case DType::f8e5m2:
      static_cast<uint8_t*>(data)[i] = float_to_e5m2(f);
      return;
    case DType::i32:
      static_cast<int32_t*>(data)[i] = static_cast<int32_t>(v);
      return;
    case DType::i64:
      static_cast<int64_t*>(data)[i] = static_cast<int64_t>(v);
      return;
    case DType::u8:
      static_cast<uint8_t*>(data)[i] = static_cast<uint8_t>(v);
      return;
    case DType::boolean:
      static_cast<uint8_t*>(data)[i] = v != 0;
      return;
  }
  throw Error("element::store: unknown dtype");
}

}  // namespace kiln::element
