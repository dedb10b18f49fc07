"""Built-in synthetic image sources for supervised pre-training, generated inside the tf.data graph.

`synthetic_dataset(name, ...)` returns an endless `tf.data.Dataset` of `(image, label)` pairs that
is rendered on the fly by stateless random ops (`tf.random.stateless_*`, Philox): no files, no
downloads, no Python in the map, as many classes as asked for and unlimited images per class.
What class c looks like is a pure function of `(seed, c)`; how one sample of it differs is a pure
function of `(seed, split, element index)`. So the same arguments always give the same stream, on
any machine and whatever the parallelism of the map, and the splits show the same classes with
different samples.

Sources (see `SOURCES`):

* ``"glyphs"``: each class is a random pseudo-character of 1-4 connected or free pen strokes (cubic
  Bezier curves, from near-straight lines to hooks and loops); each sample jitters the control
  points, applies a random affine transform (rotation, anisotropic scale, shear, translation),
  varies pen width, ink level and blur, and adds noise, so a class varies the way one handwritten
  character varies between writers. Bright ink on a dark background, like MNIST.
* ``"fractals"``: each class is a random iterated function system (FractalDB-style); each sample
  perturbs its maps, flips and jitters it, and renders its attractor as a point cloud.

How it is fast: rendering one image at a time costs far more in per-op overhead than in arithmetic,
so the map renders a chunk of `_CHUNK` consecutive elements with batched ops and the dataset is
unbatched afterwards. Class prototypes are computed once per dataset into a table (a few hundred
bytes per class) and gathered by label. Strokes are drawn as a sum of Gaussians centred on points
along each curve, which is separable in x and y and so is one small batched matmul per chunk.
"""

from __future__ import annotations

import math

import tensorflow as tf

from kerastl.errors import UsageError

SOURCES: dict[str, str] = {
    "glyphs": (
        "random pen-stroke pseudo-characters (1-4 Bezier strokes per class) with handwriting-like "
        "jitter; for handwritten characters and digits"
    ),
    "fractals": (
        "FractalDB-style iterated-function-system point clouds, one random IFS per class, "
        "with per-sample parameter jitter and flips"
    ),
}

SPLITS = ("train", "validation", "test")

# Philox is named explicitly because "auto_select" may pick another generator on another device,
# and the stream must not depend on where it runs.
_ALG = "philox"

# Tags folded into the user's seed so that the class keys and the sample keys never coincide.
_CLASS_TAG = 0x5EED_C1A5
_SAMPLE_TAG = 0x5EED_5A3B

# Elements rendered per map call. Large enough to amortise per-op overhead, small enough that
# AUTOTUNE can keep both cores busy and the first batch arrives quickly.
_CHUNK = 64

_REFERENCE_SIZE = 28.0  # pen widths below are in pixels at 28x28 and scale with image_size

# Glyph geometry, in normalised canvas coordinates where the image spans [-1, 1] on both axes.
_MAX_STROKES = 4
_POINTS_PER_STROKE = 48  # spacing stays under ~1.5 pen sigmas, so strokes are smooth, not beaded
_STROKE_COUNT_CDF = (0.15, 0.50, 0.80)  # P(n <= 1), P(n <= 2), P(n <= 3): mostly 2-3 strokes
# The longer side of a glyph spans 62-95% of the canvas: from MNIST's 20 of 28 px to digits that
# fill their box, as scikit-learn's 8x8 digits do.
_GLYPH_EXTENT = (1.25, 1.9)

# Fractal geometry.
_IFS_MAPS = 4  # at most this many maps per system
_IFS_WALKERS = 128  # independent chaos-game walks per image
_IFS_STEPS = 20
_IFS_BURN_IN = 8  # steps before a walker is on the attractor (contraction <= 0.8 per step)


def _uniform(key, shape, minval=0.0, maxval=1.0):
    return tf.random.stateless_uniform(shape, seed=key, minval=minval, maxval=maxval, alg=_ALG)


def _normal(key, shape, stddev=1.0):
    return tf.random.stateless_normal(shape, seed=key, stddev=stddev, alg=_ALG)


def _fold(key, data):
    return tf.random.experimental.stateless_fold_in(key, tf.cast(data, tf.int64), alg=_ALG)


