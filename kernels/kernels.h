// kernels.h: the one interface to the compute kernels. A model calls these and
// never branches on the backend. Defines: real, every *_forward/*_backward pair,
// the optimizer updates and the counter-based RNG used by dropout.
//
// Shapes (row-major, last index fastest):
//   B batch, L sequence length, d width, H heads (d % H == 0), hd = d / H,
//   R rows (= B*L, or any number of positions), V rows of the item table (N+1).
// pad[b] is the number of leading padding positions of sequence b: sequences
// are left-padded, so positions pad[b]..L-1 hold items and the rest are 0.
//
// Conventions:
//   - Every *_backward ACCUMULATES (+=) into its gradient outputs; the caller
//     zeroes gradients once per step. A NULL gradient pointer is skipped.
//   - The same sources build with real = float (the trainer) and, with
//     -DKERNELS_F64, real = double (the finite-difference tests).
//   - Kernels never allocate; scratch buffers are passed in, sized in comments.
#ifndef ELASTIC_KERNELS_H
#define ELASTIC_KERNELS_H

#include <stdint.h>

#ifdef KERNELS_F64
typedef double real;
#else
typedef float real;
#endif

// ---- RNG: counter-based, so dropout masks are recomputed in backward and a
// resumed run draws exactly what an uninterrupted one would.
// rng_hash64 = mix(mix(seed) + (counter + 1) * 0x9E3779B97F4A7C15), mix being
// the splitmix64 finaliser (every backend must draw the same bits).
uint64_t rng_hash64(uint64_t seed, uint64_t counter);
// uniform in [0,1): the top 53 bits of rng_hash64 times 2^-53
double rng_uniform(uint64_t seed, uint64_t counter);

// ---- rows of a [*, d] table, and a norm
// out[r] = in[rows[r]] for r < R (out[R,d]; rows on the device)
void rows_gather(real* out, const real* in, const int32_t* rows, int R, int d);
// out[rows[r]] = in[r] for r < R (rows distinct; other rows of out untouched)
void rows_scatter(real* out, const real* in, const int32_t* rows, int R, int d);
// the sum of x[i]^2 over n, in double (the same bits for a given thread count)
double sum_squares(const real* x, int64_t n);
// the same into out[0], in device memory: nothing waits for the device
void sum_squares_into(double* out, const real* x, int64_t n);

// ---- the memory bank's exchange plan (src/bank.c): global row id lives on
// rank id % P at local row id / P.
// The ids[n] (each in [0, rows)) deduplicated and grouped by owner: uniq[u]
// the distinct ids, by owner, then by local row ascending; row[i] the
// position of ids[i] in uniq; perm[n] the positions i by (row[i], i), and
// first[u + 1] where each distinct id's positions start in perm (first[u] =
// n); counts[P], in HOST memory, the distinct ids of each owner. work:
// scratch of 3n uint64. Returns u, or -1 if an id is out of range. On CUDA
// this waits for the device (its result sizes the exchange).
int64_t ids_group(int32_t* uniq, int32_t* row, int32_t* perm, int32_t* first, int64_t* counts,
                  const int32_t* ids, int64_t n, int64_t rows, int P, uint64_t* work);
// out[j] = the sum over k in [first[j], first[j + 1]) of w[perm[k]] *
// rows[perm[k] / group], in the order of k, for j < u: out[u,d], rows[*,d]
// (a memory bank's lookups share their query's gradient row, each scaled by
// its weight). The first term is a product, each later one a fused
// multiply-add, so that every backend gives the same bits. w NULL: the rows
// themselves (group 1), the first copied and the others added.
void rows_sum_runs(real* out, const real* rows, const real* w, int group, const int32_t* perm,
                   const int32_t* first, int64_t u, int d);
// at[j] = ids[j] / P for j < n, ids that rank `rank` of P holds; returns how
// many ids are not (out of [0, rows) or another rank's). Waits for the device.
int64_t ids_local(int32_t* at, const int32_t* ids, int64_t n, int64_t rows, int P, int rank);
// marks[rows[i]] = 1 for i < n
void rows_mark(uint8_t* marks, const int32_t* rows, int64_t n);

// ---- embedding: out[B,L,d] = wte[inp[b,t]] + wpe[t] (wpe may be NULL: no positions)
void embedding_forward(real* out, const int32_t* inp, const real* wte, const real* wpe, int B,
                       int L, int d);
// dwte[V,d] += scatter of dout by inp; dwpe[L,d] += sum over b (dwpe may be NULL)
void embedding_backward(real* dwte, real* dwpe, const real* dout, const int32_t* inp, int B, int L,
                        int d);

