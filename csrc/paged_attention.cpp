// Paged attention on the CPU: schema and C++ kernel.
//
//   paged_attention(q, k_cache, v_cache, block_tables, context_lens, cu_seqlens_q, max_seqlen_q, max_context_len,
//                   scale) -> out
//     q (N, Hq, D) with unit stride in D; k_cache / v_cache (num_blocks, block_size, Hkv, D) contiguous;
//     block_tables (B, max_blocks) int32; context_lens (B,) int32; cu_seqlens_q (B+1,) int32; out (N, Hq, D).
//     Sequence b's q_len_b new tokens are its last ones: token j sits at position ctx_b - q_len_b + j and sees key
//     positions 0..that position, read from block block_tables[b, p / block_size], slot p % block_size.
//
// Why a kernel of its own: the other CPU path gathers every sequence's blocks into a padded copy per layer and step.
// Branches forked from one trace share its blocks, so that copy is many times the memory actually read; here each
// key row is read in place and stays in cache across the branches that share it.
//
// Work item = (sequence, KV head, tile of up to kTileTokens new tokens); items run in parallel. The item's rows are
// its tokens under each of the G = Hq / Hkv query heads that read this KV head (GQA); it keeps them in fp32 and walks
// the visible blocks once with the online softmax (running max m, sum l, accumulator acc per row), so each key and
// value row is loaded once for all the rows. Scores, softmax and accumulation are fp32 whatever the cache dtype.
// (Walking the blocks that forked branches share once per group of branches was tried and measured no faster here:
// a trace's blocks fit in L2, so the per-sequence walk already reads them from cache.)
//
// The Python launcher (mrt_kernels/paged_attention.py) checks shapes, dtypes and the metadata's values and raises
// ValueError naming the argument; the TORCH_CHECKs here only guard memory when the op is called directly.
#include <torch/extension.h>
#include <torch/library.h>

#include <ATen/Parallel.h>

#include <algorithm>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

namespace {

constexpr int64_t kTileTokens = 16;   // query tokens per work item: bounds the fp32 buffers of a prefill tile

// Dot product with 8 independent partial sums, so the compiler vectorises it without reassociating a reduction.
inline float dot(const float* a, const float* b, int64_t n) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int u = 0; u < 8; ++u) s[u] += a[i + u] * b[i + u];
  float r = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  for (; i < n; ++i) r += a[i] * b[i];
  return r;
}

// exp(x) for x <= 0 without a libm call, so a loop of them vectorises: x = n ln2 + f with |f| <= ln2 / 2
// (ln2 split in two for an exact product), e^f by its degree-6 Taylor polynomial (relative error < 2e-7, about
// one fp32 ulp), times 2^n built in the exponent bits. Below -87 (e^x under fp32's normal range) it returns 0.
inline float exp_nonpositive(float x) {
  const float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693145751953125f, kLn2Lo = 1.428606765330187e-06f;
  const float xc = x < -87.f ? -87.f : x;
  const float n = __builtin_floorf(xc * kLog2e + 0.5f);
  const float f = (xc - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.f / 720.f;
  p = p * f + 1.f / 120.f;
  p = p * f + 1.f / 24.f;
  p = p * f + 1.f / 6.f;
  p = p * f + 0.5f;
  p = p * f + 1.f;
  p = p * f + 1.f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  __builtin_memcpy(&scale, &bits, sizeof scale);
  return x < -87.f ? 0.f : p * scale;
}

template <typename scalar_t>
inline void to_float(const scalar_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

struct WorkItem {
  int64_t seq, kv_head, tok_begin, tok_end;   // new tokens [tok_begin, tok_end) of sequence seq (0-based in it)
};

struct Problem {                              // the op's arguments, as raw pointers and sizes
  const void* q;
  const void* k_cache;
  const void* v_cache;
  void* out;
  const int32_t* tables;
  const int32_t* ctx_lens;
  const int32_t* cu;
  const WorkItem* items;
  int64_t table_width, num_q_heads, num_kv_heads, dim, block_size, qs0, qs1;
  float scale;
};

// Per-thread fp32 buffers, sized for the largest tile.
struct Scratch {
  std::vector<float> qf, acc, m, l, scores, probs, kbuf, vbuf;
  std::vector<int64_t> row_pos;
  Scratch(int64_t rows, int64_t dim, int64_t block_size)
      : qf(rows * dim), acc(rows * dim), m(rows), l(rows), scores(block_size), probs(block_size),
        kbuf(block_size * dim), vbuf(block_size * dim), row_pos(rows) {}
};

// s[i] = q . key_i for the n keys of a block: the portable loop, one dot product at a time.
__attribute__((always_inline)) inline void block_scores(const float* q, const float* keys, int64_t key_stride,
                                                        int64_t n, int64_t dim, float* s) {
  for (int64_t i = 0; i < n; ++i) s[i] = dot(q, keys + i * key_stride, dim);
}

#if defined(__x86_64__) && defined(__GNUC__)
// The same with AVX2 + FMA for dim % 8 == 0: eight keys at a time, each accumulated in one 8-lane register over the
// head dim, then the eight registers reduced to one register of eight sums by a tree of horizontal adds (7 shuffle
// ops for 8 dot products instead of 7 per dot product).
// (Called, not inlined: GCC inlines an AVX2 function only into callers compiled for AVX2 themselves, and its caller
// is a template shared by both builds.)
__attribute__((target("avx2,fma"))) void block_scores_avx2(const float* q, const float* keys, int64_t key_stride,
                                                            int64_t n, int64_t dim, float* s) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 acc[8];
    for (int u = 0; u < 8; ++u) acc[u] = _mm256_setzero_ps();
    for (int64_t d = 0; d < dim; d += 8) {
      const __m256 qv = _mm256_loadu_ps(q + d);
      for (int u = 0; u < 8; ++u) acc[u] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(keys + (i + u) * key_stride + d), acc[u]);
    }
    // hadd(a, b) = [a0+a1, a2+a3, b0+b1, b2+b3 | a4+a5, a6+a7, b4+b5, b6+b7] (per 128-bit half)
    const __m256 h01 = _mm256_hadd_ps(acc[0], acc[1]), h23 = _mm256_hadd_ps(acc[2], acc[3]);
    const __m256 h45 = _mm256_hadd_ps(acc[4], acc[5]), h67 = _mm256_hadd_ps(acc[6], acc[7]);
    const __m256 low4 = _mm256_hadd_ps(h01, h23), high4 = _mm256_hadd_ps(h45, h67);   // keys 0-3 | 4-7, per half
    const __m256 halves_a = _mm256_permute2f128_ps(low4, high4, 0x20);                // first halves, keys 0-7
    const __m256 halves_b = _mm256_permute2f128_ps(low4, high4, 0x31);                // second halves, keys 0-7
    _mm256_storeu_ps(s + i, _mm256_add_ps(halves_a, halves_b));
  }
  for (; i < n; ++i) s[i] = dot(q, keys + i * key_stride, dim);
}
#endif

