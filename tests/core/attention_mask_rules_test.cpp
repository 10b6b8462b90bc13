// The attention mask rules (src/attention/mask_rules.h): hand-worked visibility, and the tile-skip
// predicate checked exhaustively against the per-pair rule on small sequences — exact for
// causality, windows and validity, never skipping a visible pair with documents.
#include "attention/mask_rules.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace kiln::attention {
namespace {

std::string row_of(const MaskRules& r, const SequenceShape& s, int64_t i) {
  std::string out;
  for (int64_t j = 0; j < s.lk; ++j) out += visible(r, s, i, j, 0, 0) ? '1' : '.';
  return out;
}

TEST(MaskRules, CausalIsBottomRightAligned) {
  const MaskRules causal{true, -1, -1};
  const SequenceShape square{3, 3, 3, 3}, fewer_queries{2, 4, 2, 4};
  EXPECT_EQ(row_of(causal, square, 0), "1..");
  EXPECT_EQ(row_of(causal, square, 2), "111");
  // Two queries at the last two of four key positions.
  EXPECT_EQ(row_of(causal, fewer_queries, 0), "111.");
  EXPECT_EQ(row_of(causal, fewer_queries, 1), "1111");
}

TEST(MaskRules, WindowAndValidity) {
  const MaskRules local{true, 1, -1};  // causal, itself and one key back
  const SequenceShape s{4, 4, 4, 4};
  EXPECT_EQ(row_of(local, s, 0), "1...");
  EXPECT_EQ(row_of(local, s, 3), "..11");
  const MaskRules both{false, 1, 1};
  EXPECT_EQ(row_of(both, s, 1), "111.");
  const SequenceShape padded{4, 4, 3, 2};  // 3 valid queries, 2 valid keys
  EXPECT_EQ(row_of(MaskRules{}, padded, 0), "11..");
  EXPECT_EQ(row_of(MaskRules{}, padded, 3), "....");  // past the valid queries: sees nothing
}

TEST(MaskRules, DocumentsSeparateTokens) {
  const SequenceShape s{4, 4, 4, 4};
  EXPECT_TRUE(visible(MaskRules{true, -1, -1}, s, 3, 2, 7, 7));
  EXPECT_FALSE(visible(MaskRules{true, -1, -1}, s, 3, 2, 7, 6));
}

bool any_visible(const MaskRules& r, const SequenceShape& s, const Tile& t,
                 const std::vector<int64_t>& doc_q, const std::vector<int64_t>& doc_k) {
  for (int64_t i = t.q0; i < t.q1; ++i) {
    for (int64_t j = t.k0; j < t.k1; ++j) {
      if (visible(r, s, i, j, doc_q.empty() ? 0 : doc_q[i], doc_k.empty() ? 0 : doc_k[j])) {
        return true;
      }
    }
  }
  return false;
}

std::vector<MaskRules> all_rules() {
  std::vector<MaskRules> rules;
  for (bool causal : {false, true}) {
    for (int64_t left : {-1, 0, 1, 3}) {
      for (int64_t right : {-1, 0, 2}) rules.push_back({causal, left, right});
    }
  }
  return rules;
}

// f(rules, shape, what) for every rule set and every sequence of up to 6 queries and 6 keys with
// every valid prefix; `what` describes them for a failure message.
template <typename F>
void for_each_small_sequence(F&& f) {
  for (const MaskRules& r : all_rules()) {
    for (int64_t lq = 0; lq <= 6; ++lq) {
      for (int64_t lk = 0; lk <= 6; ++lk) {
        for (int64_t vq = 0; vq <= lq; ++vq) {
          for (int64_t vk = 0; vk <= lk; ++vk) {
            const std::string what =
                "causal " + std::to_string(r.causal) + " left " + std::to_string(r.window_left) +
                " right " + std::to_string(r.window_right) + " lq " + std::to_string(lq) + " lk " +
                std::to_string(lk) + " valid " + std::to_string(vq) + "/" + std::to_string(vk);
            f(r, SequenceShape{lq, lk, vq, vk}, what);
          }
        }
      }
    }
  }
}

TEST(MaskRules, TileSkipIsExactWithoutDocuments) {
  int64_t tiles = 0, skipped = 0;
  for_each_small_sequence([&](const MaskRules& r, const SequenceShape& s, const std::string& what) {
    for (int64_t q0 = 0; q0 < s.lq; ++q0) {
      for (int64_t q1 = q0 + 1; q1 <= s.lq; ++q1) {
        for (int64_t k0 = 0; k0 < s.lk; ++k0) {
          for (int64_t k1 = k0 + 1; k1 <= s.lk; ++k1) {
            const Tile t{q0, q1, k0, k1};
            const bool want = any_visible(r, s, t, {}, {});
            ++tiles;
            skipped += !want;
            ASSERT_EQ(tile_may_be_visible(r, s, t), want)
                << what << " tile q[" << q0 << "," << q1 << ") k[" << k0 << "," << k1 << ")";
          }
        }
      }
    }
  });
  // The sweep must exercise both answers.
  EXPECT_GT(skipped, tiles / 10);
  EXPECT_LT(skipped, tiles);
}

TEST(MaskRules, VisibleQueriesAreExactlyTheRowsThatSeeTheKeys) {
  int64_t ranges = 0, empty = 0;
  for_each_small_sequence([&](const MaskRules& r, const SequenceShape& s, const std::string& what) {
    for (int64_t k0 = 0; k0 < s.lk; ++k0) {
      for (int64_t k1 = k0 + 1; k1 <= s.lk; ++k1) {
        const QueryRange got = visible_queries(r, s, k0, k1);
        ++ranges;
        empty += got.lo >= got.hi;
        for (int64_t i = 0; i < s.lq; ++i) {
          const bool want = any_visible(r, s, Tile{i, i + 1, k0, k1}, {}, {});
          ASSERT_EQ(i >= got.lo && i < got.hi, want)
              << what << " keys [" << k0 << "," << k1 << ") row " << i << " range [" << got.lo
              << "," << got.hi << ")";
        }
      }
    }
  });
  EXPECT_GT(empty, ranges / 20);  // the sweep exercises empty ranges and non-empty ones
  EXPECT_LT(empty, ranges);
}

TEST(MaskRules, TileSkipNeverHidesAVisiblePairWithDocuments) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 400; ++trial) {
    const int64_t lk = 1 + rng() % 12, lq = 1 + rng() % lk;
    // Non-decreasing document ids over the key positions; the queries are the last lq keys.
    std::vector<int64_t> doc_k(lk);
    int64_t doc = 0;
    for (int64_t j = 0; j < lk; ++j) doc_k[j] = doc += rng() % 3 == 0;
    const std::vector<int64_t> doc_q(doc_k.end() - lq, doc_k.end());
    const SequenceShape s{lq, lk, lq, lk};
    for (const MaskRules& r : all_rules()) {
      for (int64_t q0 = 0; q0 < lq; ++q0) {
        for (int64_t q1 = q0 + 1; q1 <= lq; ++q1) {
          for (int64_t k0 = 0; k0 < lk; ++k0) {
            for (int64_t k1 = k0 + 1; k1 <= lk; ++k1) {
              const Tile t{q0, q1, k0, k1, doc_q[q0], doc_q[q1 - 1], doc_k[k0], doc_k[k1 - 1]};
              if (any_visible(r, s, t, doc_q, doc_k)) {
                ASSERT_TRUE(tile_may_be_visible(r, s, t)) << "trial " << trial;
              }
            }
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace kiln::attention
