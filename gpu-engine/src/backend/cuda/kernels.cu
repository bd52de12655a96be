// The CUDA backend's kernels, compiled at start-up by NVRTC for the GPU's architecture.
//
// Self-contained on purpose (no toolkit headers): bf16 values travel as raw 16-bit
// words and are converted explicitly, so building the engine needs no CUDA toolkit.
// Elementwise rounding mirrors PyTorch's bf16 modules (each bf16 op rounds its result),
// which keeps the logits close to transformers' for the parity checks.

typedef unsigned short bf16;
typedef unsigned int u32;

#define NEG_INF __uint_as_float(0xff800000u)

__device__ __forceinline__ float bf2f(bf16 x) { return __uint_as_float(((u32)x) << 16); }

// Round to nearest even; NaN stays a (quiet) NaN.
__device__ __forceinline__ bf16 f2bf(float f) {
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16)0x7fc0u;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16)(u >> 16);
}

__device__ __forceinline__ float round_bf(float f) { return bf2f(f2bf(f)); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the block; `scratch` holds 32 floats. Every thread gets the result.
__device__ float block_sum(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float total = lane < n_warps ? scratch[lane] : 0.0f;
    total = warp_sum(total);
    __syncthreads();
    return total;
}

// out[t, :] = table[ids[t], :]; one block per token.
extern "C" __global__ void embed_rows(const bf16* __restrict__ table, const u32* __restrict__ ids,
                                      bf16* __restrict__ out, int cols) {
    int t = blockIdx.x;
    const bf16* src = table + (size_t)ids[t] * cols;
    bf16* dst = out + (size_t)t * cols;
#pragma unroll 4
    for (int c = threadIdx.x; c < cols; c += blockDim.x) dst[c] = src[c];
}

// out[r, :] = x[src_rows[r], :]; one block per output row.
extern "C" __global__ void gather_rows(const bf16* __restrict__ x, const u32* __restrict__ src_rows,
                                       bf16* __restrict__ out, int cols) {
    int r = blockIdx.x;
    const bf16* src = x + (size_t)src_rows[r] * cols;
    bf16* dst = out + (size_t)r * cols;
#pragma unroll 4
    for (int c = threadIdx.x; c < cols; c += blockDim.x) dst[c] = src[c];
}

#define NORM_THREADS 1024
#define NORM_PER_THREAD 12  // rows up to 12,288 values

// RMSNorm as Llama's module: normalise in f32, round to bf16, then scale by the weight.
// With `delta`, the residual is first updated in place (residual += delta, in bf16).
// One block per row; each thread holds its values and weights in registers, so all of
// a thread's loads are issued together and the row costs one round trip to memory.
extern "C" __global__ void __launch_bounds__(NORM_THREADS)
    add_rms_norm(bf16* __restrict__ residual, const bf16* __restrict__ delta,
                 const bf16* __restrict__ weight, bf16* __restrict__ out, int cols, float eps) {
    __shared__ float scratch[32];
    size_t base = (size_t)blockIdx.x * cols;
    float v[NORM_PER_THREAD], wv[NORM_PER_THREAD];
    float sq = 0.0f;
#pragma unroll
    for (int i = 0; i < NORM_PER_THREAD; i++) {
        int c = threadIdx.x + i * NORM_THREADS;
        v[i] = 0.0f;
        wv[i] = 0.0f;
        if (c < cols) {
            float r = bf2f(residual[base + c]);
            if (delta != 0) r = round_bf(r + bf2f(delta[base + c]));
            v[i] = r;
            wv[i] = bf2f(weight[c]);
            sq += r * r;
        }
    }
    if (delta != 0) {
#pragma unroll
        for (int i = 0; i < NORM_PER_THREAD; i++) {
            int c = threadIdx.x + i * NORM_THREADS;
            if (c < cols) residual[base + c] = f2bf(v[i]);
        }
    }
    float total = block_sum(sq, scratch);
    float inv = rsqrtf(total / (float)cols + eps);
#pragma unroll
    for (int i = 0; i < NORM_PER_THREAD; i++) {
        int c = threadIdx.x + i * NORM_THREADS;
        if (c < cols) out[base + c] = f2bf(wv[i] * round_bf(v[i] * inv));
    }
}

// x[r, c] += bias[c] over rows × cols elements.
extern "C" __global__ void add_bias(bf16* x, const bf16* bias, int rows, int cols) {
    size_t n = (size_t)rows * cols;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        x[i] = f2bf(bf2f(x[i]) + bf2f(bias[i % cols]));
    }
}

