"""Test suite of the image bakery (a package so helpers import as ``tests.azure_emulator``)."""