def _pixel_centres(image_size: int) -> tf.Tensor:
    """Normalised coordinate of each pixel centre along one axis, shape (image_size,)."""
    return (tf.range(image_size, dtype=tf.float32) + 0.5) / image_size * 2.0 - 1.0


def _random_affine(u, rotation_deg, scale, aspect, shear, shift):
    """Per-element 2x2 matrices (C, 2, 2) and shifts (C, 2) from uniforms `u` in [-1, 1], (C, 6).

    The matrix is rotation . shear . anisotropic scale.
    """
    angle = u[:, 0] * (rotation_deg * math.pi / 180.0)
    s = 1.0 + u[:, 1] * scale
    a = tf.exp(u[:, 2] * aspect)
    h = u[:, 3] * shear
    cos, sin = tf.cos(angle), tf.sin(angle)
    sx, sy = s * a, s / a
    # rot @ [[1, h], [0, 1]] @ diag(sx, sy), written out to stay a few elementwise ops.
    m = tf.stack([cos * sx, (cos * h - sin) * sy, sin * sx, (sin * h + cos) * sy], axis=-1)
    return tf.reshape(m, [-1, 2, 2]), u[:, 4:6] * shift


def _fit_to_canvas(points, valid, extent):
    """Centre the bounding box of the valid points of each element and scale its longer side.

    points (C, N, 2), valid (C, N) bool; returns points of the same shape.
    """
    mask = valid[..., None]
    lo = tf.reduce_min(tf.where(mask, points, 1e3), axis=1, keepdims=True)
    hi = tf.reduce_max(tf.where(mask, points, -1e3), axis=1, keepdims=True)
    # The floor keeps a degenerate glyph (a dot, a tiny tick) from being blown up to full size.
    size = tf.maximum(tf.reduce_max(hi - lo, axis=-1, keepdims=True), 0.25)
    return (points - (lo + hi) / 2.0) * (extent / size)


# --------------------------------------------------------------------------------------- glyphs

_GLYPH_PARAMS = 1 + 16 + 16 + 4 + 4


def _glyph_class(key):
    """The prototype of one glyph class as a flat float32 vector of _GLYPH_PARAMS numbers."""
    k = [_fold(key, i) for i in range(5)]
    num_strokes = 1.0 + tf.reduce_sum(
        tf.cast(_uniform(k[0], []) > tf.constant(_STROKE_COUNT_CDF), tf.float32)
    )
    ends = _uniform(k[1], [_MAX_STROKES, 2, 2], -0.8, 0.8)  # start and end point of each stroke
    # How far the two inner control points leave the chord: a quarter of strokes is near-straight,
    # the others range from gentle arcs to hooks and loops. Larger bends make tight scribbles
    # that merge into blobs at 28x28.
    u_curve = _uniform(k[2], [_MAX_STROKES, 2])
    curviness = tf.where(u_curve[:, 0] < 0.25, 0.06, 0.2 + 0.55 * u_curve[:, 1])
    bends = _normal(k[3], [_MAX_STROKES, 2, 2]) * curviness[:, None, None]
    # A stroke after the first starts on the previous one with probability 0.6: at its start, its
    # end (a continued pen path) or somewhere along it (a junction, as in T or K).
    u_conn = _uniform(k[4], [_MAX_STROKES, 3])
    connected = tf.cast((u_conn[:, 0] < 0.6) & (tf.range(_MAX_STROKES) > 0), tf.float32)
    attach_t = tf.where(
        u_conn[:, 1] < 0.3, 0.0, tf.where(u_conn[:, 1] < 0.65, 1.0, 0.15 + 0.7 * u_conn[:, 2])
    )
    return tf.concat(
        [[num_strokes], tf.reshape(ends, [-1]), tf.reshape(bends, [-1]), connected, attach_t], 0
    )


def _bezier_point(ctrl, t):
    """Points at parameters t (C,) of cubic Beziers with control points ctrl (C, 4, 2)."""
    s = 1.0 - t
    w = tf.stack([s**3, 3.0 * s * s * t, 3.0 * s * t * t, t**3], axis=-1)
    return tf.einsum("ck,ckd->cd", w, ctrl)


