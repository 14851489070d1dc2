"""CIFAR-10-C's corruptions, regenerated: batched numpy/scipy/PIL code of our own over (N, 32, 32, 3) uint8 images.

The parameters (one tuple per severity 1-5) are facts taken from Hendrycks & Dietterich, "Benchmarking Neural Network
Robustness to Common Corruptions and Perturbations", ICLR 2019 (arXiv:1903.12261), as its reference code sets them
for 32×32 CIFAR: github.com/hendrycks/robustness, ImageNet-C/create_c/make_cifar_c.py (the repository is published
under Apache-2.0 on GitHub; its imagenet_c package declares MIT). No code was copied: that script needs scikit-image,
OpenCV and ImageMagick (Wand), which we do not install; the operations are rewritten here on numpy, scipy and PIL.
Where a library call had to be rewritten (ImageMagick's motion blur, OpenCV's affine warp, skimage's HSV), the result
is close to, not bit-identical with, the published files: reports call these sets *regenerated*.

Not available: frost (blends six photographs that ship with the reference code, which we do not have) and spatter
(its severities 1-3 need OpenCV's Canny edges and distance transform). Both are listed, never silently dropped.
Every corruption is seeded: `corrupt(x, name, severity, seed)` returns the same images on every call and machine."""
from __future__ import annotations

import io

import numpy as np


def _nd():
    "scipy.ndimage, imported on first use: the CLI's parser reads this module's tables without loading scipy."
    from scipy import ndimage
    return ndimage

# The 15 corruptions of the benchmark (mean corruption accuracy/error is over these) and the 4 extra ones the paper
# holds out for validation (speckle noise, Gaussian blur, spatter, saturate), by family as the paper groups them.
FAMILIES = {'noise': ('gaussian_noise', 'shot_noise', 'impulse_noise', 'speckle_noise'),
            'blur': ('defocus_blur', 'glass_blur', 'motion_blur', 'zoom_blur', 'gaussian_blur'),
            'weather': ('snow', 'frost', 'fog', 'spatter'),
            'digital': ('brightness', 'contrast', 'elastic_transform', 'pixelate', 'jpeg_compression', 'saturate')}
EXTRA = ('speckle_noise', 'gaussian_blur', 'spatter', 'saturate')
NOT_AVAILABLE = {'frost': 'needs the six frost photographs that ship with the reference code (not in this package)',
                 'spatter': "severities 1-3 need OpenCV's Canny edge map and distance transform (OpenCV not installed)"}
SEVERITIES = (1, 2, 3, 4, 5)

# make_cifar_c.py's parameters, severity 1 first.
PARAMS = {
    'gaussian_noise': (0.04, 0.06, .08, .09, .10),  # std of additive noise on [0, 1]
    'shot_noise': (500, 250, 100, 75, 50),  # Poisson photons per unit intensity
    'impulse_noise': (.01, .02, .03, .05, .07),  # fraction of values set to 0 or 1 (salt and pepper, 50/50)
    'speckle_noise': (.06, .1, .12, .16, .2),  # std of multiplicative noise
    'gaussian_blur': (.4, .6, 0.7, .8, 1),  # sigma in pixels
    'glass_blur': ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),  # sigma, max delta, iterations
    'defocus_blur': ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),  # disk radius, alias blur sigma
    'motion_blur': ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),  # ImageMagick radius, sigma; angle U(-45, 45)
    'zoom_blur': tuple(np.arange(1, e, 0.01) for e in (1.06, 1.11, 1.16, 1.21, 1.26)),  # zoom factors averaged
    'snow': ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
    'fog': ((.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),  # fog strength, plasma fractal wibble decay
    'brightness': (.05, .1, .15, .2, .3),  # added to HSV value
    'contrast': (.75, .5, .4, .3, 0.15),  # factor on the deviation from each channel's mean
    'saturate': ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),  # HSV saturation × a + b
    'jpeg_compression': (80, 65, 58, 50, 40),  # JPEG quality
    'pixelate': (0.95, 0.9, 0.85, 0.75, 0.65),  # box-downsample to int(32 × c), box-upsample back
    'elastic_transform': tuple((32 * a, 32 * s, 32 * f) for a, s, f in  # alpha, sigma, affine jitter (× image size)
                               ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
                                (0.1, 0.03, 0.03))),
}


def available() -> list[str]:
    "Every corruption we can regenerate, in the paper's family order."
    return [c for fam in FAMILIES.values() for c in fam if c not in NOT_AVAILABLE]


def family(name: str) -> str: return next(f for f, names in FAMILIES.items() if name in names)


