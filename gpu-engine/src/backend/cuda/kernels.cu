// The CUDA backend's kernels, compiled at start-up by NVRTC for the GPU's architecture.
//
// Self-contained on purpose (no toolkit headers): bf16 values travel as raw 16-bit
// words and are converted explicitly, so building the engine needs no CUDA toolkit.
// Elementwise rounding mirrors PyTorch's bf16 modules (each bf16 op rounds its result),
// which keeps the logits close to transformers' for the parity checks.

typedef unsigned short bf16;
typedef unsigned int u32;

#define NEG_INF __uint_as_float(0xff800000u)

// Shared memory sized by the launch; the CPU test harness (tests/kernels_on_cpu) has
// its own.
#ifndef DYNAMIC_SHARED
#define DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#endif

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

// RoPE on one head of one token: block (t, h) takes query head h (h < n_heads) or kv
// head h - n_heads of token t, thread i the pair (i, i + head_dim / 2): q * cos +
// rotate_half(q) * sin, cos, sin, each product and the sum rounded to bf16 as PyTorch's
// bf16 modules do. A kv head's block also writes the token's key and value of that head
// to its KV slot (cache layout [slot, n_kv_heads, head_dim]). Every head of every token
// in its own block: one round trip to memory, where one block per token walked its
// heads one after another.
extern "C" __global__ void rope_store_kv(bf16* __restrict__ q, bf16* __restrict__ k,
                                         const bf16* __restrict__ v,
                                         const u32* __restrict__ positions,
                                         const u32* __restrict__ slot_mapping,
                                         const float* __restrict__ inv_freq,
                                         bf16* __restrict__ k_cache, bf16* __restrict__ v_cache,
                                         int n_heads, int n_kv_heads, int head_dim) {
    int t = blockIdx.x, h = blockIdx.y, half = head_dim / 2;
    bool is_query = h < n_heads;
    int kv_head = h - n_heads;
    bf16* head = is_query ? q + ((size_t)t * n_heads + h) * head_dim
                          : k + ((size_t)t * n_kv_heads + kv_head) * head_dim;
    float position = (float)positions[t];
    size_t at = is_query ? 0 : ((size_t)slot_mapping[t] * n_kv_heads + kv_head) * head_dim;
    const bf16* v_head = v + ((size_t)t * n_kv_heads + (is_query ? 0 : kv_head)) * head_dim;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float angle = position * inv_freq[i];
        float c = round_bf(cosf(angle)), s = round_bf(sinf(angle));
        float a = bf2f(head[i]), b = bf2f(head[i + half]);
        bf16 x = f2bf(round_bf(a * c) + round_bf(-b * s));
        bf16 y = f2bf(round_bf(b * c) + round_bf(a * s));
        head[i] = x;
        head[i + half] = y;
        if (!is_query) {
            k_cache[at + i] = x;
            k_cache[at + i + half] = y;
            v_cache[at + i] = v_head[i];
            v_cache[at + i + half] = v_head[i + half];
        }
    }
}

#define ATTN_WARPS 16
#define ATTN_KEYS 8

// Causal attention of one query token and head over its sequence's paged KV, with an
// online softmax. Grid (tokens, n_heads), block x taking token token_order[x], ATTN_WARPS warps: each warp takes every
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
                          const u32* __restrict__ block_tables,
                          const u32* __restrict__ token_order, int n_heads, int n_kv_heads,
                          int head_dim, int block_size, float scale) {
    __shared__ float warp_m[ATTN_WARPS], warp_l[ATTN_WARPS];
    __shared__ float warp_acc[ATTN_WARPS][32 * PER_LANE];
    int t = (int)token_order[blockIdx.x], h = blockIdx.y;
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
                                    const u32* token_order, int n_heads, int n_kv_heads,       \
                                    int head_dim, int block_size, float scale) {               \
        attention<PER_LANE>(q, k_cache, v_cache, out, positions, token_seq, seq_table_offset,  \
                            block_tables, token_order, n_heads, n_kv_heads, head_dim,          \
                            block_size, scale);                                                \
    }

// One entry per head size class, so the per-lane arrays stay in registers.
ATTENTION_ENTRY(paged_attention_64, 2)
ATTENTION_ENTRY(paged_attention_128, 4)
ATTENTION_ENTRY(paged_attention_256, 8)

#define GQA_WARPS 8
#define ATTN_MAX_SPLITS 16  // MAX_ATTENTION_SPLITS in mod.rs

// The KV block ids of the keys of one iteration of `attention_gqa`, from key `first` on:
// lane group `grp` takes keys first + u * KPW + grp (0 past k1).
template <int U, int KPW>
__device__ __forceinline__ void gqa_blocks(const u32* __restrict__ table, int first, int k1,
                                           int grp, int block_size, u32 blk[U]) {
#pragma unroll
    for (int u = 0; u < U; u++) {
        int key = first + u * KPW + grp;
        blk[u] = key < k1 ? table[key / block_size] : 0u;
    }
}

// The keys and values of those keys (blocks `blk`): lane `sub` of a group loads 16 bytes
// of the head. Keys at or past k1 are not loaded (zeros, live false).
template <int U, int KPW, int D>
__device__ __forceinline__ void gqa_kv(const bf16* __restrict__ k_cache,
                                       const bf16* __restrict__ v_cache, const u32 blk[U],
                                       int first, int k1, int grp, int sub, int kv_head,
                                       int kv_width, int block_size, uint4 kw[U], uint4 vw[U],
                                       bool live[U]) {
#pragma unroll
    for (int u = 0; u < U; u++) {
        int key = first + u * KPW + grp;
        live[u] = key < k1;
        size_t slot = (size_t)blk[u] * block_size + key % block_size;
        size_t at = slot * kv_width + kv_head * D + sub * 8;
        kw[u] = live[u] ? *(const uint4*)(k_cache + at) : make_uint4(0, 0, 0, 0);
        vw[u] = live[u] ? *(const uint4*)(v_cache + at) : make_uint4(0, 0, 0, 0);
    }
}

