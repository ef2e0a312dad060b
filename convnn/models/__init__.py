"""ConvNN-augmented timm backbones, registered in timm's model registry.

Importing :mod:`convnn` registers ``convnn_resnet50``, ``convnn_resnet18``,
``convnn_resnet18_cifar``, ``convnn_vit_{base,small,tiny}_patch16_224``,
``convnn_vit_tiny_patch4_32``, ``convnn_vgg{11,13,16,19}``, ``convnn_vgg11_mlp`` (the
authors' VGG-11, with torchvision's 4096-wide classifier) and ``convnn_vgg_mini``, so
``timm.create_model("convnn_resnet50", layer="branching", branch_ratio=0.25)`` works.
Each takes ``layer`` (the baseline ``"conv"`` / ``"attention"``, ``"convnn"``,
``"branching"`` or, for the ViTs, the presets ``"kvt"`` and ``"neighborhood"``),
``branch_ratio`` and every ConvNN option as keyword arguments.
"""

from . import resnet, vgg, vit
from ._builder import OPTION_NAMES, build_convnn_model, pop_options
from .resnet import CifarResNet, convnn_resnet18, convnn_resnet18_cifar, convnn_resnet50
from .vgg import (
    CifarVGG,
    MlpClassifierHead,
    convnn_vgg11,
    convnn_vgg11_mlp,
    convnn_vgg13,
    convnn_vgg16,
    convnn_vgg19,
    convnn_vgg_mini,
)
from .vit import (
    convnn_vit_base_patch16_224,
    convnn_vit_small_patch16_224,
    convnn_vit_tiny_patch4_32,
    convnn_vit_tiny_patch16_224,
)

MODEL_NAMES = (
    "convnn_resnet50",
    "convnn_resnet18",
    "convnn_resnet18_cifar",
    "convnn_vit_base_patch16_224",
    "convnn_vit_small_patch16_224",
    "convnn_vit_tiny_patch16_224",
    "convnn_vit_tiny_patch4_32",
    "convnn_vgg11",
    "convnn_vgg11_mlp",
    "convnn_vgg13",
    "convnn_vgg16",
    "convnn_vgg19",
    "convnn_vgg_mini",
)

__all__ = [
    "MODEL_NAMES",
    "OPTION_NAMES",
    "CifarResNet",
    "CifarVGG",
    "MlpClassifierHead",
    "build_convnn_model",
    "convnn_resnet18",
    "convnn_resnet18_cifar",
    "convnn_resnet50",
    "convnn_vgg11",
    "convnn_vgg11_mlp",
    "convnn_vgg13",
    "convnn_vgg16",
    "convnn_vgg19",
    "convnn_vgg_mini",
    "convnn_vit_base_patch16_224",
    "convnn_vit_small_patch16_224",
    "convnn_vit_tiny_patch16_224",
    "convnn_vit_tiny_patch4_32",
    "pop_options",
    "resnet",
    "vgg",
    "vit",
]
