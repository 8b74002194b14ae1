// C++ CPU backend of mrt_kernels.fused_linear_logprobs (see mrt_kernels/fused_linear_logprobs.py for the definition).
//
// z = h W^T / T is never held whole: tokens go in chunks of `chunk` rows, the vocabulary in tiles of `tile` rows of W,
// and each (chunk, tile) block of logits lives only while it is used. Matmuls and elementwise passes are ATen calls,
// which are vectorised and threaded; every tile is cast to fp32, so bf16 / fp16 inputs accumulate in fp32.
//
// Forward, per chunk, online over vocabulary tiles (running max m, l = sum exp(z - m), u = sum exp(z - m)(z - m)):
//   lse = m + log l,  logp = z_t - lse,  entropy = log l - u / l   (H = -sum p log p = lse - sum p z).
// With grad_hidden the forward also keeps acc = sum_v exp(z_v - m) W_v (rescaled like l when m grows), giving
//   d logp / d h = (W_t - sum_v p_v W_v) / T = (W_t - acc / l) / T                      (N, d)
// so the backward needs no recompute for grad_hidden: grad_h = g * that. The backward for grad_weight recomputes each
// (chunk, tile) block of logits with the same partition as the forward:
//   d logp_i / d W_v = (1[v = t_i] - p_iv) h_i / T  ->  grad_W = dZ^T (H / T),  dZ_iv = g_i (1[v = t_i] - p_iv),
// computed as onehot^T (g H / T) - P^T (g H / T) so that g scales the (n, d) chunk rather than the (n, vt) tile.
// Rows whose target is ignore_index give logp 0, entropy 0 and no gradient.
#include <torch/extension.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <tuple>