// ---- layernorm over the last dim: out[R,d], mean[R], rstd[R] saved for backward
void layernorm_forward(real* out, real* mean, real* rstd, const real* inp, const real* w,
                       const real* b, int R, int d);
void layernorm_backward(real* dinp, real* dw, real* db, const real* dout, const real* inp,
                        const real* w, const real* mean, const real* rstd, int R, int d);

// ---- matmul through BLAS: out[R,OC] = inp[R,IC] @ w[OC,IC]^T + bias[OC] (bias may be NULL)
void matmul_forward(real* out, const real* inp, const real* w, const real* bias, int R, int IC,
                    int OC);
// dinp[R,IC] += dout @ w; dw[OC,IC] += dout^T @ inp; dbias[OC] += colsum(dout)
void matmul_backward(real* dinp, real* dw, real* dbias, const real* dout, const real* inp,
                     const real* w, int R, int IC, int OC);

// ---- GELU, tanh approximation (PyTorch gelu(approximate="tanh"))
void gelu_forward(real* out, const real* inp, int64_t n);
void gelu_backward(real* dinp, const real* inp, const real* dout, int64_t n);

// ---- dropout with inverted scaling; element i is kept iff
// rng_uniform(seed, first + i) >= p and then scaled by 1/(1-p), so backward
// recomputes the mask. first places the n elements in a larger tensor (a
// rank's rows in the global batch), so masks do not depend on how it is split.
// out may alias inp. p == 0 copies.
void dropout_forward(real* out, const real* inp, real p, uint64_t seed, int64_t first, int64_t n);
void dropout_backward(real* dinp, const real* dout, real p, uint64_t seed, int64_t first,
                      int64_t n);

// ---- residual: out = a + b
void residual_forward(real* out, const real* a, const real* b, int64_t n);
void residual_backward(real* da, real* db, const real* dout, int64_t n);

// ---- causal multi-head softmax attention with left padding.
// qkv[B,L,3d] holds q | k | v, each split into H heads of hd. Query t of
// sequence b attends to keys pad[b]..t with scale 1/sqrt(hd); a padding query
// (t < pad[b]) outputs 0; no gradient reaches a padding position. out[B,L,d].
// Materialised: att[B,H,L,L] keeps the probabilities for backward (0 outside
// the allowed keys).
void attention_forward(real* out, real* att, const real* qkv, const int32_t* pad, int B, int L,
                       int d, int H);
// datt[B,H,L,L] is scratch.
void attention_backward(real* dqkv, real* datt, const real* dout, const real* qkv, const real* att,
                        const int32_t* pad, int B, int L, int d, int H);
// Fused (flash-style): never holds L x L; keeps lse[B,H,L] (log-sum-exp of each
// query row's scaled scores, 0 for padding queries) and recomputes the
// probabilities in backward from lse and the forward's out. Same math as above.
void attention_fused_forward(real* out, real* lse, const real* qkv, const int32_t* pad, int B,
                             int L, int d, int H);
void attention_fused_backward(real* dqkv, const real* dout, const real* out, const real* lse,
                              const real* qkv, const int32_t* pad, int B, int L, int d, int H);
// The same attention for the last query of each row only (evaluation and
// serving read no other): out[B,d] = the output at position L-1 (0 when the
// whole row is padding). No lse, no backward.
void attention_last(real* out, const real* qkv, const int32_t* pad, int B, int L, int d, int H);

// ---- cross-entropy over all items with the tied item table as output layer.
// h[R,d]; wte[V,d] whose rows 1..V-1 are the items (row 0, padding, is never a
// class); targets[R] in 1..V-1, or 0 to ignore the row. Logits are computed rb
// rows at a time into scratch[rb, V-1], never R x (V-1) at once.
// Returns the SUM of -log p(target) over the non-ignored rows. When dh or dwte
// is not NULL, also dh[R,d] += scale * dloss/dh and dwte[V,d] += scale *
// dloss/dwte (each skipped when NULL; row 0 of dwte gets nothing). rb >= 1.
double crossentropy_tied(real* dh, real* dwte, const real* h, const real* wte,
                         const int32_t* targets, int R, int d, int V, real scale, real* scratch,
                         int rb);
// The same, the summed loss written to loss[0] (device memory) instead of
// returned: nothing waits for the device (the training step's form).
void crossentropy_tied_into(double* loss, real* dh, real* dwte, const real* h, const real* wte,
                            const int32_t* targets, int R, int d, int V, real scale, real* scratch,
                            int rb);

