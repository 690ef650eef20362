"""Policy loading and validation: every mistake reported at once, located, with a hint."""

from __future__ import annotations

from pathlib import Path

import pytest

from image_updater.cli import main
from image_updater.config.policies import load_policies, load_text
from image_updater.config.values_check import check_values_keys
from image_updater.errors import ImageUpdaterError, PolicyError
from image_updater.model import DEFAULT_IGNORE

HERE = Path(__file__).parent
BROKEN = HERE / "policy_testdata" / "broken"
REPO_POLICIES = HERE.parent.parent / "policies"


def _problems() -> list[str]:
    with pytest.raises(PolicyError) as info:
        load_policies([BROKEN])
    return [str(p) for p in info.value.problems]


# (file, line, substring of the message) — one row per mistake planted in policy_testdata/broken
EXPECTED = [
    ("typos.yaml", 5, "git.brnach: unknown key 'brnach' (hint: did you mean 'branch'?"),
    ("typos.yaml", 9, "environments.dev.stratgy: unknown key 'stratgy' (hint: did you mean "
                      "'strategy'?"),
    ("typos.yaml", 12, "unknown strategy 'semverr' (hint: did you mean 'semver'?"),
    ("typos.yaml", 16, "semver constraint '>=1.2.3 <<2' is invalid at column 10"),
    ("typos.yaml", 17, "tag filter 'allow' regex '^v(\\\\d+$' does not compile"),
    ("typos.yaml", 18, "unknown approval 'manual'"),
    ("structure.yaml", 1, "app name 'Checkout_Service' is not a valid name"),
    ("structure.yaml", 2, "carries a tag or digest"),
    ("structure.yaml", 7, "environments.dev.file: is required"),
    ("structure.yaml", 9, "environments.dev.write.digest"),
    ("structure.yaml", 11, "'/abs/values-staging.yaml' is absolute"),
    ("structure.yaml", 12, "is not a valid tag"),
    ("structure.yaml", 16, "unknown order 'sideways'"),
    ("structure.yaml", 17, "needs one named group"),
    ("structure.yaml", 18, "'linux' is not an os/arch[/variant] platform"),
    ("duplicates.yaml", 11, "app 'cart' is also defined at"),
    ("duplicates.yaml", 9, "cart/values.yaml key image.digest is also written by cart/dev"),
    ("syntax.yaml", 4, "invalid YAML"),
    ("dupenv.yaml", 6, "duplicate key"),
]


@pytest.mark.parametrize(("file", "line", "text"), EXPECTED)
def test_each_mistake_is_reported_with_file_line_and_message(file: str, line: int,
                                                             text: str) -> None:
    problems = _problems()
    prefix = f"{BROKEN / file}:{line}:" if line else f"{BROKEN / file}:"
    matching = [p for p in problems if p.startswith(prefix) and text in p]
    assert matching, f"no problem {prefix} … {text!r} among:\n" + "\n".join(problems)


def test_all_problems_are_reported_at_once_each_with_a_hint_or_location() -> None:
    problems = _problems()
    assert len(problems) >= len(EXPECTED)
    files = {Path(p.split(":", 1)[0]).name for p in problems}
    assert files == {"typos.yaml", "structure.yaml", "duplicates.yaml", "syntax.yaml",
                     "dupenv.yaml"}


def test_validate_command_prints_every_problem_and_exits_1(capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    code = main(["validate", str(BROKEN)])
    out = capsys.readouterr()
    assert code == 1
    for _file, _line, text in EXPECTED:
        assert text in out.out, text
    assert "problem(s) found" in out.err


def test_repository_example_policies_are_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(REPO_POLICIES)]) == 0
    assert "ok: 2 app(s), 5 environment(s)" in capsys.readouterr().out
    # and they match the example deploy repository: every file and key they write exists
    examples = REPO_POLICIES.parent / "examples" / "deploys"
    assert main(["validate", "--values-root", str(examples), str(REPO_POLICIES)]) == 0


GOOD = """\
app: application-x
image: registry.example.com/team/application-x
git: {url: https://git.example.com/org/deploys.git}
defaults:
  write: {digest: image.digest}
environments:
  dev: {file: application-x/values-dev.yaml}
  staging: {file: application-x/values-staging.yaml, tag: stage}
  prod:
    file: application-x/values-prod.yaml
    strategy: semver
    constraint: ^1.2
    write: {tag: image.tag, digest: image.digest}
    ignore: ['*-debug']
    approval: pull-request
"""


def test_defaults_and_inference() -> None:
    apps, problems = load_text(GOOD, "good.yaml")
    assert problems == []
    (app,) = apps
    assert app.git.branch == "master"
    dev, staging, prod = app.environments
    assert (dev.strategy.kind, dev.strategy.tag) == ("digest", "dev")  # tag defaults to env
    assert staging.strategy.tag == "stage"
    assert dev.write.digest == ("image", "digest") and dev.write.tag is None
    assert prod.strategy.kind == "semver" and prod.strategy.constraint == "^1.2"
    assert prod.write.tag == ("image", "tag")
    assert prod.strategy.filter.ignore == (*DEFAULT_IGNORE, "*-debug")
    assert prod.approval == "pull-request" and dev.approval == "none"


