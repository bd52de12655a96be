// The CUDA backend's decode-step kernels other than attention, run on the CPU (shim.h)
// against references in double precision: RMSNorm with the residual add, the small-batch
// products (plain, and with the RMSNorm fused into them at one row, which must agree
// with add_rms_norm followed by the plain product), the fused gate/up/SiLU product, and
// RoPE with the KV write. Built and run by tests/kernels_on_cpu.rs.
#include "shim.h"
// clang-format off
#include "kernels.cu"
#include "check.h"
// clang-format on

#include <algorithm>

namespace {

constexpr int K = 512;  // hidden size of the checks
constexpr float EPS = 1e-5f;
constexpr unsigned GEMV_THREADS = GEMV_WARPS * 32;

std::vector<double> as_double(const std::vector<bf16>& v) {
    std::vector<double> out(v.size());
    for (size_t i = 0; i < v.size(); i++) out[i] = bf2f(v[i]);
    return out;
}

// add_rms_norm's arithmetic for `rows` rows: r = bf16(residual + delta), then
// bf16(weight * bf16(r / rms(r))); returns the normed rows, updates `residual`.
std::vector<double> norm_reference(std::vector<bf16>& residual, const std::vector<bf16>& delta,
                                   const std::vector<bf16>& weight, int rows) {
    std::vector<double> out(residual.size());
    for (int r = 0; r < rows; r++) {
        double sq = 0;
        for (int c = 0; c < K; c++) {
            bf16& x = residual[(size_t)r * K + c];
            if (!delta.empty()) x = f2bf(bf2f(x) + bf2f(delta[(size_t)r * K + c]));
            sq += (double)bf2f(x) * bf2f(x);
        }
        double inv = 1.0 / std::sqrt(sq / K + EPS);
        for (int c = 0; c < K; c++) {
            float scaled = round_bf((float)(bf2f(residual[(size_t)r * K + c]) * inv));
            out[(size_t)r * K + c] = round_bf(bf2f(weight[c]) * scaled);
        }
    }
    return out;
}

// x (rows × K, as doubles) times w (n × K) transposed.
std::vector<double> product(const std::vector<double>& x, const std::vector<bf16>& w, int rows, int n) {
    std::vector<double> out((size_t)rows * n, 0.0);
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < n; j++)
            for (int c = 0; c < K; c++) out[(size_t)r * n + j] += x[(size_t)r * K + c] * bf2f(w[(size_t)j * K + c]);
    return out;
}

void norm_checks(std::mt19937& rng) {
    const int rows = 2;
    auto residual = random_bf16((size_t)rows * K, rng), delta = random_bf16((size_t)rows * K, rng);
    auto weight = random_bf16(K, rng);
    std::vector<bf16> want_residual = residual, out((size_t)rows * K);
    std::vector<double> want = norm_reference(want_residual, delta, weight, rows);
    launch(add_rms_norm, dim3{rows, 1, 1}, NORM_THREADS, 0, residual.data(),
           (const bf16*)delta.data(), (const bf16*)weight.data(), out.data(), K, EPS);
    check_close("add_rms_norm, 2 rows", out, want, 0.003);
    check_true("add_rms_norm updates the residual to bf16(residual + delta)", residual == want_residual);
}

