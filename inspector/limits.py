"""Limits on untrusted input: models and image pools come from the provider we are vetting.

Each limit is far above what an honest input needs and low enough that a hostile one cannot
exhaust a laptop's memory or disk. Tests lower them with ``monkeypatch``.
"""

from __future__ import annotations

MiB = 1024 * 1024

MAX_MODEL_BYTES = 512 * MiB  # a CoCoOp learner for ViT-L/14 with 1,000 class-specific contexts is ~100 MB
MAX_IMAGE_BYTES = 32 * MiB  # one image file (a 24-megapixel JPEG is ~10 MB)
MAX_IMAGE_PIXELS = 40_000_000  # width x height, checked before decoding (decompression bombs)
MAX_POOL_FILES = 100_000  # entries in a folder or zip (pool or labelled set), counted before anything is read
MAX_POOL_BYTES = 4 * 1024 * MiB  # bytes read from one pool in all
MIN_POOL_IMAGES = 10  # a scan holds out a fifth of the pool to measure flip rates
MAX_TASK_IMAGES = 20_000  # train + test images of a labelled set (few-shot tuning needs a few hundred)
MAX_CLASSES_FILE_BYTES = MiB  # classes.txt of a labelled set
MAX_TENSOR_MAGNITUDE = 1e4  # a learner's values: contexts are ~0.4 (RMS), 3-10x that after SGD at a high rate
MAX_CLASSES = 2_000  # classes in a learner's header (ImageNet's 1,000 is the largest task prompt learners are tuned on)
