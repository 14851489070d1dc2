"""The model zoo: `create_model(name)` for every registered CIFAR net, 'timm/<arch>' for timm's, and the table."""
from .registry import (create_model, list_models, model_info, models_table, register_bridge, register_model,
                       register_namespace, validate_model)
from . import fastnet, resnet, vgg, wide_resnet  # noqa: F401  (importing a family registers its models)
from .timm_adapter import TIMM_PREFIX, add_to_timm, create_timm_model

__all__ = ['create_model', 'validate_model', 'list_models', 'model_info', 'models_table', 'register_model',
           'register_namespace', 'register_bridge', 'TIMM_PREFIX', 'create_timm_model']

# Registration is one dict entry per model (and one in timm's), nothing is built. What this import does cost is
# importing timm (2.7 s over torch's 1.6 s on a 2-core EPYC, measured with -X importtime; most of it torchvision,
# which fastai imports anyway). The bridge registers the models above in timm now and every later one (a notebook's,
# a recipe's) inside its register_model call, so timm.create_model('cifar_<name>') works at once.
register_namespace('timm', create_timm_model)
register_bridge(add_to_timm)
