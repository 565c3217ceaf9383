"""mtrank's model library: schema, input layers, building blocks, architectures, tasks.

Importing `ranker` is cheap: it imports no TensorFlow. It does set `TF_USE_LEGACY_KERAS=1` so
that TensorFlow, when first imported, gives `tf.keras` = Keras 2 (tf_keras), which TFRS needs.
Modules that use Keras import it through `ranker.keras_compat.tf` and `ranker.keras_compat.keras`.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

__version__ = "0.1.0"