// As `attention`, but one block per (token, kv head) computes all G = n_heads /
// n_kv_heads query heads that share it (G <= GMAX): each key and value is loaded once
// for the group instead of once per query head, which divides the KV traffic of a
// decode step by G (4 on Llama-3 shapes). GQA_WARPS warps split the keys.
//
// Split over the keys (flash-decoding): with gridDim.z = S > 1, block z takes the z-th
// of S equal runs of the token's keys, so that a decode step of few sequences still
// spreads over the GPU (batch 1 on a Llama-3 shape is only 8 (token, kv head) pairs).
// Each block leaves its unnormalised result and its softmax max and sum in `part_acc`
// and `part_ml`; the last of the S blocks to finish (counted in `done`, which it resets
// to 0 for the next launch) merges them. With S = 1 the block writes `out` itself and
// the three buffers are not touched.
template <int PER_LANE, int GMAX>
__device__ void attention_gqa(const bf16* __restrict__ q, const bf16* __restrict__ k_cache,
                              const bf16* __restrict__ v_cache, bf16* __restrict__ out,
                              const u32* __restrict__ positions,
                              const u32* __restrict__ token_seq,
                              const u32* __restrict__ seq_table_offset,
                              const u32* __restrict__ block_tables,
                              const u32* __restrict__ token_order, int n_heads, int n_kv_heads,
                              int head_dim, int block_size, float scale,
                              float* __restrict__ part_acc, float* __restrict__ part_ml,
                              u32* __restrict__ done, const u32* __restrict__ key_start,
                              const float* __restrict__ prefix_acc,
                              const float* __restrict__ prefix_ml) {
    __shared__ float warp_m[GQA_WARPS][GMAX], warp_l[GQA_WARPS][GMAX];
    __shared__ float warp_acc[GQA_WARPS][GMAX][32 * PER_LANE];
    __shared__ int last_block;
    __shared__ float split_w[ATTN_MAX_SPLITS][GMAX];
    int t = (int)token_order[blockIdx.x], kv_head = blockIdx.y;
    int n_splits = gridDim.z, split = blockIdx.z;
    int G = n_heads / n_kv_heads;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int n_keys = (int)positions[t] + 1;
    // With a cascade (see `cascade_attention`), keys before key_start were done for the
    // token's whole tile, and this block takes the rest.
    int k_lo = key_start != nullptr ? (int)key_start[blockIdx.x] : 0;
    int run = (n_keys - k_lo + n_splits - 1) / n_splits;
    int k0 = k_lo + split * run, k1 = min(n_keys, k0 + run);
    const u32* table = block_tables + seq_table_offset[token_seq[t]];
    int kv_width = n_kv_heads * head_dim;

    // Keys in 16-byte loads: LPK lanes hold one key's head (8 values each), so a warp
    // load covers KPW keys; each lane group of LPK lanes keeps its own online softmax
    // over its keys, and the groups of a warp are merged at the end.
    constexpr int D = 32 * PER_LANE, LPK = D / 8, KPW = 32 / LPK;
    constexpr int U = 4;  // warp loads per iteration, per K and V
    constexpr int ITER_KEYS = KPW * U;
    int sub = lane % LPK, grp = lane / LPK;
    float qv[GMAX][8], acc[GMAX][8], m[GMAX], l[GMAX];
#pragma unroll
    for (int g = 0; g < GMAX; g++) {
        const bf16* q_head = q + ((size_t)t * n_heads + kv_head * G + (g < G ? g : 0)) * D;
        uint4 qw = g < G ? *(const uint4*)(q_head + sub * 8) : make_uint4(0, 0, 0, 0);
        const u32 qp[4] = {qw.x, qw.y, qw.z, qw.w};
#pragma unroll
        for (int e = 0; e < 4; e++) {
            qv[g][2 * e] = __uint_as_float(qp[e] << 16) * scale;
            qv[g][2 * e + 1] = __uint_as_float(qp[e] & 0xffff0000u) * scale;
            acc[g][2 * e] = 0.0f;
            acc[g][2 * e + 1] = 0.0f;
        }
        m[g] = NEG_INF;
        l[g] = 0.0f;
    }
    // The block ids of an iteration's keys are read one iteration ahead, so that its key
    // and value loads wait on one round trip to memory, not two (9% faster at 124
    // sequences of 2,304 tokens, H100: attention_bench.cu).
    constexpr int STRIDE = GQA_WARPS * ITER_KEYS;
    uint4 kw[U], vw[U];
    bool live[U];
    u32 blk[U];
    gqa_blocks<U, KPW>(table, k0 + warp * ITER_KEYS, k1, grp, block_size, blk);
    for (int first = k0 + warp * ITER_KEYS; first < k1; first += STRIDE) {
        gqa_kv<U, KPW, D>(k_cache, v_cache, blk, first, k1, grp, sub, kv_head, kv_width,
                          block_size, kw, vw, live);
        gqa_blocks<U, KPW>(table, first + STRIDE, k1, grp, block_size, blk);
        float vv[U][8];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const u32 vp[4] = {vw[u].x, vw[u].y, vw[u].z, vw[u].w};
#pragma unroll
            for (int e = 0; e < 4; e++) {
                vv[u][2 * e] = __uint_as_float(vp[e] << 16);
                vv[u][2 * e + 1] = __uint_as_float(vp[e] & 0xffff0000u);
            }
        }
#pragma unroll
        for (int g = 0; g < GMAX; g++) {
            if (g >= G) break;
            float sc[U];
#pragma unroll
            for (int u = 0; u < U; u++) {
                const u32 kp[4] = {kw[u].x, kw[u].y, kw[u].z, kw[u].w};
                float s = 0.0f;
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    s += qv[g][2 * e] * __uint_as_float(kp[e] << 16);
                    s += qv[g][2 * e + 1] * __uint_as_float(kp[e] & 0xffff0000u);
                }
#pragma unroll
                for (int o = LPK / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
                sc[u] = live[u] ? s : NEG_INF;
            }
            float group_max = NEG_INF;
#pragma unroll
            for (int u = 0; u < U; u++) group_max = fmaxf(group_max, sc[u]);
            if (group_max == NEG_INF) continue;  // no live key for this lane group
            float m_new = fmaxf(m[g], group_max);
            float correction = expf(m[g] - m_new);
            l[g] *= correction;
#pragma unroll
            for (int i = 0; i < 8; i++) acc[g][i] *= correction;
#pragma unroll
            for (int u = 0; u < U; u++) {
                float p = live[u] ? expf(sc[u] - m_new) : 0.0f;
                l[g] += p;
#pragma unroll
                for (int i = 0; i < 8; i++) acc[g][i] += p * vv[u][i];
            }
            m[g] = m_new;
        }
    }
    // Merge the warp's lane groups (each saw other keys), then post the warp's result.
