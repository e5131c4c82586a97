"""QueryBatcher: concurrent exact queries share one scan and get exactly the answers of separate scans."""

import threading
import time

import numpy as np
import pytest

from transferkit.store import batching, search
from transferkit.store.search import exact_topk, normalize


def _db(n=2000, d=32, seed=0):
    rng = np.random.default_rng(seed)
    return normalize(rng.normal(size=(n, d))), normalize(rng.normal(size=(12, d)))


def test_single_caller_matches_exact_topk():
    db, qs = _db()
    b = batching.QueryBatcher(db)
    idx, sc = b.topk(qs[0], 7)
    ref_i, ref_s = exact_topk(db, qs[:1], 7)
    np.testing.assert_array_equal(idx, ref_i[0])
    np.testing.assert_allclose(sc, ref_s[0], rtol=1e-6)
    assert b.scans == 1


def test_concurrent_callers_share_scans_and_get_their_own_answers(monkeypatch):
    db, qs = _db()
    calls = []
    real = search.exact_topk

    def slow(db_, queries, k):  # hold the first scan so the others queue behind it
        calls.append(len(queries))
        time.sleep(0.2)
        return real(db_, queries, k)

    monkeypatch.setattr(search, "exact_topk", slow)
    b = batching.QueryBatcher(db)
    ks = [1 + i % 5 for i in range(len(qs))]
    out = [None] * len(qs)

    def worker(i):
        out[i] = b.topk(qs[i], ks[i])

    first = threading.Thread(target=worker, args=(0,))
    first.start()
    time.sleep(0.05)  # the first scan is running
    rest = [threading.Thread(target=worker, args=(i,)) for i in range(1, len(qs))]
    for t in rest:
        t.start()
    for t in [first, *rest]:
        t.join(10)
    assert calls[0] == 1 and sum(calls) == len(qs) and len(calls) == 2, calls  # 1 alone, then 11 in one scan
    for i, (idx, sc) in enumerate(out):
        ref_i, ref_s = real(db, qs[i:i + 1], ks[i])
        assert idx.shape == (ks[i],)
        np.testing.assert_array_equal(idx, ref_i[0])
        np.testing.assert_allclose(sc, ref_s[0], rtol=1e-5, atol=1e-6)


def test_an_error_reaches_every_caller_of_the_scan(monkeypatch):
    db, qs = _db()

    def broken(*_a):
        raise RuntimeError("scan failed")

    monkeypatch.setattr(search, "exact_topk", broken)
    b = batching.QueryBatcher(db)
    with pytest.raises(RuntimeError, match="scan failed"):
        b.topk(qs[0], 3)
    monkeypatch.undo()
    idx, _ = b.topk(qs[0], 3)  # the batcher is usable afterwards
    assert idx.shape == (3,)
