"""Files as Keras publishes them for its ImageNet applications, made by the tests (no downloads)."""

import json
from pathlib import Path


def keras_imagenet_files(*, architecture: str, folder: Path, weights_path: str) -> dict[str, bytes]:
    """``architecture``'s weights (random, weights=None) in Keras' own h5 layout, served at
    ``weights_path``, and a 1000-class index at /index.json."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    build = getattr(keras.applications, architecture)
    model = build(weights=None, input_shape=(224, 224, 3), classes=1000)
    path = folder / Path(weights_path).name
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)
    index = {str(i): [f"n{i:08d}", f"class_{i}"] for i in range(1000)}
    return {weights_path: path.read_bytes(), "/index.json": json.dumps(index).encode()}
