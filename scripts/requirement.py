"""Print pyproject.toml's requirement for one dependency (`transformers>=5.23,<6`), or with --lowest its lower
bound (`5.23`): the set-up and CI scripts read the supported range from the one place it is written."""

import re
import sys
import tomllib
from pathlib import Path

name, lowest = sys.argv[1], "--lowest" in sys.argv[2:]
pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
(requirement,) = [r for r in pyproject["project"]["dependencies"] if re.match(rf"{re.escape(name)}\s*[<>=!~]", r)]
if lowest:
    bound = re.search(r">=\s*([0-9][0-9.]*)", requirement)
    if bound is None:
        sys.exit(f"pyproject.toml gives {name} no lower bound (>=): {requirement}")
    print(bound.group(1))
else:
    print(requirement)
