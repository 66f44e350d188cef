"""Generate ``schemas/*.json`` (JSON Schema) from the contract models.

Run ``python -m services.contracts.schemas`` after changing a model; a test fails on drift.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from services.contracts.models import MESSAGE_MODELS

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def render() -> dict[str, str]:
    out = {}
    for name, model in MESSAGE_MODELS.items():
        schema = model.model_json_schema(mode="validation")
        schema["$id"] = f"https://inferledger.dev/schemas/{name}.json"
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        out[f"{name}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def write(directory: Path = SCHEMAS) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for filename, text in render().items():
        path = directory / filename
        path.write_text(text)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in write(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMAS):
        print(p)
