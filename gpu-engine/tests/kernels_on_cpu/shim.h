// Runs the CUDA backend's kernels (kernels.cu) on the CPU, for tests on machines without
// a GPU. A block's threads are OS threads that meet at real barriers (__syncthreads, and
// a warp's 32 lanes at each shuffle), so the kernels' data flow between threads runs as
// written; blocks run one after another, which lets `__shared__` be a function-local
// static. Slow (a thread per CUDA thread) and only for small launches.
#pragma once

#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
// kernels.cu declares its dynamically sized shared memory through this macro.
#define DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(cpu_dynamic_shared())

struct uint3 {
    unsigned x = 0, y = 0, z = 0;
};
struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

inline thread_local uint3 threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;

namespace cpu {
// The barriers of the block being run: one for the block, one per warp.
struct Block {
    std::unique_ptr<std::barrier<>> all;
    std::vector<std::unique_ptr<std::barrier<>>> warps;
    std::vector<uint64_t> lanes;  // a warp's shuffle slots, 32 per warp
    std::vector<unsigned char> dynamic_shared;
};
inline Block block;
inline thread_local unsigned flat_thread = 0;
}  // namespace cpu

inline unsigned char* cpu_dynamic_shared() { return cpu::block.dynamic_shared.data(); }

inline void __syncthreads() { cpu::block.all->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { cpu::block.warps[cpu::flat_thread / 32]->arrive_and_wait(); }

template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int offset) {
    static_assert(sizeof(T) <= 8, "a shuffle moves at most 8 bytes");
    unsigned lane = cpu::flat_thread % 32, warp = cpu::flat_thread / 32;
    uint64_t* slots = cpu::block.lanes.data() + 32 * warp;
    uint64_t raw = 0;
    std::memcpy(&raw, &v, sizeof(T));
    slots[lane] = raw;
    __syncwarp();
    raw = slots[lane ^ (unsigned)offset];
    __syncwarp();
    T out;
    std::memcpy(&out, &raw, sizeof(T));
    return out;
}

inline float __uint_as_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline unsigned __float_as_uint(float f) {
    unsigned u;
    std::memcpy(&u, &f, 4);
    return u;
}
template <typename T>
inline T __ldg(const T* p) { return *p; }
template <typename T>
inline T __ldcg(const T* p) { return *p; }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return std::atomic_ref<unsigned>(*p).fetch_add(v); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    return std::atomic_ref<unsigned long long>(*p).fetch_add(v);
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
template <typename A, typename B>
inline auto min(A a, B b) { return a < b ? a : b; }
template <typename A, typename B>
inline auto max(A a, B b) { return a < b ? b : a; }

namespace cpu {
// Fresh barriers (a done thread drops out of its block's for good) and zeroed scratch.
inline void new_block(unsigned threads, size_t dynamic_shared) {
    block.all = std::make_unique<std::barrier<>>(threads);
    block.warps.clear();
    for (unsigned w = 0; w < (threads + 31) / 32; w++)
        block.warps.push_back(std::make_unique<std::barrier<>>(std::min(32u, threads - 32 * w)));
    block.lanes.assign(32 * block.warps.size(), 0);
    block.dynamic_shared.assign(dynamic_shared + 16, 0);
}
}  // namespace cpu

// Runs kernel<<<grid, threads, dynamic_shared>>>(args...) to completion: `threads` OS
// threads take the blocks one after another, all of them finishing a block before any
// starts the next.
template <typename... P, typename... A>
void launch(void (*kernel)(P...), dim3 grid, unsigned threads, size_t dynamic_shared, A... args) {
    cpu::new_block(threads, dynamic_shared);
    auto between_blocks = [=]() noexcept { cpu::new_block(threads, dynamic_shared); };
    std::barrier block_done(threads, between_blocks);
    unsigned n_blocks = grid.x * grid.y * grid.z;
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; t++) {
        pool.emplace_back([&, t] {
            cpu::flat_thread = t;
            threadIdx = {t, 0, 0};
            blockDim = {threads, 1, 1};
            gridDim = grid;
            for (unsigned b = 0; b < n_blocks; b++) {
                blockIdx = {b % grid.x, b / grid.x % grid.y, b / (grid.x * grid.y)};
                kernel(args...);
                // A thread that is done no longer holds back the others.
                cpu::block.warps[t / 32]->arrive_and_drop();
                cpu::block.all->arrive_and_drop();
                block_done.arrive_and_wait();
            }
        });
    }
    for (auto& th : pool) th.join();
}