#pragma unroll
    for (int g = 0; g < GMAX; g++) {
#pragma unroll
        for (int o = LPK; o < 32; o <<= 1) {
            float m_o = __shfl_xor_sync(0xffffffffu, m[g], o);
            float l_o = __shfl_xor_sync(0xffffffffu, l[g], o);
            float m_new = fmaxf(m[g], m_o);
            // A group that saw no key has l = 0 (and m = -inf) and adds nothing.
            float a = l[g] > 0.0f ? expf(m[g] - m_new) : 0.0f;
            float b = l_o > 0.0f ? expf(m_o - m_new) : 0.0f;
            l[g] = l[g] * a + l_o * b;
#pragma unroll
            for (int i = 0; i < 8; i++) {
                float acc_o = __shfl_xor_sync(0xffffffffu, acc[g][i], o);
                acc[g][i] = acc[g][i] * a + acc_o * b;
            }
            m[g] = m_new;
        }
        if (lane == 0) {
            warp_m[warp][g] = m[g];
            warp_l[warp][g] = l[g];
        }
        if (grp == 0) {
#pragma unroll
            for (int i = 0; i < 8; i++) warp_acc[warp][g][sub * 8 + i] = acc[g][i];
        }
    }
    __syncthreads();
    // Warp g merges the warps' partial results of query head g.
    size_t pair = (size_t)blockIdx.x * n_kv_heads + kv_head;
    for (int g = warp; g < G; g += GQA_WARPS) {
        float m_all = NEG_INF;
        for (int w = 0; w < GQA_WARPS; w++) m_all = fmaxf(m_all, warp_m[w][g]);
        float l_all = 0.0f;
        float weight[GQA_WARPS];
        for (int w = 0; w < GQA_WARPS; w++) {
            // A warp that saw no key has l = 0 and contributes nothing.
            weight[w] = warp_l[w][g] > 0.0f ? expf(warp_m[w][g] - m_all) : 0.0f;
            l_all += warp_l[w][g] * weight[w];
        }
        bf16* out_head = out + ((size_t)t * n_heads + kv_head * G + g) * head_dim;
        size_t part = (pair * n_splits + split) * GMAX + g;
        // The cascade's part of the keys (unsplit launches only: the host cascades only
        // batches that fill the GPU), weighed against this block's as two splits are.
        size_t row = (size_t)blockIdx.x * n_heads + kv_head * G + g;
        float w_own = 1.0f, w_prefix = 0.0f;
        if (k_lo > 0) {
            float m_p = prefix_ml[2 * row], l_p = prefix_ml[2 * row + 1];
            float m_tot = fmaxf(m_all, m_p);
            w_own = l_all > 0.0f ? expf(m_all - m_tot) : 0.0f;
            w_prefix = l_p > 0.0f ? expf(m_p - m_tot) : 0.0f;
            l_all = l_all * w_own + l_p * w_prefix;
        }
#pragma unroll
        for (int i = 0; i < PER_LANE; i++) {
            int d = lane + 32 * i;
            if (d < head_dim) {
                float o = 0.0f;
                for (int w = 0; w < GQA_WARPS; w++) o += warp_acc[w][g][d] * weight[w];
                if (n_splits == 1) {
                    if (k_lo > 0) o = o * w_own + prefix_acc[row * head_dim + d] * w_prefix;
                    out_head[d] = f2bf(o / l_all);
                } else {
                    part_acc[part * (32 * PER_LANE) + d] = o;
                }
            }
        }
        if (n_splits > 1 && lane == 0) {
            part_ml[2 * part] = m_all;
            part_ml[2 * part + 1] = l_all;
        }
    }
    if (n_splits == 1) return;
    // Publish this block's part, then count it; the last block of the pair merges.
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last_block = atomicAdd(done + pair, 1u) == (u32)(n_splits - 1);
    __syncthreads();
    if (!last_block) return;
    __threadfence();
    // Warp g: lane s reads part s's max and sum of query head g; each part's weight,
    // with the softmax's normalisation folded in, goes to shared memory.
    for (int g = warp; g < G; g += GQA_WARPS) {
        size_t part = (pair * n_splits + lane) * GMAX + g;
        float m_s = NEG_INF, l_s = 0.0f;
        if (lane < n_splits) {
            m_s = __ldcg(part_ml + 2 * part);
            l_s = __ldcg(part_ml + 2 * part + 1);
        }
        // A run with no keys (more splits than keys) has l = 0 and adds nothing.
        float m_all = warp_max(l_s > 0.0f ? m_s : NEG_INF);
        float w = l_s > 0.0f ? expf(m_s - m_all) : 0.0f;
        float l_all = warp_sum(l_s * w);
        if (lane < n_splits) split_w[lane][g] = w / l_all;
    }
    __syncthreads();
    // Then every thread sums parts for its (head, dimension) pairs, loads in flight.
    int dims = 32 * PER_LANE;
    for (int e = threadIdx.x; e < G * dims; e += blockDim.x) {
        int g = e / dims, d = e % dims;
        if (d >= head_dim) continue;
        float o = 0.0f;
#pragma unroll 4
        for (int s = 0; s < n_splits; s++) {
            size_t part = (pair * n_splits + s) * GMAX + g;
            o += __ldcg(part_acc + part * dims + d) * split_w[s][g];
        }
        out[((size_t)t * n_heads + kv_head * G + g) * head_dim + d] = f2bf(o);
    }
    if (threadIdx.x == 0) done[pair] = 0;
}

// Each head size and group bound comes in two builds: one that may use all the registers
// it wants (one block per multiprocessor), for the split launches of small batches; and
// `_x2`, held to 128 registers so that two blocks share a multiprocessor, for batches
// whose (token, kv head) pairs fill the GPU. There a block spends most of its time waiting
// for keys, and a second block's loads keep memory busy (1.5x faster measured at 256
// sequences of 2,304 tokens, H100: attention_bench.cu).
#define GQA_ENTRY(NAME, PER_LANE, GMAX, MIN_BLOCKS)                                            \
    extern "C" __global__ void __launch_bounds__(GQA_WARPS * 32, MIN_BLOCKS)                   \
        NAME(const bf16* q, const bf16* k_cache, const bf16* v_cache, bf16* out,               \
             const u32* positions, const u32* token_seq, const u32* seq_table_offset,          \
             const u32* block_tables, const u32* token_order, int n_heads, int n_kv_heads,     \
             int head_dim, int block_size, float scale, float* part_acc, float* part_ml,       \
             u32* done, const u32* key_start, const float* prefix_acc,                         \
             const float* prefix_ml) {                                                         \
        attention_gqa<PER_LANE, GMAX>(q, k_cache, v_cache, out, positions, token_seq,          \
                                      seq_table_offset, block_tables, token_order, n_heads,    \
                                      n_kv_heads, head_dim, block_size, scale, part_acc,       \
                                      part_ml, done, key_start, prefix_acc, prefix_ml);        \
    }