// out = silu(gate) * up, each step rounded to bf16 as PyTorch does.
extern "C" __global__ void silu_mul(const bf16* __restrict__ gate, const bf16* __restrict__ up,
                                    bf16* __restrict__ out, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float g = bf2f(gate[i]);
        float act = round_bf(g / (1.0f + expf(-g)));
        out[i] = f2bf(act * bf2f(up[i]));
    }
}

__device__ __forceinline__ void rope_pair(bf16* head, int i, int half, float c, float s) {
    float a = bf2f(head[i]), b = bf2f(head[i + half]);
    // q * cos + rotate_half(q) * sin, each product and the sum rounded to bf16.
    head[i] = f2bf(round_bf(a * c) + round_bf(-b * s));
    head[i + half] = f2bf(round_bf(b * c) + round_bf(a * s));
}

// RoPE on the token's query and key heads, then its key and value written to their KV
// slot (cache layout [slot, n_kv_heads, head_dim]). One block per token.
extern "C" __global__ void rope_store_kv(bf16* __restrict__ q, bf16* __restrict__ k,
                                         const bf16* __restrict__ v,
                                         const u32* __restrict__ positions,
                                         const u32* __restrict__ slot_mapping,
                                         const float* __restrict__ inv_freq,
                                         bf16* __restrict__ k_cache, bf16* __restrict__ v_cache,
                                         int n_heads,
                                         int n_kv_heads, int head_dim) {
    __shared__ float cos_s[128], sin_s[128];
    int t = blockIdx.x;
    int half = head_dim / 2;
    float position = (float)positions[t];
    // One angle per frequency, shared by every head of the token.
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float angle = position * inv_freq[i];
        cos_s[i] = round_bf(cosf(angle));
        sin_s[i] = round_bf(sinf(angle));
    }
    __syncthreads();
    int q_width = n_heads * head_dim, kv_width = n_kv_heads * head_dim;
    bf16* q_row = q + (size_t)t * q_width;
    bf16* k_row = k + (size_t)t * kv_width;
    for (int j = threadIdx.x; j < (n_heads + n_kv_heads) * half; j += blockDim.x) {
        int head = j / half, i = j % half;
        float c = cos_s[i], s = sin_s[i];
        if (head < n_heads) {
            rope_pair(q_row + head * head_dim, i, half, c, s);
        } else {
            rope_pair(k_row + (head - n_heads) * head_dim, i, half, c, s);
        }
    }
    __syncthreads();
    size_t slot = slot_mapping[t];
    const bf16* v_row = v + (size_t)t * kv_width;
    for (int c = threadIdx.x; c < kv_width; c += blockDim.x) {
        k_cache[slot * kv_width + c] = k_row[c];
        v_cache[slot * kv_width + c] = v_row[c];
    }
}

#define ATTN_WARPS 16
#define ATTN_KEYS 8

