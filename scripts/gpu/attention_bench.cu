// Decode attention of the engine (`attention_gqa` in kernels.cu) on a large batch of long
// sequences, as in the prefix-cache benchmark: groups of sequences that share a cached
// prompt prefix (the same KV blocks), each with its own suffix.
//
//   nvcc -O3 -std=c++17 -arch=sm_90a -o /tmp/attention-bench scripts/gpu/attention_bench.cu
//   /tmp/attention-bench [tokens=256] [per_group=4] [prefix=2048] [suffix=256] [head_dim=64]
//   /tmp/attention-bench 1 1 128 256 128     (batch 1, as the MBU bench decodes)
//
// Both builds of the kernel are timed: the one-block-per-multiprocessor build the engine
// splits small batches with, and `_x2` (two blocks per multiprocessor), which it runs
// unsplit launches with. A batch whose (token, kv head) pairs do not fill the GPU is
// split as the engine splits it. Prints, for the decode tokens in batch order (groups
// shuffled, as the scheduler sees them) and sorted by their first KV block (members of
// a group next to each other, as the engine orders them), and for sequences that share
// nothing: the time of one launch (median of 9 runs of 20 launches, replayed from a
// graph), the KV bytes the tokens attend to over that time, and the bytes of distinct KV
// blocks over it. The sorted batch is also run as the engine cascades it: each tile of
// neighbours that share a prefix reads it once (`cascade_attention`), and the `_x2` build
// reads each token's own keys and merges. Every launch's output is checked against the
// per-query-head kernel.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "../../gpu-engine/src/backend/cuda/kernels.cu"
#include "bench_util.cuh"

// bf16 values in [-1, 1) from a hash of the index.
extern "C" __global__ void bench_fill_bf16(bf16* p, size_t n, u32 seed) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        p[i] = f2bf((float)(bench_hash(i, seed) & 0xffffu) / 32768.0f - 1.0f);
    }
}

