"""Datasets (real layouts), the synthetic generator, decoding, caching and transforms.

Importing this package registers the built-in data sets (each module registers itself in
:data:`vireid.data.registry.DATASETS`), in the order listed here.
"""
from vireid.data.sysu import IR_CAMERAS, RGB_CAMERAS, SysuDataset, load_sysu
from vireid.data.regdb import RegdbDataset, load_regdb
from vireid.data.llcm import LlcmDataset, load_llcm
from vireid.data.listfile import ListDataset, load_list
from vireid.data.cache import ImageCache
from vireid.data.images import decode_image
from vireid.data.records import IR, MODALITIES, RGB, EvalSplit, ImageRecord, TrainSplit
from vireid.data.synthetic import generate
from vireid.data.transforms import EvalTransform, TrainTransform

__all__ = [
    "IR", "RGB", "MODALITIES", "ImageRecord", "TrainSplit", "EvalSplit",
    "decode_image", "ImageCache", "TrainTransform", "EvalTransform",
    "load_sysu", "SysuDataset", "RGB_CAMERAS", "IR_CAMERAS",
    "load_regdb", "RegdbDataset", "load_llcm", "LlcmDataset", "load_list", "ListDataset",
    "generate",
]