// Causal attention of one query token and head over its sequence's paged KV, with an
// online softmax. Grid (n_tokens, n_heads), ATTN_WARPS warps: each warp takes every
// ATTN_WARPS-th group of ATTN_KEYS keys, loads the group's keys and values together
// (so their loads are in flight at once), reduces the group's scores with interleaved
// shuffles and updates its softmax state once per group; the warps' partial results
// are merged at the end. Lane l owns dimensions l, l + 32, ... of the head (PER_LANE of
// them, head_dim <= 32 * PER_LANE). Decode tokens and prefill chunks (over a cached
// prefix) run through the same kernel: a token at position p sees keys 0..=p.
template <int PER_LANE>
__device__ void attention(const bf16* __restrict__ q, const bf16* __restrict__ k_cache,
                          const bf16* __restrict__ v_cache, bf16* __restrict__ out,
                          const u32* __restrict__ positions, const u32* __restrict__ token_seq,
                          const u32* __restrict__ seq_table_offset,
                          const u32* __restrict__ block_tables, int n_heads, int n_kv_heads,
                          int head_dim, int block_size, float scale) {
    __shared__ float warp_m[ATTN_WARPS], warp_l[ATTN_WARPS];
    __shared__ float warp_acc[ATTN_WARPS][32 * PER_LANE];
    int t = blockIdx.x, h = blockIdx.y;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int kv_head = h / (n_heads / n_kv_heads);
    int n_keys = (int)positions[t] + 1;
    const u32* table = block_tables + seq_table_offset[token_seq[t]];
    int kv_width = n_kv_heads * head_dim;

    float qv[PER_LANE], acc[PER_LANE];
    const bf16* q_head = q + ((size_t)t * n_heads + h) * head_dim;
#pragma unroll
    for (int i = 0; i < PER_LANE; i++) {
        int d = lane + 32 * i;
        qv[i] = d < head_dim ? bf2f(q_head[d]) * scale : 0.0f;
        acc[i] = 0.0f;
    }
    float m = NEG_INF, l = 0.0f;
    for (int first = warp * ATTN_KEYS; first < n_keys; first += ATTN_WARPS * ATTN_KEYS) {
        float kk[ATTN_KEYS][PER_LANE], vv[ATTN_KEYS][PER_LANE];
#pragma unroll
        for (int j = 0; j < ATTN_KEYS; j++) {
            int key = first + j;
            bool live = key < n_keys;
            size_t slot = live ? (size_t)table[key / block_size] * block_size + key % block_size : 0;
            const bf16* k_at = k_cache + slot * kv_width + kv_head * head_dim;
            const bf16* v_at = v_cache + slot * kv_width + kv_head * head_dim;
#pragma unroll
            for (int i = 0; i < PER_LANE; i++) {
                int d = lane + 32 * i;
                bool ok = live && d < head_dim;
                kk[j][i] = ok ? bf2f(k_at[d]) : 0.0f;
                vv[j][i] = ok ? bf2f(v_at[d]) : 0.0f;
            }
        }
        float s[ATTN_KEYS];
#pragma unroll
        for (int j = 0; j < ATTN_KEYS; j++) {
            s[j] = 0.0f;
#pragma unroll
            for (int i = 0; i < PER_LANE; i++) s[j] += qv[i] * kk[j][i];
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
#pragma unroll
            for (int j = 0; j < ATTN_KEYS; j++) s[j] += __shfl_xor_sync(0xffffffffu, s[j], o);
        }
        float group_max = NEG_INF;
#pragma unroll
        for (int j = 0; j < ATTN_KEYS; j++) {
            if (first + j < n_keys) group_max = fmaxf(group_max, s[j]);
        }
        float m_new = fmaxf(m, group_max);
        float correction = expf(m - m_new);
        l *= correction;
#pragma unroll
        for (int i = 0; i < PER_LANE; i++) acc[i] *= correction;
#pragma unroll
        for (int j = 0; j < ATTN_KEYS; j++) {
            float p = first + j < n_keys ? expf(s[j] - m_new) : 0.0f;
            l += p;
#pragma unroll
            for (int i = 0; i < PER_LANE; i++) acc[i] += p * vv[j][i];
        }
        m = m_new;
    }
    if (lane == 0) {
        warp_m[warp] = m;
        warp_l[warp] = l;
    }
#pragma unroll
    for (int i = 0; i < PER_LANE; i++) warp_acc[warp][lane + 32 * i] = acc[i];
    __syncthreads();
    if (warp == 0) {
        float m_all = NEG_INF;
        for (int w = 0; w < ATTN_WARPS; w++) m_all = fmaxf(m_all, warp_m[w]);
        float l_all = 0.0f;
        float weight[ATTN_WARPS];
        for (int w = 0; w < ATTN_WARPS; w++) {
            // A warp that saw no key has l = 0 and contributes nothing.
            weight[w] = warp_l[w] > 0.0f ? expf(warp_m[w] - m_all) : 0.0f;
            l_all += warp_l[w] * weight[w];
        }
        bf16* out_head = out + ((size_t)t * n_heads + h) * head_dim;
#pragma unroll
        for (int i = 0; i < PER_LANE; i++) {
            int d = lane + 32 * i;
            if (d < head_dim) {
                float o = 0.0f;
                for (int w = 0; w < ATTN_WARPS; w++) o += warp_acc[w][d] * weight[w];
                out_head[d] = f2bf(o / l_all);
            }
        }
    }
}

