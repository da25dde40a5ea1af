import pytest

from alai.server import modules


def test_every_module_is_found_in_dependency_order():
    found = modules.all_modules()
    names = [m.name for m in found]
    assert "ops" in names
    for position, module in enumerate(found):
        for dependency in module.depends_on:
            assert names.index(dependency) < position


def test_selection_always_includes_ops_and_identity():
    assert sorted(m.name for m in modules.select(["ops"])) == ["identity", "ops"]
    assert {"ops", "identity"} <= {m.name for m in modules.select(None)}


def test_unknown_module_names_are_refused_with_the_list():
    with pytest.raises(modules.UnknownModule, match="unknown module\\(s\\) in ALAI_MODULES: nonsense; available: .*ops"):
        modules.select(["nonsense"])


def test_settings_normalise_module_lists():
    from alai.server.settings import Settings

    assert Settings(modules=" MC, hive ,").module_selection == ["mc", "hive"]
    assert Settings(modules="").module_selection is None
    assert Settings().module_selection is None