def _bernstein(num_points: int) -> tf.Tensor:
    """Cubic Bernstein basis at `num_points` evenly spaced t in [0, 1], shape (num_points, 4)."""
    t = tf.linspace(0.0, 1.0, num_points)
    s = 1.0 - t
    return tf.stack([s**3, 3.0 * s * s * t, 3.0 * s * t * t, t**3], axis=-1)


def _glyph_points(params, key):
    """Points along the strokes of each sample (C, S, T, 2) and which strokes are used (C, S)."""
    c = tf.shape(params)[0]
    num_strokes = params[:, 0]
    ends = tf.reshape(params[:, 1:17], [-1, _MAX_STROKES, 2, 2])
    bends = tf.reshape(params[:, 17:33], [-1, _MAX_STROKES, 2, 2])
    connected = params[:, 33:37] > 0.5
    attach_t = params[:, 37:41]

    # The writer places every point a little differently.
    ends += _normal(_fold(key, 0), [c, _MAX_STROKES, 2, 2], 0.05)
    bends += _normal(_fold(key, 1), [c, _MAX_STROKES, 2, 2], 0.05)

    # Connections are applied after the jitter so that strokes that touch in the prototype still
    # touch in every sample.
    ctrls, previous = [], None
    for i in range(_MAX_STROKES):
        p0, p3 = ends[:, i, 0], ends[:, i, 1]
        if previous is not None:
            p0 = tf.where(connected[:, i : i + 1], _bezier_point(previous, attach_t[:, i]), p0)
        chord = p3 - p0
        previous = tf.stack(
            [p0, p0 + chord / 3.0 + bends[:, i, 0], p0 + 2.0 * chord / 3.0 + bends[:, i, 1], p3],
            axis=1,
        )
        ctrls.append(previous)
    points = tf.einsum("tk,cskd->cstd", _bernstein(_POINTS_PER_STROKE), tf.stack(ctrls, axis=1))

    used = tf.range(_MAX_STROKES, dtype=tf.float32)[None, :] < num_strokes[:, None]
    flat = tf.reshape(points, [c, -1, 2])
    valid = tf.repeat(used, _POINTS_PER_STROKE, axis=1)
    # Normalise like MNIST: bounding box centred, longer side a set extent, so that no class is a
    # speck in a corner; the extent and the affine jitter then vary the size and position.
    lo, hi = _GLYPH_EXTENT
    extent = lo * tf.exp(_uniform(_fold(key, 5), [c]) * math.log(hi / lo))
    flat = _fit_to_canvas(flat, valid, extent[:, None, None])
    matrix, shift = _random_affine(
        _uniform(_fold(key, 2), [c, 6], -1.0, 1.0),
        rotation_deg=15.0,
        scale=0.12,
        aspect=0.12,
        shear=0.25,
        shift=0.08,
    )
    flat = tf.einsum("cnd,ced->cne", flat, matrix) + shift[:, None, :]
    return tf.reshape(flat, [c, _MAX_STROKES, _POINTS_PER_STROKE, 2]), used


