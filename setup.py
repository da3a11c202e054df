"""Builds torch-tier's two C++ extensions.

- ``torch_tier._C``: the tiering allocator, against the installed torch.
- ``torch_tier._planner``: the static memory planner (csrc/planner/), plain
  pybind11 with no libtorch, so that ``torch-tier plan`` never loads torch.
"""

from pathlib import Path

import pybind11
from setuptools import Extension, setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

CSRC = Path("csrc")
FLAGS = ["-O3", "-std=c++17", "-Wall", "-Wno-unused-parameter"]


def sources(folder: Path, pattern: str) -> list[str]:
    """The .cpp files matching ``pattern`` under ``folder``, sorted for a stable build."""
    return sorted(str(p) for p in folder.glob(pattern))


setup(
    ext_modules=[
        CppExtension("torch_tier._C", sources(CSRC, "*.cpp"),
                     include_dirs=[str(CSRC.resolve())], extra_compile_args=FLAGS),
        Extension("torch_tier._planner", sources(CSRC / "planner", "*.cpp"), language="c++",
                  include_dirs=[str(CSRC.resolve()), pybind11.get_include()],
                  extra_compile_args=FLAGS + ["-fvisibility=hidden"]),
    ],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