void product_checks(std::mt19937& rng) {
    const int n[3] = {40, 24, 20};  // q, k, v widths (not all multiples of GEMV_WARPS)
    std::vector<bf16> w[3];
    for (int i = 0; i < 3; i++) w[i] = random_bf16((size_t)n[i] * K, rng, 0.1f);
    auto residual = random_bf16(K, rng), delta = random_bf16(K, rng), norm_w = random_bf16(K, rng);
    int blocks = 0;
    for (int i : n) blocks += (i + GEMV_WARPS - 1) / GEMV_WARPS;

    // Unfused: add_rms_norm, then the plain product of its output.
    std::vector<bf16> unfused_residual = residual, normed(K), plain[3];
    launch(add_rms_norm, dim3{1, 1, 1}, NORM_THREADS, 0, unfused_residual.data(),
           (const bf16*)delta.data(), (const bf16*)norm_w.data(), normed.data(), K, EPS);
    for (int i = 0; i < 3; i++) plain[i].assign(n[i], 0);
    launch(gemv_multi, dim3{(unsigned)blocks, 1, 1}, GEMV_THREADS, K * 2,
           (const bf16*)normed.data(), (const bf16*)nullptr, (const bf16*)nullptr, (bf16*)nullptr,
           0.0f, (const bf16*)w[0].data(), (const bf16*)w[1].data(), (const bf16*)w[2].data(),
           plain[0].data(), plain[1].data(), plain[2].data(), n[0], n[1], n[2], 1, K);
    // Fused: the product computes the norm itself and writes the residual elsewhere.
    std::vector<bf16> fused[3], residual_out(K);
    for (int i = 0; i < 3; i++) fused[i].assign(n[i], 0);
    launch(gemv_multi, dim3{(unsigned)blocks, 1, 1}, GEMV_THREADS, K * 2,
           (const bf16*)residual.data(), (const bf16*)delta.data(), (const bf16*)norm_w.data(),
           residual_out.data(), EPS, (const bf16*)w[0].data(), (const bf16*)w[1].data(),
           (const bf16*)w[2].data(), fused[0].data(), fused[1].data(), fused[2].data(), n[0],
           n[1], n[2], 1, K);
    std::vector<bf16> ref_residual = residual;
    std::vector<double> x = norm_reference(ref_residual, delta, norm_w, 1);
    const char* names[3] = {"q", "k", "v"};
    for (int i = 0; i < 3; i++) {
        char what[96];
        std::vector<double> want = product(x, w[i], 1, n[i]);
        snprintf(what, sizeof what, "gemv_multi, %s product of the norm computed apart", names[i]);
        check_close(what, plain[i], want, 0.004);
        snprintf(what, sizeof what, "gemv_multi, %s product with the norm fused", names[i]);
        check_close(what, fused[i], want, 0.004);
        snprintf(what, sizeof what, "gemv_multi, %s: fused against apart", names[i]);
        check_close(what, fused[i], as_double(plain[i]), 0.002);
    }
    check_true("gemv_multi with a fused norm writes the updated residual", residual_out == ref_residual);
    check_true("gemv_multi with a fused norm leaves its input residual alone",
               residual != ref_residual && unfused_residual == ref_residual);

    // The gate/up product with SiLU, its norm fused (no delta: the first layer's case).
    const int inter = 36;
    auto gate = random_bf16((size_t)inter * K, rng, 0.1f), up = random_bf16((size_t)inter * K, rng, 0.1f);
    std::vector<bf16> act(inter);
    launch(gemv_gate_up_silu, dim3{(unsigned)((inter + GEMV_WARPS - 1) / GEMV_WARPS), 1, 1},
           GEMV_THREADS, K * 2, (const bf16*)residual.data(), (const bf16*)nullptr,
           (const bf16*)norm_w.data(), (bf16*)nullptr, EPS, (const bf16*)gate.data(),
           (const bf16*)up.data(), act.data(), 1, inter, K);
    std::vector<bf16> no_delta_residual = residual;
    std::vector<double> xn = norm_reference(no_delta_residual, {}, norm_w, 1);
    std::vector<double> g = product(xn, gate, 1, inter), u = product(xn, up, 1, inter), want(inter);
    for (int j = 0; j < inter; j++) {
        double gv = round_bf((float)g[j]);
        want[j] = round_bf((float)(gv / (1.0 + std::exp(-gv)))) * round_bf((float)u[j]);
    }
    check_close("gemv_gate_up_silu with the norm fused", act, want, 0.006);

    // Plain products of 3 rows, bf16 and f32 out.
    const int m = 3, cols = 28;
    auto xs = random_bf16((size_t)m * K, rng), wm = random_bf16((size_t)cols * K, rng, 0.1f);
    std::vector<double> want_m = product(as_double(xs), wm, m, cols);
    std::vector<bf16> out_bf((size_t)m * cols);
    std::vector<float> out_f((size_t)m * cols);
    unsigned gemv_blocks = (cols + GEMV_WARPS - 1) / GEMV_WARPS;
    launch(gemv_small_m, dim3{gemv_blocks, 1, 1}, GEMV_THREADS, m * K * 2, (const bf16*)xs.data(),
           (const bf16*)wm.data(), (void*)out_bf.data(), m, cols, K, 0);
    launch(gemv_small_m, dim3{gemv_blocks, 1, 1}, GEMV_THREADS, m * K * 2, (const bf16*)xs.data(),
           (const bf16*)wm.data(), (void*)out_f.data(), m, cols, K, 1);
    check_close("gemv_small_m, 3 rows, bf16 out", out_bf, want_m, 0.004);
    check_close("gemv_small_m, 3 rows, f32 out", out_f, want_m, 1e-5);
}

