"""The shared JPEG CIFAR-10 archive: full size, standard class order, decoding identical to PIL."""
import io
import tarfile

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.realdata

CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')


def test_full_dataset_decoded_like_pil(real_data):
    from cifar_fast.data.cache import load_arrays
    from cifar_fast.data.sources import resolve_source
    a = load_arrays(resolve_source(real_data))
    assert a.classes == CLASSES
    assert a.x['train'].shape == (50_000, 3, 32, 32) and a.x['test'].shape == (10_000, 3, 32, 32)
    assert a.counts('train') == [5000] * 10 and a.counts('test') == [1000] * 10
    name = 'test/horse/0123.jpg'
    with tarfile.open(real_data) as tf: raw = tf.extractfile(f'cifar10/{name}').read()
    i = a.files['test'].index(name)
    assert a.classes[a.y['test'][i]] == 'horse'
    assert np.array_equal(a.x['test'][i].transpose(1, 2, 0), np.asarray(Image.open(io.BytesIO(raw)).convert('RGB')))


def test_real_loaders(real_data):
    from cifar_fast.data.loaders import cifar_dls
    dls = cifar_dls(real_data, bs=256, device='cpu', train_size=1000, valid_size=500)
    x, y = dls.train.one_batch()
    assert x.shape == (256, 3, 32, 32) and abs(float(x.mean())) < 0.5 and len(dls.valid.dataset) == 500
