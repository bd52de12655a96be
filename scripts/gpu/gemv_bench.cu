// Batch-1 decode products of the engine's kernels, alone and as a whole decode step.
//
//   nvcc -O3 -std=c++17 -arch=sm_90a -o /tmp/gemv-bench scripts/gpu/gemv_bench.cu -lcuda
//   /tmp/gemv-bench [peak GB/s, default 3350]
//
// Includes the engine's own kernels.cu, so it measures the kernels the engine runs.
// For the Llama-3.2-1B and Llama-3.1-8B shapes it times, replayed from CUDA graphs:
//   1. each product on its own (50 launches back to back), as GB/s of weights read;
//   2. a decode step's kernels (per layer: norm, q/k/v product, a stand-in for RoPE and
//      attention, o product, norm, gate/up product, down product; then the final norm,
//      the lm_head product and the greedy argmax), with the per-layer norms launched on
//      their own and fused into the q/k/v and gate/up products, as the engine runs them;
// and a plain streaming read of the lm_head's bytes as the ceiling. The weights are
// random; time does not depend on their values. Against the streaming read this shows
// how far the products are from the bandwidth, and the step against the sum of its
// products what the small kernels between them cost.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../../gpu-engine/src/backend/cuda/kernels.cu"
#include "bench_util.cuh"

// Stands in for RoPE + attention at a short context: reads q, writes out (one block per
// kv head), so the next product waits on it as it would on the attention.
extern "C" __global__ void bench_attention(const bf16* __restrict__ q, bf16* __restrict__ out,
                                           int width) {
    int per = width / gridDim.x;
    for (int c = threadIdx.x; c < per; c += blockDim.x) {
        int i = blockIdx.x * per + c;
        out[i] = q[i];
    }
}

extern "C" __global__ void bench_read(const uint4* __restrict__ p, size_t n, float* sink) {
    float s = 0.0f;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        uint4 v = __ldg(p + i);
        s += __uint_as_float(v.x ^ v.y ^ v.z ^ v.w);
    }
    if (s == 123.456f) sink[0] = s;
}

extern "C" __global__ void bench_fill(u32* p, size_t n, u32 seed) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        u32 z = bench_hash(i, seed);
        // two bf16 values in [-1/32, 1/32): sign, exponent 121..122, random mantissa
        u32 lo = (z & 0x807fu) | 0x3c80u, hi = ((z >> 16) & 0x807fu) | 0x3c80u;
        p[i] = lo | (hi << 16);
    }
}

static cudaStream_t stream;

template <typename... K, typename... A>
static void launch(void (*kernel)(K...), dim3 grid, int block, size_t smem, A... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = dim3(block);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cfg.attrs = nullptr;
    cfg.numAttrs = 0;
    CHECK(cudaLaunchKernelEx(&cfg, kernel, ((K)args)...));
}

static bf16* alloc_bf16(size_t n, u32 seed) {
    bf16* p;
    CHECK(cudaMalloc(&p, n * 2 + 16));
    launch(bench_fill, 1024, 256, 0, (u32*)p, n / 2, seed);
    return p;
}

struct Shape {
    const char* name;
    int hidden, inter, heads, kv_heads, head_dim, layers, vocab;
};

struct Layer {
    bf16 *wq, *wk, *wv, *wo, *gate, *up, *down, *norm1, *norm2;
};

// The products of one decode step at m rows of x.
struct Step {
    Shape s;
    int m;
    std::vector<Layer> layers;
    bf16 *lm_head, *final_norm;
    bf16 *residual, *residual0, *residual_next, *x, *q, *k, *v, *attn, *o, *act, *down_out;
    // The norms fused into the q/k/v and gate/up products (as the engine runs a decode
    // step of one row) rather than launched on their own.
    bool fused = false;
    float* logits;
    u32* ids;
    u64* parts;
    size_t weight_bytes = 0;

