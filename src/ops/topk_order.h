#pragma once
// topk's order, one definition for the references and the kernels: a ranks before b when a is
// NaN and b is not, else when a is larger, else when its index is lower (NaN ranks first, as in
// torch.topk; ties go to the lower index, so results are deterministic).
#include "core/hd.h"

namespace kiln {

template <typename F, typename I>
KILN_HD bool topk_before(F a, I ia, F b, I ib) {
  const bool na = a != a, nb = b != b;
  if (na != nb) return na;
  if (!na && a != b) return a > b;
  return ia < ib;
}

}  // namespace kiln
