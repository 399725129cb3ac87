"""Build hooks: Cython extensions of ``befriend.core`` and protobuf/gRPC code generation.

Metadata lives in pyproject.toml; this file only adds what PEP 621 cannot express.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "proto"))

import codegen  # noqa: E402  (proto/codegen.py)


class BuildPyWithProto(build_py):
    """Regenerate the protobuf/gRPC modules and stubs from proto/ before copying sources."""

    def run(self) -> None:
        codegen.generate(ROOT / "proto")
        super().run()


def extensions() -> list[Extension]:
    compile_args = ["-O3"]
    exts = [
        Extension(
            f"befriend.core.{pyx.stem}",
            [str(pyx.relative_to(ROOT))],
            include_dirs=[numpy.get_include()],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            extra_compile_args=compile_args,
        )
        for pyx in sorted((ROOT / "core").glob("*.pyx"))
    ]
    return cythonize(
        exts,
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
        nthreads=int(os.environ.get("BEFRIEND_BUILD_JOBS", "2")),
    )


setup(ext_modules=extensions(), cmdclass={"build_py": BuildPyWithProto})
