"""numba kernels of dense SIFT (VLFeat ``vl_dsift`` design, see :mod:`._sift`).

Every kernel is ``nogil`` and fills a preallocated array. One pass per patch
scale: smooth, vote, filter each orientation plane with a separable triangle
(the bilinear spatial binning), then read each cell's value at its centre.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

_NOGIL = {"nogil": True, "cache": True}


@nb.njit(**_NOGIL)
def smooth_axis(src, taps, axis, out):
    """Correlate a (H, W) float32 image with symmetric ``taps`` along ``axis``.

    taps : (2 r + 1,) float64, centred. Borders repeat the edge pixel (as
    ``scipy.ndimage`` mode 'nearest' and VLFeat's pad-by-continuity).
    """
    h, w = src.shape
    r = (taps.shape[0] - 1) // 2
    for i in range(h):
        for j in range(w):
            acc = 0.0
            for t in range(-r, r + 1):
                if axis == 0:
                    k = min(max(i + t, 0), h - 1)
                    acc += taps[t + r] * src[k, j]
                else:
                    k = min(max(j + t, 0), w - 1)
                    acc += taps[t + r] * src[i, k]
            out[i, j] = acc


@nb.njit(**_NOGIL)
def orientation_votes(image, n_bins, out):
    """Gradient magnitude split linearly between the two nearest of ``n_bins`` signed orientations.

    image : (H, W) float32 (already smoothed). out : (H, W, n_bins) float32
    zero-filled. Gradients are half the centred differences, one-sided on the
    border rows / columns (as ``vl_dsift``); angle ``atan2(g_row, g_col)`` in
    [0, 2 pi) with rows pointing down; bin ``b`` is centred at ``2 pi b / n_bins``.
    """
    h, w = image.shape
    for r in range(h):
        for c in range(w):
            if h == 1:
                gr = 0.0
            elif r == 0:
                gr = np.float64(image[1, c]) - image[0, c]
            elif r == h - 1:
                gr = np.float64(image[r, c]) - image[r - 1, c]
            else:
                gr = 0.5 * (np.float64(image[r + 1, c]) - image[r - 1, c])
            if w == 1:
                gc = 0.0
            elif c == 0:
                gc = np.float64(image[r, 1]) - image[r, 0]
            elif c == w - 1:
                gc = np.float64(image[r, c]) - image[r, c - 1]
            else:
                gc = 0.5 * (np.float64(image[r, c + 1]) - image[r, c - 1])
            mag = math.sqrt(gr * gr + gc * gc)
            if mag == 0.0:
                continue
            ang = math.atan2(gr, gc) % (2.0 * math.pi)
            pos = ang * n_bins / (2.0 * math.pi)
            b0 = int(math.floor(pos))
            f = pos - b0
            b0 = b0 % n_bins
            b1 = (b0 + 1) % n_bins
            out[r, c, b0] += mag * (1.0 - f)
            out[r, c, b1] += mag * f


@nb.njit(**_NOGIL)
def triangle_axis(src, cell, axis, out):
    """Bilinear spatial binning along one axis: correlate with a triangle of half-width ``cell``.

    src : (H, W, B) float32. out : along ``axis`` of length L (H or W) it has
    L + 1 entries when ``cell`` is even and L when odd; entry ``j`` is the
    filter centred at position ``j`` (even) or ``j + 1/2`` (odd), i.e. on the
    lattice of cell centres. Pixel ``p`` (centre ``p + 1/2``) has weight
    ``max(0, 1 - |p + 1/2 - centre| / cell) / cell``; pixels outside the image
    vote nothing.

    The weight is linear in ``p`` on each side of the centre, so each output
    is four look-ups in the prefix sums of ``src`` and ``p * src`` (O(1) per
    output whatever ``cell``: the integral-histogram trick, one order up).
    """
    n_in = src.shape[axis]
    n_out = out.shape[axis]
    other = src.shape[1 - axis]
    n_b = src.shape[2]
    # prefix sums of one line at a time: small buffers that stay in cache
    s0 = np.zeros((n_in + 1, n_b), dtype=np.float64)
    s1 = np.zeros((n_in + 1, n_b), dtype=np.float64)
    half = 0.0 if cell % 2 == 0 else 0.5
    c2 = 1.0 / (cell * cell)
    for o in range(other):
        for p in range(n_in):
            for b in range(n_b):
                v = np.float64(src[p, o, b]) if axis == 0 else np.float64(src[o, p, b])
                s0[p + 1, b] = s0[p, b] + v
                s1[p + 1, b] = s1[p, b] + p * v
        for j in range(n_out):
            centre = j + half
            lo = max(int(math.floor(centre - cell - 0.5)) + 1, 0)
            mid = min(int(math.floor(centre - 0.5)), n_in - 1)  # last pixel left of the centre
            hi = min(int(math.ceil(centre + cell - 0.5)) - 1, n_in - 1)
            a_left = (cell - centre + 0.5) * c2
            a_right = (cell + centre - 0.5) * c2
            r0 = max(mid + 1, 0)
            for b in range(n_b):
                v = 0.0
                if mid >= lo:
                    v += a_left * (s0[mid + 1, b] - s0[lo, b]) + c2 * (s1[mid + 1, b] - s1[lo, b])
                if hi >= r0:
                    v += a_right * (s0[hi + 1, b] - s0[r0, b]) - c2 * (s1[hi + 1, b] - s1[r0, b])
                if axis == 0:
                    out[j, o, b] = v
                else:
                    out[o, j, b] = v


@nb.njit(**_NOGIL)
def sift_patches(binned, cell, ys, xs, n_cells, window, contrast, clip, out):
    """SIFT vectors of all patches of one size from the triangle-filtered vote planes.

    binned : (H', W', B) float32 from two :func:`triangle_axis` passes; cell
    ``(i, j)`` of the patch at ``(y0, x0)`` reads entry
    ``(y0 + i cell + cell // 2, x0 + j cell + cell // 2)``.
    window : (n_cells, n_cells) float64 Gaussian weight per cell.
    contrast : a patch whose mean per-cell gradient mass (sum over the
    unwindowed histogram / n_cells^2) is below this is set to zero.
    clip : after L2 normalisation, entries are clipped here and renormalised.
    out : (ny * nx, n_cells^2 B) float32, row-major (cell_y, cell_x, bin).
    """
    n_b = binned.shape[2]
    d = n_cells * n_cells * n_b
    buf = np.empty(d, dtype=np.float64)
    off = cell // 2
    k = 0
    for iy in range(ys.shape[0]):
        for ix in range(xs.shape[0]):
            t = 0
            mass = 0.0
            ss = 0.0
            for cy in range(n_cells):
                r = ys[iy] + cy * cell + off
                for cx in range(n_cells):
                    c = xs[ix] + cx * cell + off
                    wgt = window[cy, cx]
                    for b in range(n_b):
                        v = np.float64(binned[r, c, b])
                        mass += v
                        v *= wgt
                        buf[t] = v
                        ss += v * v
                        t += 1
            if mass / (n_cells * n_cells) < contrast or ss == 0.0:
                for t in range(d):
                    out[k, t] = 0.0
                k += 1
                continue
            norm = math.sqrt(ss)
            ss2 = 0.0
            for t in range(d):
                v = min(buf[t] / norm, clip)
                buf[t] = v
                ss2 += v * v
            norm = math.sqrt(ss2)
            for t in range(d):
                out[k, t] = buf[t] / norm
            k += 1
