"""Each query row's noise for a whole block at once: the very numbers of `rerank.row_noise`.

Reads nothing, writes nothing. `row_noise(seed, direction, row, shape)` is
`np.random.default_rng([seed mod 2^64, d, row]).standard_normal(shape, float32)`: numpy's
SeedSequence hashes the key, PCG64 is seeded from four of its words, and the standard normals
are drawn. Building that generator costs ~28 us a row in Python, 0.16 s of an `evaluate
--head` at AudioCaps-test scale (5,742 rows), most of it SeedSequence's object and its
`generate_state`. Here the hashing runs for all rows of a block at once in numpy (uint32
arithmetic, as numpy's own), and one PCG64 is given each row's seeded state in turn before it
draws into the block's array: the same bits (tests/test_seeded_noise.py holds it to
`row_noise`, itself `default_rng`, for small, large and negative seeds).

numpy's SeedSequence (numpy/random/bit_generator.pyx), pool of 4 uint32 words, for an entropy
of at most 4 words:

    hashmix(v):  v ^= h; h *= MULT_A; v *= h; v ^= v >> 16          h starts at INIT_A
    pool[i] = hashmix(entropy[i] or 0), i < 4
    pool[d] = mix(pool[d], hashmix(pool[s])) for every s, then d != s
    mix(x, y) = (MIX_L x - MIX_R y); ^= >> 16
    state word i (8 of them): v = pool[i mod 4]; v ^= h; h *= MULT_B; v *= h; v ^= v >> 16
                 h starts at INIT_B

and PCG64 (pcg64.h) from state words (s0, s1, i0, i1) as uint64: initstate = s0 << 64 | s1,
initseq = i0 << 64 | i1, inc = initseq << 1 | 1, state = (inc + initstate) * M + inc mod 2^128.
"""

import numpy as np

INIT_A, MULT_A = 0x43B0D7E5, 0x931E8875
INIT_B, MULT_B = 0x8B51F9DD, 0x58F38DED
MIX_L, MIX_R = 0xCA01F9DD, 0x4973F715
POOL = 4
PCG_MULT = 0x2360ED051FC65DA44385DF649FCCF645
MASK128 = (1 << 128) - 1


def _words(n: int) -> list[int]:
    """A non-negative int as uint32 words, least significant first ([0] for 0), as numpy."""
    words = [n & 0xFFFFFFFF]
    n >>= 32
    while n:
        words.append(n & 0xFFFFFFFF)
        n >>= 32
    return words


def _u32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.uint64) & np.uint64(0xFFFFFFFF)


def seed_states(key: list[int], rows: np.ndarray) -> np.ndarray | None:
    """SeedSequence(key + [row]).generate_state(4, uint64) for every row, (n, 4) uint64; None
    when an entropy would exceed the pool (more than 4 words: not handled here)."""
    prefix = [w for k in key for w in _words(k)]
    if len(prefix) + 1 > POOL or (len(rows) and int(rows.max()) >= 1 << 32):
        return None
    n = len(rows)
    entropy = [np.full(n, w, dtype=np.uint64) for w in prefix] + [rows.astype(np.uint64)]
    h = INIT_A

    def hashmix(v: np.ndarray) -> np.ndarray:
        nonlocal h
        v = _u32(v ^ np.uint64(h))
        h = (h * MULT_A) & 0xFFFFFFFF
        v = _u32(v * np.uint64(h))
        return v ^ (v >> np.uint64(16))

    zero = np.zeros(n, dtype=np.uint64)
    pool = [hashmix(entropy[i] if i < len(entropy) else zero) for i in range(POOL)]
    for s in range(POOL):
        for d in range(POOL):
            if s != d:
                mixed = _u32(np.uint64(MIX_L) * pool[d]) - _u32(np.uint64(MIX_R) * hashmix(pool[s]))
                mixed = _u32(mixed)
                pool[d] = mixed ^ (mixed >> np.uint64(16))
    h = INIT_B
    out = np.empty((n, 2 * POOL), dtype=np.uint64)
    for i in range(2 * POOL):
        v = _u32(pool[i % POOL] ^ np.uint64(h))
        h = (h * MULT_B) & 0xFFFFFFFF
        v = _u32(v * np.uint64(h))
        out[:, i] = v ^ (v >> np.uint64(16))
    return out[:, 0::2] | (out[:, 1::2] << np.uint64(32))  # little-endian pairs -> uint64


def pcg64_state(words) -> dict:
    """The `PCG64(seed_sequence).state` for its four generate_state words."""
    s0, s1, i0, i1 = (int(w) for w in words)
    initstate, initseq = s0 << 64 | s1, i0 << 64 | i1
    inc = (initseq << 1 | 1) & MASK128
    state = ((inc + initstate) * PCG_MULT + inc) & MASK128
    return {
        "bit_generator": "PCG64",
        "state": {"state": state, "inc": inc},
        "has_uint32": 0,
        "uinteger": 0,
    }


def block_noise(key: list[int], rows: range, shape: tuple[int, ...]) -> np.ndarray:
    """(len(rows), *shape) float32: row r's standard normals of default_rng(key + [r])."""
    out = np.empty((len(rows), *shape), dtype=np.float32)
    states = seed_states(key, np.asarray(rows, dtype=np.int64))
    if states is None:  # a key beyond the pool: numpy's own path, row by row
        for i, r in enumerate(rows):
            out[i] = np.random.default_rng([*key, r]).standard_normal(shape, dtype=np.float32)
        return out
    bits = np.random.PCG64(0)
    gen = np.random.Generator(bits)
    for i in range(len(rows)):
        bits.state = pcg64_state(states[i])
        gen.standard_normal(shape, dtype=np.float32, out=out[i])
    return out