// ---- Adam / AdamW (decoupled weight decay, as torch.optim.AdamW; wd = 0 is
// Adam). t is the 1-based step for bias correction.
void adamw_update(real* params, const real* grads, real* m, real* v, int64_t n, real lr, real beta1,
                  real beta2, real eps, real weight_decay, int64_t t);

// ==== ELASTIC (DESIGN §3). k experts, C chunk, nc = ceil(L/C) chunks; chunk c
// holds positions cC..min(L,(c+1)C)-1. Heads split d into H slices of hd.

// ---- interest aggregation (linear dispatcher, step 1). For row b, chunk c,
// expert e, head h (slices [h*hd, (h+1)*hd) of qe, kh, vh, u, P):
//   s_j   = qe[e]·kh[b,j] / sqrt(hd)  over j in [pad[b], c*C)  (strictly earlier chunks)
//   P[b,c,e] = (exp(pb[e,h]) u[e] + sum_j exp(s_j) vh[b,j]) / (exp(pb[e,h]) + sum_j exp(s_j))
// so chunk 0 (and any chunk with no earlier item) gets the prior u[e]. Computed
// as running (max, sum, weighted sum) states over chunks: O(L*k*d), stable for
// large scores. lse[b,c,e,h] = log(exp(pb) + sum exp(s_j)) is kept for backward.
//   qe[k,d] (expert queries, the same for every row), kh[B,L,d], vh[B,L,d],
//   u[k,d], pb[k,H]; P[B,nc,k,d], lse[B,nc,k,H].
void interest_aggregate_forward(real* P, real* lse, const real* qe, const real* kh, const real* vh,
                                const real* u, const real* pb, const int32_t* pad, int B, int L,
                                int d, int H, int k, int C);
void interest_aggregate_backward(real* dqe, real* dkh, real* dvh, real* du, real* dpb,
                                 const real* dP, const real* P, const real* lse, const real* qe,
                                 const real* kh, const real* vh, const real* u, const real* pb,
                                 const int32_t* pad, int B, int L, int d, int H, int k, int C);

// ---- product-key memory (Lample et al. 2019), step 2. R queries, Hm memory
// heads, key width dk (even), n sub-keys per half, n*n value rows of width d,
// kk = top-k. For query r and head h, q = q[r,h] split in halves q1, q2:
//   s1[i] = q1·K[h,0,i], s2[i] = q2·K[h,1,i]; top-kk of each; the top-kk of the
//   kk*kk sums s1[a]+s2[b] give slots a*n+b with scores sc; w = softmax(sc);
//   out[r] = sum over heads and the kk slots of w * V[slot].
// Ties in top-k go to the lower index. Cost O(R*Hm*(n*dk + kk^2 + kk*d)), not
// O(n*n). The selection and the read are apart, so a bank sharded over ranks
// can fetch the selected rows between them.
// Selection: idx[R,Hm,kk] (slots, best first) and w[R,Hm,kk], kept for
// backward.   q[R,Hm,dk], K[Hm,2,n,dk/2].
void pkm_select(int32_t* idx, real* w, const real* q, const real* K, int R, int Hm, int dk, int n,
                int kk);
// Read: out[R,d] = sum over heads and slots of w * V[row] (overwritten), where
// row[R,Hm,kk] is where each selected slot's values are in V: the slot itself
// when V is the whole bank [n*n,d], or a position among fetched rows.
void pkm_read(real* out, const int32_t* row, const real* w, const real* V, int R, int Hm, int kk,
              int d);
// Backward with the selection held fixed: dq[R,Hm,dk] and dK += (sub-keys of
// the slots idx); V[row] as in the read. The value gradient is sparse:
// dV_rows[R*Hm*kk, d] = w * dout[r] for slot idx (same order as idx); reduce
// with sparse_rows_reduce before the update.
void pkm_backward(real* dq, real* dK, real* dV_rows, const real* dout, const int32_t* idx,
                  const int32_t* row, const real* w, const real* q, const real* K, const real* V,
                  int R, int Hm, int dk, int n, int kk, int d);
// Sums rows that share an id: ids[n], rows[n,d] -> uniq[m] ascending,
// out[m,d]; returns m. perm[n] is scratch.
int64_t sparse_rows_reduce(int32_t* uniq, real* out, const int32_t* ids, const real* rows,
                           int64_t n, int d, int64_t* perm);
// Lazy (row-wise) Adam: only the listed rows of table[*,d] and their moments
// change, with the global step t for bias correction; other rows stay
// bit-identical.
void adam_sparse_update(real* table, real* m, real* v, const int32_t* rows, const real* grads,
                        int64_t nrows, int d, real lr, real beta1, real beta2, real eps, int64_t t);

