"""The vocabulary of the feature store: its paths, split codes, row chunks and rows.

Every path in the store, the split codes and the row-chunk arithmetic are
defined here and nowhere else; :class:`~lsic.workflows.store.FeatureStore`
and the modules beside it (checkpoints, results) build their paths from these
functions. Nothing here touches Zarr, so any module may import it.

Layout: a Zarr v3 group at any fsspec URL, root attributes ``lsic_version``,
``fingerprint`` (written last: the metadata is complete), ``config``,
``class_names``, ``chunk_rows``, ``seed``, ``n_images``, ``split_names``,
``complete_extract`` and ``run_id``; its nodes are listed in :data:`LAYOUT`
(appended below as a table, and rendered into the documentation's store page, which a test checks).
Every array has ``dimension_names`` so ``xarray.open_zarr`` reads it. An epoch
of a set is complete when its complete blocks cover every class, whatever the
partition (a resumed run may use another actor count); each actor writes its
own block group, so actors never share a chunk or an attribute file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Split codes of the ``split`` array.
TRAIN, VAL, TEST = 0, 1, 2
SPLITS = ("train", "val", "test")
"""Split names, indexed by split code."""
SPLIT_CODES = {name: code for code, name in enumerate(SPLITS)}
SCORE_SPLITS = ("val", "test")
"""Splits training scores for fusion and evaluation."""
SPARSE_CODINGS = frozenset({"lcc"})
"""Codings whose pooled features are mostly exact zeros (stored with the sparse compressor)."""
FAILURES = "failures.json"
EVALUATION = "evaluation"
TIMINGS = "timings"
STAGE_ORDER = ("extract", "train", "evaluate")

LAYOUT: tuple[tuple[str, str, str], ...] = (
    ("paths", "(n,) str", "image URL; tar members as `tar://<member>::<tar URL>`"),
    ("offsets`, `sizes", "(n,) int64", "byte range of a tar member, -1 for plain files"),
    ("labels", "(n,) int32", "class index into `attrs.class_names`"),
    ("split", "(n,) int8", "0 train, 1 validation, 2 test (`TRAIN`, `VAL`, `TEST`; `attrs.split_names`); "
     "rows are ordered train, val, test"),
    ("valid", "(n,) bool", "False where the image could not be read or decoded"),
    ("errors", "(n,) str", "the reason, \"\" for valid rows"),
    ("features/<set>/X", "(n, dim) float32", "pooled features, chunks of `chunk_rows` rows, Blosc: "
     "LCC features (mostly zeros) LZ4HC 5 without shuffle, dense SVC / FV features zstd 3 with byte shuffle; "
     "attrs `feature_set`"),
    ("codebooks/<set>/centers`, `pca_mean`, `pca_components", "", "codebook (and PCA) of the set; for FV "
     "also the GMM's `variances` and `weights` (`centers` are its means); for LCC with `knn: ivf` and "
     "`n_probe: null` also `ivf_probes` ((1,) int32, the calibrated lists probed); attrs `feature_set`, "
     "`complete`"),
    ("progress/extract", "(n_chunks,) bool", "completion mark of each row chunk"),
    ("failures.json", "JSON", "the invalid rows (`row`, `path`, `error`), rewritten at the end of extraction"),
    ("models/<set>", "attrs", "`settings`, `n_classes`, `n_features`, `class_names`, `history` (per epoch: seconds, "
     "rows, `val_top1`, `val_top5`, restarts), `epochs_complete`, `final_epoch`"),
    ("models/<set>/asgd/epoch_<e>/c<lo>_<hi>/", "V, U, P, b, bbar, t, eta0, lam", "full ASGD state of classes "
     "lo..hi-1, one group per actor, `complete` written last (newest complete epoch kept); "
     "`FeatureStore.open(url).load_models(set)` rebuilds a `OneVsAllASGD`"),
    ("models/<set>/sgd/epoch_<e>/c<lo>_<hi>/", "", "plain SGD models, with `train.compare_sgd`"),
    ("models/<set>/refit/epoch_<e>/c<lo>_<hi>/", "", "models trained on the training and validation rows, with "
     "`train.refit`"),
    ("models/<set>/coef`, `intercept", "(n_classes, dim), (n_classes,) float32", "averaged weights `W_bar`, `b_bar` "
     "of the last epoch (of the refit models with `train.refit`)"),
    ("scores/<set>/<split>", "(n_rows, n_classes) float32", "`X @ W_bar.T + b_bar` for the valid rows of `val` / "
     "`test`, in store row order (`val` always by the models that did not train on it); attrs `complete`, "
     "`epoch`"),
    ("scores/<set>/<split>_rows", "(n_rows,) int64", "those rows' indices in the store"),
    ("scores/<set>/_parts/<split>/c<lo>_<hi>", "(n_rows, hi - lo) float32", "an actor's class block of scores "
     "before the reduce (removed after it)"),
    ("evaluation/<source>/per_class_top1`, `per_class_top5`, `confusion", "(n_classes,) float64, "
     "(n_classes, n_classes) int64", "per-class hit rates and confusion of each set and of `fused`; attrs of "
     "`evaluation`: `fusion`, `metrics`, `report`, `sources`, `complete`"),
    ("timings", "attrs", "wall-clock seconds of each stage, for the report"),
)
"""``(path, shape and dtype, meaning)`` of everything in a store: the documentation's layout table."""