def _render_glyphs(params, key, image_size):
    """Images (C, H, W), float32 roughly in [0, 255], of one sample of each class in params."""
    c = tf.shape(params)[0]
    points, used = _glyph_points(params, key)
    # Each point stands for the stretch of curve around it, so weighting it by that arc length
    # makes the sum of Gaussians a line integral: even ink along the stroke however fast the
    # Bezier parameter moves, and double ink where strokes cross, which the tone curve saturates.
    seg = tf.norm(points[:, :, 1:] - points[:, :, :-1], axis=-1)
    zero = tf.zeros_like(seg[:, :, :1])
    weight = (tf.concat([seg, zero], -1) + tf.concat([zero, seg], -1)) / 2.0
    weight = tf.reshape(weight * tf.cast(used, tf.float32)[..., None], [c, -1])
    points = tf.reshape(points, [c, -1, 2])

    u = _uniform(_fold(key, 3), [c, 5])
    px = 2.0 / _REFERENCE_SIZE  # one pixel at 28x28, in normalised units
    pen = 0.55 * tf.exp(u[:, 0] * math.log(1.4 / 0.55)) * px  # Gaussian sigma of the pen, 0.55-1.4
    # 35% of the samples are blurred as well (by 0.3-1.5 px), as by upscaling from low resolution.
    # Blurring a Gaussian stroke gives the same stroke with a wider sigma and a proportionally
    # lower peak, so it costs nothing extra.
    blur = tf.where(u[:, 1] < 0.35, (0.3 + 1.2 * u[:, 2]) * px, 0.0)
    sigma = tf.sqrt(pen * pen + blur * blur)
    centres = _pixel_centres(image_size)
    inv = (1.0 / (2.0 * sigma * sigma))[:, None, None]
    gx = tf.exp(-tf.square(centres[None, None, :] - points[:, :, 0:1]) * inv)  # (C, K, W)
    gy = tf.exp(-tf.square(centres[None, None, :] - points[:, :, 1:2]) * inv)  # (C, K, H)
    line = tf.matmul(gy * weight[..., None], gx, transpose_a=True)  # (C, H, W)
    line /= (math.sqrt(2.0 * math.pi) * sigma)[:, None, None]  # 1 on the centre of a stroke
    # Gain > 1 then clipping flattens the top of the profile: a solid core with soft edges.
    ink = tf.minimum(line * (1.6 * pen / sigma)[:, None, None], 1.0)
    level = 200.0 + 55.0 * u[:, 3]
    noise = _normal(_fold(key, 4), [c, image_size, image_size]) * (6.0 * u[:, 4])[:, None, None]
    return ink * level[:, None, None] + noise


# ------------------------------------------------------------------------------------- fractals

_FRACTAL_PARAMS = 1 + 16 + 8


def _fractal_class(key):
    """One random IFS as a flat vector: number of maps, 2x2 matrices, shifts."""
    k = [_fold(key, i) for i in range(3)]
    num_maps = 2.0 + tf.reduce_sum(tf.cast(_uniform(k[0], [2]) < 0.5, tf.float32))  # 2-4 maps
    mats = _uniform(k[1], [_IFS_MAPS * 4], -1.0, 1.0)
    shifts = _uniform(k[2], [_IFS_MAPS * 2], -1.0, 1.0)
    return tf.concat([[num_maps], mats, shifts], 0)