def corrupt(x: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """`x` (N, H, W, 3) uint8 corrupted by `name` at `severity` (1-5), uint8; the same output for the same seed.
    As the reference code, values are clipped to [0, 1] and truncated (`np.uint8(v * 255)`), not rounded."""
    from .errors import ConfigError
    if name in NOT_AVAILABLE: raise ConfigError(f'corruption {name!r} is not available: {NOT_AVAILABLE[name]}.')
    if name not in PARAMS:
        import difflib
        close = difflib.get_close_matches(name, list(PARAMS), 3)
        raise ConfigError(f"unknown corruption {name!r}" + (f"; did you mean {', '.join(close)}?" if close else '.'))
    if severity not in SEVERITIES: raise ConfigError(f'severity must be 1-5, not {severity!r}.')
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8:
        raise ConfigError(f'images must be (N, H, W, 3) uint8, got {x.shape} {x.dtype}.')
    # One generator per (seed, corruption, severity): a set does not depend on which others were made before it.
    rng = np.random.default_rng([seed, list(PARAMS).index(name), severity])
    out = _FUNCS[name](x.astype(np.float32) / 255, PARAMS[name][severity - 1], rng)
    return np.uint8(np.clip(out, 0, 1) * 255)


# ---- noise ------------------------------------------------------------------------------------------------------

def gaussian_noise(x, c, rng): return x + rng.normal(size=x.shape, scale=c)
def shot_noise(x, c, rng): return rng.poisson(x * c) / c
def speckle_noise(x, c, rng): return x + x * rng.normal(size=x.shape, scale=c)


def impulse_noise(x, c, rng):
    "Salt and pepper on each value independently (as skimage's random_noise 's&p', salt_vs_pepper 0.5)."
    hit, salt = rng.random(x.shape) < c, rng.random(x.shape) < 0.5
    return np.where(hit, salt.astype(x.dtype), x)


# ---- blur -------------------------------------------------------------------------------------------------------

def _gauss(x, sigma, mode='nearest'):
    "skimage.filters.gaussian per channel (scipy's filter, truncate 4, 'nearest' edges) over each image's H and W."
    return _nd().gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode=mode, truncate=4.0)


def gaussian_blur(x, c, rng): return _gauss(x, c)


def glass_blur(x, c, rng):
    """Blur, quantise to uint8, then move pixels locally, bottom-right to top-left, with offsets drawn from
    {-max_delta, .., max_delta - 1} (numpy's randint excludes its upper bound), then blur again; one (h, w) position
    at a time, in the reference's order, for all images at once. The reference's "swap",
    `x[h, w], x[h', w'] = x[h', w'], x[h, w]`, works on numpy views, so what it (and so the published set) does is
    copy the neighbour into (h, w) and leave the neighbour as it was: we do the same."""
    sigma, delta, iterations = c
    n, h, w = x.shape[:3]
    y = np.uint8(np.clip(_gauss(x, sigma), 0, 1) * 255)
    rows = np.arange(n)
    for _ in range(iterations):
        for i in range(h - delta, delta, -1):
            for j in range(w - delta, delta, -1):
                dx, dy = rng.integers(-delta, delta, size=(2, n))
                y[rows, i, j] = y[rows, i + dy, j + dx]
    return _gauss(y / 255., sigma)


def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    "The reference's anti-aliased disk: a 17×17 disk of `radius`, normalised, blurred by a 3×3 Gaussian (OpenCV's)."
    L = np.arange(-8, 9) if radius <= 8 else np.arange(-int(radius), int(radius) + 1)
    X, Y = np.meshgrid(L, L)
    k = ((X ** 2 + Y ** 2) <= radius ** 2).astype(np.float64)
    k /= k.sum()
    g = np.exp(-np.arange(-1, 2) ** 2 / (2 * alias_blur ** 2))  # cv2.getGaussianKernel(3, sigma)
    g /= g.sum()
    k = _nd().correlate(k, np.outer(g, g), mode='mirror')  # OpenCV's default border is reflect-101 ('mirror')
    nz = np.argwhere(k > 0)  # crop the zero margin: it adds nothing, and the 2-D filter is then small
    (r0, c0), (r1, c1) = nz.min(0), nz.max(0)
    m = max(8 - r0, r1 - 8, 8 - c0, c1 - 8)
    return k[8 - m:9 + m, 8 - m:9 + m] if radius <= 8 else k


def defocus_blur(x, c, rng):
    k = disk_kernel(*c)
    return _nd().correlate(x, k[None, :, :, None], mode='mirror')  # cv2.filter2D per channel, reflect-101