// Rows [0, rows) take keys [0, n_keys) of one block (row r sees those at positions <= row_pos[r]; the block's first
// key is at position key_pos0): scores, online-softmax update of m, l and acc.
template <bool kAvx2>
__attribute__((always_inline)) inline void attend_block(Scratch& S, int64_t rows, const float* keys,
                                                        const float* values, int64_t key_stride, int64_t n_keys,
                                                        int64_t key_pos0, int64_t dim) {
  float* s = S.scores.data();
  float* p = S.probs.data();
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t visible = std::min<int64_t>(n_keys, S.row_pos[r] - key_pos0 + 1);
    if (visible <= 0) continue;
    const float* qr = S.qf.data() + r * dim;
#if defined(__x86_64__) && defined(__GNUC__)
    if constexpr (kAvx2) {
      if (dim % 8 == 0) block_scores_avx2(qr, keys, key_stride, visible, dim, s);
      else block_scores(qr, keys, key_stride, visible, dim, s);
    } else {
      block_scores(qr, keys, key_stride, visible, dim, s);
    }
#else
    block_scores(qr, keys, key_stride, visible, dim, s);
#endif
    float block_max = -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < visible; ++i) block_max = std::max(block_max, s[i]);
    const float m_new = std::max(S.m[r], block_max);
    const float alpha = std::exp(S.m[r] - m_new);        // exp(-inf) = 0 on the row's first block
    for (int64_t i = 0; i < visible; ++i) p[i] = exp_nonpositive(s[i] - m_new);    // no reduction: vectorises
    float sum = 0.f;
    for (int64_t i = 0; i < visible; ++i) sum += p[i];
    // acc = alpha * acc + sum_i p_i v_i, eight lanes of acc at a time held in registers across the block's keys
    float* __restrict a = S.acc.data() + r * dim;
    int64_t d0 = 0;
    for (; d0 + 8 <= dim; d0 += 8) {
      float t[8];
      for (int u = 0; u < 8; ++u) t[u] = a[d0 + u] * alpha;
      for (int64_t i = 0; i < visible; ++i) {
        const float* __restrict vr = values + i * key_stride + d0;
        const float pi = p[i];
        for (int u = 0; u < 8; ++u) t[u] += pi * vr[u];
      }
      for (int u = 0; u < 8; ++u) a[d0 + u] = t[u];
    }
    for (; d0 < dim; ++d0) {
      float t = a[d0] * alpha;
      for (int64_t i = 0; i < visible; ++i) t += p[i] * values[i * key_stride + d0];
      a[d0] = t;
    }
    S.l[r] = S.l[r] * alpha + sum;
    S.m[r] = m_new;
  }
}

