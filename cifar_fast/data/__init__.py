"""CIFAR-10 data: sources, the decode cache, the fast and DataBlock engines."""
from ..data_engines import ENGINES
from .augment import CIFAR_MEAN, CIFAR_STATS, CIFAR_STD
from .cache import CifarArrays, load_arrays
from .fast import NO_AUG, Augment, CifarDataLoaders, CifarTensors, FastDL
from .loaders import CifarData, cifar_data, cifar_dls, recipe_dls, stratified_subset
from .sources import CifarSource, cache_dir, resolve_source, run_data_source
from .synthetic import CIFAR10_CLASSES, make_synthetic_cifar

__all__ = ['CIFAR_MEAN', 'CIFAR_STD', 'CIFAR_STATS', 'recipe_dls', 'CifarArrays', 'load_arrays', 'NO_AUG', 'Augment',
           'CifarDataLoaders', 'CifarTensors', 'FastDL', 'ENGINES', 'CifarData', 'cifar_data', 'cifar_dls',
           'stratified_subset',
           'CifarSource', 'cache_dir', 'resolve_source', 'run_data_source', 'CIFAR10_CLASSES', 'make_synthetic_cifar']
