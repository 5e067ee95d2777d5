"""Feature sets: one row of the paper's Table 1 as a typed, validated config (paper §3, Table 1)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from .errors import ConfigError
from ._hog import HOG_DIM
from ._knn import default_n_lists
from ._lbp import LBP_CODES
from ._sift import SIFT_DIM
from ._pooling import n_pyramid_blocks

__all__ = ["FeatureSet", "TABLE1", "PRESETS", "descriptor_dim"]

_DESCRIPTORS = ("hog", "hog+lbp", "lbp", "sift")
_CODINGS = ("lcc", "svc", "fv")
_POOLINGS = ("max", "avg")
_KNN = ("exact", "ivf")
MAX_CODEBOOK = 32768


def descriptor_dim(descriptor: str, lbp_cells: int = 1) -> int:
    """Raw descriptor dimension: hog 128, sift 128, lbp 59 c^2, hog+lbp their sum."""
    lbp = LBP_CODES * lbp_cells * lbp_cells
    return {"hog": HOG_DIM, "sift": SIFT_DIM, "lbp": lbp, "hog+lbp": HOG_DIM + lbp}[descriptor]


@dataclass(frozen=True)
class FeatureSet:
    """One feature set: descriptor, coding, codebook and pyramid (a row of Table 1).

    Parameters
    ----------
    name : str
        Key of the set (store group name, codebook key).
    descriptor : {"hog", "hog+lbp", "lbp", "sift"}
        "sift" is the dense SIFT of :func:`dense_sift` (smoothing, bilinear
        spatial binning, Gaussian window, contrast threshold).
    coding : {"lcc", "svc", "fv"}
        LCC (eq. 1, ``kappa = 1`` is VQ), super-vector coding (eq. 2) or
        Fisher vectors (:func:`fisher_vector`, beyond the paper).
    codebook_size : int
        p, number of k-means codewords (LCC, SVC) or K, number of diagonal
        Gaussian components (FV), 1..32768.
    kappa : int, default 20
        LCC nearest codewords (ignored by SVC).
    s : float, default 0.1
        SVC constant of eq. 2 (ignored by LCC).
    pca_dim : int or None
        Descriptor dimension after PCA (None: no PCA).
    pyramid : tuple of (rows, cols), default ((1, 1), (3, 3))
        Spatial pyramid levels (10 blocks by default).
    pooling : {"max", "avg"}, default "max"
        LCC pooling (SVC always uses eq. 2's pooling, FV sums).
    power_norm : bool, default False
        Signed square root before the final L2 normalisation (FV always takes
        it per pyramid block; this flag is then ignored).
    knn : {"exact", "ivf"}, default "exact"
        LCC's nearest-codeword search: exact, or an inverted file over the
        codebook (coarse k-means over the codewords, ``n_probe`` lists probed
        per descriptor; approximate, for big codebooks). Ignored by SVC.
    n_probe : int or None, default None
        Lists probed per descriptor when ``knn="ivf"``, 1..``n_lists``
        (None: the fewest that reach ``ivf_recall``, calibrated on the
        codebook when its index is built; see :meth:`Codebook.ivf_probes`).
    ivf_recall : float, default 0.993
        Target kappa-NN recall against exact search from which ``n_probe:
        null`` is calibrated, in (0, 1]. 0.993 estimated on codewords gave
        0.9916-0.9937 on descriptors (Table 1's codebooks, a fitted
        Caltech-101 codebook; the documentation's "Table 1 at the paper's scale" benchmark page).
    n_lists : int or None, default None
        Inverted lists when ``knn="ivf"`` (None: ``round(sqrt(codebook_size))``).

    Notes
    -----
    ``dim`` is ``p * blocks`` for LCC, ``(d' + 1) p * blocks`` for SVC and
    ``2 K d' * blocks`` for FV (K = 256, d' = 80 and 8 blocks: 327,680 float32
    per image, 1.3 MB before compression),
    with d' = ``pca_dim`` or the raw descriptor dimension for the default
    grid (HOG 128, LBP 59 with one histogram per patch).
    """

    name: str
    descriptor: str
    coding: str
    codebook_size: int
    kappa: int = 20
    s: float = 0.1
    pca_dim: int | None = None
    pyramid: tuple[tuple[int, int], ...] = ((1, 1), (3, 3))
    pooling: str = "max"
    power_norm: bool = False
    knn: str = "exact"
    n_probe: int | None = None
    n_lists: int | None = None
    ivf_recall: float = 0.993

    def __post_init__(self) -> None:
        def bad(key: str, value: Any, fix: str) -> ConfigError:
            return ConfigError(f"feature set {self.name!r}: {key}={value!r} is invalid: {fix}")

        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise bad("name", self.name, "use a non-empty string without '/'")
        if self.descriptor not in _DESCRIPTORS:
            raise bad("descriptor", self.descriptor, f"use one of {list(_DESCRIPTORS)}")
        if self.coding not in _CODINGS:
            raise bad("coding", self.coding, f"use one of {list(_CODINGS)}")
        if isinstance(self.codebook_size, bool) or not isinstance(self.codebook_size, int) or not (
            1 <= self.codebook_size <= MAX_CODEBOOK
        ):
            raise bad("codebook_size", self.codebook_size, f"use an integer in 1..{MAX_CODEBOOK}")
        if isinstance(self.kappa, bool) or not isinstance(self.kappa, int) or not (
            1 <= self.kappa <= (self.codebook_size if self.coding == "lcc" else self.kappa)
        ):
            raise bad("kappa", self.kappa, f"use an integer in 1..codebook_size ({self.codebook_size})")
        if isinstance(self.s, bool) or not isinstance(self.s, (int, float)) or not self.s >= 0:
            raise bad("s", self.s, "use a non-negative number such as 0.1")
        object.__setattr__(self, "s", float(self.s))
        if self.pca_dim is not None:
            if isinstance(self.pca_dim, bool) or not isinstance(self.pca_dim, int) or not (
                1 <= self.pca_dim <= descriptor_dim(self.descriptor, 2)
            ):
                raise bad("pca_dim", self.pca_dim, "use null or a positive integer below the descriptor dimension")
        try:
            pyr = tuple((int(r), int(c)) for r, c in self.pyramid)
        except (TypeError, ValueError):
            raise bad("pyramid", self.pyramid, "use a list of [rows, cols], e.g. [[1, 1], [3, 3]]") from None
        if not pyr or any(r < 1 or c < 1 for r, c in pyr) or any(
            not isinstance(v, (int,)) or isinstance(v, bool) for lvl in self.pyramid for v in lvl
        ):
            raise bad("pyramid", self.pyramid, "use a list of positive integer [rows, cols] pairs")
        object.__setattr__(self, "pyramid", pyr)
        if self.pooling not in _POOLINGS:
            raise bad("pooling", self.pooling, f"use one of {list(_POOLINGS)}")
        if not isinstance(self.power_norm, bool):
            raise bad("power_norm", self.power_norm, "use true or false")
        if self.knn not in _KNN:
            raise bad("knn", self.knn, f"use one of {list(_KNN)}")
        if self.n_lists is not None and (
            isinstance(self.n_lists, bool) or not isinstance(self.n_lists, int)
            or not 1 <= self.n_lists <= self.codebook_size
        ):
            raise bad("n_lists", self.n_lists, f"use null or an integer in 1..codebook_size ({self.codebook_size})")
        if self.n_probe is not None and (
            isinstance(self.n_probe, bool) or not isinstance(self.n_probe, int)
            or not 1 <= self.n_probe <= (self.ivf_lists if self.knn == "ivf" else self.n_probe)
        ):
            raise bad("n_probe", self.n_probe, f"use null or an integer in 1..n_lists ({self.ivf_lists})")
        if isinstance(self.ivf_recall, bool) or not isinstance(self.ivf_recall, (int, float)) or not (
            0 < self.ivf_recall <= 1
        ):
            raise bad("ivf_recall", self.ivf_recall, "use a number in (0, 1], e.g. 0.993")
        object.__setattr__(self, "ivf_recall", float(self.ivf_recall))

    @property
    def ivf_lists(self) -> int:
        """Inverted lists of ``knn="ivf"``: ``n_lists`` or ``round(sqrt(codebook_size))``."""
        return self.n_lists if self.n_lists is not None else default_n_lists(self.codebook_size)

    @property
    def n_blocks(self) -> int:
        """Number of spatial pyramid blocks."""
        return n_pyramid_blocks(self.pyramid)

    @property
    def code_dim(self) -> int:
        """Descriptor dimension the codebook lives in (after PCA)."""
        return self.pca_dim if self.pca_dim is not None else descriptor_dim(self.descriptor)

    @property
    def coding_dim(self) -> int:
        """Table 1's "coding dim": p for LCC, (d' + 1) p for SVC, 2 K d' for FV."""
        if self.coding == "lcc":
            return self.codebook_size
        if self.coding == "fv":
            return 2 * self.code_dim * self.codebook_size
        return (self.code_dim + 1) * self.codebook_size

    @property
    def dim(self) -> int:
        """Length of the pooled feature vector: coding dim x pyramid blocks."""
        return self.coding_dim * self.n_blocks

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, name: str | None = None) -> "FeatureSet":
        """Build from a mapping (e.g. parsed YAML); unknown keys raise ConfigError naming them.

        ``name`` fills the ``name`` key when the mapping is keyed by set name.
        """
        if not isinstance(d, Mapping):
            raise ConfigError(f"feature set {name!r}: expected a mapping, got {type(d).__name__}")
        allowed = {f.name for f in fields(cls)}
        data = dict(d)
        if name is not None:
            data.setdefault("name", name)
        unknown = sorted(set(data) - allowed)
        label = data.get("name", name)
        if unknown:
            raise ConfigError(
                f"feature set {label!r}: unknown key {unknown[0]!r}: allowed keys are {sorted(allowed)}"
            )
        for key in ("name", "descriptor", "coding", "codebook_size"):
            if key not in data:
                raise ConfigError(f"feature set {label!r}: missing key {key!r}")
        if "pyramid" in data and data["pyramid"] is not None:
            pyr = data["pyramid"]
            if not isinstance(pyr, (list, tuple)) or not all(
                isinstance(lv, (list, tuple)) and len(lv) == 2 for lv in pyr
            ):
                raise ConfigError(
                    f"feature set {label!r}: pyramid={pyr!r} is invalid: use a list of [rows, cols]"
                )
            data["pyramid"] = tuple(tuple(lv) for lv in pyr)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """Plain-types mapping that :meth:`from_dict` reads back."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["pyramid"] = [list(lv) for lv in self.pyramid]
        return out


_P10 = ((1, 1), (3, 3))  # 10 blocks
_P8 = ((1, 1), (2, 2), (3, 1))  # 8 blocks
_P4 = ((1, 1), (3, 1))  # 4 blocks

#: The paper's six ImageNet feature sets (Table 1). SVC's p and d are not in
#: the paper; p = 512 with PCA to 99 (set 5) and 127 (set 6) gives its coding
#: dims 51,200 and 65,536.
TABLE1: dict[str, FeatureSet] = {
    fs.name: fs
    for fs in (
        FeatureSet("set1", "hog+lbp", "lcc", 8192, pyramid=_P10),
        FeatureSet("set2", "hog", "lcc", 16384, pyramid=_P10),
        FeatureSet("set3", "hog+lbp", "lcc", 20480, pyramid=_P10),
        FeatureSet("set4", "hog", "lcc", 32768, pyramid=_P8),
        FeatureSet("set5", "hog+lbp", "svc", 512, pca_dim=99, pyramid=_P4),
        FeatureSet("set6", "hog", "svc", 512, pca_dim=127, pyramid=_P4),
    )
}

#: Small sets for Caltech-101 scale (a few thousand images): same structure,
#: codebooks sized for a descriptor sample of ~10^5.
CALTECH: dict[str, FeatureSet] = {
    fs.name: fs
    for fs in (
        FeatureSet("caltech_lcc_hog", "hog", "lcc", 1024, kappa=5, pyramid=((1, 1), (2, 2), (4, 4))),
        FeatureSet("caltech_lcc_hoglbp", "hog+lbp", "lcc", 1024, kappa=5, pca_dim=96, pyramid=_P10),
        FeatureSet("caltech_svc_hog", "hog", "svc", 64, pca_dim=64, pyramid=_P4),
        FeatureSet("tiny_lcc_hog", "hog", "lcc", 128, kappa=5, pyramid=((1, 1), (2, 2))),
        FeatureSet("tiny_svc_hoglbp", "hog+lbp", "svc", 16, pca_dim=32, pyramid=_P4),
    )
}

#: Every named preset: Table 1's six sets and the Caltech-101 ones.
PRESETS: dict[str, FeatureSet] = {**TABLE1, **CALTECH}
