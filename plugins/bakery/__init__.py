"""Image bakery: Packer-driven VM image baking for Apache Airflow.

Layers (see DESIGN.md): ``dags/`` builds DAGs from the catalogue; ``bakery.operators`` and
``bakery.hooks`` are thin Airflow adapters; everything else in this package is plain Python
with no Airflow import (the Packer runner, version naming, the catalogue, the targets).
"""
