"""The model zoo: `create_model(name)` for every registered CIFAR net, 'timm/<arch>' for timm's, and the table."""
from .registry import create_model, list_models, model_info, models_table, register_model, register_namespace
from . import fastnet, resnet, vgg, wide_resnet  # noqa: F401  (importing a family registers its models)
from .timm_adapter import TIMM_PREFIX, create_timm_model, register_with_timm

__all__ = ['create_model', 'list_models', 'model_info', 'models_table', 'register_model', 'register_namespace',
           'TIMM_PREFIX', 'create_timm_model', 'register_with_timm']

# Registration is one dict entry per model, nothing is built. What this import does cost is importing timm (2.7 s
# over torch's 1.6 s on a 2-core EPYC, measured with -X importtime; most of it torchvision, which fastai imports
# anyway). Models registered after this import reach timm by calling register_with_timm() again.
register_namespace('timm', create_timm_model)
register_with_timm()