namespace {

void check_common(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets, double temperature,
                  int64_t ignore_index, int64_t chunk, int64_t tile) {
  TORCH_CHECK(hidden.dim() == 2, "hidden must be (N, d)");
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == hidden.size(1), "weight must be (V, d) with hidden's d");
  TORCH_CHECK(targets.dim() == 1 && targets.size(0) == hidden.size(0), "targets must be (N,)");
  TORCH_CHECK(targets.scalar_type() == at::kLong, "targets must be int64");
  TORCH_CHECK(hidden.scalar_type() == weight.scalar_type(), "hidden and weight must share a dtype");
  TORCH_CHECK(temperature > 0, "temperature must be > 0");
  TORCH_CHECK(chunk > 0 && tile > 0, "chunk_size and vocab_tile must be positive");
  TORCH_CHECK(hidden.device().is_cpu() && weight.device().is_cpu() && targets.device().is_cpu(),
              "the cpp backend takes CPU tensors");
  const int64_t V = weight.size(0);
  if (targets.numel() > 0) {
    const bool bad = ((targets.ne(ignore_index)) & ((targets.lt(0)) | (targets.ge(V)))).any().item<bool>();
    TORCH_CHECK(!bad, "targets must be in [0, V) or ignore_index");
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_linear_logprobs_fwd_cpu(
    const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets, double temperature,
    int64_t ignore_index, bool with_entropy, bool with_grad_hidden, int64_t chunk, int64_t tile) {
  check_common(hidden, weight, targets, temperature, ignore_index, chunk, tile);
  const int64_t N = hidden.size(0), d = hidden.size(1), V = weight.size(0);
  const auto f32 = hidden.options().dtype(at::kFloat);
  const double inv_t = 1.0 / temperature;
  auto logp = at::zeros({N}, f32);
  auto lse = at::zeros({N}, f32);
  auto entropy = with_entropy ? at::zeros({N}, f32) : at::empty({0}, f32);
  auto dlogp_dh = with_grad_hidden ? at::zeros({N, d}, f32) : at::empty({0}, f32);
  const auto tgt_all = targets.contiguous();

  for (int64_t r0 = 0; r0 < N; r0 += chunk) {
    const int64_t n = std::min(chunk, N - r0);
    const auto hs = hidden.narrow(0, r0, n).to(at::kFloat).mul(inv_t);  // (n, d): h / T, so z / T = hs W^T
    const auto tgt = tgt_all.narrow(0, r0, n);
    auto m = at::full({n}, -std::numeric_limits<float>::infinity(), f32);
    auto l = at::zeros({n}, f32);
    auto u = at::zeros({n}, f32);
    auto zt = at::zeros({n}, f32);  // target logit / T
    at::Tensor acc = with_grad_hidden ? at::zeros({n, d}, f32) : at::Tensor();

    for (int64_t v0 = 0; v0 < V; v0 += tile) {
      const int64_t vt = std::min(tile, V - v0);
      const auto w = weight.narrow(0, v0, vt).to(at::kFloat);  // (vt, d)
      auto z = at::mm(hs, w.t());                               // (n, vt) logits / T
      const auto in_tile = tgt.ge(v0) & tgt.lt(v0 + vt);
      const auto local = (tgt - v0).clamp(0, vt - 1).unsqueeze(1);
      zt = at::where(in_tile, z.gather(1, local).squeeze(1), zt);
      const auto m_new = at::maximum(m, z.amax(1));
      const auto scale = (m - m_new).exp_();  // exp(-inf) = 0 on the first tile
      z.sub_(m_new.unsqueeze(1));  // z - m_new <= 0
      at::Tensor e;
      if (with_entropy) {
        e = z.exp();
        // u = sum exp(z - m)(z - m), moved to the new max: each old term gains a factor c and (m - m_new) l.
        u = at::where(l.gt(0), (u + (m - m_new) * l) * scale, at::zeros_like(u)) + (e * z).sum(1);
      } else {
        e = z.exp_();
      }
      l = l * scale + e.sum(1);
      if (with_grad_hidden) {
        acc.mul_(scale.unsqueeze(1));
        acc.addmm_(e, w);  // (n, vt) @ (vt, d)
      }
      m = m_new;
    }

    const auto lse_c = m + l.log();
    const auto valid = tgt.ne(ignore_index);
    lse.narrow(0, r0, n).copy_(lse_c);
    logp.narrow(0, r0, n).copy_(at::where(valid, zt - lse_c, at::zeros_like(zt)));
    if (with_entropy) {
      // H = lse - sum p z = log l - u / l: two non-negative terms, no cancellation.
      entropy.narrow(0, r0, n).copy_(at::where(valid, l.log() - u / l, at::zeros_like(zt)));
    }
    if (with_grad_hidden) {
      const auto w_t = weight.index_select(0, tgt.clamp(0, V - 1)).to(at::kFloat);  // (n, d) W_{t_i}
      auto g = (w_t - acc / l.unsqueeze(1)).mul_(inv_t);
      g.mul_(valid.unsqueeze(1).to(at::kFloat));
      dlogp_dh.narrow(0, r0, n).copy_(g);
    }
  }
  return {logp, lse, entropy, dlogp_dh};
}

at::Tensor fused_linear_logprobs_bwd_weight_cpu(const at::Tensor& grad_logp, const at::Tensor& hidden,
                                                const at::Tensor& weight, const at::Tensor& targets,
                                                const at::Tensor& lse, double temperature, int64_t ignore_index,
                                                int64_t chunk, int64_t tile) {
  check_common(hidden, weight, targets, temperature, ignore_index, chunk, tile);
  const int64_t N = hidden.size(0), d = hidden.size(1), V = weight.size(0);
  TORCH_CHECK(grad_logp.dim() == 1 && grad_logp.size(0) == N, "grad_logp must be (N,)");
  TORCH_CHECK(lse.dim() == 1 && lse.size(0) == N, "lse must be (N,)");
  const auto f32 = hidden.options().dtype(at::kFloat);
  const double inv_t = 1.0 / temperature;
  auto grad_w = at::empty_like(weight, at::MemoryFormat::Contiguous);  // (V, d)
  const auto valid = targets.ne(ignore_index);
  const auto g_all = grad_logp.to(at::kFloat) * valid.to(at::kFloat);  // (N,) ignored rows carry no gradient
  const auto hs_all = hidden.to(at::kFloat).mul(inv_t);                 // (N, d) h / T
  const auto lse_all = lse.to(at::kFloat);
  const bool direct = N <= chunk && weight.scalar_type() == at::kFloat;  // one chunk: write the tile in place

  // Vocabulary tiles outside, token chunks inside: each grad_W tile is summed in fp32 and written once.
  for (int64_t v0 = 0; v0 < V; v0 += tile) {
    const int64_t vt = std::min(tile, V - v0);
    const auto w = weight.narrow(0, v0, vt).to(at::kFloat);  // (vt, d)
    auto gw_tile = grad_w.narrow(0, v0, vt);
    at::Tensor acc = direct ? gw_tile : at::zeros({vt, d}, f32);
    for (int64_t r0 = 0; r0 < N; r0 += chunk) {
      const int64_t n = std::min(chunk, N - r0);
      const auto hs = hs_all.narrow(0, r0, n);
      const auto g = g_all.narrow(0, r0, n);
      const auto tgt = targets.narrow(0, r0, n);
      const auto ghs = hs * g.unsqueeze(1);  // (n, d) g_i h_i / T
      // Same (chunk, tile) partition as the forward, so these logits equal the forward's.
      auto p = at::mm(hs, w.t());                                      // (n, vt) z / T
      p.sub_(lse_all.narrow(0, r0, n).unsqueeze(1)).exp_();           // softmax probabilities
      // grad_W[tile] = dZ^T hs = onehot^T (g hs) - P^T (g hs): g scales the (n, d) side, not the (n, vt) tile.
      if (direct) {
        at::addmm_out(acc, acc, p.t(), ghs, /*beta=*/0, /*alpha=*/-1);  // beta 0: acc's old contents unread
      } else {
        acc.addmm_(p.t(), ghs, /*beta=*/1, /*alpha=*/-1);
      }
      const auto rows = (tgt.ge(v0) & tgt.lt(v0 + vt)).nonzero().squeeze(1);
      if (rows.numel() > 0) {
        acc.index_add_(0, tgt.index_select(0, rows) - v0, ghs.index_select(0, rows));  // + g h / T at targets
      }
    }
    if (!direct) gw_tile.copy_(acc);
  }
  return grad_w;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mrt_kernels, m) {
  // -> (logp (N,) f32, lse (N,) f32 of z / T, entropy (N,) f32 or (0,), d logp / d hidden (N, d) f32 or (0,))
  m.def("fused_linear_logprobs_fwd(Tensor hidden, Tensor weight, Tensor targets, float temperature, "
        "int ignore_index, bool with_entropy, bool with_grad_hidden, int chunk_size, int vocab_tile) "
        "-> (Tensor, Tensor, Tensor, Tensor)");
  // -> grad_weight (V, d) in weight's dtype
  m.def("fused_linear_logprobs_bwd_weight(Tensor grad_logp, Tensor hidden, Tensor weight, Tensor targets, "
        "Tensor lse, float temperature, int ignore_index, int chunk_size, int vocab_tile) -> Tensor");
}

TORCH_LIBRARY_IMPL(mrt_kernels, CPU, m) {
  m.impl("fused_linear_logprobs_fwd", &fused_linear_logprobs_fwd_cpu);
  m.impl("fused_linear_logprobs_bwd_weight", &fused_linear_logprobs_bwd_weight_cpu);
}
