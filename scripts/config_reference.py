"""Print the config reference (markdown) from the pydantic models' fields and descriptions.

python scripts/config_reference.py > docs/config.md   (README.md includes its output)
"""

from __future__ import annotations

from pydantic import BaseModel

from peftrun.config import Config
from peftrun.method_options import OPTIONS_BY_KIND


def rows(model: type[BaseModel], prefix: str) -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        if name == "kind":
            continue
        default = field.default if field.default_factory is None else field.default_factory()
        if isinstance(default, BaseModel):
            continue
        annotation = (
            str(field.annotation)
            .replace("typing.", "")
            .replace("<class '", "")
            .replace("'>", "")
            .replace("|", "\\|")
        )
        out.append(f"| `{prefix}{name}` | `{annotation}` | `{default!r}` | {field.description or ''} |")
    return out


def main() -> None:
    print("| key | type | default | meaning |\n|---|---|---|---|")
    print(
        "| `name` | `str \\| None` | `None` | run name (default: dataset-model-method); the run dir adds a config hash |"  # noqa: E501
    )
    for section in ("model", "data", "train", "decode", "output"):
        print("\n".join(rows(Config.model_fields[section].annotation, f"{section}.")))
    for kind, options in OPTIONS_BY_KIND.items():
        print(f"| `method.kind: {kind}` | | | {(options.__doc__ or '').strip()} |")
        print("\n".join(rows(options, "method.")))


if __name__ == "__main__":
    main()