// RoPE on q and k of 3 tokens, with each token's key and value written to its KV slot.
void rope_checks(std::mt19937& rng) {
    const int tokens = 3, n_heads = 4, n_kv_heads = 2, D = 64, half = D / 2;
    auto q = random_bf16((size_t)tokens * n_heads * D, rng);
    auto k = random_bf16((size_t)tokens * n_kv_heads * D, rng);
    auto v = random_bf16((size_t)tokens * n_kv_heads * D, rng);
    std::vector<u32> positions = {0, 7, 300}, slots = {5, 1, 9};
    std::vector<float> inv_freq(half);
    for (int i = 0; i < half; i++) inv_freq[i] = (float)std::pow(10000.0, -2.0 * i / D);
    std::vector<bf16> k_cache((size_t)10 * n_kv_heads * D, 0), v_cache = k_cache;
    auto rotate = [&](const std::vector<bf16>& x, int heads) {
        std::vector<double> out(x.size());
        for (int t = 0; t < tokens; t++)
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < half; i++) {
                    size_t at = ((size_t)t * heads + h) * D;
                    double angle = (double)positions[t] * inv_freq[i];
                    double c = round_bf((float)std::cos(angle)), s = round_bf((float)std::sin(angle));
                    double a = bf2f(x[at + i]), b = bf2f(x[at + i + half]);
                    out[at + i] = a * c - b * s;
                    out[at + i + half] = b * c + a * s;
                }
        return out;
    };
    std::vector<double> want_q = rotate(q, n_heads), want_k = rotate(k, n_kv_heads);
    launch(rope_store_kv, dim3{tokens, (unsigned)(n_heads + n_kv_heads), 1}, 32, 0, q.data(), k.data(),
           (const bf16*)v.data(), (const u32*)positions.data(), (const u32*)slots.data(),
           (const float*)inv_freq.data(), k_cache.data(), v_cache.data(), n_heads, n_kv_heads, D);
    check_close("rope_store_kv, queries", q, want_q, 0.006);
    check_close("rope_store_kv, keys", k, want_k, 0.006);
    bool stored = true;
    for (int t = 0; t < tokens; t++)
        for (int e = 0; e < n_kv_heads * D; e++) {
            stored &= k_cache[(size_t)slots[t] * n_kv_heads * D + e] == k[(size_t)t * n_kv_heads * D + e];
            stored &= v_cache[(size_t)slots[t] * n_kv_heads * D + e] == v[(size_t)t * n_kv_heads * D + e];
        }
    check_true("rope_store_kv writes each token's rotated key and its value to its slot", stored);
}

}  // namespace

int main() {
    std::mt19937 rng(5);
    norm_checks(rng);
    product_checks(rng);
    rope_checks(rng);
    return failed ? 1 : 0;
}
