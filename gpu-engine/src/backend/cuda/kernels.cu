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
extern "C" __global__ void embed_rows(const bf16* table, const u32* ids, bf16* out, int cols) {
    int t = blockIdx.x;
    const bf16* src = table + (size_t)ids[t] * cols;
    bf16* dst = out + (size_t)t * cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) dst[c] = src[c];
}

// out[r, :] = x[src_rows[r], :]; one block per output row.
extern "C" __global__ void gather_rows(const bf16* x, const u32* src_rows, bf16* out, int cols) {
    int r = blockIdx.x;
    const bf16* src = x + (size_t)src_rows[r] * cols;
    bf16* dst = out + (size_t)r * cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) dst[c] = src[c];
}

// RMSNorm as Llama's module: normalise in f32, round to bf16, then scale by the weight.
// With `delta`, the residual is first updated in place (residual += delta, in bf16).
// The row is staged in dynamic shared memory (cols floats).
extern "C" __global__ void add_rms_norm(bf16* residual, const bf16* delta, const bf16* weight,
                                        bf16* out, int cols, float eps) {
    extern __shared__ float row[];
    __shared__ float scratch[32];
    size_t base = (size_t)blockIdx.x * cols;
    float sq = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float v = bf2f(residual[base + c]);
        if (delta != 0) {
            v = round_bf(v + bf2f(delta[base + c]));
            residual[base + c] = f2bf(v);
        }
        row[c] = v;
        sq += v * v;
    }
    float total = block_sum(sq, scratch);
    float inv = rsqrtf(total / (float)cols + eps);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        out[base + c] = f2bf(bf2f(weight[c]) * round_bf(row[c] * inv));
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
extern "C" __global__ void silu_mul(const bf16* gate, const bf16* up, bf16* out, size_t n) {
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
extern "C" __global__ void rope_store_kv(bf16* q, bf16* k, const bf16* v, const u32* positions,
                                         const u32* slot_mapping, const float* inv_freq,
                                         bf16* k_cache, bf16* v_cache, int n_heads,
                                         int n_kv_heads, int head_dim) {
    int t = blockIdx.x;
    int half = head_dim / 2;
    float position = (float)positions[t];
    int q_width = n_heads * head_dim, kv_width = n_kv_heads * head_dim;
    bf16* q_row = q + (size_t)t * q_width;
    bf16* k_row = k + (size_t)t * kv_width;
    for (int j = threadIdx.x; j < (n_heads + n_kv_heads) * half; j += blockDim.x) {
        int head = j / half, i = j % half;
        float angle = position * inv_freq[i];
        float c = round_bf(cosf(angle)), s = round_bf(sinf(angle));
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

#define ATTN_WARPS 8
#define ATTN_KEYS 4
#define ATTN_MAX_PER_LANE 8  // head_dim up to 256

// Causal attention of one query token and head over its sequence's paged KV, with an
// online softmax. Grid (n_tokens, n_heads), ATTN_WARPS warps: each warp takes every
// ATTN_WARPS-th group of ATTN_KEYS keys, loading the group's keys and values before
// using them so several loads are in flight, and the warps' partial results are merged
// at the end. Lane l owns dimensions l, l + 32, ... of the head. Decode tokens and
// prefill chunks (over a cached prefix) run through the same kernel: a token at
// position p sees keys 0..=p of its sequence.
extern "C" __global__ void paged_attention(const bf16* q, const bf16* k_cache, const bf16* v_cache,
                                           bf16* out, const u32* positions, const u32* token_seq,
                                           const u32* seq_table_offset, const u32* block_tables,
                                           int n_heads, int n_kv_heads, int head_dim,
                                           int block_size, float scale) {
    __shared__ float warp_m[ATTN_WARPS], warp_l[ATTN_WARPS];
    __shared__ float warp_acc[ATTN_WARPS][32 * ATTN_MAX_PER_LANE];
    int t = blockIdx.x, h = blockIdx.y;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int kv_head = h / (n_heads / n_kv_heads);
    int n_keys = (int)positions[t] + 1;
    const u32* table = block_tables + seq_table_offset[token_seq[t]];
    int kv_width = n_kv_heads * head_dim;

    float qv[ATTN_MAX_PER_LANE], acc[ATTN_MAX_PER_LANE];
    const bf16* q_head = q + ((size_t)t * n_heads + h) * head_dim;
#pragma unroll
    for (int i = 0; i < ATTN_MAX_PER_LANE; i++) {
        int d = lane + 32 * i;
        qv[i] = d < head_dim ? bf2f(q_head[d]) * scale : 0.0f;
        acc[i] = 0.0f;
    }
    float m = NEG_INF, l = 0.0f;
    for (int first = warp * ATTN_KEYS; first < n_keys; first += ATTN_WARPS * ATTN_KEYS) {
        float kv_k[ATTN_KEYS][ATTN_MAX_PER_LANE], kv_v[ATTN_KEYS][ATTN_MAX_PER_LANE];
#pragma unroll
        for (int j = 0; j < ATTN_KEYS; j++) {
            int key = first + j;
            bool live = key < n_keys;
            size_t slot = live ? (size_t)table[key / block_size] * block_size + key % block_size : 0;
            const bf16* k_at = k_cache + slot * kv_width + kv_head * head_dim;
            const bf16* v_at = v_cache + slot * kv_width + kv_head * head_dim;
#pragma unroll
            for (int i = 0; i < ATTN_MAX_PER_LANE; i++) {
                int d = lane + 32 * i;
                bool ok = live && d < head_dim;
                kv_k[j][i] = ok ? bf2f(k_at[d]) : 0.0f;
                kv_v[j][i] = ok ? bf2f(v_at[d]) : 0.0f;
            }
        }
#pragma unroll
        for (int j = 0; j < ATTN_KEYS; j++) {
            if (first + j >= n_keys) break;
            float s = 0.0f;
#pragma unroll
            for (int i = 0; i < ATTN_MAX_PER_LANE; i++) s += qv[i] * kv_k[j][i];
            s = warp_sum(s);
            float m_new = fmaxf(m, s);
            float correction = expf(m - m_new);
            float p = expf(s - m_new);
            l = l * correction + p;
#pragma unroll
            for (int i = 0; i < ATTN_MAX_PER_LANE; i++) acc[i] = acc[i] * correction + p * kv_v[j][i];
            m = m_new;
        }
    }
    if (lane == 0) {
        warp_m[warp] = m;
        warp_l[warp] = l;
    }
#pragma unroll
    for (int i = 0; i < ATTN_MAX_PER_LANE; i++) warp_acc[warp][lane + 32 * i] = acc[i];
    __syncthreads();
    if (warp == 0) {
        float m_all = NEG_INF;
        for (int w = 0; w < ATTN_WARPS; w++) m_all = fmaxf(m_all, warp_m[w]);
        float l_all = 0.0f;
        float weight[ATTN_WARPS];
        for (int w = 0; w < ATTN_WARPS; w++) {
            // A warp that saw no key has m = -inf and contributes nothing.
            weight[w] = warp_l[w] > 0.0f ? expf(warp_m[w] - m_all) : 0.0f;
            l_all += warp_l[w] * weight[w];
        }
        bf16* out_head = out + ((size_t)t * n_heads + h) * head_dim;
#pragma unroll
        for (int i = 0; i < ATTN_MAX_PER_LANE; i++) {
            int d = lane + 32 * i;
            if (d < head_dim) {
                float o = 0.0f;
                for (int w = 0; w < ATTN_WARPS; w++) o += warp_acc[w][d] * weight[w];
                out_head[d] = f2bf(o / l_all);
            }
        }
    }
}

#define GEMV_MAX_M 8
#define GEMV_WARPS 8
#define GEMV_UNROLL 4

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

// out[r, j] = sum_c x[r, c] * w[j, c] for the few rows of a decode step (m <= GEMV_MAX_M).
// Matrix products at batch 1..8 only need to stream the weight once; cuBLAS's tiles are
// built for larger m. One warp per output column j: each lane loads 16 bytes (8 bf16)
// of the weight row per load, GEMV_UNROLL loads in flight, with k % 8 == 0 and 16-byte
// aligned rows. Output bf16 (rounded) or f32 (`out_f32`, for logits).
extern "C" __global__ void gemv_small_m(const bf16* x, const bf16* w, void* out, int m, int n,
                                        int k, int out_f32) {
    int lane = threadIdx.x & 31;
    int j = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (j >= n) return;
    const uint4* w_row = (const uint4*)(w + (size_t)j * k);
    int k8 = k / 8;
    float acc[GEMV_MAX_M];
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
                const uint4* x_row = (const uint4*)(x + (size_t)r * k);
#pragma unroll
                for (int u = 0; u < GEMV_UNROLL; u++) {
                    int c = c0 + 32 * u;
                    if (c < k8) acc[r] += dot8(wv[u], x_row[c]);
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < GEMV_MAX_M; r++) {
        if (r < m) {
            float s = warp_sum(acc[r]);
            if (lane == 0) {
                if (out_f32) {
                    ((float*)out)[(size_t)r * n + j] = s;
                } else {
                    ((bf16*)out)[(size_t)r * n + j] = f2bf(s);
                }
            }
        }
    }
}
