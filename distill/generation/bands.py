"""MinHash LSH bands for dedup's near-duplicate check, in a table small enough for a run of a million conversations.

`datasketch.MinHashLSH` keeps, for each of its b bands, a dict from the band's bytes to a set of keys, plus a table of
every key's band hashes (for removal): about 2 KB per indexed question, the largest thing a long run held. `Bands`
takes the same banding from it (b and r chosen by `MinHashLSH` for the threshold and the number of permutations,
the same hash ranges) and keeps one dict per band from a 64-bit hash of the band's values to the kept number (a
list only where several share a bucket): about 0.6 KB per question. A conversation is a candidate when one of its
bands equals a kept one's, as in datasketch; a 64-bit hash collision between unequal bands can only add a candidate,
and every candidate is verified by the exact Jaccard similarity of the shingle sets (distill/generation/dedup.py).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Bands"]


class Bands:
    """Kept numbers by band hash (see the module doc); `insert(number, hashvalues)`, `query(hashvalues)`."""

    def __init__(self, threshold: float, num_perm: int) -> None:
        import numpy as np
        from datasketch import MinHashLSH

        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)  # its b, r: optimal for the threshold
        self.b, self.r = lsh.b, lsh.r
        # an odd multiplier per position: the band hash is sum(value * multiplier) modulo 2**64 (numpy wraps)
        rng = np.random.default_rng(0x5EED)
        self._mix = (rng.integers(0, 2**63, size=self.r, dtype=np.uint64) << np.uint64(1)) | np.uint64(1)
        self._tables: list[dict[int, Any]] = [{} for _ in range(self.b)]

    def _keys(self, hashvalues: Any) -> list[int]:
        import numpy as np

        bands = np.asarray(hashvalues, dtype=np.uint64)[: self.b * self.r].reshape(self.b, self.r)
        with np.errstate(over="ignore"):
            keys: list[int] = (bands * self._mix).sum(axis=1, dtype=np.uint64).tolist()
        return keys

    def insert(self, number: int, hashvalues: Any) -> None:
        """Index kept conversation `number` under each of its bands."""
        for table, key in zip(self._tables, self._keys(hashvalues), strict=True):
            held = table.get(key)
            if held is None:
                table[key] = number
            elif isinstance(held, list):
                held.append(number)
            else:
                table[key] = [held, number]

    def query(self, hashvalues: Any) -> set[int]:
        """The kept numbers that share at least one band with `hashvalues`."""
        found: set[int] = set()
        for table, key in zip(self._tables, self._keys(hashvalues), strict=True):
            held = table.get(key)
            if held is None:
                continue
            if isinstance(held, list):
                found.update(held)
            else:
                found.add(held)
        return found