def _render_fractals(params, key, image_size):
    """Images (C, H, W), float32 in [0, 255], of one sample of each IFS class in params."""
    c = tf.shape(params)[0]
    used = tf.range(_IFS_MAPS, dtype=tf.float32)[None, :] < params[:, :1]  # (C, M)
    mats = tf.reshape(params[:, 1:17], [-1, _IFS_MAPS, 2, 2])
    shifts = tf.reshape(params[:, 17:25], [-1, _IFS_MAPS, 2])
    # Per-sample perturbation of the parameters, as FractalDB makes the instances of a category.
    mats *= 1.0 + _uniform(_fold(key, 0), [c, _IFS_MAPS, 2, 2], -0.1, 0.1)
    # Scale every map to a spectral norm of at most 0.8 so that the system contracts and has an
    # attractor (FractalDB filters random systems by a similar criterion). The largest singular
    # value of a 2x2 matrix has a closed form, cheaper than a batched SVD.
    a, b, cc, d = mats[..., 0, 0], mats[..., 0, 1], mats[..., 1, 0], mats[..., 1, 1]
    frob = a * a + b * b + cc * cc + d * d
    det = a * d - b * cc
    norm = tf.sqrt((frob + tf.sqrt(tf.maximum(frob * frob - 4.0 * det * det, 0.0))) / 2.0)
    mats *= tf.minimum(0.8 / (norm + 1e-6), 1.0)[..., None, None]
    # Maps are chosen in proportion to |det|, the usual choice that spreads points evenly.
    weight = tf.where(used, tf.abs(det) * tf.minimum(0.8 / (norm + 1e-6), 1.0) ** 2 + 0.02, 0.0)
    cdf = tf.cumsum(weight / tf.reduce_sum(weight, -1, keepdims=True), axis=-1)  # (C, M)

    # The chaos game, run by many independent walkers at once. Each step applies every map to
    # every walker and keeps the chosen result with a one-hot mask: with at most 4 maps, that is
    # cheaper than gathering a matrix per walker.
    choice_u = _uniform(_fold(key, 1), [_IFS_STEPS, c, _IFS_WALKERS, 1])
    upper = cdf[:, None, :]
    lower = tf.concat([tf.zeros_like(upper[..., :1]), upper[..., :-1]], -1)
    # Map coefficients as (C, 1, M) so that they broadcast against walkers (C, R, 1).
    m00, m01, m10, m11 = (mats[:, None, :, i, j] for i in (0, 1) for j in (0, 1))
    t0, t1 = shifts[:, None, :, 0], shifts[:, None, :, 1]
    start = _uniform(_fold(key, 2), [c, _IFS_WALKERS, 2], -1.0, 1.0)
    x, y = start[..., 0:1], start[..., 1:2]
    trace_x, trace_y = [], []
    for step in range(_IFS_STEPS):
        # Scaled to the cumulative total so that rounding in the cdf never leaves u unmatched.
        u = choice_u[step] * (upper[..., -1:] * (1.0 - 1e-6))
        pick = tf.cast((u >= lower) & (u < upper), tf.float32)  # (C, R, M), one-hot
        x, y = (
            tf.reduce_sum(pick * (m00 * x + m01 * y + t0), -1, keepdims=True),
            tf.reduce_sum(pick * (m10 * x + m11 * y + t1), -1, keepdims=True),
        )
        if step >= _IFS_BURN_IN:
            trace_x.append(x)
            trace_y.append(y)
    pts = tf.stack([tf.concat(trace_x, 1)[..., 0], tf.concat(trace_y, 1)[..., 0]], -1)  # (C, N, 2)
    pts = _fit_to_canvas(pts, tf.ones(tf.shape(pts)[:2], tf.bool), 1.6)
    u = _uniform(_fold(key, 3), [c, 3])
    flip = tf.stack([tf.where(u[:, 0] < 0.5, -1.0, 1.0), tf.where(u[:, 1] < 0.5, -1.0, 1.0)], -1)
    matrix, shift = _random_affine(
        _uniform(_fold(key, 4), [c, 6], -1.0, 1.0),
        rotation_deg=10.0,
        scale=0.1,
        aspect=0.1,
        shear=0.1,
        shift=0.06,
    )
    pts = tf.einsum("cnd,ced->cne", pts * flip[:, None, :], matrix) + shift[:, None, :]

    # Splat the points bilinearly into a per-image histogram, all images in one segment sum.
    n = tf.shape(pts)[1]
    fx = (pts[..., 0] + 1.0) / 2.0 * image_size - 0.5
    fy = (pts[..., 1] + 1.0) / 2.0 * image_size - 0.5
    x0, y0 = tf.floor(fx), tf.floor(fy)
    offset = tf.range(c)[:, None] * (image_size * image_size)
    ids, vals = [], []
    for dx in (0.0, 1.0):
        for dy in (0.0, 1.0):
            xi, yi = x0 + dx, y0 + dy
            w = (1.0 - tf.abs(fx - xi)) * (1.0 - tf.abs(fy - yi))
            inside = (xi >= 0.0) & (xi < image_size) & (yi >= 0.0) & (yi < image_size)
            pix = tf.cast(tf.where(inside, yi * image_size + xi, 0.0), tf.int32)
            ids.append(tf.reshape(pix + offset, [c * n]))
            vals.append(tf.reshape(tf.where(inside, w, 0.0), [c * n]))
    hist = tf.math.unsorted_segment_sum(
        tf.concat(vals, 0), tf.concat(ids, 0), c * image_size * image_size
    )
    hist = tf.reshape(hist, [c, image_size, image_size])
    # Densities are very uneven: a square-root tone curve keeps the sparse branches visible.
    peak = tf.reduce_max(hist, axis=[1, 2], keepdims=True)
    density = tf.sqrt(hist / (peak + 1e-9))
    return tf.minimum(1.4 * density, 1.0) * (200.0 + 55.0 * u[:, 2])[:, None, None]


# ---------------------------------------------------------------------------------- the dataset

_IMPLEMENTATIONS = {
    "glyphs": (_glyph_class, _GLYPH_PARAMS, _render_glyphs),
    "fractals": (_fractal_class, _FRACTAL_PARAMS, _render_fractals),
}


