"""The per-image path: bytes -> descriptors once -> one pooled vector per feature set (paper §3)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ._codebook import Codebook
from ._coding import lcc_encode, nearest_codewords
from .errors import ConfigError, ImageError
from ._feature_sets import FeatureSet
from ._grid import DescriptorGrid, Descriptors
from ._fisher import fisher_vector
from ._hog import dense_hog
from ._images import load_image
from ._lbp import dense_lbp
from ._sift import dense_sift
from ._pooling import normalize_feature, pyramid_pool, svc_pool

__all__ = ["dense_descriptors", "image_descriptors", "image_features", "encode_pool"]

_KINDS = ("hog", "lbp", "hog+lbp", "sift")


def _check_kinds(kinds: Iterable[str]) -> list[str]:
    out = []
    for k in kinds:
        if k not in _KINDS:
            raise ConfigError(f"descriptor kind {k!r}: use one of {list(_KINDS)}")
        if k not in out:
            out.append(k)
    return out


def _from_parts(kinds: list[str], image: np.ndarray, grid: DescriptorGrid) -> dict[str, Descriptors]:
    parts: dict[str, Descriptors] = {}
    if any("hog" in k for k in kinds):
        parts["hog"] = dense_hog(image, grid)
    if any("lbp" in k for k in kinds):
        parts["lbp"] = dense_lbp(image, grid)
    if "sift" in kinds:
        parts["sift"] = dense_sift(image, grid)
    out = {}
    for k in kinds:
        if k == "hog+lbp":
            h, lb = parts["hog"], parts["lbp"]
            out[k] = Descriptors(np.concatenate([h.values, lb.values], axis=1), h.xy, h.image_shape)
        else:
            out[k] = parts[k]
    return out


def dense_descriptors(image: np.ndarray, kind: str, grid: DescriptorGrid = DescriptorGrid()) -> Descriptors:
    """Dense descriptors of one kind on the grid: "hog" (128), "sift" (128), "lbp" (59 c^2) or "hog+lbp" (both, concatenated per patch).

    Parameters
    ----------
    image : ndarray (H, W) float32
    kind : {"hog", "lbp", "hog+lbp", "sift"}
    grid : DescriptorGrid

    Returns
    -------
    Descriptors
        ``values`` (n, d) float32, ``xy`` (n, 2) float32 patch centres, ``image_shape``.
    """
    return _from_parts(_check_kinds([kind]), image, grid)[kind]


def image_descriptors(
    data: bytes, kinds: Iterable[str], grid: DescriptorGrid = DescriptorGrid(), *, name: str | None = None
) -> dict[str, Descriptors]:
    """Decode once and compute each requested descriptor kind once.

    HOG and LBP are each computed at most once even when "hog", "lbp" and
    "hog+lbp" are all requested. Raises ImageError (naming ``name``) for
    undecodable input.
    """
    ks = _check_kinds(kinds)
    image = load_image(data, max_side=grid.max_side, max_pixels=grid.max_pixels, name=name)
    smallest = min(grid.patch_sizes)
    if min(image.shape) < smallest:
        # No patch fits: the pooled vector would be all zeros, a row that looks valid but carries nothing.
        raise ImageError(
            f"image {name or '<bytes>'} is {image.shape[1]}x{image.shape[0]} px after shrinking, smaller than "
            f"the smallest patch ({smallest} px); it has no descriptors"
        )
    return _from_parts(ks, image, grid)


def encode_pool(desc: Descriptors, codebook: Codebook) -> np.ndarray:
    """Code, pyramid-pool and normalise one image's descriptors for one feature set.

    LCC (eq. 1; neighbours by ``fs.knn``, exact or the codebook's inverted
    file) then max/avg pyramid pooling, SVC (eq. 2) with its pooling per
    block, or a Fisher vector per block (signed square root and L2 per
    block); blocks concatenated, optional power norm (not for FV, already
    applied per block), then L2.

    Returns
    -------
    x : ndarray (feature_set.dim,) float32
    """
    fs = codebook.feature_set
    Z = codebook.project(desc.values)
    if fs.coding == "lcc":
        ivf = fs.knn == "ivf"
        codes = lcc_encode(
            Z, codebook.centers, fs.kappa, center_norms=codebook.center_norms,
            index=codebook.ivf if ivf else None, n_probe=codebook.ivf_probes if ivf else 1,
        )
        x = pyramid_pool(codes, desc.xy, desc.image_shape, fs.pyramid, pooling=fs.pooling)
    elif fs.coding == "fv":
        x = fisher_vector(Z, codebook.centers, codebook.variances, codebook.weights,
                          desc.xy, desc.image_shape, fs.pyramid)
        return _checked(normalize_feature(x), fs)
    else:
        near = nearest_codewords(Z, codebook.centers, 1, center_norms=codebook.center_norms)
        x = svc_pool(Z, near[:, 0], codebook.centers, fs.s, desc.xy, desc.image_shape, fs.pyramid)
    return normalize_feature(_checked(x, fs), power_norm=fs.power_norm)


def _checked(x: np.ndarray, fs: FeatureSet) -> np.ndarray:
    if x.shape[0] != fs.dim:
        raise ConfigError(
            f"feature set {fs.name!r}: pooled length {x.shape[0]} != dim {fs.dim}: set pca_dim or use "
            "the default descriptor grid (lbp_cells=1)"
        )
    return x


def image_features(
    data: bytes,
    feature_sets: Sequence[FeatureSet],
    codebooks: Mapping[str, Codebook],
    grid: DescriptorGrid = DescriptorGrid(),
    *,
    name: str | None = None,
) -> dict[str, np.ndarray]:
    """The whole per-image path: bytes -> descriptors (once) -> one vector per set.

    Parameters
    ----------
    data : bytes
        Encoded image.
    feature_sets : sequence of FeatureSet
    codebooks : mapping set name -> Codebook
    grid : DescriptorGrid
    name : str, optional
        Image name for error messages.

    Returns
    -------
    dict set name -> ndarray (fs.dim,) float32, L2-normalised.

    Raises
    ------
    ImageError
        The image could not be decoded (the caller records it as a failure).
    ConfigError
        A feature set has no codebook.
    """
    for fs in feature_sets:
        if fs.name not in codebooks:
            raise ConfigError(f"no codebook for feature set {fs.name!r}: fit or load it first")
    descs = image_descriptors(data, [fs.descriptor for fs in feature_sets], grid, name=name)
    return {fs.name: encode_pool(descs[fs.descriptor], codebooks[fs.name]) for fs in feature_sets}