// The item's rows take keys [0, n_keys) of block `block` (table entry j) of KV head h; 16-bit caches are widened to
// fp32 first. A plain function, not a lambda: a lambda is compiled for the default ISA even inside an AVX2 function.
template <typename scalar_t, bool kAvx2>
__attribute__((always_inline)) inline void attend(const Problem& P, Scratch& S, int64_t rows, int64_t block,
                                                  int64_t j, int64_t n_keys, int64_t h) {
  const int64_t dim = P.dim, slot_stride = P.num_kv_heads * dim;
  const int64_t base = block * P.block_size * slot_stride + h * dim;
  const scalar_t* kc = static_cast<const scalar_t*>(P.k_cache) + base;
  const scalar_t* vc = static_cast<const scalar_t*>(P.v_cache) + base;
  if constexpr (std::is_same_v<scalar_t, float>) {
    attend_block<kAvx2>(S, rows, kc, vc, slot_stride, n_keys, j * P.block_size, dim);
  } else {
    for (int64_t i = 0; i < n_keys; ++i) {
      to_float(kc + i * slot_stride, S.kbuf.data() + i * dim, dim);
      to_float(vc + i * slot_stride, S.vbuf.data() + i * dim, dim);
    }
    attend_block<kAvx2>(S, rows, S.kbuf.data(), S.vbuf.data(), dim, n_keys, j * P.block_size, dim);
  }
}

// Work items [begin, end). Always inlined into the two entry points below, so each is compiled for its own ISA.
template <typename scalar_t, bool kAvx2>
__attribute__((always_inline)) inline void run_items(const Problem& P, Scratch& S, int64_t begin, int64_t end) {
  const int64_t group = P.num_q_heads / P.num_kv_heads, dim = P.dim, block_size = P.block_size;
  const scalar_t* qp = static_cast<const scalar_t*>(P.q);
  scalar_t* op = static_cast<scalar_t*>(P.out);
  for (int64_t it = begin; it < end; ++it) {
    const WorkItem& w = P.items[it];
    const int64_t q_len = P.cu[w.seq + 1] - P.cu[w.seq], first_pos = P.ctx_lens[w.seq] - q_len;
    const int64_t rows = (w.tok_end - w.tok_begin) * group;
    // Row r = (token t, head g of the group): query head kv_head * G + g of token cu[b] + t, at first_pos + t.
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t t = w.tok_begin + r / group, h = w.kv_head * group + r % group;
      const scalar_t* src = qp + (P.cu[w.seq] + t) * P.qs0 + h * P.qs1;
      float* dst = S.qf.data() + r * dim;
      for (int64_t d = 0; d < dim; ++d) dst[d] = static_cast<float>(src[d]) * P.scale;
      S.row_pos[r] = first_pos + t;
      S.m[r] = -std::numeric_limits<float>::infinity();
      S.l[r] = 0.f;
    }
    std::fill(S.acc.begin(), S.acc.begin() + rows * dim, 0.f);
    const int64_t last_pos = first_pos + w.tok_end - 1;    // the tile's furthest visible key
    const int32_t* table = P.tables + w.seq * P.table_width;
    for (int64_t j = 0; j * block_size <= last_pos; ++j)
      attend<scalar_t, kAvx2>(P, S, rows, table[j], j, std::min(block_size, last_pos + 1 - j * block_size), w.kv_head);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t t = w.tok_begin + r / group, h = w.kv_head * group + r % group;
      scalar_t* dst = op + ((P.cu[w.seq] + t) * P.num_q_heads + h) * dim;
      const float inv = S.l[r] > 0.f ? 1.f / S.l[r] : 0.f;
      const float* a = S.acc.data() + r * dim;
      for (int64_t d = 0; d < dim; ++d) dst[d] = static_cast<scalar_t>(a[d] * inv);
    }
  }
}

// Two builds of the same loops: AVX2 + FMA (8-wide fused multiply-adds), chosen at run time where the CPU has them,
// and the baseline x86-64 / other-architecture build everywhere else.
template <typename scalar_t>
void run_items_baseline(const Problem& P, Scratch& S, int64_t begin, int64_t end) {
  run_items<scalar_t, false>(P, S, begin, end);
}

#if defined(__x86_64__) && defined(__GNUC__)
template <typename scalar_t>
__attribute__((target("avx2,fma"))) void run_items_avx2(const Problem& P, Scratch& S, int64_t begin, int64_t end) {
  run_items<scalar_t, true>(P, S, begin, end);
}

bool cpu_has_avx2_fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
#endif

