"""Property tests: whatever bytes or YAML a person or a repository hands us, the outcome is a
result or an error from image-updater's tree (``ImageUpdaterError``), never another exception.

The inputs are the four doors untrusted text comes in by: policy files, the settings file,
values files (read and edited) and image references. The profile is derandomised, so a run
is repeatable, with enough examples per property to reach the odd corners of the parsers.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from image_updater.config.policies import load_policies, load_text
from image_updater.config.settings import load_settings
from image_updater.errors import ImageUpdaterError
from image_updater.registry.reference import parse_reference
from image_updater.values.editor import read_present, set_scalar

PROPERTY = settings(max_examples=300, derandomize=True, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

#: the words our files are made of, so generated documents reach past the first key check
WORDS = ["app", "image", "git", "url", "branch", "defaults", "environments", "dev", "prod",
         "file", "strategy", "tag", "constraint", "strict", "order", "allow", "ignore",
         "extract", "platform", "write", "digest", "reference", "approval", "pull_request",
         "labels", "draft", "branch_prefix", "semver", "digest", "numerical", "asc",
         "registries", "host", "interval", "limits", "policy_file_bytes", "forges", "webhooks",
         "credentials", "ecr", "jitter", "listen", "log_format", "<<", "image.tag"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=True), st.sampled_from(WORDS), st.text(max_size=20),
    st.sampled_from(["^1.2", ">= one", "(", "/^x$/", "a//b", ".git/config", "../x", "/abs",
                     "registry.example.com/team/app", "HOST/Bad", "sha256:" + "a" * 64,
                     "(?P<value>\\d+)", "", "~", "\x00", "linux/amd64"]),
)
keys = st.one_of(st.sampled_from(WORDS), st.text(max_size=8))
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(keys, inner, max_size=6)),
    max_leaves=30,
)


def _yaml(doc: Any) -> str:
    """JSON is YAML: any document serialises, including odd floats and unicode keys."""
    return json.dumps(doc, allow_nan=True, ensure_ascii=False)


def _outcome(call: Any) -> None:
    """Run ``call``; an ImageUpdaterError is a clean, explained refusal, anything else fails."""
    with contextlib.suppress(ImageUpdaterError):
        call()


yaml_texts = st.one_of(
    documents.map(_yaml),
    st.lists(documents.map(_yaml), min_size=1, max_size=3).map("\n---\n".join),
    st.text(alphabet=st.sampled_from(list(" \n\t:-{}[],&*!|>'\"#%@`?\x00\x85\ufeffab1")),
            max_size=60),
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("properties")


@PROPERTY
@given(data=st.binary(max_size=300))
@example(data=b"app: x\x00\n")  # once a traceback (exit 8)
@example(data=b"\xff\xfe")
@example(data=b"app: !!int x\n")  # a ValueError from ruamel's constructor
@example(data=b"[" * 3000)  # deeper than Python's stack
def test_policy_loader_on_any_bytes(scratch: Path, data: bytes) -> None:
    path = scratch / "policy.yaml"
    path.write_bytes(data)
    _outcome(lambda: load_policies([path]))


@PROPERTY
@given(text=yaml_texts)
def test_policy_loader_on_any_yaml(text: str) -> None:
    apps, problems = load_text(text, "p.yaml")
    assert all(app.environments and app.source == "p.yaml" for app in apps)
    for problem in problems:  # located in this file, and saying something
        assert problem.file == "p.yaml" and problem.message and problem.line >= 0


@PROPERTY
@given(doc=st.dictionaries(st.sampled_from(WORDS[:6]), documents, max_size=6))
def test_policy_loader_on_policy_shaped_documents(doc: dict[str, Any]) -> None:
    _outcome(lambda: load_text(_yaml(doc), "p.yaml"))


@PROPERTY
@given(data=st.one_of(st.binary(max_size=300), yaml_texts.map(str.encode),
                      st.dictionaries(st.sampled_from(WORDS[35:]), documents, max_size=5)
                      .map(lambda d: _yaml(d).encode())))
@example(data=b"interval: !!float abc\n")
@example(data=b"[" * 3000)
def test_settings_loader_on_any_input(scratch: Path, data: bytes) -> None:
    path = scratch / "settings.yaml"
    path.write_bytes(data)
    _outcome(lambda: load_settings(path, environ={}))


@PROPERTY
@given(text=st.one_of(yaml_texts, st.text(max_size=200)),
       path=st.sampled_from(["image.tag", "image.digest", "a.0.b", "tag", "<<", "x.1"]),
       value=st.one_of(st.sampled_from(["v1.2.3", "sha256:" + "b" * 64, "1.0", "yes"]),
                       st.text(max_size=12)))
@example(text="image:\n  tag: \x00\n", path="image.tag", value="v1")  # once a TypeError
@example(text="{}", path="<<", value="v1")  # once wrote a merge key that reads as absent
def test_values_editor_on_any_text(text: str, path: str, value: str) -> None:
    def edit() -> None:
        present = read_present(text, [path], file="values.yaml")
        edited = set_scalar(text, path, value, file="values.yaml")
        assert read_present(edited, [path], file="values.yaml")[
            tuple(int(p) if p.isdigit() else p for p in path.split("."))] == value
        assert isinstance(present, dict)

    _outcome(edit)


@PROPERTY
@given(text=st.one_of(
    st.text(max_size=80),
    st.from_regex(r"[a-z0-9.:-]{1,20}(/[a-z0-9._-]{1,10}){0,3}(:[\w.-]{1,10})?(@sha256:[0-9a-f]{64})?",
                  fullmatch=True),
))
def test_image_reference_parser_on_any_text(text: str) -> None:
    _outcome(lambda: parse_reference(text))