def _motion(x, radius, sigma, angles):
    """ImageMagick's MotionBlurImage, rewritten: a one-sided Gaussian of width 2·ceil(radius)+1 along `angle`
    (degrees, per image), each tap at the rounded offset i·(cos, sin), edge pixels repeated beyond the border."""
    width = 2 * int(np.ceil(radius)) + 1
    k = np.exp(-np.arange(width) ** 2 / (2 * sigma ** 2))
    k /= k.sum()
    n, h, w = x.shape[:3]
    a = np.deg2rad(angles)[:, None]
    i = np.arange(width)[None]
    dc, dr = np.ceil(i * np.cos(a) - 0.5).astype(int), np.ceil(i * np.sin(a) - 0.5).astype(int)  # (n, width)
    rr, cc = np.arange(h)[None, :, None], np.arange(w)[None, None, :]
    out = np.zeros_like(x)
    for t in range(width):
        r = np.clip(rr + dr[:, t, None, None], 0, h - 1)
        col = np.clip(cc + dc[:, t, None, None], 0, w - 1)
        out += k[t] * x[np.arange(n)[:, None, None], r, col]
    return out


def motion_blur(x, c, rng):
    y = _motion(x, c[0], c[1], rng.uniform(-45, 45, size=len(x)))
    return np.floor(np.clip(y, 0, 1) * 255) / 255  # the reference goes through a PNG: 8-bit values


def _zoom_linear(x, z):
    """scipy.ndimage.zoom(x, (1, z, z, 1), order=1) for (N, S, S, C), as separable gathers (scipy's N-d call was ~20×
    slower here): output size round(S·z), output pixel o samples input o·(S-1)/(out-1), corners aligned."""
    s = x.shape[1]
    out = int(round(s * z))
    pos = np.arange(out) * (s - 1) / max(out - 1, 1)
    lo = np.minimum(np.floor(pos).astype(int), s - 1)
    hi, f = np.minimum(lo + 1, s - 1), (pos - lo).astype(x.dtype)
    y = x[:, lo] * (1 - f)[None, :, None, None] + x[:, hi] * f[None, :, None, None]
    return y[:, :, lo] * (1 - f)[None, None, :, None] + y[:, :, hi] * f[None, None, :, None]


def _clipped_zoom(x, z):
    "Zoom the centre of each image by `z` (scipy's order-1 zoom, as the reference) and crop back to the image size."
    h = x.shape[1]
    ch = int(np.ceil(h / z))
    top = (h - ch) // 2
    y = _zoom_linear(x[:, top:top + ch, top:top + ch], z)
    trim = (y.shape[1] - h) // 2
    return y[:, trim:trim + h, trim:trim + h]


def zoom_blur(x, c, rng):
    out = np.zeros_like(x)
    for z in c: out += _clipped_zoom(x, z)
    return (x + out) / (len(c) + 1)


# ---- weather ----------------------------------------------------------------------------------------------------

def plasma_fractal(n: int, rng, mapsize: int = 32, wibbledecay: float = 3) -> np.ndarray:
    "(n, mapsize, mapsize) diamond-square height maps in [0, 1], the reference's algorithm batched over images."
    m = np.zeros((n, mapsize, mapsize))
    step, wibble = mapsize, 100.
    def wibbled(a): return a / 4 + wibble * rng.uniform(-wibble, wibble, a.shape)
    while step >= 2:
        half = step // 2
        corner = m[:, 0::step, 0::step]
        sq = corner + np.roll(corner, -1, axis=1)
        sq = sq + np.roll(sq, -1, axis=2)
        m[:, half::step, half::step] = wibbled(sq)
        dr, ul = m[:, half::step, half::step], m[:, 0::step, 0::step]
        m[:, 0::step, half::step] = wibbled(dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=2))
        m[:, half::step, 0::step] = wibbled(dr + np.roll(dr, 1, axis=2) + ul + np.roll(ul, -1, axis=1))
        step //= 2
        wibble /= wibbledecay
    m -= m.min(axis=(1, 2), keepdims=True)
    return m / m.max(axis=(1, 2), keepdims=True)


def fog(x, c, rng):
    top = x.max(axis=(1, 2, 3), keepdims=True)
    y = x + c[0] * plasma_fractal(len(x), rng, wibbledecay=c[1])[..., None]
    return y * top / (top + c[0])


def _gray(x): return x @ np.array([0.299, 0.587, 0.114], dtype=x.dtype)  # OpenCV's RGB2GRAY weights


def snow(x, c, rng):
    loc, scale, zoom, thresh, radius, sigma, keep = c
    layer = rng.normal(size=x.shape[:3] + (1,), loc=loc, scale=scale)
    layer = _clipped_zoom(layer, zoom)
    layer[layer < thresh] = 0
    layer = np.uint8(np.clip(layer, 0, 1) * 255) / 255.  # the reference writes the layer as an 8-bit PNG
    layer = np.floor(np.clip(_motion(layer, radius, sigma, rng.uniform(-135, -45, size=len(x))), 0, 1) * 255) / 255
    x = keep * x + (1 - keep) * np.maximum(x, _gray(x)[..., None] * 1.5 + 0.5)
    return x + layer + np.rot90(layer, k=2, axes=(1, 2))


# ---- digital ----------------------------------------------------------------------------------------------------