template <typename scalar_t>
void paged_attention_kernel(const Problem& P, int64_t num_items, int64_t max_rows) {
  at::parallel_for(0, num_items, 1, [&](int64_t begin, int64_t end) {
    Scratch scratch(max_rows, P.dim, P.block_size);
#if defined(__x86_64__) && defined(__GNUC__)
    if (cpu_has_avx2_fma()) {
      run_items_avx2<scalar_t>(P, scratch, begin, end);
      return;
    }
#endif
    run_items_baseline<scalar_t>(P, scratch, begin, end);
  });
}

at::Tensor paged_attention_cpu(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                               const at::Tensor& block_tables, const at::Tensor& context_lens,
                               const at::Tensor& cu_seqlens_q, int64_t max_seqlen_q, int64_t max_context_len,
                               double scale) {
  TORCH_CHECK(q.dim() == 3 && q.stride(2) == 1, "paged_attention: q must be (N, Hq, D) with unit stride in D");
  TORCH_CHECK(k_cache.dim() == 4 && v_cache.sizes() == k_cache.sizes() && k_cache.is_contiguous() &&
                  v_cache.is_contiguous(), "paged_attention: caches must be contiguous (num_blocks, bs, Hkv, D)");
  TORCH_CHECK(q.scalar_type() == at::kFloat || q.scalar_type() == at::kBFloat16 || q.scalar_type() == at::kHalf,
              "paged_attention: the C++ kernel takes fp32 / bf16 / fp16 (it accumulates in fp32)");
  TORCH_CHECK(k_cache.scalar_type() == q.scalar_type() && v_cache.scalar_type() == q.scalar_type(),
              "paged_attention: cache dtypes differ from q");
  TORCH_CHECK(k_cache.size(3) == q.size(2) && q.size(1) % k_cache.size(2) == 0,
              "paged_attention: head dims differ or Hq is not a multiple of Hkv");
  TORCH_CHECK(block_tables.dim() == 2 && block_tables.scalar_type() == at::kInt &&
                  context_lens.scalar_type() == at::kInt && cu_seqlens_q.scalar_type() == at::kInt,
              "paged_attention: block_tables, context_lens, cu_seqlens_q must be int32");
  const int64_t batch = block_tables.size(0), width = block_tables.size(1);
  TORCH_CHECK(context_lens.numel() == batch && cu_seqlens_q.numel() == batch + 1,
              "paged_attention: context_lens must be (B,) and cu_seqlens_q (B+1,)");
  at::Tensor tables = block_tables.contiguous(), ctx_t = context_lens.contiguous(), cu_t = cu_seqlens_q.contiguous();
  const int32_t* tp = tables.data_ptr<int32_t>();
  const int32_t* ctx = ctx_t.data_ptr<int32_t>();
  const int32_t* cu = cu_t.data_ptr<int32_t>();
  const int64_t n_tokens = q.size(0), num_kv_heads = k_cache.size(2);
  const int64_t block_size = k_cache.size(1), num_blocks = k_cache.size(0);
  TORCH_CHECK(cu[0] == 0 && cu[batch] == n_tokens, "paged_attention: cu_seqlens_q must run from 0 to N");

  std::vector<WorkItem> items;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t q_len = cu[b + 1] - cu[b];
    TORCH_CHECK(q_len >= 0 && ctx[b] >= q_len && ctx[b] <= width * block_size,
                "paged_attention: sequence ", b, " has bad q_len / context_lens");
    for (int64_t j = 0; j * block_size < ctx[b]; ++j)
      TORCH_CHECK(tp[b * width + j] >= 0 && tp[b * width + j] < num_blocks,
                  "paged_attention: block_tables[", b, ", ", j, "] out of range");
    for (int64_t t = 0; t < q_len; t += kTileTokens)
      for (int64_t h = 0; h < num_kv_heads; ++h) items.push_back({b, h, t, std::min(q_len, t + kTileTokens)});
  }
  at::Tensor out = at::empty({n_tokens, q.size(1), q.size(2)}, q.options());
  if (items.empty()) return out;
  const Problem problem{q.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), out.data_ptr(), tp, ctx, cu,
                        items.data(), width, q.size(1), num_kv_heads, q.size(2), block_size, q.stride(0),
                        q.stride(1), static_cast<float>(scale)};
  const int64_t max_rows = kTileTokens * (q.size(1) / num_kv_heads);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "paged_attention_cpu", [&] {
    paged_attention_kernel<scalar_t>(problem, static_cast<int64_t>(items.size()), max_rows);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mrt_kernels, m) {
  m.def("paged_attention(Tensor q, Tensor k_cache, Tensor v_cache, Tensor block_tables, Tensor context_lens, "
        "Tensor cu_seqlens_q, int max_seqlen_q, int max_context_len, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(mrt_kernels, CPU, m) { m.impl("paged_attention", &paged_attention_cpu); }
