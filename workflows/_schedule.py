"""The training schedule (paper §4.2): which actor owns which classes where, and the order of chunks and rows.

Every decision about what an epoch visits is made here, and each is a pure
function of its arguments, so the driver and every actor (and a resumed run)
agree without talking:

- :func:`placement` puts one actor on each machine (each worker on a one-host
  cluster), :func:`class_blocks` gives each a balanced contiguous block of classes;
- :func:`walked_chunks` lists the row chunks an epoch trains on, and
  :func:`epoch_order` permutes them per epoch with the run's seed, the same on
  every actor, so each actor loads each chunk once per epoch for all its classes;
- :func:`row_order` permutes the rows inside a chunk per epoch: a chunk's
  rows are stored in class order, and visiting them so in every epoch costs
  ASGD about a point of accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def placement(workers: Mapping[str, Mapping[str, Any]], n_actors: int | None, n_classes: int) -> list[str]:
    """Worker addresses for the actors: one per host, or one per worker on a single-host cluster.

    On each host the worker with the most threads is chosen. ``n_actors`` (the
    config's ``train.actors``) overrides the count; actors then go round-robin
    over the hosts' workers. Never more actors than classes.
    """
    addrs = sorted(workers)
    hosts: dict[str, list[str]] = {}
    for a in addrs:
        hosts.setdefault(str(workers[a].get("host", a)), []).append(a)
    if len(hosts) == 1:
        per = addrs
    else:
        per = [max(v, key=lambda a: (workers[a].get("nthreads", 1), a)) for v in hosts.values()]
    if n_actors is None:
        chosen = per
    else:
        pool = per + [a for a in addrs if a not in per]
        chosen = [pool[i % len(pool)] for i in range(n_actors)]
    return chosen[: max(1, min(len(chosen), n_classes))]


def class_blocks(n_classes: int, n_actors: int) -> list[tuple[int, int]]:
    """Classes ``[lo, hi)`` of each of ``n_actors`` actors: contiguous, sizes differing by at most one."""
    return [(int(b[0]), int(b[-1]) + 1) for b in np.array_split(np.arange(n_classes), n_actors)]


def walked_chunks(chunks: Mapping[str, Sequence[int]], refit: bool) -> list[int]:
    """The chunks an epoch walks: the training chunks, and with ``refit`` the validation chunks too.

    ``chunks`` maps each split to its row chunks holding valid rows.
    """
    return sorted(set(chunks["train"]) | (set(chunks["val"]) if refit else set()))


def epoch_order(chunks: Sequence[int], seed: int, epoch: int) -> list[int]:
    """The chunk order of ``epoch``: a permutation seeded by (seed, epoch), same on all actors."""
    return [int(k) for k in np.random.default_rng([int(seed), int(epoch)]).permutation(np.asarray(chunks, np.int64))]


def row_order(seed: int, epoch: int, k: int, n: int) -> np.ndarray:
    """The order in which epoch ``epoch`` visits the ``n`` row positions of chunk ``k``, seeded by (seed, epoch, k).

    A permutation of all the chunk's positions, so the training rows keep their
    relative order whether or not validation rows are loaded beside them.
    """
    return np.random.default_rng([int(seed), int(epoch), int(k)]).permutation(n)