def test_semver_without_write_writes_tag_and_digest() -> None:
    text = GOOD.replace("    write: {tag: image.tag, digest: image.digest}\n", "").replace(
        "defaults:\n  write: {digest: image.digest}\n", "")
    apps, problems = load_text(text, "good.yaml")
    assert problems == []
    prod = apps[0].env("prod")
    assert (prod.write.tag, prod.write.digest) == (("image", "tag"), ("image", "digest"))


def test_digest_strategy_refuses_writing_the_tag() -> None:
    text = GOOD.replace("defaults:\n  write: {digest: image.digest}",
                        "defaults:\n  write: {tag: image.tag}")
    _, problems = load_text(text, "p.yaml")
    assert any("would always write the same value" in str(p) for p in problems)


def test_check_values_keys_reports_missing_files_and_keys() -> None:
    apps, _ = load_text(GOOD, "good.yaml")
    files = {
        "application-x/values-dev.yaml": "image:\n  digest: ''\n",
        "application-x/values-staging.yaml": "image:\n  repository: x\n",
    }
    problems = [str(p) for p in check_values_keys(apps, lambda _a, path: files.get(path))]
    assert any("key image.digest is missing from application-x/values-staging.yaml" in p
               for p in problems)
    assert any("values file application-x/values-prod.yaml does not exist" in p
               for p in problems)
    assert not any("values-dev.yaml" in p for p in problems)


MIXED = """\
app: mixed
image: registry.example.com/team/mixed
git: {url: "https://git.example.com/deploys.git"}
defaults:
  constraint: "^1.2.x.y"
  allow: "(unclosed"
environments:
  dev: {file: mixed/values-dev.yaml, strategy: alphabetical, constraint: "^1"}
  staging: {file: mixed/values-staging.yaml, strategy: semver, tag: staging}
  prod: {file: mixed/values-prod.yaml, strategy: numerical}
"""


def test_defaults_are_checked_once_and_ignored_keys_are_mistakes(tmp_path: Path) -> None:
    """A broken default is reported once (not once per environment using it), even when no
    environment uses it yet; a key the environment's strategy ignores is an error; problems
    come in file order."""
    path = tmp_path / "mixed.yaml"
    path.write_text(MIXED)
    with pytest.raises(PolicyError) as info:
        load_policies([path])
    found = [(p.line, p.field, p.message.split(":")[0]) for p in info.value.problems]
    assert found == [
        (5, "defaults.constraint", "semver constraint '^1.2.x.y' is invalid at column 7 ('.y')"),
        (6, "defaults.allow", "tag filter 'allow' regex '(unclosed' does not compile"),
        (8, "environments.dev.constraint", "'constraint' has no effect with strategy "
                                           "alphabetical"),
        (9, "environments.staging.tag", "'tag' has no effect with strategy semver"),
    ]


def test_a_duplicate_app_name_is_reported_even_when_the_duplicate_has_other_problems(
        tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "app: shop\nimage: registry.example.com/shop\ngit: {url: 'https://g.example.com/d.git'}\n"
        "environments:\n  dev: {file: shop/values-dev.yaml}\n")
    (tmp_path / "b.yaml").write_text(
        "app: shop\nimage: registry.example.com/shop\ngit: {url: 'https://g.example.com/d.git'}\n"
        "environments:\n  dev: {file: shop/values-dev.yaml, stratgy: semver}\n")
    with pytest.raises(PolicyError) as info:
        load_policies([tmp_path])
    messages = [(Path(p.file).name, p.line, p.message) for p in info.value.problems]
    assert ("b.yaml", 1, f"app 'shop' is also defined at {tmp_path / 'a.yaml'}:1") in messages
    assert any(m[0] == "b.yaml" and "unknown key 'stratgy'" in m[2] for m in messages)


def _one_env_policy(env: str, *, image: str = "registry.example.com/shop") -> str:
    return (f"app: shop\nimage: {image}\ngit: {{url: 'https://g.example.com/d.git'}}\n"
            f"environments:\n  dev: {env}\n")


@pytest.mark.parametrize(("path", "words"), [
    (".git/config", "'.git' directory"),
    ("a/.GIT/hooks/x", "'.git' directory"),
    ("./x.yaml", "empty, '.' or '..' component"),
    ("a//b.yaml", "empty, '.' or '..' component"),
    ("a/", "empty, '.' or '..' component"),
    ("/etc/values.yaml", "is absolute"),
    ("../x.yaml", "empty, '.' or '..' component"),
    ("a\\\\b.yaml", "backslashes"),
])
def test_validate_applies_the_runtime_path_rule(path: str, words: str) -> None:
    """validate refuses exactly what git refuses to read or write: one function, both sides."""
    from image_updater.errors import ConfigError
    from image_updater.gitops.repo import check_path

    _apps, problems = load_text(_one_env_policy(f'{{file: "{path}"}}'), "p.yaml")
    assert [(p.line, p.field) for p in problems] == [(5, "environments.dev.file")]
    assert words in problems[0].message
    with pytest.raises(ConfigError, match=words.replace(".", "\\.").replace("(", "\\(")):
        check_path(path.replace("\\\\", "\\"))