    void linear(const bf16* in, const bf16* w, void* out, int n, int k, bool f32) {
        launch(gemv_small_m, (n + GEMV_WARPS - 1) / GEMV_WARPS, GEMV_WARPS * 32, (size_t)m * k * 2,
               in, w, out, m, n, k, (int)f32);
    }
    // The product's input: x, or with `fused` the norm of residual (+ delta) by weight w,
    // the updated residual going to the other buffer.
    GemvInput input(const bf16* delta, const bf16* w) {
        if (!fused) return {x, nullptr, nullptr, nullptr, 0.0f};
        GemvInput in = {residual, delta, w, delta ? residual_next : nullptr, 1e-5f};
        if (delta) std::swap(residual, residual_next);
        return in;
    }
    void qkv(const Layer& l, const bf16* delta) {
        int h = s.hidden, nq = s.heads * s.head_dim, nkv = s.kv_heads * s.head_dim;
        int blocks = (nq + GEMV_WARPS - 1) / GEMV_WARPS + 2 * ((nkv + GEMV_WARPS - 1) / GEMV_WARPS);
        GemvInput in = input(delta, l.norm1);
        launch(gemv_multi, blocks, GEMV_WARPS * 32, (size_t)m * h * 2, in.x, in.delta, in.norm,
               in.residual_out, in.eps, (const bf16*)l.wq, (const bf16*)l.wk, (const bf16*)l.wv,
               q, k, v, nq, nkv, nkv, m, h);
    }
    void gate_up(const Layer& l) {
        int h = s.hidden, n = s.inter;
        GemvInput in = input(o, l.norm2);
        launch(gemv_gate_up_silu, (n + GEMV_WARPS - 1) / GEMV_WARPS, GEMV_WARPS * 32,
               (size_t)m * h * 2, in.x, in.delta, in.norm, in.residual_out, in.eps,
               (const bf16*)l.gate, (const bf16*)l.up, act, m, n, h);
    }
    void norm(bf16* delta, const bf16* w) {
        launch(add_rms_norm, m, NORM_THREADS, 0, residual, (const bf16*)delta, w, x, s.hidden, 1e-5f);
    }
    void run() {
        CHECK(cudaMemcpyAsync(residual, residual0, (size_t)m * s.hidden * 2, cudaMemcpyDeviceToDevice, stream));
        int h = s.hidden, nq = s.heads * s.head_dim;
        for (size_t i = 0; i < layers.size(); i++) {
            const Layer& l = layers[i];
            if (!fused) norm(i == 0 ? nullptr : down_out, l.norm1);
            qkv(l, i == 0 ? nullptr : down_out);
            launch(bench_attention, s.kv_heads, 256, 0, (const bf16*)q, attn, nq * m);
            linear(attn, l.wo, o, h, nq, false);
            if (!fused) norm(o, l.norm2);
            gate_up(l);
            linear(act, l.down, down_out, h, s.inter, false);
        }
        norm(down_out, final_norm);
        linear(x, lm_head, logits, s.vocab, h, true);
        launch(argmax_parts, dim3(ARGMAX_PARTS, m), ARGMAX_THREADS, 0, (const float*)logits, parts, s.vocab);
        launch(argmax_finish, m, 32, 0, (const u64*)parts, ids);
    }
};

static Step make_step(Shape s, int m) {
    Step st;
    st.s = s;
    st.m = m;
    size_t h = s.hidden, nq = (size_t)s.heads * s.head_dim, nkv = (size_t)s.kv_heads * s.head_dim;
    u32 seed = 1;
    for (int i = 0; i < s.layers; i++) {
        Layer l;
        l.wq = alloc_bf16(nq * h, seed++);
        l.wk = alloc_bf16(nkv * h, seed++);
        l.wv = alloc_bf16(nkv * h, seed++);
        l.wo = alloc_bf16(h * nq, seed++);
        l.gate = alloc_bf16((size_t)s.inter * h, seed++);
        l.up = alloc_bf16((size_t)s.inter * h, seed++);
        l.down = alloc_bf16(h * s.inter, seed++);
        l.norm1 = alloc_bf16(h, seed++);
        l.norm2 = alloc_bf16(h, seed++);
        st.layers.push_back(l);
        st.weight_bytes += 2 * (2 * nq * h + 2 * nkv * h + 3 * (size_t)s.inter * h);
    }
    st.lm_head = alloc_bf16((size_t)s.vocab * h, seed++);
    st.final_norm = alloc_bf16(h, seed++);
    st.weight_bytes += 2 * (size_t)s.vocab * h;
    st.residual = alloc_bf16(m * h, seed++);
    st.residual0 = alloc_bf16(m * h, seed++);
    st.residual_next = alloc_bf16(m * h, seed++);
    st.x = alloc_bf16(m * h, seed++);
    st.q = alloc_bf16(m * nq, seed++);
    st.k = alloc_bf16(m * nkv, seed++);
    st.v = alloc_bf16(m * nkv, seed++);
    st.attn = alloc_bf16(m * nq, seed++);
    st.o = alloc_bf16(m * h, seed++);
    st.act = alloc_bf16((size_t)m * s.inter, seed++);
    st.down_out = alloc_bf16(m * h, seed++);
    CHECK(cudaMalloc(&st.logits, (size_t)m * s.vocab * 4));
    CHECK(cudaMalloc(&st.ids, m * 4));
    CHECK(cudaMalloc(&st.parts, m * ARGMAX_PARTS * 8));
    CHECK(cudaStreamSynchronize(stream));
    return st;
}

