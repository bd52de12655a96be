// What the CPU kernel checks share: random bf16 inputs and the comparison against a
// reference in double precision.
#pragma once

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

inline bool failed = false;

inline std::vector<bf16> random_bf16(size_t n, std::mt19937& rng, float scale = 1.0f) {
    std::uniform_real_distribution<float> u(-scale, scale);
    std::vector<bf16> out(n);
    for (auto& x : out) x = f2bf(u(rng));
    return out;
}

// Relative L2 distance of `got` (bf16 or f32) from `want`; prints a line and records a
// failure over `limit`.
template <typename T>
inline void check_close(const char* what, const std::vector<T>& got, const std::vector<double>& want,
                        double limit) {
    double worst = 0, diff2 = 0, norm2 = 0;
    for (size_t i = 0; i < want.size(); i++) {
        double g;
        if constexpr (sizeof(T) == 2) g = bf2f(got[i]); else g = got[i];
        double d = g - want[i];
        worst = std::max(worst, std::fabs(d));
        diff2 += d * d;
        norm2 += want[i] * want[i];
    }
    double rel = std::sqrt(diff2 / norm2);
    bool ok = rel < limit;
    printf("%-72s relative L2 %.5f, max |diff| %.5f %s\n", what, rel, worst, ok ? "ok" : "FAILED");
    failed |= !ok;
}

inline void check_true(const char* what, bool ok) {
    printf("%-72s %s\n", what, ok ? "ok" : "FAILED");
    failed |= !ok;
}
