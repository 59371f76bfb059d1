"""The project stands alone: its docs are in the repository, and what they say of the code is
found in the code."""

from __future__ import annotations

import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MISSING = "DESIGN" + ".md"                     # a file that is not in the repository


def project_files():
    for folder in ("nbcnn", "kernels", "docs", "experiments"):
        for d, _, names in os.walk(os.path.join(ROOT, folder)):
            for n in names:
                if n.endswith((".py", ".cl", ".md", ".toml")):
                    yield os.path.join(d, n)
    yield os.path.join(ROOT, "README.md")


def test_no_reference_to_a_design_file_outside_the_repository():
    found = [p for p in project_files() if MISSING in open(p, encoding="utf-8").read()]
    assert not found


def test_the_design_notes_name_modules_that_exist():
    text = open(os.path.join(ROOT, "docs", "design.md"), encoding="utf-8").read()
    paths = set(re.findall(r"`((?:nbcnn|kernels|tests|experiments)/[\w./*]*)`", text))
    assert len(paths) > 15
    for p in paths:
        if "*" in p:
            continue
        assert os.path.exists(os.path.join(ROOT, p)), p


def test_threads_and_the_numba_dense_layer_agree_on_blas():
    threads = open(os.path.join(ROOT, "nbcnn", "threads.py"), encoding="utf-8").read()
    dense = open(os.path.join(ROOT, "nbcnn", "backends", "numba", "dense.py"),
                 encoding="utf-8").read()
    assert "deliberately not used" in dense
    blas = [node for node in ast.walk(ast.parse(dense))                   # no BLAS in the code
            if isinstance(node, ast.MatMult)
            or (isinstance(node, ast.Attribute) and node.attr in ("dot", "matmul", "einsum"))]
    assert not blas
    assert "used for dense layers" not in threads and "do not use it" in threads
