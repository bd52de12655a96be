// The CUDA backend's attention kernels, run on the CPU (shim.h) against a plain
// attention in double precision: the per-head and grouped decode kernels (unsplit and
// split over the keys), the cascade over shared prefixes merged by the grouped kernel,
// and the tiled prefill kernel. Built and run by tests/kernels_on_cpu.rs; prints one
// line per check and exits 1 if any output is further than bf16 allows from the
// reference.
#include "shim.h"
// clang-format off
#include "kernels.cu"
#include "check.h"
// clang-format on

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

namespace {

constexpr int BLOCK = 16;

struct Shape {
    int n_heads, n_kv_heads, head_dim;
};

// A paged KV pool and a batch of query tokens over it, as the engine packs a step.
struct Step {
    Shape shape;
    std::vector<bf16> k, v, q;
    std::vector<u32> positions, token_seq, table_offset, tables, order;
    std::vector<std::vector<u32>> seq_tables;
    int n_tokens() const { return (int)positions.size(); }
};

void fill_kv(Step& s, int n_blocks, std::mt19937& rng) {
    size_t n = (size_t)n_blocks * BLOCK * s.shape.n_kv_heads * s.shape.head_dim;
    s.k = random_bf16(n, rng);
    s.v = random_bf16(n, rng);
}

// out[t][h][d] of causal attention: token t at position p sees keys 0..=p of its table.
std::vector<double> reference(const Step& s) {
    const Shape& sh = s.shape;
    int D = sh.head_dim, G = sh.n_heads / sh.n_kv_heads;
    std::vector<double> out((size_t)s.n_tokens() * sh.n_heads * D, 0.0);
    double scale = 1.0 / std::sqrt((double)D);
    for (int t = 0; t < s.n_tokens(); t++) {
        const auto& table = s.seq_tables[s.token_seq[t]];
        int n_keys = (int)s.positions[t] + 1;
        for (int h = 0; h < sh.n_heads; h++) {
            int kvh = h / G;
            std::vector<double> score(n_keys);
            double mx = -1e300;
            for (int j = 0; j < n_keys; j++) {
                size_t slot = (size_t)table[j / BLOCK] * BLOCK + j % BLOCK;
                size_t at = (slot * sh.n_kv_heads + kvh) * D;
                double dot = 0;
                for (int d = 0; d < D; d++)
                    dot += (double)bf2f(s.q[((size_t)t * sh.n_heads + h) * D + d]) *
                           bf2f(s.k[at + d]);
                score[j] = dot * scale;
                mx = std::max(mx, score[j]);
            }
            double sum = 0;
            for (double& x : score) sum += (x = std::exp(x - mx));
            for (int j = 0; j < n_keys; j++) {
                size_t slot = (size_t)table[j / BLOCK] * BLOCK + j % BLOCK;
                size_t at = (slot * sh.n_kv_heads + kvh) * D;
                for (int d = 0; d < D; d++)
                    out[((size_t)t * sh.n_heads + h) * D + d] += score[j] / sum * bf2f(s.v[at + d]);
            }
        }
    }
    return out;
}

void check(const char* what, const Step& s, const std::vector<bf16>& got) {
    char line[160];
    snprintf(line, sizeof line, "%s, heads %d/%d, head size %d", what, s.shape.n_heads,
             s.shape.n_kv_heads, s.shape.head_dim);
    // bf16 keeps 8 significant bits: correct kernels show 0.0006 to 0.0017 relative L2
    // here; weighing a cascade's part 3% wrong shows 0.0032 to 0.0067.
    check_close(line, got, reference(s), 0.003);
}

// Decode tokens, one per sequence: groups of sequences share leading blocks (a cached
// prefix), each then has blocks of its own; a few share nothing. Ordered by block
// table, as `pack` orders them.
Step decode_step(Shape shape, std::mt19937& rng) {
    Step s{shape};
    u32 next = 0;
    struct Group {
        int prefix_blocks, members;
    } groups[] = {{6, 5}, {4, 3}, {0, 2}};
    for (const Group& g : groups) {
        std::vector<u32> prefix(g.prefix_blocks);
        std::iota(prefix.begin(), prefix.end(), next);
        next += g.prefix_blocks;
        for (int m = 0; m < g.members; m++) {
            std::vector<u32> table = prefix;
            int own = 1 + (int)(rng() % 2);
            for (int b = 0; b < own; b++) table.push_back(next++);
            // The last key somewhere in the last block: the first slot at least once.
            int last = (int)table.size() * BLOCK - 1 - (m == 0 ? BLOCK - 1 : (int)(rng() % BLOCK));
            s.positions.push_back((u32)last);
            s.seq_tables.push_back(table);
        }
    }
    fill_kv(s, (int)next, rng);
    int n = (int)s.seq_tables.size();
    std::vector<int> shuffled(n);
    std::iota(shuffled.begin(), shuffled.end(), 0);
    std::shuffle(shuffled.begin(), shuffled.end(), rng);
    std::vector<u32> positions(n);
    std::vector<std::vector<u32>> tables(n);
    for (int t = 0; t < n; t++) {
        positions[t] = s.positions[shuffled[t]];
        tables[t] = s.seq_tables[shuffled[t]];
    }
    s.positions = positions;
    s.seq_tables = tables;
    for (int t = 0; t < n; t++) {
        s.token_seq.push_back((u32)t);
        s.table_offset.push_back((u32)s.tables.size());
        s.tables.insert(s.tables.end(), tables[t].begin(), tables[t].end());
    }
    s.order.resize(n);
    std::iota(s.order.begin(), s.order.end(), 0u);
    std::sort(s.order.begin(), s.order.end(), [&](u32 a, u32 b) { return tables[a] < tables[b]; });
    s.q = random_bf16((size_t)n * shape.n_heads * shape.head_dim, rng);
    return s;
}

// Cascade tiles as `pack` cuts them (cuda/step.rs): (first place, tokens, shared keys)
// in n / 2 slots, and each place's key start.
int cut_tiles(const Step& s, int per_tile, std::vector<u32>& tiles, std::vector<u32>& key_start) {
    int n = s.n_tokens();
    tiles.assign(3 * (n / 2), 0);
    key_start.assign(n, 0);
    auto own = [&](int place) { return (int)s.positions[s.order[place]] / BLOCK; };
    auto common = [&](int a, int b) {
        const auto &x = s.seq_tables[s.order[a]], &y = s.seq_tables[s.order[b]];
        int same = 0;
        while (same < (int)std::min(x.size(), y.size()) && x[same] == y[same]) same++;
        return std::min(same, std::min(own(a), own(b)));
    };
    int slot = 0;
    for (int i = 0; i < n;) {
        int shared = 0, end = i + 1;
        while (end < n && end - i < per_tile) {
            int with = common(i, end);
            if (with * BLOCK < 64 || (end > i + 1 && with < shared)) break;
            shared = with;
            end++;
        }
        if (end - i >= 2) {
            u32 keys = (u32)(shared * BLOCK);
            tiles[3 * slot] = (u32)i;
            tiles[3 * slot + 1] = (u32)(end - i);
            tiles[3 * slot + 2] = keys;
            for (int p = i; p < end; p++) key_start[p] = keys;
            slot++;
        }
        i = end;
    }
    return slot;
}


void decode_checks(Shape shape, std::mt19937& rng) {
    Step s = decode_step(shape, rng);
    int n = s.n_tokens(), D = shape.head_dim, G = shape.n_heads / shape.n_kv_heads;
    float scale = 1.0f / std::sqrt((float)D);
    std::vector<bf16> out((size_t)n * shape.n_heads * D);
    auto per_head = D == 64 ? paged_attention_64 : paged_attention_128;
    launch(per_head, dim3{(unsigned)n, (unsigned)shape.n_heads, 1}, ATTN_WARPS * 32, 0,
           s.q.data(), s.k.data(), s.v.data(), out.data(), s.positions.data(),
           s.token_seq.data(), s.table_offset.data(), s.tables.data(), s.order.data(),
           shape.n_heads, shape.n_kv_heads, D, BLOCK, scale);
    check("decode, per-head kernel", s, out);

    auto grouped = D == 64 ? gqa_attention_64_4 : gqa_attention_128_4;
    const int splits = 3;
    size_t slots = (size_t)n * shape.n_kv_heads * splits * 4;
    std::vector<float> part_acc(slots * 128), part_ml(slots * 2);
    std::vector<u32> done((size_t)n * shape.n_kv_heads, 0);
    std::vector<float> prefix_acc((size_t)n * shape.n_heads * D), prefix_ml((size_t)n * shape.n_heads * 2);
    for (int split : {1, splits}) {
        std::fill(out.begin(), out.end(), 0);
        launch(grouped, dim3{(unsigned)n, (unsigned)shape.n_kv_heads, (unsigned)split},
               GQA_WARPS * 32, 0, s.q.data(), s.k.data(), s.v.data(), out.data(),
               s.positions.data(), s.token_seq.data(), s.table_offset.data(), s.tables.data(),
               s.order.data(), shape.n_heads, shape.n_kv_heads, D, BLOCK, scale,
               part_acc.data(), part_ml.data(), done.data(), (const u32*)nullptr,
               prefix_acc.data(), prefix_ml.data());
        check(split == 1 ? "decode, grouped kernel" : "decode, grouped kernel split in 3", s, out);
    }
    check_true("split counters back at 0 for the next launch",
               std::all_of(done.begin(), done.end(), [](u32 c) { return c == 0; }));

    std::vector<u32> tiles, key_start;
    int n_tiles = cut_tiles(s, PF_ROWS / G, tiles, key_start);
    std::fill(out.begin(), out.end(), 0);
    launch(D == 64 ? cascade_attention_64 : cascade_attention_128,
           dim3{(unsigned)(n / 2), (unsigned)shape.n_kv_heads, 1}, PF_THREADS, 0, s.q.data(),
           s.k.data(), s.v.data(), s.positions.data(), s.token_seq.data(),
           s.table_offset.data(), s.tables.data(), tiles.data(), s.order.data(), shape.n_heads,
           shape.n_kv_heads, BLOCK, scale, prefix_acc.data(), prefix_ml.data());
    launch(grouped, dim3{(unsigned)n, (unsigned)shape.n_kv_heads, 1}, GQA_WARPS * 32, 0,
           s.q.data(), s.k.data(), s.v.data(), out.data(), s.positions.data(),
           s.token_seq.data(), s.table_offset.data(), s.tables.data(), s.order.data(),
           shape.n_heads, shape.n_kv_heads, D, BLOCK, scale, part_acc.data(), part_ml.data(),
           done.data(), (const u32*)key_start.data(), prefix_acc.data(), prefix_ml.data());
    int cascaded = (int)std::count_if(key_start.begin(), key_start.end(), [](u32 k) { return k > 0; });
    char what[96];
    snprintf(what, sizeof what, "decode, cascade (%d tiles, %d of %d tokens)", n_tiles, cascaded, n);
    check(what, s, out);
    check_true("the cascade case cut at least 2 tiles", n_tiles >= 2);
}

// One sequence's prefill chunk of 21 tokens after 30 cached ones, in tiles of PF_ROWS.
void prefill_checks(Shape shape, std::mt19937& rng) {
    Step s{shape};
    int cached = 30, chunk = 21, D = shape.head_dim;
    std::vector<u32> table = {3, 0, 2, 5};
    fill_kv(s, 6, rng);
    s.seq_tables = {table};
    s.tables = table;
    s.table_offset = {0};
    for (int i = 0; i < chunk; i++) {
        s.positions.push_back((u32)(cached + i));
        s.token_seq.push_back(0);
    }
    s.q = random_bf16((size_t)chunk * shape.n_heads * D, rng);
    std::vector<u32> tiles = {0, PF_ROWS, PF_ROWS, (u32)(chunk - PF_ROWS)};
    std::vector<bf16> out((size_t)chunk * shape.n_heads * D);
    launch(D == 64 ? prefill_attention_64 : prefill_attention_128,
           dim3{2, (unsigned)shape.n_heads, 1}, PF_THREADS, 0, s.q.data(), s.k.data(),
           s.v.data(), out.data(), s.positions.data(), s.token_seq.data(),
           s.table_offset.data(), s.tables.data(), tiles.data(), shape.n_heads,
           shape.n_kv_heads, BLOCK, 1.0f / std::sqrt((float)D));
    check("prefill chunk over a cached prefix, tiled kernel", s, out);
}

}  // namespace

int main() {
    std::mt19937 rng(11);
    // Llama-3 groups (4 query heads per kv head) at head size 64; groups of 3 (the
    // trained model of the GPU scripts) at 128, which tiles 5 tokens of 3 rows. One kv
    // head each: more add nothing but time (a CUDA thread is an OS thread here).
    for (Shape shape : {Shape{4, 1, 64}, Shape{3, 1, 128}}) {
        decode_checks(shape, rng);
        prefill_checks(shape, rng);
    }
    return failed ? 1 : 0;
}