GQA_ENTRY(gqa_attention_64_4, 2, 4, 1)
GQA_ENTRY(gqa_attention_64_8, 2, 8, 1)
GQA_ENTRY(gqa_attention_128_4, 4, 4, 1)
GQA_ENTRY(gqa_attention_128_8, 4, 8, 1)
GQA_ENTRY(gqa_attention_64_4_x2, 2, 4, 2)
GQA_ENTRY(gqa_attention_64_8_x2, 2, 8, 2)
GQA_ENTRY(gqa_attention_128_4_x2, 4, 4, 2)
GQA_ENTRY(gqa_attention_128_8_x2, 4, 8, 2)

#define PF_ROWS 16
#define PF_KEYS 64
#define PF_THREADS 128

// Attention over a tile of query rows that read the same keys: one block per tile, the
// block walking those keys PF_KEYS at a time. The keys and values are loaded once into
// shared memory for all the tile's rows (the per-token kernels read them again for every
// row); scores and the online softmax are per row. Thread (r, s) = (tid / 8, tid % 8)
// owns row r, score columns s, s + 8, ... of a key tile and the 32-bit words (pairs of
// dimensions) s, s + 8, ... of the output. Shared rows are padded by one word so that
// the 8 threads of a row hit 8 different banks.
//
// Two kinds of tile (CASCADE):
// - prefill: up to PF_ROWS consecutive query tokens of one sequence, for one query head
//   (block (tile, head)); causality is a per-row limit (a token at position p sees keys
//   0..=p), and the block writes the normalised output.
// - cascade: decode tokens whose sequences share their first KV blocks (a cached
//   prefix), for one kv head (block (tile, kv head)); a row is one (token, query head of
//   the group) pair, and every row sees the tile's shared keys. The block leaves each
//   row's unnormalised output and softmax max and sum in `prefix_acc` / `prefix_ml`
//   (indexed by the token's place in the token order), and `attention_gqa` merges them
//   with the token's own keys. The shared keys are read once for up to PF_ROWS rows
//   instead of once per token.
template <int D, bool CASCADE>
__device__ void tile_attention(const bf16* __restrict__ q, const bf16* __restrict__ k_cache,
                               const bf16* __restrict__ v_cache, bf16* __restrict__ out,
                               const u32* __restrict__ positions,
                               const u32* __restrict__ token_seq,
                               const u32* __restrict__ seq_table_offset,
                               const u32* __restrict__ block_tables,
                               const u32* __restrict__ tiles,
                               const u32* __restrict__ token_order, int n_heads,
                               int n_kv_heads, int block_size, float scale,
                               float* __restrict__ prefix_acc, float* __restrict__ prefix_ml) {
    constexpr int KS = D / 2 + 1;   // u32 words per shared key / value row
    constexpr int QS = D + 2;       // floats per shared query row
    constexpr int WORDS = D / 16;   // output words per thread
    __shared__ u32 ks[PF_KEYS * KS];
    __shared__ u32 vs[PF_KEYS * KS];
    __shared__ float qs[PF_ROWS * QS];
    __shared__ float ps[PF_ROWS * (PF_KEYS + 1)];
    int G = n_heads / n_kv_heads;
    int kv_width = n_kv_heads * D;
    int tid = threadIdx.x, r = tid >> 3, s = tid & 7;
    // Tile entries: (first token, rows) for prefill; (first place in the token order,
    // tokens, shared keys) for cascade, where an empty entry (0 tokens) pads a graph's
    // fixed grid.
    int first, n_rows, n_keys, kv_head, my_last;
    if (CASCADE) {
        const u32* e = tiles + 3 * blockIdx.x;
        first = (int)e[0];
        n_rows = (int)e[1] * G;
        n_keys = (int)e[2];
        kv_head = blockIdx.y;
        my_last = r < n_rows ? n_keys - 1 : -1;
    } else {
        first = (int)tiles[2 * blockIdx.x];
        n_rows = (int)tiles[2 * blockIdx.x + 1];
        n_keys = (int)positions[first + n_rows - 1] + 1;
        kv_head = blockIdx.y / G;
        my_last = r < n_rows ? (int)positions[first + r] : -1;
    }
    if (n_rows == 0) return;
    // The query row (in q and out) of tile row `row`.
    auto q_row = [&](int row) -> size_t {
        if (CASCADE) {
            return (size_t)token_order[first + row / G] * n_heads + kv_head * G + row % G;
        }
        return (size_t)(first + row) * n_heads + blockIdx.y;
    };
    const u32* table =
        block_tables + seq_table_offset[token_seq[CASCADE ? token_order[first] : first]];
    for (int i = tid; i < PF_ROWS * D; i += PF_THREADS) {
        int row = i / D, d = i % D;
        qs[row * QS + d] = row < n_rows ? bf2f(q[q_row(row) * D + d]) * scale : 0.0f;
    }
    float m = NEG_INF, l = 0.0f;
    float acc[2 * WORDS];
#pragma unroll
    for (int j = 0; j < 2 * WORDS; j++) acc[j] = 0.0f;
    for (int k0 = 0; k0 < n_keys; k0 += PF_KEYS) {
        __syncthreads();  // the last tile's keys, values and probabilities are used up
        for (int i = tid; i < PF_KEYS * (D / 8); i += PF_THREADS) {
            int row = i / (D / 8), chunk = i % (D / 8);
            int key = k0 + row;
            uint4 kk = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
            if (key < n_keys) {
                size_t slot = (size_t)table[key / block_size] * block_size + key % block_size;
                size_t at = slot * kv_width + kv_head * D + chunk * 8;
                kk = *(const uint4*)(k_cache + at);
                vv = *(const uint4*)(v_cache + at);
            }
            u32* kd = ks + row * KS + chunk * 4;
            u32* vd = vs + row * KS + chunk * 4;
            kd[0] = kk.x; kd[1] = kk.y; kd[2] = kk.z; kd[3] = kk.w;
            vd[0] = vv.x; vd[1] = vv.y; vd[2] = vv.z; vd[3] = vv.w;
        }
        __syncthreads();
        float sc[PF_KEYS / 8];
#pragma unroll
        for (int j = 0; j < PF_KEYS / 8; j++) sc[j] = 0.0f;
        const float* qr = qs + r * QS;
#pragma unroll 4
        for (int w = 0; w < D / 2; w++) {
            float q0 = qr[2 * w], q1 = qr[2 * w + 1];
#pragma unroll
            for (int j = 0; j < PF_KEYS / 8; j++) {
                u32 kw = ks[(s + 8 * j) * KS + w];
                sc[j] += q0 * __uint_as_float(kw << 16) + q1 * __uint_as_float(kw & 0xffff0000u);
            }
        }
        float tmax = NEG_INF;
#pragma unroll
        for (int j = 0; j < PF_KEYS / 8; j++) {
            if (k0 + s + 8 * j > my_last) sc[j] = NEG_INF;
            tmax = fmaxf(tmax, sc[j]);
        }
        tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
        tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 2));
        tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 4));
        float m_new = fmaxf(m, tmax);
        // A row that has seen no key yet (or a padding row) keeps m = -inf and p = 0.
        float corr = m_new == NEG_INF ? 1.0f : expf(m - m_new);
        float psum = 0.0f;
        float* pr = ps + r * (PF_KEYS + 1);
