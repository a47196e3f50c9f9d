"""lorafleet: specialist LoRA adapters, trained, validated and shipped by event-driven services.

An installed wheel holds `lorafleet/services` and `lorafleet/shared` (hatchling's
`sources` mapping). In a source checkout they sit at the repo root, beside this
package; editable installs can't remap a prefix, so the root joins `__path__`.
"""

import os as _os

__version__ = "0.1.0"

_here = _os.path.dirname(_os.path.abspath(__file__))
_root = _os.path.dirname(_here)
if not _os.path.isdir(_os.path.join(_here, "shared")) and _os.path.isfile(
    _os.path.join(_root, "shared", "__init__.py")
):
    __path__.append(_root)  # type: ignore[name-defined]  # noqa: F821
