// What the GPU micro-benchmarks share (gemv_bench.cu, attention_bench.cu): an error check
// and a hash of an index for filling buffers with repeatable values. Include it after
// the engine's kernels.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#define CHECK(x)                                                                          \
    do {                                                                                  \
        cudaError_t e_ = (x);                                                             \
        if (e_ != cudaSuccess) {                                                          \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

// 32 well-mixed bits of (index, seed).
__device__ __forceinline__ u32 bench_hash(size_t i, u32 seed) {
    u32 z = (u32)i * 2654435761u ^ seed;
    z ^= z >> 15;
    z *= 2246822519u;
    z ^= z >> 13;
    return z;
}