#pragma unroll
        for (int j = 0; j < PF_KEYS / 8; j++) {
            float p = sc[j] == NEG_INF ? 0.0f : expf(sc[j] - m_new);
            pr[s + 8 * j] = p;
            psum += p;
        }
        psum += __shfl_xor_sync(0xffffffffu, psum, 1);
        psum += __shfl_xor_sync(0xffffffffu, psum, 2);
        psum += __shfl_xor_sync(0xffffffffu, psum, 4);
        l = l * corr + psum;
        m = m_new;
#pragma unroll
        for (int j = 0; j < 2 * WORDS; j++) acc[j] *= corr;
        __syncwarp();  // a row's probabilities come from the 8 lanes of the same warp
        int n_here = min(PF_KEYS, n_keys - k0);
        for (int c = 0; c < n_here; c++) {
            float p = pr[c];
            const u32* vr = vs + c * KS + s;
#pragma unroll
            for (int j = 0; j < WORDS; j++) {
                u32 vw = vr[8 * j];
                acc[2 * j] += p * __uint_as_float(vw << 16);
                acc[2 * j + 1] += p * __uint_as_float(vw & 0xffff0000u);
            }
        }
    }
    if (r >= n_rows) return;
    if (CASCADE) {
        size_t row = (size_t)(first + r / G) * n_heads + kv_head * G + r % G;
        float* o = prefix_acc + row * D;
#pragma unroll
        for (int j = 0; j < WORDS; j++) {
            int w = s + 8 * j;
            o[2 * w] = acc[2 * j];
            o[2 * w + 1] = acc[2 * j + 1];
        }
        if (s == 0) {
            prefix_ml[2 * row] = m;
            prefix_ml[2 * row + 1] = l;
        }
        return;
    }
    bf16* o = out + q_row(r) * D;
    float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
    for (int j = 0; j < WORDS; j++) {
        int w = s + 8 * j;
        o[2 * w] = f2bf(acc[2 * j] * inv);
        o[2 * w + 1] = f2bf(acc[2 * j + 1] * inv);
    }
}

#define PREFILL_ENTRY(NAME, D)                                                                 \
    extern "C" __global__ void __launch_bounds__(PF_THREADS)                                   \
        NAME(const bf16* q, const bf16* k_cache, const bf16* v_cache, bf16* out,               \
             const u32* positions, const u32* token_seq, const u32* seq_table_offset,          \
             const u32* block_tables, const u32* tiles, int n_heads, int n_kv_heads,           \
             int block_size, float scale) {                                                    \
        tile_attention<D, false>(q, k_cache, v_cache, out, positions, token_seq,               \
                                 seq_table_offset, block_tables, tiles, nullptr, n_heads,      \
                                 n_kv_heads, block_size, scale, nullptr, nullptr);             \
    }

PREFILL_ENTRY(prefill_attention_64, 64)
PREFILL_ENTRY(prefill_attention_128, 128)

// The cascade's shared-prefix part (see `tile_attention`): block (tile, kv head).
#define CASCADE_ENTRY(NAME, D)                                                                 \
    extern "C" __global__ void __launch_bounds__(PF_THREADS)                                   \
        NAME(const bf16* q, const bf16* k_cache, const bf16* v_cache, const u32* positions,    \
             const u32* token_seq, const u32* seq_table_offset, const u32* block_tables,       \
             const u32* tiles, const u32* token_order, int n_heads, int n_kv_heads,            \
             int block_size, float scale, float* prefix_acc, float* prefix_ml) {               \
        tile_attention<D, true>(q, k_cache, v_cache, nullptr, positions, token_seq,            \
                                seq_table_offset, block_tables, tiles, token_order, n_heads,   \
                                n_kv_heads, block_size, scale, prefix_acc, prefix_ml);         \
    }

CASCADE_ENTRY(cascade_attention_64, 64)
CASCADE_ENTRY(cascade_attention_128, 128)

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

// The input of a decode step's products, as the kernels take it: x itself, or (with
// `norm`, for one row) the RMSNorm of the residual stream, which every block of the
// product then computes for itself, so that the norm costs no launch of its own.
struct GemvInput {
    const bf16* x;             // x, or the residual stream
    const bf16* delta;         // with `norm`: added into the residual first, or null
    const bf16* norm;          // the norm's weight, or null for a plain x
    bf16* residual_out;        // with a delta: where block 0 writes the updated residual
    float eps;
};

// 16-byte chunks of the row per thread in a fused norm: rows of up to
// NORM_CHUNKS * 8 * blockDim values (4,096 with the GEMV kernels' 256 threads).
#define NORM_CHUNKS 2