#define ATTENTION_ENTRY(NAME, PER_LANE)                                                        \
    extern "C" __global__ void __launch_bounds__(ATTN_WARPS * 32)                              \
        NAME(const bf16* q, const bf16* k_cache, const bf16* v_cache,   \
                                    bf16* out, const u32* positions, const u32* token_seq,     \
                                    const u32* seq_table_offset, const u32* block_tables,      \
                                    int n_heads, int n_kv_heads, int head_dim, int block_size, \
                                    float scale) {                                             \
        attention<PER_LANE>(q, k_cache, v_cache, out, positions, token_seq, seq_table_offset,  \
                            block_tables, n_heads, n_kv_heads, head_dim, block_size, scale);   \
    }

// One entry per head size class, so the per-lane arrays stay in registers.
ATTENTION_ENTRY(paged_attention_64, 2)
ATTENTION_ENTRY(paged_attention_128, 4)
ATTENTION_ENTRY(paged_attention_256, 8)

#define GEMV_MAX_M 8
#define GEMV_WARPS 8
#define GEMV_UNROLL 8

__device__ __forceinline__ float dot8(uint4 a, uint4 b) {
    const u32 av[4] = {a.x, a.y, a.z, a.w};
    const u32 bv[4] = {b.x, b.y, b.z, b.w};
    float s = 0.0f;
#pragma unroll
    for (int e = 0; e < 4; e++) {
        s += __uint_as_float(av[e] << 16) * __uint_as_float(bv[e] << 16);
        s += __uint_as_float(av[e] & 0xffff0000u) * __uint_as_float(bv[e] & 0xffff0000u);
    }
    return s;
}

// Copies x (m rows of k bf16) into shared memory, 16 bytes per thread and step.
__device__ __forceinline__ void stage_x(const bf16* __restrict__ x, uint4* xs, int m, int k8) {
    const uint4* xg = (const uint4*)x;
    for (int i = threadIdx.x; i < m * k8; i += blockDim.x) xs[i] = xg[i];
    __syncthreads();
}