def _class_table(name: str, num_classes: int, seed: int) -> tf.Tensor:
    """Prototype parameters of classes 0..num_classes-1 of source `name`, (num_classes, P).

    Row c is computed from the key (seed, c) alone, so it is the same for every split and every
    num_classes > c.
    """
    make_class, num_params, _ = _IMPLEMENTATIONS[name]
    root = _fold(tf.constant([seed, 0], tf.int64), _CLASS_TAG)
    # tf.data runs the per-class computation in parallel C++ threads (about 0.1 ms a class);
    # deterministic=True because row c must be class c whatever the thread timing.
    table = (
        tf.data.Dataset.range(num_classes)
        .map(
            lambda c: make_class(_fold(root, c)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        .batch(num_classes)
        .get_single_element()
    )
    return tf.ensure_shape(table, [num_classes, num_params])


def _check_int(name: str, value, minimum: int, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{name} must be an integer >= {minimum}, got {value!r}; {fix}")


def synthetic_dataset(
    name: str,
    *,
    num_classes: int = 1000,
    image_size: int = 28,
    channels: int = 1,
    seed: int = 0,
    split: str = "train",
) -> tf.data.Dataset:
    """An endless dataset of `(image, label)` pairs drawn from the synthetic source `name`.

    Each element is an image, float32 in [0, 255] of shape (image_size, image_size, channels) with
    bright ink on a dark background (channels > 1 repeat the grey image), and its label, an int32
    scalar in [0, num_classes), drawn uniformly at random per element. What class c looks like
    depends only on (seed, c), so every split, and every num_classes > c, shows the same class c;
    the samples depend on (seed, split, element index), so "validation" and "test" are samples
    never seen in "train". The stream is identical on every run with the same arguments. It is
    neither batched nor prefetched: the caller does both. Building it computes the class
    prototypes once, kept in memory: about 200 bytes and 0.1 ms of CPU per class (0.3 s for
    1,000 classes, 10 s for 100,000).

    Raises `kerastl.errors.UsageError` (a `KerastlError`) for an unknown source name or split,
    num_classes < 2, image_size < 8, channels < 1, or a seed that is not a 64-bit integer.
    """
    if not isinstance(name, str) or name not in SOURCES:
        raise UsageError(
            f"unknown synthetic source {name!r}; use one of: {', '.join(sorted(SOURCES))}"
        )
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; use one of: {', '.join(SPLITS)}")
    _check_int("num_classes", num_classes, 2, "ask for at least 2 classes")
    _check_int("image_size", image_size, 8, "use image_size=8 or more (28 is the default)")
    _check_int("channels", channels, 1, "use channels=1 (grey) or 3 (RGB)")
    if num_classes > 2**31 - 1:
        raise UsageError(f"num_classes={num_classes} does not fit int32 labels; use fewer classes")
    if isinstance(seed, bool) or not isinstance(seed, int) or not -(2**63) <= seed < 2**63:
        raise UsageError(
            f"seed must be an integer that fits in 64 bits, got {seed!r}; pass e.g. seed=0"
        )

    _, _, render = _IMPLEMENTATIONS[name]
    table = _class_table(name, num_classes, seed)
    base = tf.constant([seed, 0], tf.int64)
    sample_root = _fold(_fold(base, _SAMPLE_TAG), SPLITS.index(split))

    def render_chunk(chunk):
        # Elements chunk*_CHUNK ... chunk*_CHUNK + _CHUNK - 1 share one key; element i is row
        # i % _CHUNK of every random tensor drawn from it, so each is a function of its index.
        key = _fold(sample_root, chunk)
        labels = tf.random.stateless_uniform(
            [_CHUNK], seed=_fold(key, 0), minval=0, maxval=num_classes, dtype=tf.int32, alg=_ALG
        )
        images = render(tf.gather(table, labels), _fold(key, 1), image_size)
        images = tf.clip_by_value(images, 0.0, 255.0)[..., None]
        if channels > 1:
            images = tf.tile(images, [1, 1, 1, channels])
        return images, labels

    return (
        tf.data.Dataset.counter(dtype=tf.int64)
        .map(render_chunk, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .unbatch()
    )