// Stages the product's input in shared memory. With a norm (one row) this is
// add_rms_norm's arithmetic, rounding for rounding: r = bf16(residual + delta), then
// bf16(weight * bf16(r / rms(r))); each thread loads its chunks of residual, delta and
// weight at once and keeps them in registers. The residual goes to a separate buffer,
// because the other blocks still read the old one.
__device__ void stage_input(const GemvInput& in, uint4* xs, int m, int k8) {
    if (in.norm == nullptr) {
        stage_x(in.x, xs, m, k8);
        return;
    }
    __shared__ float partial[32];
    const uint4* res = (const uint4*)in.x;
    const uint4* delta = (const uint4*)in.delta;
    const uint4* weight = (const uint4*)in.norm;
    uint4 a[NORM_CHUNKS], d[NORM_CHUNKS], w[NORM_CHUNKS];
#pragma unroll
    for (int j = 0; j < NORM_CHUNKS; j++) {
        int c = threadIdx.x + j * blockDim.x;
        bool here = c < k8;
        a[j] = here ? res[c] : make_uint4(0, 0, 0, 0);
        d[j] = here && delta != nullptr ? delta[c] : make_uint4(0, 0, 0, 0);
        w[j] = here ? __ldg(weight + c) : make_uint4(0, 0, 0, 0);
    }
    float sq = 0.0f;
#pragma unroll
    for (int j = 0; j < NORM_CHUNKS; j++) {
        u32 aw[4] = {a[j].x, a[j].y, a[j].z, a[j].w}, dw[4] = {d[j].x, d[j].y, d[j].z, d[j].w};
#pragma unroll
        for (int e = 0; e < 4; e++) {
            float lo = __uint_as_float(aw[e] << 16), hi = __uint_as_float(aw[e] & 0xffff0000u);
            if (delta != nullptr) {
                lo = round_bf(lo + __uint_as_float(dw[e] << 16));
                hi = round_bf(hi + __uint_as_float(dw[e] & 0xffff0000u));
                aw[e] = (__float_as_uint(lo) >> 16) | (__float_as_uint(hi) & 0xffff0000u);
            }
            sq += lo * lo + hi * hi;
        }
        a[j] = make_uint4(aw[0], aw[1], aw[2], aw[3]);
        int c = threadIdx.x + j * blockDim.x;
        if (delta != nullptr && blockIdx.x == 0 && c < k8) ((uint4*)in.residual_out)[c] = a[j];
    }
    float inv = rsqrtf(block_sum(sq, partial) / (float)(k8 * 8) + in.eps);
#pragma unroll
    for (int j = 0; j < NORM_CHUNKS; j++) {
        int c = threadIdx.x + j * blockDim.x;
        if (c >= k8) continue;
        u32 aw[4] = {a[j].x, a[j].y, a[j].z, a[j].w}, ww[4] = {w[j].x, w[j].y, w[j].z, w[j].w};
#pragma unroll
        for (int e = 0; e < 4; e++) {
            bf16 lo = f2bf(__uint_as_float(ww[e] << 16) *
                           round_bf(__uint_as_float(aw[e] << 16) * inv));
            bf16 hi = f2bf(__uint_as_float(ww[e] & 0xffff0000u) *
                           round_bf(__uint_as_float(aw[e] & 0xffff0000u) * inv));
            aw[e] = (u32)lo | ((u32)hi << 16);
        }
        xs[c] = make_uint4(aw[0], aw[1], aw[2], aw[3]);
    }
    __syncthreads();
}

// This lane's first GEMV_UNROLL 16-byte chunks of NW weight rows (zeros past k8, or for a
// column past n). The products issue these before they stage x, so the first weights
// are on their way while the block waits for x.
template <int NW>
__device__ __forceinline__ void gemv_first(const bf16* const* rows, int k8, bool live,
                                           uint4 wv[NW][GEMV_UNROLL]) {
    int lane = threadIdx.x & 31;
#pragma unroll
    for (int a = 0; a < NW; a++) {
        const uint4* row = (const uint4*)rows[a];
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++) {
            int c = lane + 32 * u;
            wv[a][u] = (live && c < k8) ? __ldg(row + c) : make_uint4(0, 0, 0, 0);
        }
    }
}

// acc[a][r] = sum_c xs[r, c] * rows[a][c] for NW weight rows at once (NW = 2: gate and
// up, their loads issued together), summed over the warp (every lane gets the sums).
// Each lane loads 16 bytes (8 bf16) of a row per load, GEMV_UNROLL loads per row in
// flight; `wv` holds the first GEMV_UNROLL chunks (gemv_first). k % 8 == 0 and the rows
// are 16-byte aligned.
template <int NW>
__device__ __forceinline__ void gemv_rows(const uint4* xs, const bf16* const* rows, int m, int k8,
                                          uint4 wv[NW][GEMV_UNROLL],
                                          float acc[NW][GEMV_MAX_M]) {
    int lane = threadIdx.x & 31;
#pragma unroll
    for (int a = 0; a < NW; a++)
#pragma unroll
        for (int r = 0; r < GEMV_MAX_M; r++) acc[a][r] = 0.0f;
    for (int c0 = lane; c0 < k8; c0 += 32 * GEMV_UNROLL) {
        if (c0 != lane) {
#pragma unroll
            for (int a = 0; a < NW; a++) {
                const uint4* row = (const uint4*)rows[a];
#pragma unroll
                for (int u = 0; u < GEMV_UNROLL; u++) {
                    int c = c0 + 32 * u;
                    wv[a][u] = c < k8 ? __ldg(row + c) : make_uint4(0, 0, 0, 0);
                }
            }
        }
#pragma unroll
        for (int r = 0; r < GEMV_MAX_M; r++) {
            if (r < m) {
#pragma unroll
                for (int u = 0; u < GEMV_UNROLL; u++) {
                    int c = c0 + 32 * u;
                    if (c < k8) {
                        uint4 xv = xs[r * k8 + c];
#pragma unroll
                        for (int a = 0; a < NW; a++) acc[a][r] += dot8(wv[a][u], xv);
                    }
                }
            }
        }
    }
#pragma unroll
    for (int a = 0; a < NW; a++)
#pragma unroll
        for (int r = 0; r < GEMV_MAX_M; r++) acc[a][r] = warp_sum(acc[a][r]);
}

// Column j's products for a decode step: its first weight chunks loaded, then x staged
// in shared memory, then the sums. False for a warp past n (which
// still takes part in staging x).
template <int NW>
__device__ __forceinline__ bool gemv_column(const GemvInput& in, const bf16* const* rows,
                                            bool live, int m, int k8, float acc[NW][GEMV_MAX_M]) {
    DYNAMIC_SHARED(uint4, xs);
    uint4 wv[NW][GEMV_UNROLL];
    gemv_first<NW>(rows, k8, live, wv);
    stage_input(in, xs, m, k8);
    if (!live) return false;
    gemv_rows<NW>(xs, rows, m, k8, wv, acc);
    return true;
}

