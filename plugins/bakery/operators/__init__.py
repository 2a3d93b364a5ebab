"""Thin Airflow adapters (the only modules of `bakery` that import Airflow).

Import the operator modules directly (``from bakery.operators.packer import PackerOperator``);
``PackerOperator`` is also available here, loaded on first use to keep DAG parsing light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PackerOperator"]


def __getattr__(name: str) -> Any:
    if name == "PackerOperator":
        from bakery.operators.packer import PackerOperator

        return PackerOperator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
