/* Edge coverage for the fuzz build of the compiled engine (tests/fuzz/; never part of the normal build).
 *
 * The engine's sources are compiled with gcc's -fsanitize-coverage=trace-pc, which makes every basic
 * block call __sanitizer_cov_trace_pc(). This file, compiled WITHOUT that flag (it would call itself),
 * provides the callback and keeps an AFL-style edge map: the edge from the previous block to the current
 * one is the hash of the two return addresses, and its byte in the map counts the hits (saturating at 255).
 * The previous block is per thread (the engine reads and writes on threads of its own); two threads may
 * race on a map byte, which costs at most a count, never memory safety: the index is always masked.
 *
 * A second map marks the blocks themselves (by the hash of their address), so that a run can say how
 * many of the build's instrumented blocks it reached.
 *
 * The fuzzer (tests/fuzz/harness.py) reaches the maps through ctypes on the extension's .so:
 *   synfin_cov_map()    the edge map's address; synfin_cov_size() its size in bytes (both maps);
 *   synfin_cov_blocks() the block map's address;
 *   synfin_cov_reset()  zeroes both before an input.
 * No change to analyzer/_engine/module.c is needed: these are ordinary exported symbols.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MAP_BITS 16
#define MAP_SIZE ((size_t)1 << MAP_BITS)

static unsigned char map[MAP_SIZE];
static unsigned char blocks[MAP_SIZE];
static __thread uintptr_t previous;

static inline uintptr_t scramble(uintptr_t pc) {
    pc ^= pc >> 17;
    pc *= (uintptr_t)0x9E3779B97F4A7C15ull;
    return pc ^ (pc >> 29);
}

__attribute__((visibility("default"))) void __sanitizer_cov_trace_pc(void) {
    uintptr_t here = scramble((uintptr_t)__builtin_return_address(0));
    size_t slot = (size_t)((here ^ previous) & (MAP_SIZE - 1));
    if (map[slot] != 255) map[slot]++;
    blocks[here & (MAP_SIZE - 1)] = 1;
    previous = here >> 1;
}

__attribute__((visibility("default"))) unsigned char *synfin_cov_map(void) { return map; }

__attribute__((visibility("default"))) unsigned char *synfin_cov_blocks(void) { return blocks; }

__attribute__((visibility("default"))) size_t synfin_cov_size(void) { return MAP_SIZE; }

__attribute__((visibility("default"))) void synfin_cov_reset(void) {
    memset(map, 0, sizeof map);
    memset(blocks, 0, sizeof blocks);
    previous = 0;
}