// out[r, j] = sum_c x[r, c] * w[j, c] for the few rows of a decode step (m <= GEMV_MAX_M).
// Matrix products at batch 1..4 only need to stream the weight once; cuBLAS's tiles are
// built for larger m. The block stages x in dynamic shared memory (m * k bf16), then
// each warp computes one output column. Output bf16 (rounded) or f32 (`out_f32`).
extern "C" __global__ void gemv_small_m(const bf16* __restrict__ x, const bf16* __restrict__ w,
                                        void* __restrict__ out, int m, int n, int k,
                                        int out_f32) {
    int j = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    bool live = j < n;
    const bf16* rows[1] = {w + (size_t)(live ? j : 0) * k};
    float acc[1][GEMV_MAX_M];
    GemvInput in = {x, nullptr, nullptr, nullptr, 0.0f};
    if (!gemv_column<1>(in, rows, live, m, k / 8, acc) || (threadIdx.x & 31) != 0) return;
#pragma unroll
    for (int r = 0; r < GEMV_MAX_M; r++) {
        if (r < m) {
            if (out_f32) {
                ((float*)out)[(size_t)r * n + j] = acc[0][r];
            } else {
                ((bf16*)out)[(size_t)r * n + j] = f2bf(acc[0][r]);
            }
        }
    }
}

// Up to three products of the same x in one launch (the query, key and value
// projections): the first ceil(n0 / GEMV_WARPS) blocks compute w0's columns, the next
// w1's, the rest w2's. Unused matrices have n = 0.
extern "C" __global__ void gemv_multi(const bf16* __restrict__ x, const bf16* __restrict__ delta,
                                      const bf16* __restrict__ norm, bf16* residual_out,
                                      float eps, const bf16* __restrict__ w0,
                                      const bf16* __restrict__ w1, const bf16* __restrict__ w2,
                                      bf16* __restrict__ o0, bf16* __restrict__ o1,
                                      bf16* __restrict__ o2, int n0, int n1, int n2, int m,
                                      int k) {
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
    bool live = j < n;
    const bf16* rows[1] = {w + (size_t)(live ? j : 0) * k};
    float acc[1][GEMV_MAX_M];
    GemvInput in = {x, delta, norm, residual_out, eps};
    if (!gemv_column<1>(in, rows, live, m, k / 8, acc) || (threadIdx.x & 31) != 0) return;
#pragma unroll
    for (int r = 0; r < GEMV_MAX_M; r++) {
        if (r < m) o[(size_t)r * n + j] = f2bf(acc[0][r]);
    }
}

// out = silu(x · gateᵀ) * (x · upᵀ) for decode-sized x: each warp computes column j of
// both products and writes only the activation (rounded as the unfused ops would be).
extern "C" __global__ void gemv_gate_up_silu(const bf16* __restrict__ x,
                                             const bf16* __restrict__ delta,
                                             const bf16* __restrict__ norm, bf16* residual_out,
                                             float eps, const bf16* __restrict__ gate,
                                             const bf16* __restrict__ up,
                                             bf16* __restrict__ out, int m, int n, int k) {
    int j = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    bool live = j < n;
    size_t row = (size_t)(live ? j : 0) * k;
    const bf16* rows[2] = {gate + row, up + row};
    float acc[2][GEMV_MAX_M];
    GemvInput in = {x, delta, norm, residual_out, eps};
    if (!gemv_column<2>(in, rows, live, m, k / 8, acc) || (threadIdx.x & 31) != 0) return;
#pragma unroll
    for (int r = 0; r < GEMV_MAX_M; r++) {
        if (r < m) {
            float gv = round_bf(acc[0][r]);
            float act = round_bf(gv / (1.0f + expf(-gv)));
            out[(size_t)r * n + j] = f2bf(act * round_bf(acc[1][r]));
        }
    }
}

// The index of the largest of `cols` f32 values at `row`, the first one on ties as
// numpy's argmax; NaN never wins (a row of NaNs or -inf gives 0). Every thread of the
// block must call it; thread 0 gets the answer.
__device__ u32 block_argmax(const float* __restrict__ row, int cols) {
    __shared__ float best_v[32];
    __shared__ int best_i[32];
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
    }
    __syncthreads();
    return idx == 0x7fffffff ? 0u : (u32)idx;
}

typedef unsigned long long u64;

#define ARGMAX_PARTS 64
#define ARGMAX_THREADS 256

// An order-preserving key of (logit x at index idx) for the greedy argmax: larger logits
// give larger keys, and of equal logits the first index (numpy's argmax); NaN and -inf
// never win (a row of them gives 0).
__device__ __forceinline__ u64 argmax_key(float x, u32 idx) {
    u32 b = __float_as_uint(x);
    bool loses = (b & 0x7fffffffu) > 0x7f800000u || b == 0xff800000u;
    u32 key = loses ? 0u : ((b & 0x80000000u) ? ~b : (b | 0x80000000u));
    return ((u64)key << 32) | (u64)(0xffffffffu - idx);
}

__device__ __forceinline__ u64 warp_max_u64(u64 v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        u64 other = __shfl_xor_sync(0xffffffffu, v, o);
        v = other > v ? other : v;
    }
    return v;
}

// Greedy sampling on the GPU, first half: block (p, r) takes the p-th of ARGMAX_PARTS
// runs of row r's f32 logits and leaves the largest argmax_key of its run in
// parts[r * ARGMAX_PARTS + p]. A row of a 128k vocabulary is half a megabyte: spread
// over many blocks it is read at the GPU's bandwidth, not one multiprocessor's.
extern "C" __global__ void __launch_bounds__(ARGMAX_THREADS)
    argmax_parts(const float* __restrict__ logits, u64* __restrict__ parts, int cols) {
    __shared__ u64 warp_best[ARGMAX_THREADS / 32];
    const float* row = logits + (size_t)blockIdx.y * cols;
    int run = (cols + ARGMAX_PARTS - 1) / ARGMAX_PARTS;
    int c0 = blockIdx.x * run, c1 = min(cols, c0 + run);
    u64 best = 0;
    for (int c = c0 + threadIdx.x; c < c1; c += ARGMAX_THREADS) {
        u64 k = argmax_key(row[c], (u32)c);
        best = k > best ? k : best;
    }
    best = warp_max_u64(best);
    if ((threadIdx.x & 31) == 0) warp_best[threadIdx.x >> 5] = best;
    __syncthreads();
    if (threadIdx.x < 32) {
        best = threadIdx.x < ARGMAX_THREADS / 32 ? warp_best[threadIdx.x] : 0;
        best = warp_max_u64(best);
        if (threadIdx.x == 0) parts[(size_t)blockIdx.y * ARGMAX_PARTS + blockIdx.x] = best;
    }
}