// ---- dispatch attention (step 3). Query t of row b in chunk c attends, one
// softmax, to the k interests of its chunk and to positions j in
// [max(c*C, pad[b]), t] of its own chunk. Local scores use RoPE over adjacent
// pairs within each head (hd even; pair i rotated by pos * 10000^(-2i/hd), the angle in double,
// pos = the absolute position t or j); interest scores use the unrotated q.
//   score_e = q_t·ki[b,c,e] / sqrt(hd),  score_j = rope(q_t,t)·rope(kl_j,j) / sqrt(hd)
//   out_t  = sum_e p_e vi[b,c,e] + sum_j p_j vl_j
// A padding query (t < pad[b]) outputs 0 and gets no gradient.
//   q, kl, vl [B,L,d]; ki, vi [B,nc,k,d]; out [B,L,d]; lse [B,H,L].
// Cost O(B*L*(k+C)*d).
void dispatch_forward(real* out, real* lse, const real* q, const real* kl, const real* vl,
                      const real* ki, const real* vi, const int32_t* pad, int B, int L, int d,
                      int H, int k, int C);
void dispatch_backward(real* dq, real* dkl, real* dvl, real* dki, real* dvi, const real* dout,
                       const real* out, const real* lse, const real* q, const real* kl,
                       const real* vl, const real* ki, const real* vi, const int32_t* pad, int B,
                       int L, int d, int H, int k, int C);

// ==== RecGRELA (DESIGN §3). Elementwise pieces, full-width RoPE, chunked
// causal linear attention, causal depthwise convolution.

// phi(x) = elu(x) + 1 (positive features); SiLU(x) = x * sigmoid(x); out = a * b.
void elu1_forward(real* out, const real* inp, int64_t n);
void elu1_backward(real* dinp, const real* inp, const real* dout, int64_t n);
void silu_forward(real* out, const real* inp, int64_t n);
void silu_backward(real* dinp, const real* inp, const real* dout, int64_t n);
void mul_forward(real* out, const real* a, const real* b, int64_t n);
void mul_backward(real* da, real* db, const real* a, const real* b, const real* dout, int64_t n);

// ---- RoPE over adjacent pairs of the FULL width d (d even): pair i of
// x[b,t,:] (dims 2i, 2i+1) rotated by angle t * 10000^(-2i/d) (angle in
// double), t the position 0..L-1. out may alias inp. [B,L,d].
void rope_forward(real* out, const real* inp, int B, int L, int d);
void rope_backward(real* dinp, const real* dout, int B, int L, int d);

// ---- causal linear attention, per head h of H (slices of hd = d/H):
//   out_t = (qr_t · S_t) / (qf_t · z_t + 1e-6),  S_t = sum_j kr_j v_j^T,  z_t = sum_j kf_j
// over j in [pad[b], t]: rotated features qr, kr in the numerator, the
// un-rotated (positive) features qf, kf in the normaliser. A padding query
// (t < pad[b]) outputs 0 and gets no gradient. Computed chunk-wise: an hd x hd
// state per head carried across chunks of C positions plus masked C x C
// products inside a chunk (matrix-multiply shaped, O(L*C*hd + L*hd^2)).
// den[B,H,L] keeps the denominators for backward (0 for padding queries);
// chunks are counted from pad[b]; dinp of rope_backward must not alias dout.
// All [B,L,d] but den.
void linear_attention_forward(real* out, real* den, const real* qr, const real* kr, const real* qf,
                              const real* kf, const real* v, const int32_t* pad, int B, int L,
                              int d, int H, int C);
void linear_attention_backward(real* dqr, real* dkr, real* dqf, real* dkf, real* dv,
                               const real* dout, const real* out, const real* den, const real* qr,
                               const real* kr, const real* qf, const real* kf, const real* v,
                               const int32_t* pad, int B, int L, int d, int H, int C);

// ---- causal depthwise convolution, kernel K, per channel c:
//   out[b,t,c] = bias[c] + sum_{i=0}^{K-1} w[c,i] * inp[b,t-i,c]  over t-i >= pad[b]
// (w[c,0] weighs the current position). inp, out [B,L,d]; w [d,K]; bias [d].
void conv_causal_forward(real* out, const real* inp, const real* w, const real* bias,
                         const int32_t* pad, int B, int L, int d, int K);
void conv_causal_backward(real* dinp, real* dw, real* dbias, const real* dout, const real* inp,
                          const real* w, const int32_t* pad, int B, int L, int d, int K);

#endif