def rgb_to_hsv(x):
    "skimage.color.rgb2hsv's definition (hue in [0, 1), blue-max over green-max over red-max), vectorised."
    v = x.max(-1)
    delta = v - x.min(-1)
    safe = np.where(delta == 0, 1, delta)
    s = np.where(delta == 0, 0, delta / np.where(v == 0, 1, v))
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    h = np.where(r == v, (g - b) / safe, 0)
    h = np.where(g == v, 2 + (b - r) / safe, h)
    h = np.where(b == v, 4 + (r - g) / safe, h)
    h = np.where(delta == 0, 0, (h / 6) % 1)
    return np.stack([h, s, v], -1)


def hsv_to_rgb(hsv):
    "skimage.color.hsv2rgb's definition, vectorised."
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    hi = np.floor(h * 6)
    f = h * 6 - hi
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    hi = hi.astype(int) % 6
    sel = [np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))]
    return np.choose(hi[..., None], sel)


def brightness(x, c, rng):
    hsv = rgb_to_hsv(x)
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return hsv_to_rgb(hsv)


def saturate(x, c, rng):
    hsv = rgb_to_hsv(x)
    hsv[..., 1] = np.clip(hsv[..., 1] * c[0] + c[1], 0, 1)
    return hsv_to_rgb(hsv)


def contrast(x, c, rng):
    m = x.mean(axis=(1, 2), keepdims=True)
    return (x - m) * c + m


def jpeg_bytes(img: np.ndarray, quality: int) -> bytes:
    "One (H, W, 3) uint8 image encoded by PIL as JPEG at `quality` (the reference's call)."
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, 'JPEG', quality=int(quality))
    return buf.getvalue()


def jpeg_compression(x, c, rng):
    from PIL import Image
    u8 = np.uint8(np.clip(x, 0, 1) * 255)  # what the reference's PIL image holds
    return np.stack([np.asarray(Image.open(io.BytesIO(jpeg_bytes(im, c))).convert('RGB')) for im in u8]) / 255.


def pixelate_size(c: float, size: int = 32) -> int: return int(size * c)


def pixelate(x, c, rng):
    from PIL import Image
    u8, s = np.uint8(np.clip(x, 0, 1) * 255), x.shape[1]
    k = pixelate_size(c, s)
    return np.stack([np.asarray(Image.fromarray(im).resize((k, k), Image.BOX).resize((s, s), Image.BOX))
                     for im in u8]) / 255.


def _affine(pts1, pts2):
    "The 2×3 matrix mapping three (x, y) points to three others (OpenCV's getAffineTransform)."
    A = np.hstack([pts1, np.ones((3, 1))])
    return np.linalg.solve(A, pts2).T


def elastic_transform(x, c, rng):
    """A random affine warp of the image (OpenCV's warpAffine: bilinear, reflect-101 borders, rewritten with scipy's
    map_coordinates), then a smooth random displacement field of strength alpha and smoothness sigma."""
    alpha, sigma, jitter = c
    n, h, w = x.shape[:3]
    centre, half = np.float32([w, h]) // 2, min(h, w) // 3
    pts1 = np.float32([centre + half, [centre[0] + half, centre[1] - half], centre - half])
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.empty_like(x)
    for k in range(n):
        pts2 = pts1 + rng.uniform(-jitter, jitter, size=pts1.shape).astype(np.float32)
        M = np.vstack([_affine(pts1, pts2), [0, 0, 1]])
        inv = np.linalg.inv(M)  # warpAffine samples the source at M⁻¹·(x, y) for each output pixel
        sx = inv[0, 0] * cols + inv[0, 1] * rows + inv[0, 2]
        sy = inv[1, 0] * cols + inv[1, 1] * rows + inv[1, 2]
        warped = np.stack([_nd().map_coordinates(x[k, ..., ch], [sy, sx], order=1, mode='mirror')
                           for ch in range(3)], -1)
        dx, dy = (_nd().gaussian_filter(rng.uniform(-1, 1, size=(h, w)), sigma, mode='reflect', truncate=3) * alpha
                  for _ in range(2))
        out[k] = np.stack([_nd().map_coordinates(warped[..., ch], [rows + dy, cols + dx], order=1, mode='reflect')
                           for ch in range(3)], -1)
    return out


_FUNCS = dict(gaussian_noise=gaussian_noise, shot_noise=shot_noise, impulse_noise=impulse_noise,
              speckle_noise=speckle_noise, gaussian_blur=gaussian_blur, glass_blur=glass_blur,
              defocus_blur=defocus_blur, motion_blur=motion_blur, zoom_blur=zoom_blur, snow=snow, fog=fog,
              brightness=brightness, contrast=contrast, saturate=saturate, jpeg_compression=jpeg_compression,
              pixelate=pixelate, elastic_transform=elastic_transform)