// Second half: ids[r] = the index of the largest of row r's parts (one warp per row;
// an empty run left 0, below every real key).
extern "C" __global__ void argmax_finish(const u64* __restrict__ parts, u32* __restrict__ ids) {
    u64 best = 0;
    for (int p = threadIdx.x; p < ARGMAX_PARTS; p += 32) {
        u64 k = parts[(size_t)blockIdx.x * ARGMAX_PARTS + p];
        best = k > best ? k : best;
    }
    best = warp_max_u64(best);
    if (threadIdx.x == 0) ids[blockIdx.x] = 0xffffffffu - (u32)best;
}

// Sampling on the GPU; the algorithm, and the host reference every step here mirrors,
// is in sampling.rs (sample_row): top-k and top-p become thresholds on an order-
// preserving u32 key of the logit, found by radix select (four passes of a 256-bin
// histogram each); top-p sums weights in 32.32 fixed point, so the sum and the
// threshold do not depend on the order of the atomic additions; the draw is Gumbel-max
// with a uniform hashed from the row's key and the token's index.

__device__ __forceinline__ u32 order_key(float x) {
    u32 b = __float_as_uint(x);
    if ((b & 0x7fffffffu) > 0x7f800000u) return 0u;  // NaN orders lowest
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float uniform01(u64 key, u32 index) {
    u64 z = key ^ ((u64)index + 1ull) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return ((float)(u32)(z >> 40) + 0.5f) * (1.0f / 16777216.0f);
}

__device__ __forceinline__ u64 fixed_weight(float x, float max, float inv_t) {
    return (u64)(expf((x - max) * inv_t) * 4294967296.0f);
}

#define SAMPLE_THREADS 1024

// The largest key t with (count of keys >= t, among keys >= floor) >= need (by count,
// `by_mass` = 0) or (fixed-point weight of those keys) >= need (`by_mass` = 1).
__device__ u32 radix_select(const float* __restrict__ row, int cols, u32 floor, u64 need,
                            int by_mass, float max, float inv_t) {
    __shared__ u64 hist[256];
    __shared__ u32 chosen;
    __shared__ u64 still_needed;
    u32 prefix = 0, mask = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
        __syncthreads();
        for (int c = threadIdx.x; c < cols; c += blockDim.x) {
            float x = row[c];
            u32 k = order_key(x);
            if (k >= floor && (k & mask) == prefix) {
                u64 add = by_mass ? fixed_weight(x, max, inv_t) : 1ull;
                atomicAdd(&hist[(k >> shift) & 255u], add);
            }
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            u64 cum = 0;
            u32 digit = 0;
            for (int d = 255; d >= 0; d--) {
                if (cum + hist[d] >= need) {
                    digit = (u32)d;
                    break;
                }
                cum += hist[d];
            }
            chosen = digit;
            still_needed = need - cum;
        }
        __syncthreads();
        prefix |= chosen << shift;
        mask |= 255u << shift;
        need = still_needed;
        __syncthreads();
    }
    return prefix;
}

// ids[r] = a token drawn from row r of the logits under params[5 r .. 5 r + 5]
// (temperature bits, top_k, top_p bits, key low, key high: RowSampling::pack). One
// block of SAMPLE_THREADS per row.
extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS)
    sample_rows(const float* __restrict__ logits, const u32* __restrict__ params,
                u32* __restrict__ ids, int cols) {
    __shared__ u64 sum_scratch[32];
    __shared__ float best_s[32];
    __shared__ int best_i[32];
    const float* row = logits + (size_t)blockIdx.x * cols;
    const u32* p = params + 5 * blockIdx.x;
    float temperature = __uint_as_float(p[0]);
    u32 top_k = p[1];
    float top_p = __uint_as_float(p[2]);
    u64 key = (u64)p[3] | ((u64)p[4] << 32);
    u32 greedy = block_argmax(row, cols);
    if (!(temperature > 0.0f) || top_k == 1u) {
        if (threadIdx.x == 0) ids[blockIdx.x] = greedy;
        return;
    }
    // The argmax's value is the largest logit (the kernel has returned on NaN-only rows
    // before this matters: their argmax is 0 and the draw below still picks a token).
    __shared__ u32 greedy_shared;
    if (threadIdx.x == 0) greedy_shared = greedy;
    __syncthreads();
    float max = row[greedy_shared];
    float inv_t = 1.0f / temperature;
    u32 threshold = 0;
    if (top_k > 0u && top_k < (u32)cols) {
        threshold = radix_select(row, cols, 0u, (u64)top_k, 0, max, inv_t);
    }
    if (top_p < 1.0f) {
        u64 part = 0;
        for (int c = threadIdx.x; c < cols; c += blockDim.x) {
            float x = row[c];
            if (order_key(x) >= threshold) part += fixed_weight(x, max, inv_t);
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) part += __shfl_xor_sync(0xffffffffu, part, o);
        int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
        if (lane == 0) sum_scratch[warp] = part;
        __syncthreads();
        u64 total = 0;
        for (int w = 0; w < (int)((blockDim.x + 31) >> 5); w++) total += sum_scratch[w];
        __syncthreads();
        u64 target = (u64)ceil((double)top_p * (double)total);
        if (target < 1ull) target = 1ull;
        u32 tp = radix_select(row, cols, threshold, target, 1, max, inv_t);
        threshold = tp > threshold ? tp : threshold;
    }
    float best = NEG_INF;
    int idx = 0x7fffffff;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float x = row[c];
        if (order_key(x) < threshold) continue;
        float g = -logf(-logf(uniform01(key, (u32)c)));
        float s = (x - max) * inv_t + g;
        if (s > best || idx == 0x7fffffff) {
            best = s;
            idx = c;
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float os = __shfl_xor_sync(0xffffffffu, best, o);
        int oi = __shfl_xor_sync(0xffffffffu, idx, o);
        if (oi != 0x7fffffff && (idx == 0x7fffffff || os > best || (os == best && oi < idx))) {
            best = os;
            idx = oi;
        }
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) {
        best_s[warp] = best;
        best_i[warp] = idx;
    }
    __syncthreads();
    if (warp == 0) {
        int n_warps = (blockDim.x + 31) >> 5;
        best = lane < n_warps ? best_s[lane] : NEG_INF;
        idx = lane < n_warps ? best_i[lane] : 0x7fffffff;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            float os = __shfl_xor_sync(0xffffffffu, best, o);
            int oi = __shfl_xor_sync(0xffffffffu, idx, o);
            if (oi != 0x7fffffff && (idx == 0x7fffffff || os > best || (os == best && oi < idx))) {
                best = os;
                idx = oi;
            }
        }
        if (lane == 0) ids[blockIdx.x] = idx == 0x7fffffff ? greedy : (u32)idx;
    }
}
