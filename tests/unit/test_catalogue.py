from pathlib import Path

import pytest
import yaml

from bakery.catalogue import DEFAULT_CATALOGUE, CatalogueError, load_catalogue, parse_catalogue

G_BAD_CATALOGUE = pytest.mark.guarantee("bad-input")


def good():
    return yaml.safe_load(DEFAULT_CATALOGUE.read_text())


def errors_of(data):
    with pytest.raises(CatalogueError) as ei:
        parse_catalogue(data, path=Path("include/catalogue.yaml"))
    return str(ei.value)


def test_shipped_catalogue_is_valid():
    specs = load_catalogue()
    spec = specs["debian12-nginx"]
    assert spec.target == "local"
    assert spec.template_dir.is_dir()
    assert spec.prune.keep >= 1
    assert spec.smoke_test.expect_text


@G_BAD_CATALOGUE
def test_unknown_target_names_file_image_and_field():
    data = good()
    data["images"]["debian12-nginx"]["target"] = "gcp"
    msg = errors_of(data)
    assert "include/catalogue.yaml" in msg
    assert "image 'debian12-nginx', field 'target': 'gcp' is not one of 'local'" in msg


@G_BAD_CATALOGUE
def test_bad_cron():
    data = good()
    data["images"]["debian12-nginx"]["schedule"] = "0 25 * * *"
    assert "image 'debian12-nginx', field 'schedule': '0 25 * * *' is not a valid cron expression" in errors_of(data)


@G_BAD_CATALOGUE
def test_unknown_field_and_bad_prune_are_all_reported_at_once():
    data = good()
    img = data["images"]["debian12-nginx"]
    img["schedul"] = "@daily"
    img["prune"] = {"keep": 0}
    msg = errors_of(data)
    assert "unknown field(s) 'schedul'" in msg
    assert "field 'prune.keep': 0 is less than the minimum of 1" in msg


@G_BAD_CATALOGUE
def test_missing_template_folder():
    data = good()
    data["images"]["debian12-nginx"]["template"] = "no-such-template"
    msg = errors_of(data)
    assert "field 'template': no template folder" in msg and "debian12-nginx" in msg


@G_BAD_CATALOGUE
def test_bad_image_name_and_missing_required_field():
    data = good()
    data["images"]["Bad_Name"] = {"target": "local"}
    msg = errors_of(data)
    assert "'Bad_Name' must be 2-64 lower-case letters" in msg


@G_BAD_CATALOGUE
def test_missing_required_field():
    data = good()
    del data["images"]["debian12-nginx"]["template"]
    assert "image 'debian12-nginx', field '(the image entry)': 'template' is a required property" in errors_of(data)


@G_BAD_CATALOGUE
def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(CatalogueError, match="cannot read the file"):
        load_catalogue(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("images:\n  a: [1,\n")
    with pytest.raises(CatalogueError, match=r"bad.yaml.*\n.*line \d+, column \d+: not valid YAML"):
        load_catalogue(bad)