// acc[r] = sum_c xs[r, c] * w_row[c], summed over the warp (every lane gets the sums).
// Each lane loads 16 bytes (8 bf16) of the weight row per load, GEMV_UNROLL loads in
// flight; k % 8 == 0 and the row is 16-byte aligned.
__device__ __forceinline__ void gemv_row(const uint4* xs, const bf16* __restrict__ w_row_ptr,
                                         int m, int k8, float acc[GEMV_MAX_M]) {
    int lane = threadIdx.x & 31;
    const uint4* w_row = (const uint4*)w_row_ptr;
#pragma unroll
    for (int r = 0; r < GEMV_MAX_M; r++) acc[r] = 0.0f;
    const uint4 zero = make_uint4(0, 0, 0, 0);
    for (int c0 = lane; c0 < k8; c0 += 32 * GEMV_UNROLL) {
        uint4 wv[GEMV_UNROLL];
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++) {
            int c = c0 + 32 * u;
            wv[u] = c < k8 ? w_row[c] : zero;
        }
#pragma unroll
        for (int r = 0; r < GEMV_MAX_M; r++) {
            if (r < m) {
#pragma unroll
                for (int u = 0; u < GEMV_UNROLL; u++) {
                    int c = c0 + 32 * u;
                    if (c < k8) acc[r] += dot8(wv[u], xs[r * k8 + c]);
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < GEMV_MAX_M; r++) acc[r] = warp_sum(acc[r]);
}

// As gemv_row for two weight rows at once (gate and up), their loads issued together.
__device__ __forceinline__ void gemv_row2(const uint4* xs, const bf16* __restrict__ a_ptr,
                                          const bf16* __restrict__ b_ptr, int m, int k8,
                                          float acc_a[GEMV_MAX_M], float acc_b[GEMV_MAX_M]) {
    int lane = threadIdx.x & 31;
    const uint4* a_row = (const uint4*)a_ptr;
    const uint4* b_row = (const uint4*)b_ptr;
#pragma unroll
    for (int r = 0; r < GEMV_MAX_M; r++) {
        acc_a[r] = 0.0f;
        acc_b[r] = 0.0f;
    }
    const uint4 zero = make_uint4(0, 0, 0, 0);
    for (int c0 = lane; c0 < k8; c0 += 32 * GEMV_UNROLL) {
        uint4 av[GEMV_UNROLL], bv[GEMV_UNROLL];
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++) {
            int c = c0 + 32 * u;
            av[u] = c < k8 ? a_row[c] : zero;
            bv[u] = c < k8 ? b_row[c] : zero;
        }
#pragma unroll
        for (int r = 0; r < GEMV_MAX_M; r++) {
            if (r < m) {
#pragma unroll
                for (int u = 0; u < GEMV_UNROLL; u++) {
                    int c = c0 + 32 * u;
                    if (c < k8) {
                        uint4 xv = xs[r * k8 + c];
                        acc_a[r] += dot8(av[u], xv);
                        acc_b[r] += dot8(bv[u], xv);
                    }
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < GEMV_MAX_M; r++) {
        acc_a[r] = warp_sum(acc_a[r]);
        acc_b[r] = warp_sum(acc_b[r]);
    }
}

// out[r, j] = sum_c x[r, c] * w[j, c] for the few rows of a decode step (m <= GEMV_MAX_M).
// Matrix products at batch 1..4 only need to stream the weight once; cuBLAS's tiles are
// built for larger m. The block stages x in dynamic shared memory (m * k bf16), then
// each warp computes one output column. Output bf16 (rounded) or f32 (`out_f32`).
extern "C" __global__ void gemv_small_m(const bf16* __restrict__ x, const bf16* __restrict__ w,
                                        void* __restrict__ out, int m, int n, int k,
                                        int out_f32) {
    extern __shared__ uint4 xs[];
    int k8 = k / 8;
    stage_x(x, xs, m, k8);
    int j = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (j >= n) return;
    float acc[GEMV_MAX_M];
    gemv_row(xs, w + (size_t)j * k, m, k8, acc);
    if ((threadIdx.x & 31) != 0) return;
#pragma unroll
    for (int r = 0; r < GEMV_MAX_M; r++) {
        if (r < m) {
            if (out_f32) {
                ((float*)out)[(size_t)r * n + j] = acc[r];
            } else {
                ((bf16*)out)[(size_t)r * n + j] = f2bf(acc[r]);
            }
        }
    }
}

// Up to three products of the same x in one launch (the query, key and value
// projections): the first ceil(n0 / GEMV_WARPS) blocks compute w0's columns, the next
// w1's, the rest w2's. Unused matrices have n = 0.
extern "C" __global__ void gemv_multi(const bf16* __restrict__ x, const bf16* __restrict__ w0,
                                      const bf16* __restrict__ w1, const bf16* __restrict__ w2,
                                      bf16* __restrict__ o0, bf16* __restrict__ o1,
                                      bf16* __restrict__ o2, int n0, int n1, int n2, int m,
                                      int k) {
    extern __shared__ uint4 xs[];
    int k8 = k / 8;
    stage_x(x, xs, m, k8);
    int b0 = (n0 + GEMV_WARPS - 1) / GEMV_WARPS, b1 = (n1 + GEMV_WARPS - 1) / GEMV_WARPS;
    int block = blockIdx.x;
    const bf16* w = w0;
    bf16* o = o0;
    int n = n0;
    if (block >= b0 + b1) {
        block -= b0 + b1;
        w = w2;
        o = o2;
        n = n2;
    } else if (block >= b0) {
        block -= b0;
        w = w1;
        o = o1;
        n = n1;
    }
    int j = block * GEMV_WARPS + (threadIdx.x >> 5);
    if (j >= n) return;
    float acc[GEMV_MAX_M];
    gemv_row(xs, w + (size_t)j * k, m, k8, acc);
    if ((threadIdx.x & 31) != 0) return;
#pragma unroll
    for (int r = 0; r < GEMV_MAX_M; r++) {
        if (r < m) o[(size_t)r * n + j] = f2bf(acc[r]);
    }
}

// out = silu(x · gateᵀ) * (x · upᵀ) for decode-sized x: each warp computes column j of
// both products and writes only the activation (rounded as the unfused ops would be).
extern "C" __global__ void gemv_gate_up_silu(const bf16* __restrict__ x,
                                             const bf16* __restrict__ gate,
                                             const bf16* __restrict__ up,
                                             bf16* __restrict__ out, int m, int n, int k) {
    extern __shared__ uint4 xs[];
    int k8 = k / 8;
    stage_x(x, xs, m, k8);
    int j = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (j >= n) return;
    float g[GEMV_MAX_M], u[GEMV_MAX_M];
    gemv_row2(xs, gate + (size_t)j * k, up + (size_t)j * k, m, k8, g, u);
    if ((threadIdx.x & 31) != 0) return;
#pragma unroll
    for (int r = 0; r < GEMV_MAX_M; r++) {
        if (r < m) {
            float gv = round_bf(g[r]);
            float act = round_bf(gv / (1.0f + expf(-gv)));
            out[(size_t)r * n + j] = f2bf(act * round_bf(u[r]));
        }
    }
}

// ids[r] = the index of the largest logit of row r (f32), the first one on ties as
// numpy's argmax; NaN never wins. One block per row: greedy sampling on the GPU, so only
// token ids cross to the host.
extern "C" __global__ void argmax_rows(const float* __restrict__ logits, u32* __restrict__ ids,
                                       int cols) {
    __shared__ float best_v[32];
    __shared__ int best_i[32];
    const float* row = logits + (size_t)blockIdx.x * cols;
    float v = NEG_INF;
    int idx = 0x7fffffff;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float x = row[c];
        if (x > v) {
            v = x;
            idx = c;
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, v, o);
        int oi = __shfl_xor_sync(0xffffffffu, idx, o);
        if (ov > v || (ov == v && oi < idx)) {
            v = ov;
            idx = oi;
        }
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) {
        best_v[warp] = v;
        best_i[warp] = idx;
    }
    __syncthreads();
    if (warp == 0) {
        int n_warps = (blockDim.x + 31) >> 5;
        v = lane < n_warps ? best_v[lane] : NEG_INF;
        idx = lane < n_warps ? best_i[lane] : 0x7fffffff;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, v, o);
            int oi = __shfl_xor_sync(0xffffffffu, idx, o);
            if (ov > v || (ov == v && oi < idx)) {
                v = ov;
                idx = oi;
            }
        }
        // A row of NaNs (or -inf) keeps index 0, as the host's argmax does.
        if (lane == 0) ids[blockIdx.x] = idx == 0x7fffffff ? 0u : (u32)idx;
    }
}
