"""Builds the C++ extension torch_tier._C against the installed torch."""

from pathlib import Path

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

sources = sorted(str(p) for p in Path("csrc").rglob("*.cpp"))

setup(
    ext_modules=[
        CppExtension(
            "torch_tier._C",
            sources,
            include_dirs=[str(Path("csrc").resolve())],
            extra_compile_args=["-O3", "-std=c++17", "-Wall", "-Wno-unused-parameter"],
        )
    ],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