static float bf16_host(bf16 x) {
    u32 u = (u32)x << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

struct Layout {
    std::vector<u32> positions, token_seq, table_offset, tables, order;
    size_t distinct_blocks = 0;
    // Cascade tiles (as `pack` in cuda/step.rs cuts them): slots of (first place in the
    // order, tokens, shared keys), and each place's key start.
    std::vector<u32> tiles, key_start;
};

// Neighbours in `order` of the same group share its prefix: tiles of up to `per_tile`.
static void cut_tiles(Layout& l, int prefix, int block_size, int per_tile) {
    int n = (int)l.order.size();
    l.tiles.assign(3 * (n / 2), 0);
    l.key_start.assign(n, 0);
    auto first_block = [&](int i) { return l.tables[l.table_offset[l.order[i]]]; };
    int slot = 0;
    for (int i = 0; i < n;) {
        int end = i + 1;
        while (end < n && end - i < per_tile && first_block(end) == first_block(i)) end++;
        if (end - i >= 2 && prefix >= 64) {
            l.tiles[3 * slot] = (u32)i;
            l.tiles[3 * slot + 1] = (u32)(end - i);
            l.tiles[3 * slot + 2] = (u32)(prefix / block_size * block_size);
            slot++;
            for (int p = i; p < end; p++) l.key_start[p] = (u32)(prefix / block_size * block_size);
        }
        i = end;
    }
}

// `tokens` sequences of prefix + suffix keys; groups of `per_group` share the prefix blocks
// (per_group = 1: nothing shared). Batch order interleaves the groups at random.
static Layout make_layout(int tokens, int per_group, int prefix, int suffix, int block_size,
                          bool sorted, std::mt19937& rng) {
    Layout l;
    int prefix_blocks = prefix / block_size;
    int suffix_blocks = (suffix + block_size - 1) / block_size;
    int groups = (tokens + per_group - 1) / per_group;
    std::vector<int> group_of(tokens);
    for (int t = 0; t < tokens; t++) group_of[t] = t % groups;
    std::shuffle(group_of.begin(), group_of.end(), rng);
    u32 next_block = (u32)(groups * prefix_blocks);
    for (int t = 0; t < tokens; t++) {
        l.table_offset.push_back((u32)l.tables.size());
        for (int b = 0; b < prefix_blocks; b++)
            l.tables.push_back((u32)(group_of[t] * prefix_blocks + b));
        for (int b = 0; b < suffix_blocks; b++) l.tables.push_back(next_block++);
        l.positions.push_back((u32)(prefix + suffix - 1));
        l.token_seq.push_back((u32)t);
    }
    l.distinct_blocks = next_block;
    l.order.resize(tokens);
    std::iota(l.order.begin(), l.order.end(), 0u);
    if (sorted)
        std::stable_sort(l.order.begin(), l.order.end(), [&](u32 a, u32 b) {
            return l.tables[l.table_offset[a]] < l.tables[l.table_offset[b]];
        });
    return l;
}

template <typename T>
static T* upload(const std::vector<T>& v) {
    T* d;
    CHECK(cudaMalloc(&d, v.size() * sizeof(T)));
    CHECK(cudaMemcpy(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
    return d;
}

int main(int argc, char** argv) {
    int tokens = argc > 1 ? atoi(argv[1]) : 256;
    int per_group = argc > 2 ? atoi(argv[2]) : 4;
    int prefix = argc > 3 ? atoi(argv[3]) : 2048;
    int suffix = argc > 4 ? atoi(argv[4]) : 256;
    int head_dim = argc > 5 ? atoi(argv[5]) : 64;
    const int n_heads = 32, n_kv_heads = 8, block_size = 16;
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    // The engine's split (attention_splits in cuda/mod.rs): two blocks per multiprocessor.
    int pairs = tokens * n_kv_heads, target = 2 * prop.multiProcessorCount;
    int splits = pairs >= target ? 1 : std::min(16, (target + pairs - 1) / pairs);
    printf("%s: %d tokens of %d keys (%d shared by groups of %d), head size %d, %d split%s\n",
           prop.name, tokens, prefix + suffix, prefix, per_group, head_dim, splits,
           splits == 1 ? "" : "s");
    struct Build {
        const char* name;
        decltype(&gqa_attention_64_4) kernel;
    } builds[] = {{"one block per SM", head_dim == 64 ? gqa_attention_64_4 : gqa_attention_128_4},
                  {"_x2", head_dim == 64 ? gqa_attention_64_4_x2 : gqa_attention_128_4_x2}};
    for (const Build& b : builds) {
        cudaFuncAttributes attr;
        CHECK(cudaFuncGetAttributes(&attr, b.kernel));
        int per_sm = 0;
        CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, b.kernel, GQA_WARPS * 32, 0));
        printf("  build %-18s %d registers, %zu B local (spills), %d blocks per SM\n", b.name,
               attr.numRegs, attr.localSizeBytes, per_sm);
    }

    std::mt19937 rng(7);
    struct Case {
        const char* name;
        int per_group;
        bool sorted;
        bool cascade;
    } cases[] = {{"shared prefix, batch order", per_group, false, false},
                 {"shared prefix, sorted by first block", per_group, true, false},
                 {"shared prefix, cascade", per_group, true, true},
                 {"nothing shared", 1, false, false}};
    int ctx = prefix + suffix;
    size_t kv_width = (size_t)n_kv_heads * head_dim;
    size_t max_blocks = (size_t)tokens * ((ctx + block_size - 1) / block_size + 1);
    bf16 *k_cache, *v_cache, *q, *out;
    CHECK(cudaMalloc(&k_cache, max_blocks * block_size * kv_width * 2));
    CHECK(cudaMalloc(&v_cache, max_blocks * block_size * kv_width * 2));
    CHECK(cudaMalloc(&q, (size_t)tokens * n_heads * head_dim * 2));
    CHECK(cudaMalloc(&out, (size_t)tokens * n_heads * head_dim * 2));
    bench_fill_bf16<<<1024, 256>>>(k_cache, max_blocks * block_size * kv_width, 1);
    bench_fill_bf16<<<1024, 256>>>(v_cache, max_blocks * block_size * kv_width, 2);
    bench_fill_bf16<<<1024, 256>>>(q, (size_t)tokens * n_heads * head_dim, 3);
    float *part_acc, *part_ml;
    u32* done;
    CHECK(cudaMalloc(&part_acc, (size_t)pairs * splits * 4 * head_dim * 4));
    CHECK(cudaMalloc(&part_ml, (size_t)pairs * splits * 4 * 2 * 4));
    CHECK(cudaMalloc(&done, (size_t)pairs * 4));
    CHECK(cudaMemset(done, 0, (size_t)pairs * 4));
    float *prefix_acc, *prefix_ml;
    CHECK(cudaMalloc(&prefix_acc, (size_t)tokens * n_heads * head_dim * 4));
    CHECK(cudaMalloc(&prefix_ml, (size_t)tokens * n_heads * 2 * 4));
    cudaStream_t stream;
    CHECK(cudaStreamCreate(&stream));
    float scale = 1.0f / sqrtf((float)head_dim);
    for (const Case& c : cases) {
        Layout l = make_layout(tokens, c.per_group, prefix, suffix, block_size, c.sorted, rng);
        // The cascade merges into unsplit launches only, as in the engine.
        if (c.cascade && splits > 1) continue;
        cut_tiles(l, prefix, block_size, PF_ROWS / (n_heads / n_kv_heads));
        u32 *positions = upload(l.positions), *token_seq = upload(l.token_seq),
            *table_offset = upload(l.table_offset), *tables = upload(l.tables),
            *order = upload(l.order), *tiles = upload(l.tiles), *key_start = upload(l.key_start);
        int slots = tokens / 2;
        for (const Build& build : builds) {
            if (c.cascade && &build == &builds[0]) continue;  // the engine's unsplit build only
            auto kernel = build.kernel;
            dim3 grid(tokens, n_kv_heads, splits);
            cudaGraph_t graph;
            cudaGraphExec_t exec;
            CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
            for (int i = 0; i < 20; i++) {
                if (c.cascade && slots > 0)
                    (head_dim == 64 ? cascade_attention_64 : cascade_attention_128)<<<
                        dim3(slots, n_kv_heads), PF_THREADS, 0, stream>>>(
                        q, k_cache, v_cache, positions, token_seq, table_offset, tables, tiles,
                        order, n_heads, n_kv_heads, block_size, scale, prefix_acc, prefix_ml);
                kernel<<<grid, GQA_WARPS * 32, 0, stream>>>(
                    q, k_cache, v_cache, out, positions, token_seq, table_offset, tables, order,
                    n_heads, n_kv_heads, head_dim, block_size, scale, part_acc, part_ml, done,
                    c.cascade ? key_start : nullptr, prefix_acc, prefix_ml);
            }
            CHECK(cudaStreamEndCapture(stream, &graph));
            CHECK(cudaGraphInstantiate(&exec, graph, 0));
            cudaEvent_t a, b;
            CHECK(cudaEventCreate(&a));
            CHECK(cudaEventCreate(&b));
            CHECK(cudaGraphLaunch(exec, stream));  // warm-up
            std::vector<float> runs;
            for (int r = 0; r < 9; r++) {
                CHECK(cudaEventRecord(a, stream));
                CHECK(cudaGraphLaunch(exec, stream));
                CHECK(cudaEventRecord(b, stream));
                CHECK(cudaEventSynchronize(b));
                float ms;
                CHECK(cudaEventElapsedTime(&ms, a, b));
                runs.push_back(ms / 20);
            }
            CHECK(cudaGetLastError());
            // Against the engine's per-query-head kernel, which shares no code with it.
            size_t n_out = (size_t)tokens * n_heads * head_dim;
            std::vector<bf16> got(n_out), want(n_out);
            CHECK(cudaMemcpy(got.data(), out, n_out * 2, cudaMemcpyDeviceToHost));
            (head_dim == 64 ? paged_attention_64 : paged_attention_128)<<<
                dim3(tokens, n_heads), ATTN_WARPS * 32, 0, stream>>>(
                q, k_cache, v_cache, out, positions, token_seq, table_offset, tables, order,
                n_heads, n_kv_heads, head_dim, block_size, scale);
            CHECK(cudaMemcpy(want.data(), out, n_out * 2, cudaMemcpyDeviceToHost));
            float worst = 0.0f;
            for (size_t i = 0; i < n_out; i++) {
                auto f = [](bf16 x) { return bf16_host(x); };
                worst = std::max(worst, std::fabs(f(got[i]) - f(want[i])));
            }
            std::sort(runs.begin(), runs.end());
            double s = runs[4] * 1e-3;
            double per_key = (double)kv_width * 2 * 2;  // K and V, bf16
            double logical = (double)tokens * ctx * per_key;
            double distinct = (double)l.distinct_blocks * block_size * per_key;
            printf("  %-38s %-18s %8.1f us  attended %6.0f GB/s  distinct blocks %6.0f GB/s  "
                   "max |diff| vs per-head kernel %.4f\n",
                   c.name, build.name, s * 1e6, logical / s / 1e9, distinct / s / 1e9, worst);
            if (!(worst < 0.02f)) {
                fprintf(stderr, "the grouped kernel disagrees with the per-head kernel\n");
                return 1;
            }
            cudaGraphExecDestroy(exec);
            cudaGraphDestroy(graph);
        }
        for (u32* p : {positions, token_seq, table_offset, tables, order, tiles, key_start})
            cudaFree(p);
    }
    return 0;
}
