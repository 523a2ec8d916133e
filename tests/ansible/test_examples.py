"""The documented examples stay in step with the role's variables."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from tests.ansible.conftest import ANSIBLE_DIR

pytestmark = pytest.mark.ansible

PROJECT_DIR = Path(__file__).resolve().parents[2]
ROLE = ANSIBLE_DIR / "roles" / "hal0_lemonade"
DOCS = PROJECT_DIR / "docs" / "fleet.md"


def _defaults() -> set[str]:
    return set(yaml.safe_load((ROLE / "defaults" / "main.yml").read_text()))


@pytest.mark.parametrize("name", ["vars-upstream.yml", "vars-pushed.yml"])
def test_example_vars_are_role_variables(name: str) -> None:
    example = yaml.safe_load((ANSIBLE_DIR / "examples" / name).read_text())
    assert set(example) <= _defaults()


def test_every_variable_the_tasks_use_has_a_default() -> None:
    used: set[str] = set()
    for path in (ROLE / "tasks").glob("*.yml"):
        used |= set(re.findall(r"\bhal0_lemonade_[a-z0-9_]+", path.read_text()))
    registered = {"hal0_lemonade_pyz_stat", "hal0_lemonade_install_result"}
    registered |= {"hal0_lemonade_status_result", "hal0_lemonade_install"}  # the module
    assert used - registered <= _defaults()


def test_docs_list_every_default() -> None:
    text = DOCS.read_text()
    missing = [name for name in sorted(_defaults()) if f"`{name}`" not in text]
    assert missing == []


@pytest.mark.parametrize("name", ["vars-upstream.yml", "vars-pushed.yml"])
def test_example_pyz_is_the_one_scripts_pyz_builds(name: str) -> None:
    """The examples push dist/hal0-lemonade.pyz of this checkout, where `bash scripts/pyz`
    writes it (playbook_dir is examples/, as `ansible-playbook examples/site.yml` sets it)."""
    src = yaml.safe_load((ANSIBLE_DIR / "examples" / name).read_text())["hal0_lemonade_pyz_src"]
    path = Path(src.replace("{{ playbook_dir }}", str(ANSIBLE_DIR / "examples")))
    assert path.resolve() == PROJECT_DIR / "dist" / "hal0-lemonade.pyz"
