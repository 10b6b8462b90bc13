"""pytest setup for the torch binding tests.

kiln is imported from torch/ in this checkout when the plain-CMake build has put kiln/_C*.so there
(cmake -B build-torch -DKILN_TORCH=ON ...; cmake --build build-torch --target _C), else from the
installed package (pip install --no-build-isolation .). The header line says which one ran.
"""

import pathlib
import sys

_TORCH_DIR = pathlib.Path(__file__).resolve().parents[2] / "torch"
if any((_TORCH_DIR / "kiln").glob("_C*.so")) and str(_TORCH_DIR) not in sys.path:
    sys.path.insert(0, str(_TORCH_DIR))


def pytest_report_header(config):
    import torch

    import kiln

    cuda = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
    return [f"kiln: {kiln._C.__file__}", f"torch {torch.__version__}, {cuda}"]
