"""Counter-based standard normals (training/parallel/counter_rng.py): any box of the matrix,
drawn alone and on its own, is that box of the whole draw, so a tensor-parallel rank draws only
its slice of GGPO's noise and still gets one process's numbers."""

import torch

from training.parallel.counter_rng import normal_box


def test_a_box_drawn_alone_is_that_box_of_the_whole_draw():
    shape = (96, 80)
    whole = normal_box(12345, shape, (0, 96), (0, 80))
    for rows, cols in [((0, 48), (0, 80)), ((48, 96), (0, 80)), ((0, 96), (40, 80)),
                       ((7, 30), (11, 12))]:
        part = normal_box(12345, shape, rows, cols)
        assert torch.equal(part, whole[rows[0]: rows[1], cols[0]: cols[1]])


def test_the_draw_is_standard_normal_and_follows_the_key():
    a = normal_box(1, (400, 500), (0, 400), (0, 500)).double()
    b = normal_box(2, (400, 500), (0, 400), (0, 500)).double()
    for x in (a, b):
        assert abs(x.mean()) < 0.01 and abs(x.std() - 1) < 0.01
        assert abs((x.abs() < 1).double().mean() - 0.6827) < 0.005  # the 1-sigma mass
    assert abs(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]) < 0.01
    # neighbours (the next column, the next row) are uncorrelated too
    assert abs(torch.corrcoef(torch.stack([a[:, :-1].flatten(), a[:, 1:].flatten()]))[0, 1]) \
        < 0.01
    assert abs(torch.corrcoef(torch.stack([a[:-1].flatten(), a[1:].flatten()]))[0, 1]) < 0.01
