"""RPG's generating indices and signs (pddr_mm.rpg.generation): even sampling, determinism, the block scheme."""
import numpy as np
import pytest

from pddr_mm.rpg.generation import BLOCK, generate

# (T, N): a remainder, none, N = T, N = 1, a short last block, fewer entries than one block
SIZES = [(1000, 300), (1024, 256), (777, 777), (50, 1), (5000, 1000 + 37), (100, 30)]


@pytest.mark.parametrize('permutation', ['full', 'block'])
@pytest.mark.parametrize('total,size', SIZES)
def test_every_ring_entry_is_used_floor_or_ceil_of_t_over_n_times(permutation, total, size):
    pos, signs = generate(total, size, seed=3, ring_id=0, permutation=permutation)
    assert pos.dtype == np.int32 and pos.shape == (total, ) and signs.shape == (total, )
    uses = np.bincount(pos, minlength=size)
    assert len(uses) == size and set(np.unique(uses)) <= {total // size, total // size + 1}
    assert uses.sum() == total and (uses == total // size + 1).sum() == total % size
    assert set(np.unique(signs)) == {-1, 1} and abs((signs == 1).mean() - 0.5) < 0.2


@pytest.mark.parametrize('permutation', ['full', 'block'])
def test_same_seed_same_indices_other_seed_or_ring_other_indices(permutation):
    a = generate(4000, 1000, 0, 0, permutation)
    b = generate(4000, 1000, 0, 0, permutation)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    for other in (generate(4000, 1000, 1, 0, permutation), generate(4000, 1000, 0, 1, permutation)):
        assert not np.array_equal(a[0], other[0]) and not np.array_equal(a[1], other[1])


def test_block_scheme_reads_the_ring_in_64_entry_stretches():
    total, size = 64 * 400 * 4, 64 * 400
    jumps = {}
    for permutation in ('full', 'block'):
        pos, _ = generate(total, size, 0, 0, permutation)
        jumps[permutation] = np.count_nonzero(np.diff(pos // BLOCK))
    assert jumps['block'] < total // BLOCK  # one jump per block use at most
    assert jumps['full'] > total // 2  # random access
    pos, _ = generate(total, size, 0, 0, 'block')
    uses = pos.reshape(-1, BLOCK)  # T is a multiple of 64 and N too: every use is one whole block
    assert (uses // BLOCK == uses[:, :1] // BLOCK).all()
    orders = {}
    for use in uses:  # the fixed shuffle inside each block: every use of a block reads it in one order
        assert orders.setdefault(int(use[0] // BLOCK), tuple(use)) == tuple(use)