def layout_table() -> str:
    """:data:`LAYOUT` as the Markdown table of the documentation's store page (docs/user/store.md)."""
    rows = ["| path | shape, dtype | meaning |", "|---|---|---|"]
    rows += [f"| `{path}` | {shape} | {meaning} |" for path, shape, meaning in LAYOUT]
    return "\n".join(rows)


__doc__ = f"{__doc__}\n{layout_table()}\n"


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class Manifest:
    """Every image of a run in its global row order: the rows a store is created with.

    Attributes
    ----------
    paths : list of str, length n
        fsspec URL of each image (``tar://member::url`` for tar members).
    labels : ndarray of int32, shape (n,)
        Class index into ``class_names``.
    split : ndarray of int8, shape (n,)
        0 train, 1 validation, 2 test (:data:`SPLITS`).
    offsets, sizes : ndarray of int64, shape (n,)
        Byte range of a tar member inside its archive; -1 for plain files.
    class_names : list of str
    """

    paths: list[str]
    labels: np.ndarray
    split: np.ndarray
    offsets: np.ndarray
    sizes: np.ndarray
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> dict[str, int]:
        return {name: int((self.split == code).sum()) for name, code in SPLIT_CODES.items()}


# --------------------------------------------------------------------------- row chunks


def n_chunks(n: int, chunk_rows: int) -> int:
    """Row chunks of an ``n``-row store (at least one, so an empty store still has a mark)."""
    return max((n + chunk_rows - 1) // chunk_rows, 1)


def chunk_bounds(k: int, chunk_rows: int, n: int) -> tuple[int, int]:
    """Rows ``[a, b)`` of row chunk ``k``."""
    return k * chunk_rows, min((k + 1) * chunk_rows, n)


def chunks_with(mask: np.ndarray, chunk_rows: int) -> list[int]:
    """Row chunks holding at least one True row of ``mask`` (n,) bool."""
    mask = np.asarray(mask, bool)
    n = mask.size
    m = n_chunks(n, chunk_rows)
    padded = np.zeros(m * chunk_rows, bool)
    padded[:n] = mask
    return [int(k) for k in np.flatnonzero(padded.reshape(m, chunk_rows).any(axis=1))]


# --------------------------------------------------------------------------- paths


def variants(compare_sgd: bool = False, refit: bool = False) -> list[str]:
    """The model families a run trains, each a group ``models/<set>/<variant>``.

    ``asgd`` (the averaged models), plain ``sgd`` (``train.compare_sgd``) and
    ``refit`` (trained on the training and validation rows, ``train.refit``).
    """
    return ["asgd"] + (["sgd"] if compare_sgd else []) + (["refit"] if refit else [])


def features_path(name: str) -> str:
    return f"features/{name}"


def codebook_path(name: str) -> str:
    return f"codebooks/{name}"


def progress_path(stage: str) -> str:
    return f"progress/{stage}"


def model_path(name: str) -> str:
    return f"models/{name}"


def variant_path(name: str, variant: str) -> str:
    return f"{model_path(name)}/{variant}"


def epoch_path(name: str, variant: str, epoch: int) -> str:
    return f"{variant_path(name, variant)}/epoch_{epoch}"


def block_key(lo: int, hi: int) -> str:
    return f"c{lo}_{hi}"


def scores_path(name: str) -> str:
    return f"scores/{name}"


def score_path(name: str, split: str) -> str:
    return f"{scores_path(name)}/{split}"


def parts_path(name: str, split: str) -> str:
    return f"{scores_path(name)}/_parts/{split}"


def part_path(name: str, split: str, lo: int, hi: int) -> str:
    return f"{parts_path(name, split)}/{block_key(lo, hi)}"
