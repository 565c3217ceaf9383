"""The one place that imports TensorFlow for `ranker`, and checks it runs Keras 2.

TFRS 0.7.7 needs `tf.keras` to be Keras 2 (tf_keras). That holds only when `TF_USE_LEGACY_KERAS=1`
is set before TensorFlow's first import, which `import ranker` does. If something imported
TensorFlow earlier in Keras 3 mode, we stop with a message that says how to fix it.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
_tf_was_loaded = "tensorflow" in sys.modules

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402


def _check_legacy_keras() -> None:
    dense_module = tf.keras.layers.Dense.__module__
    if not dense_module.startswith("tf_keras"):
        version = "3"
        hint = (
            "TensorFlow was imported before ranker with TF_USE_LEGACY_KERAS unset"
            if _tf_was_loaded
            else "TF_USE_LEGACY_KERAS is set to something other than 1"
        )
        raise ImportError(
            f"mtrank needs Keras 2 (tf_keras) behind tf.keras, but tf.keras is Keras {version}: "
            f"{hint}. Set TF_USE_LEGACY_KERAS=1 in the environment, or import ranker before tensorflow."
        )


_check_legacy_keras()

__all__ = ["keras", "tf"]
