"""Where each generated kernel element reads the ring, and with which sign: RPG's generating matrices R_i.

Everything here is a pure function of a seed and sizes, drawn from NumPy's legacy ``RandomState``, whose
streams NumPy keeps unchanged across versions: a model rebuilt from the same arguments gets the same
indices and signs in any process, so checkpoints need not store them.

``'full'`` (the authors' scheme, *even sampling*): with T kernel elements and a ring of N entries, the
positions are floor(T/N) copies of 0..N-1 plus a random subset (without replacement) of T mod N entries,
shuffled once; the layers then take consecutive slices in layer order. Every entry is used floor(T/N) or
floor(T/N)+1 times, and consecutive kernel elements read random places of the ring.

``'block'`` (ours, for speed): the ring is cut into blocks of ``BLOCK`` = 64 consecutive entries (the last
may be shorter), and each block gets one fixed random order of its entries. One *use* of a block reads
its entries in that order. The uses are floor(T/N) of every block, plus, for the T mod N remainder, the
blocks of a random order of the blocks taken whole while they fit and the first entries of the next one;
the uses are shuffled once and concatenated, and the layers take consecutive slices as above. Every entry
is again used floor(T/N) or floor(T/N)+1 times, but each run of up to 64 kernel elements reads one
256-byte stretch of the ring, so the gather (and its scatter-add backward) is cache-friendly.

Both schemes draw one random sign (+1 / -1, p = 0.5) per kernel element (*destructive weight sharing*).
"""
import zlib
from typing import List, Sequence, Tuple

import numpy as np

PERMUTATIONS = ('full', 'block')
BLOCK = 64


def _rng(seed: int, ring_id: int) -> np.random.RandomState:
    return np.random.RandomState([seed, ring_id])


def full_positions(total: int, ring_size: int, rng: np.random.RandomState) -> np.ndarray:
    """The authors' even sampling: ``total`` ring positions (int32), each entry floor or ceil(total / N) times."""
    reps, rem = divmod(total, ring_size)
    pos = np.concatenate([np.tile(np.arange(ring_size, dtype=np.int32), reps),
                          rng.choice(ring_size, rem, replace=False).astype(np.int32)])
    rng.shuffle(pos)
    return pos


def block_positions(total: int, ring_size: int, rng: np.random.RandomState) -> np.ndarray:
    """Even sampling by 64-entry blocks (see the module docstring): ``total`` ring positions (int32)."""
    num_blocks = -(-ring_size // BLOCK)
    sizes = np.full(num_blocks, BLOCK, dtype=np.int64)
    sizes[-1] = ring_size - BLOCK * (num_blocks - 1)
    # each block's fixed order of its entries; the missing entries of a short last block sort last
    keys = rng.random_sample((num_blocks, BLOCK))
    keys[np.arange(BLOCK)[None, :] >= sizes[:, None]] = np.inf
    inner = np.argsort(keys, axis=1, kind='stable').astype(np.int32)

    reps, rem = divmod(total, ring_size)
    use_block = [np.tile(np.arange(num_blocks), reps)]
    use_len = [np.tile(sizes, reps)]
    if rem:  # whole blocks of a random order while they fit, then the start of the next one
        order = rng.permutation(num_blocks)
        ends = np.cumsum(sizes[order])
        whole = int(np.searchsorted(ends, rem, side='right'))
        use_block.append(order[:whole])
        use_len.append(sizes[order[:whole]])
        left = rem - (int(ends[whole - 1]) if whole else 0)
        if left:
            use_block.append(order[whole:whole + 1])
            use_len.append(np.array([left]))
    use_block, use_len = np.concatenate(use_block), np.concatenate(use_len)
    shuffle = rng.permutation(len(use_block))
    use_block, use_len = use_block[shuffle], use_len[shuffle]
    take = np.arange(BLOCK)[None, :] < use_len[:, None]
    pos = (inner[use_block] + (use_block * BLOCK).astype(np.int32)[:, None])[take]
    assert pos.size == total
    return pos


def generate(total: int, ring_size: int, seed: int, ring_id: int, permutation: str) -> Tuple[np.ndarray, np.ndarray]:
    """Ring positions (int32) and signs (int8, +1 / -1) of ``total`` kernel elements generated from a ring of
    ``ring_size`` entries; the same arguments give the same arrays in any process."""
    rng = _rng(seed, ring_id)
    positions = (full_positions if permutation == 'full' else block_positions)(total, ring_size, rng)
    signs = (1 - 2 * rng.randint(0, 2, size=total, dtype=np.int8)).astype(np.int8)
    return positions, signs


def layout_fingerprint(permutation: str, rings: Sequence[Tuple[int, List[Tuple[int, ...]]]]) -> int:
    """A checksum of what the indices depend on besides the seed: the scheme, and per ring its size and the
    shapes of its layers in order."""
    return zlib.crc32(repr((permutation, [(int(n), [tuple(s) for s in shapes]) for n, shapes in rings])).encode())