@pytest.mark.parametrize(("text", "where", "field"), [
    (_one_env_policy("{file: x.yaml}", image="42"), (2, 1), "image"),
    (_one_env_policy("{file: 7}"), (5, 9), "environments.dev.file"),
    (_one_env_policy("{file: [a]}"), (5, 9), "environments.dev.file"),
    (_one_env_policy("{file: x.yaml}").replace("git: {url:", "git: {branch: 3, url:"),
     (3, 7), "git.branch"),
])
def test_names_and_paths_must_be_text_not_numbers(text: str, where: tuple[int, int],
                                                   field: str) -> None:
    apps, problems = load_text(text, "p.yaml")
    assert apps == []
    assert [(p.line, p.column, p.field) for p in problems] == [(*where, field)]
    assert "must be a string, not" in problems[0].message


def test_validate_and_the_engine_agree_that_a_null_key_is_present() -> None:
    from image_updater.engine.plan import plan_edit
    from image_updater.engine.resolve import Resolved

    apps, _ = load_text(GOOD, "good.yaml")
    dev = apps[0].env("dev")
    digest = "sha256:" + "3" * 64
    for text, present in (("image:\n  digest: ~\n", True), ("image:\n  digest:\n", True),
                          ("image:\n  other: 1\n", False)):
        problems = check_values_keys(apps[:1], lambda _a, path, t=text: t)
        dev_problems = [p for p in problems if p.field == "environments.dev.write"]
        assert (dev_problems == []) == present, text
        try:
            plan_edit(apps[0], dev, Resolved("dev", digest, "r"), text)
            planned = True
        except ImageUpdaterError:
            planned = False
        assert planned == present, text


def test_check_values_keys_applies_the_size_cap() -> None:
    apps, _ = load_text(GOOD, "good.yaml")
    text = "image:\n  digest: ''\n" + "#" * 100 + "\n"
    problems = check_values_keys(apps, lambda _a, _p: text, max_file_bytes=64)
    assert problems and all("limits.values_file_bytes" in p.message for p in problems)


def test_a_policy_file_over_the_cap_is_refused_fast_without_parsing(tmp_path: Path) -> None:
    import time

    path = tmp_path / "huge.yaml"
    path.write_text(GOOD + "\n# padding\n" * 700_000)  # about 7.7 MB
    started = time.monotonic()
    with pytest.raises(PolicyError) as info:
        load_policies([path])
    assert time.monotonic() - started < 2
    [problem] = info.value.problems
    assert problem.file == str(path)
    assert f"{path.stat().st_size} bytes" in problem.message
    assert "limits.policy_file_bytes" in problem.message
    small = tmp_path / "small.yaml"
    small.write_text(GOOD)
    size = small.stat().st_size
    assert load_policies([small], max_file_bytes=size)  # the cap itself is allowed
    with pytest.raises(PolicyError, match=f"{size} bytes, more than the {size - 1} bytes"):
        load_policies([small], max_file_bytes=size - 1)


@pytest.mark.parametrize(("bad", "line"), [("\x00", 3), ("\x07", 3), ("\ufffe", 3)])
def test_non_printable_characters_in_a_policy_are_a_located_problem(tmp_path: Path, bad: str,
                                                                      line: int) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(GOOD.replace("git:", f"git:{bad}", 1), encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policies([path])
    [problem] = info.value.problems
    assert (problem.file, problem.line) == (str(path), line)
    assert "non-printable character" in problem.message


@pytest.mark.parametrize(("values", "words"), [
    (b"image:\n  digest: \x00\n", "line 2 contains the non-printable character #x0000"),
    (b"image:\n  digest: \xff\n", "is not UTF-8 text: line 2 holds the byte 0xff"),
    (b"image:\n  digest: ''\n" + b"#" * 5000 + b"\n", "limits.values_file_bytes"),
])
def test_validate_values_root_reports_bad_values_files_cleanly(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], values: bytes, words: str) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "p.yaml").write_text(
        "app: x\nimage: registry.example.com/x\ngit: {url: 'https://g.example.com/d.git'}\n"
        "environments:\n  dev: {file: x/values.yaml}\n")
    (tmp_path / "root" / "x").mkdir(parents=True)
    (tmp_path / "root" / "x" / "values.yaml").write_bytes(values)
    (tmp_path / "s.yaml").write_text("limits: {values_file_bytes: 4096}\n")
    code = main(["validate", str(tmp_path / "p"), "--values-root", str(tmp_path / "root"),
                 "--config", str(tmp_path / "s.yaml")])
    out = capsys.readouterr().out
    assert code == 1
    assert f"{tmp_path / 'p' / 'p.yaml'}:5:" in out and "x/values.yaml" in out and words in out
