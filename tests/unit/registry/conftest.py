import sys
from pathlib import Path

# pytest runs with --import-mode=importlib: make the registry's test builders importable.
sys.path.insert(0, str(Path(__file__).parent))
