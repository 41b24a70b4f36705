from __future__ import annotations

import pytest

from gemma4_saelens_ext.activations.batching import length_sorted_batches


def test_length_sorted_batches_stable_and_complete():
    texts = ["ccc", "a", "bb", "a", "dddd", "bb", "a"]
    got = length_sorted_batches(texts, len, 3)
    # independent expectation: group indices by length, ascending, input order within a length
    expect = [i for n in sorted({len(t) for t in texts}) for i, t in enumerate(texts) if len(t) == n]
    assert [i for b in got for i in b] == expect == [1, 3, 6, 2, 5, 0, 4]
    assert [len(b) for b in got] == [3, 3, 1]
    assert length_sorted_batches([], len, 4) == []


def test_length_sorted_batches_tuple_key_breaks_ties():
    rows = [("b", 2), ("a", 2), ("c", 1)]
    assert length_sorted_batches(rows, lambda r: (r[1], r[0]), 2) == [[2, 1], [0]]


def test_length_sorted_batches_rejects_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        length_sorted_batches(["a"], len, 0)
