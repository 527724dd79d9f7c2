"""Copy from a model store only the files the registry rows of a manifest serve from.

    python deploy/image/served_models.py MANIFEST STORE TARGET

The build stage's store also holds each version's source as registered (Keras `.h5`/`.keras`
files, kept there for quantization and retraining, which need TensorFlow). The web image serves
LiteRT files alone, and `model_manifest import` verifies only what serving reads (each version's
`artifact` and the files its kind's fields refer to), so the sources stay out of the image.
"""

import json
import shutil
import sys
from pathlib import Path

from classification.store import artifact_references


def served_names(manifest: dict) -> set[str]:
    names = set()
    for entry in manifest["versions"]:
        names.add(entry["artifact"])
        names |= {name for name, _sha256 in artifact_references(entry)}
    return names


def main() -> int:
    manifest_path, store, target = (Path(arg) for arg in sys.argv[1:4])
    target.mkdir(parents=True, exist_ok=True)
    names = served_names(json.loads(manifest_path.read_text()))
    for name in sorted(names):
        shutil.copy2(store / name, target / name)
    skipped = sorted(path.name for path in store.iterdir() if path.name not in names)
    print(f"Served model files: {len(names)}; left out (sources): {', '.join(skipped) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
