"""A tiny synthetic CIFAR-layout dataset whose classes are learnable: for tests, notebooks and demos."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')

# Ten well separated colours, one per class, so a few-hundred-parameter net can learn them in an epoch or two.
_PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                     [145, 30, 180], [70, 240, 240], [240, 50, 230], [128, 128, 0], [0, 0, 128]], dtype=np.float32)


def synthetic_image(cls_idx: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    "One HWC uint8 image: a noisy background tinted by the class, and a class-coloured square at a random place."
    img = rng.normal(110, 30, (size, size, 3)).clip(0, 255)
    img = 0.6 * img + 0.4 * _PALETTE[cls_idx % len(_PALETTE)]
    side = size // 2
    r, c = rng.integers(0, size - side, 2)
    img[r:r + side, c:c + side] = _PALETTE[cls_idx % len(_PALETTE)] + rng.normal(0, 10, 3)
    return img.clip(0, 255).astype(np.uint8)


def make_synthetic_cifar(root: str | Path, n_train: int = 20, n_test: int = 10, classes=CIFAR10_CLASSES,
                         ext: str = 'png', seed: int = 0, labels_txt: bool = True) -> Path:
    "Write `root/train/<class>/*.ext` and `root/test/<class>/*.ext` (`n_train`/`n_test` per class); return `root`."
    root, rng = Path(root), np.random.default_rng(seed)
    for split, n in (('train', n_train), ('test', n_test)):
        for ci, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(synthetic_image(ci, rng)).save(d / f'{i:04d}.{ext}')
    if labels_txt: (root / 'labels.txt').write_text('\n'.join(classes) + '\n')
    return root