// Median over `rounds` of the mean time (ms) of one replay of `body`'s graph.
template <typename F>
static double time_graph(F body, int reps, int rounds) {
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    body();
    CHECK(cudaStreamEndCapture(stream, &graph));
    CHECK(cudaGraphInstantiate(&exec, graph, 0));
    cudaEvent_t a, b;
    CHECK(cudaEventCreate(&a));
    CHECK(cudaEventCreate(&b));
    for (int i = 0; i < 5; i++) CHECK(cudaGraphLaunch(exec, stream));
    std::vector<double> t;
    for (int r = 0; r < rounds; r++) {
        CHECK(cudaEventRecord(a, stream));
        for (int i = 0; i < reps; i++) CHECK(cudaGraphLaunch(exec, stream));
        CHECK(cudaEventRecord(b, stream));
        CHECK(cudaEventSynchronize(b));
        float ms;
        CHECK(cudaEventElapsedTime(&ms, a, b));
        t.push_back(ms / reps);
    }
    CHECK(cudaGraphExecDestroy(exec));
    CHECK(cudaGraphDestroy(graph));
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

int main(int argc, char** argv) {
    double peak = argc > 1 ? atof(argv[1]) : 3350.0;
    CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    // The first generation stages x in shared memory; at m = 4 the wide products need
    // more than the default 48 KB (the engine sends those to cuBLAS instead).
    CHECK(cudaFuncSetAttribute(gemv_small_m, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 << 10));
    CHECK(cudaFuncSetAttribute(gemv_multi, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 << 10));
    CHECK(cudaFuncSetAttribute(gemv_gate_up_silu, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 << 10));
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s, %d SMs, L2 %d MB; peak taken as %.0f GB/s\n", prop.name,
           prop.multiProcessorCount, prop.l2CacheSize >> 20, peak);
    Shape shapes[] = {{"llama-3.2-1b", 2048, 8192, 32, 8, 64, 16, 128256},
                      {"llama-3.1-8b", 4096, 14336, 32, 8, 128, 32, 128256}};
    for (const Shape& s : shapes) {
        for (int m : {1, 4}) {
            Step st = make_step(s, m);
            float* sink;
            CHECK(cudaMalloc(&sink, 4));
            printf("\n== %s, m = %d: %.3f GB of weights per step\n", s.name, m, st.weight_bytes / 1e9);
            if (m == 1) {
                // The ceiling: one streaming read of as many bytes (the gate matrices + lm_head).
                size_t n16 = (size_t)s.vocab * s.hidden * 2 / 16;
                double ms = time_graph([&] { launch(bench_read, prop.multiProcessorCount * 8, 512, 0,
                                                    (const uint4*)st.lm_head, n16, sink); }, 20, 5);
                printf("streaming read of lm_head (%.0f MB): %.1f GB/s\n", n16 * 16 / 1e6, n16 * 16 / ms / 1e6);
            }
            // 1. Each product alone, 50 launches per graph.
            const Layer& l = st.layers[0];
            int h = s.hidden, nq = s.heads * s.head_dim, nkv = s.kv_heads * s.head_dim;
            struct P { const char* name; size_t bytes; };
            P prods[] = {{"qkv", (size_t)2 * h * (nq + 2 * nkv)}, {"o", (size_t)2 * h * nq},
                         {"gate_up", (size_t)4 * h * s.inter}, {"down", (size_t)2 * h * s.inter},
                         {"lm_head", (size_t)2 * h * s.vocab}};
            for (int p = 0; p < 5; p++) {
                printf("%-8s %7.1f MB:", prods[p].name, prods[p].bytes / 1e6);
                int reps = p == 4 ? 10 : 50;
                double ms = time_graph([&] {
                    for (int i = 0; i < reps; i++) {
                        switch (p) {
                            case 0: st.qkv(l, nullptr); break;
                            case 1: st.linear(st.attn, l.wo, st.o, h, nq, false); break;
                            case 2: st.gate_up(l); break;
                            case 3: st.linear(st.act, l.down, st.down_out, h, s.inter, false); break;
                            case 4: st.linear(st.x, st.lm_head, st.logits, s.vocab, h, true); break;
                        }
                    }
                }, 5, 5) / reps;
                printf(" %7.2f us %6.0f GB/s", ms * 1e3, prods[p].bytes / ms / 1e6);
                printf("\n");
            }
            // 2. The whole step, with the norms on their own and fused into the products.
            for (int round = 0; round < 3; round++) {
                for (bool fused : {false, true}) {
                    if (fused && m != 1) continue;  // the engine fuses the norms at one row
                    st.fused = fused;
                    double ms = time_graph([&] { st.run(); }, 20, 7);
                    printf("step, norms %-8s %7.3f ms  %6.0f GB/s  MBU %.1f%%  (%.0f tok/s at m = %d)\n",
                           fused ? "fused" : "apart", ms, st.weight_bytes / ms / 1e6,
                           100.0 * st.weight_bytes / ms / 1e6 / peak, m * 1e3 / ms, m);
                }
            }
            CHECK(cudaDeviceSynchronize());
            for (Layer& l2 : st.layers)
                for (bf16* p : {l2.wq, l2.wk, l2.wv, l2.wo, l2.gate, l2.up, l2.down, l2.norm1, l2.norm2})
                    CHECK(cudaFree(p));
            for (bf16* p : {st.lm_head, st.final_norm, st.residual, st.residual0, st.residual_next, st.x, st.q, st.k, st.v, st.attn, st.o,
                            st.act, st.down_out})
                CHECK(cudaFree(p));
            CHECK(cudaFree(st.logits));
            CHECK(cudaFree(st.ids));
            CHECK(cudaFree(st.parts));
            CHECK(cudaFree(sink));
        }
    }
    return 0;
}
