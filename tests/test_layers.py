"""scripts/check-layers: the module map of ARCHITECTURE.md holds for authz/src, and the check
fails on what would break it (an upward import, a loop within a layer, a module in no layer)."""

import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHECK = ROOT / "scripts" / "check-layers"
SRC = ROOT / "authz" / "src"


def check(src=None):
    args = [sys.executable, str(CHECK)] + (["--src", str(src)] if src else [])
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


@pytest.fixture
def tree(tmp_path):
    copy = tmp_path / "src"
    shutil.copytree(SRC, copy)
    return copy


def prepend(path, text):
    path.write_text(text + path.read_text())


def test_the_source_tree_obeys_the_layers():
    result = check()
    assert result.returncode == 0, result.stderr
    assert "none upward, no loop" in result.stdout


def test_the_layers_in_architecture_md_are_the_checked_ones():
    # The map a newcomer reads is the one enforced: every layer's modules, in order.
    architecture = (ROOT / "ARCHITECTURE.md").read_text()
    source = CHECK.read_text()
    layers = re.findall(r'\("([a-z ]+)", \[([^\]]*)\]\)', source)
    assert len(layers) >= 6
    rows = [line.split("|")[1].strip() for line in architecture.splitlines()
            if any(line.startswith(f"| {name} |") for name, _ in layers)]
    assert rows == [name for name, _ in layers], "ARCHITECTURE.md lists the layers in another order"
    for name, modules in layers:
        names = re.findall(r'"(\w+)"', modules)
        line = next(
            (line for line in architecture.splitlines() if line.startswith(f"| {name} |")),
            None,
        )
        assert line is not None, f"ARCHITECTURE.md has no row for the {name} layer"
        listed = re.findall(r"`(\w+)`", line.split("|")[2])
        assert sorted(listed) == sorted(names), (name, listed, names)


def test_an_upward_use_line_fails_naming_file_line_and_layers(tree):
    prepend(tree / "metrics.rs", "use crate::authorizer::Authorizer;\n")
    result = check(tree)
    assert result.returncode == 1
    assert re.search(
        r"metrics\.rs:1: `metrics` \(foundations\) uses `authorizer` \(authorizer\), a layer above",
        result.stderr,
    ), result.stderr


def test_an_upward_name_inside_a_use_tree_or_inline_path_fails(tree):
    prepend(tree / "config.rs", "use crate::{\n    principal::Principal,\n    oauth::Facade,\n};\n")
    prepend(tree / "cache.rs", "fn f() { let _ = crate::authorizer::CacheUse::Hit; }\n")
    result = check(tree)
    assert result.returncode == 1
    assert "config.rs:3: `config` (foundations) uses `oauth`" in result.stderr, result.stderr
    assert "cache.rs:1: `cache` (decisions) uses `authorizer`" in result.stderr, result.stderr
    assert "uses `principal`" not in result.stderr


def test_a_loop_within_one_layer_fails(tree):
    # metrics already uses errors; errors using metrics closes a loop inside the foundations.
    prepend(tree / "errors.rs", "use crate::metrics::Metrics;\n")
    result = check(tree)
    assert result.returncode == 1
    assert "use each other in a loop: errors, metrics" in result.stderr, result.stderr


def test_a_new_module_must_be_placed(tree):
    (tree / "shiny.rs").write_text("pub fn f() {}\n")
    result = check(tree)
    assert result.returncode == 1
    assert "module `shiny` is in no layer" in result.stderr


def test_comments_literals_and_test_code_are_not_read(tree):
    prepend(
        tree / "metrics.rs",
        "// use crate::authorizer::Authorizer;\n/* crate::oauth */\n"
        'const S: &str = "use crate::oauth::{";\nconst R: &str = r#"crate::oauth "}" "#;\n',
    )
    (tree / "metrics.rs").write_text(
        (tree / "metrics.rs").read_text()
        + "\n#[cfg(test)]\nmod tests {\n    use crate::authorizer::Authorizer;\n}\n"
    )
    (tree / "errors").mkdir()
    (tree / "errors" / "tests.rs").write_text("use crate::oauth::Facade;\n")
    result = check(tree)
    assert result.returncode == 0, result.stderr


def test_code_after_an_inline_test_module_is_still_read(tree):
    path = tree / "metrics.rs"
    lines = path.read_text().count("\n")
    path.write_text(
        path.read_text()
        + '#[cfg(test)]\nmod more {\n    const T: &str = "}";\n}\n'
        + "use crate::authorizer::Authorizer;\n"
    )
    result = check(tree)
    assert result.returncode == 1
    assert f"metrics.rs:{lines + 5}: `metrics` (foundations) uses `authorizer`" in result.stderr, (
        result.stderr
    )


@pytest.mark.parametrize(
    "file, text, line",
    [
        # super:: climbing to the crate root, from a nested file and from a top-level one.
        ("config/oauth.rs", "use super::super::oauth::Facade;\n", 1),
        ("metrics.rs", "use super::oauth;\n", 1),
        # Spaces rustfmt would remove, and a path held in a serde attribute's string.
        ("config.rs", "use crate :: oauth;\n", 1),
        ("config.rs", '#[serde(deserialize_with = "crate::oauth::f")]\nstruct S;\n', 1),
        # An item of lib.rs (the wiring layer) named from below.
        ("metrics.rs", "fn f() { let _ = crate::scrape_router; }\n", 1),
    ],
)
def test_other_spellings_of_an_upward_use_fail(tree, file, text, line):
    prepend(tree / file, text)
    result = check(tree)
    assert result.returncode == 1, result.stdout
    assert f"{file}:{line}: `{file.split('/')[0].removesuffix('.rs')}`" in result.stderr, (
        result.stderr
    )
    assert "a layer above it" in result.stderr


def test_a_super_path_within_its_own_module_is_no_dependency(tree):
    prepend(tree / "config" / "oauth.rs", "use super::SecretRef as _Again;\n")
    result = check(tree)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "text",
    ["use crate::*;\n", "use crate as root;\n", "use crate::{self as root};\n",
     '#[path = "oauth/clients.rs"]\nmod clients_again;\n'],
)
def test_forms_that_would_hide_a_use_are_refused(tree, text):
    prepend(tree / "metrics.rs", text)
    result = check(tree)
    assert result.returncode == 1
    assert "metrics.rs:1: " in result.stderr, result.stderr
