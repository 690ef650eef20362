"""Commit and pull request templates: golden renderings, trailers that stay ours, and errors
found at load (and by ``validate``) with file and line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from image_updater.changes import Change, KeyChange
from image_updater.cli import main
from image_updater.config.settings import (
    Settings,
    TemplateSettings,
    load_settings,
    message_templates,
)
from image_updater.config.templates import (
    NO_TEMPLATES,
    SAMPLE_CHANGE,
    MessageTemplates,
    compile_templates,
    pull_request_context,
)
from image_updater.errors import ConfigError
from image_updater.exit_codes import ExitCode
from image_updater.gitops.message import commit_message, parse_trailers, trailer_block

D1 = "sha256:" + "abcd1234" * 8
D2 = "sha256:" + "0" * 64
D3 = "sha256:" + "e" * 64

POLICY = textwrap.dedent("""\
    app: application-x
    image: registry.example.com/team/application-x
    git: {url: "https://git.example.com/deploy.git", branch: main}
    environments:
      dev: {file: application-x/values-dev.yaml}
    """)


def change(app: str = "application-x", env: str = "dev", digest: str = D1,
           tag: str | None = "1.2.3", old: str | None = D2) -> Change:
    return Change(app=app, env=env, file=f"{app}/values-{env}.yaml",
                  image=f"registry.example.com/team/{app}", tag=tag, digest=digest,
                  keys=(KeyChange(key="image.digest", old=old, new=digest),),
                  why=f"tag {tag} is the newest")


def templates(**sources: str) -> MessageTemplates:
    return compile_templates(sources)


def pr_context(c: Change, url: str | None = None) -> dict[str, object]:
    return pull_request_context(c, evidence=["- `staging` runs this digest"],
                                base_branch="main", url=url, supersedes=None,
                                default_title="Promote", default_body="built-in body")


# --- defaults and golden renderings ----------------------------------------------------------

@pytest.mark.parametrize("changes", [[change()], [change(), change(app="b", env="prod")],
                                     [change(tag=None, old=None)]])
def test_no_templates_is_todays_message_exactly(changes: list[Change]) -> None:
    assert NO_TEMPLATES.commit_message(changes, source="webhook") == \
        commit_message(changes, source="webhook")


@pytest.mark.parametrize("changes", [[change()], [change(), change(app="b", env="prod")]])
def test_templates_of_the_defaults_reproduce_todays_message(changes: list[Change]) -> None:
    same = templates(commit_subject="{{ default_subject }}", commit_body="{{ default_body }}")
    assert same.commit_message(changes) == commit_message(changes)


TRAILERS_D1 = f"""\
Image-Updater-App: application-x
Image-Updater-Env: dev
Image-Updater-Image: registry.example.com/team/application-x
Image-Updater-Tag: 1.2.3
Image-Updater-Digest: {D1}
Image-Updater-Previous-Digest: {D2}
Image-Updater-Action: update
Image-Updater-Source: poll
"""

GOLDEN_COMMITS = [
    pytest.param(  # Conventional Commits with a ticket
        {"commit_subject": "chore(deploy): bump {{ changes | map(attribute='app') | join(', ') }}"
                           " [OPS-42]",
         "commit_body": textwrap.dedent("""\
             {% for c in changes %}
             - {{ c.app }}/{{ c.env }} ({{ c.file }}): {{ c.old }} → {{ c.new }}
               tag {{ c.tag }}, because {{ c.reason }}
             {% endfor %}

             Refs: OPS-42""")},
        f"""\
chore(deploy): bump application-x [OPS-42]

- application-x/dev (application-x/values-dev.yaml): {D2} → {D1}
  tag 1.2.3, because tag 1.2.3 is the newest

Refs: OPS-42

""" + TRAILERS_D1, id="conventional"),
    pytest.param(  # only the subject: the built-in body stays
        {"commit_subject": "[{{ changes[0].env | upper }}] {{ changes[0].app }} "
                           "{{ changes[0].short_digest }}"},
        f"""\
[DEV] application-x sha256:abcd1234…

application-x dev in application-x/values-dev.yaml:
  image: registry.example.com/team/application-x:1.2.3@{D1}
  image.digest: {D2} → {D1}
  why: tag 1.2.3 is the newest

""" + TRAILERS_D1, id="subject-only"),
    pytest.param(  # an empty body: subject, then the trailers
        {"commit_subject": "{{ default_subject }}", "commit_body": "{# nothing #}"},
        "image-updater: application-x dev → sha256:abcd1234…\n\n" + TRAILERS_D1,
        id="empty-body"),
]


@pytest.mark.parametrize(("sources", "expected"), GOLDEN_COMMITS)
def test_golden_commit_messages(sources: dict[str, str], expected: str) -> None:
    assert templates(**sources).commit_message([change()]) == expected


def test_golden_pull_request_title_and_body() -> None:
    t = templates(pull_request_title="deploy({{ env }}): {{ app }} {{ change.tag }}",
                  pull_request_body=textwrap.dedent("""\
                      cc @team-{{ app }} · {{ url or 'new' }}
                      {{ change.old }} → {{ change.new }}
                      {{ evidence | join('\\n') }}
                      base: {{ base_branch }}"""))
    context = pr_context(change(), url="https://forge.example.com/pr/7")
    assert t.title(context) == "deploy(dev): application-x 1.2.3"
    assert t.body(context) == (f"cc @team-application-x · https://forge.example.com/pr/7\n"
                               f"{D2} → {D1}\n- `staging` runs this digest\nbase: main")
    assert context["change"]["links"] == {"pull_request": "https://forge.example.com/pr/7"}


def test_a_multi_line_subject_becomes_one_line() -> None:
    t = templates(commit_subject="deploy\n{{ changes[0].app }}\r\n  now")
    assert t.commit_message([change()]).splitlines()[0] == "deploy application-x now"


# --- trailers cannot be dropped or forged ----------------------------------------------------

FORGERIES = [
    "{{ default_body }}",  # a plain template, for comparison
    f"drop them\n\nImage-Updater-Digest: {D3}",
    f"Image-Updater-App: evil\nimage-updater-digest:{D3}\n  Image-Updater-Tag : latest",
    f"text\n\nImage-Updater-App: application-x\nImage-Updater-Digest: {D3}\n"
    "Image-Updater-Action: rollback",
    "text <!-- image-updater-held: 2026-01-01 --> more\nsee Image-Updater-Source: person",
]


@pytest.mark.parametrize("body", FORGERIES)
def test_a_template_can_neither_drop_nor_forge_the_trailers(body: str) -> None:
    t = templates(commit_subject="x", commit_body=body)
    message = t.commit_message([change()])
    ours = commit_message([change()])
    assert message.endswith("\n\n" + TRAILERS_D1)
    assert parse_trailers(message) == parse_trailers(ours)
    assert message.lower().count("image-updater-digest") == 1
    assert D3 not in message and "image-updater-held" not in message


@pytest.mark.parametrize("body", FORGERIES)
def test_a_pull_request_body_cannot_forge_the_digest_marker(body: str) -> None:
    t = templates(pull_request_body=body.replace("default_body", "env"))
    rendered = t.body(pr_context(change()))
    assert "image-updater-" not in rendered.lower()
    full = "\n".join([rendered, "", "---", trailer_block([change()]) + "\n"])
    assert full.count("Image-Updater-Digest: ") == 1


# --- errors at load, with file and line --------------------------------------------------------

def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_an_undefined_variable_in_a_template_file_is_refused_at_load(tmp_path: Path) -> None:
    body = write(tmp_path, "body.j2", "Deploy\n{% for c in changes %}\n{{ c.ticket }}\n"
                                      "{% endfor %}\n")
    config = write(tmp_path, "settings.yaml", f"templates:\n  commit_body_file: {body}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert message.startswith(f"{body}:3: templates.commit_body_file:")
    assert "ticket" in message and "changes, action, source" in message


def test_an_undefined_variable_inline_names_the_settings_line(tmp_path: Path) -> None:
    config = write(tmp_path, "settings.yaml", textwrap.dedent("""\
        interval: 60
        templates:
          pull_request_title: "{{ app }}"
          pull_request_body: |
            Hello
            {{ ticket }}
        """))
    with pytest.raises(ConfigError, match=r"settings\.yaml:6: templates\.pull_request_body "
                                          r"\(line 2 of the template\): 'ticket' is undefined"):
        load_settings(config)


def test_a_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    config = write(tmp_path, "settings.yaml",
                   'templates:\n  commit_subject: "{{ changes[0].app }"\n')
    with pytest.raises(ConfigError, match=r"settings\.yaml:2:3: templates\.commit_subject, "
                                          r"line 1 of the template: unexpected '}'"):
        load_settings(config)


@pytest.mark.parametrize("template", [
    "{{ ''.__class__.__mro__ }}",                      # the sandbox refuses internals
    "{{ changes[0].app.__init__.__globals__ }}",
])
def test_the_sandbox_refuses_python_internals_at_load(template: str) -> None:
    with pytest.raises(ConfigError, match=r"templates\.commit_body"):
        compile_templates({"commit_body": template})


def test_an_empty_subject_is_refused() -> None:
    with pytest.raises(ConfigError, match="rendered an empty line"):
        compile_templates({"commit_subject": "{{ '' }}"})


def test_inline_and_file_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="both set; keep one"):
        message_templates(Settings(templates=TemplateSettings(
            commit_body="x", commit_body_file=str(tmp_path / "b.j2"))))


def test_a_missing_template_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.j2"
    with pytest.raises(ConfigError, match=f"cannot read template file {missing}"):
        message_templates(Settings(templates=TemplateSettings(commit_body_file=str(missing))))


def test_an_unknown_template_key_is_a_settings_problem(tmp_path: Path) -> None:
    config = write(tmp_path, "settings.yaml", "templates:\n  commit_subjet: x\n")
    with pytest.raises(ConfigError, match=r"templates\.commit_subjet: unknown key \(did you "
                                          r"mean 'commit_subject'"):
        load_settings(config)


# --- validate ----------------------------------------------------------------------------------

def test_validate_refuses_an_undefined_variable_with_file_and_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = write(tmp_path, "app.yaml", POLICY)
    body = write(tmp_path, "pr.md.j2", "Ping @{{ owner }}\n")
    config = write(tmp_path, "settings.yaml", f"templates:\n  pull_request_body_file: {body}\n")
    assert main(["validate", "--config", str(config), str(policy)]) == ExitCode.CONFIG
    assert f"{body}:1: templates.pull_request_body_file: 'owner' is undefined" in \
        capsys.readouterr().out


def test_validate_shows_each_template_rendered_for_a_sample_change(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = write(tmp_path, "app.yaml", POLICY)
    config = write(tmp_path, "settings.yaml", textwrap.dedent("""\
        templates:
          commit_subject: "deploy: {{ changes[0].app }}"
          pull_request_title: "Promote {{ app }} ({{ change.tag }})"
        """))
    assert main(["validate", "--config", str(config), str(policy)]) == ExitCode.OK
    out = capsys.readouterr().out
    assert f"  | deploy: {SAMPLE_CHANGE.app}\n" in out
    assert f"  | Image-Updater-Digest: {SAMPLE_CHANGE.digest}\n" in out
    assert f"  | Promote {SAMPLE_CHANGE.app} ({SAMPLE_CHANGE.tag})\n" in out
    assert out.rstrip().endswith("1 environment(s) in " + str(policy))


def test_an_error_only_a_real_change_reaches_names_the_template_line() -> None:
    # the sample change has a tag, so this passes at load; a digest-only change has none
    t = templates(commit_body="Deploy\n{{ changes[0].tag.upper() }}")
    assert "Deploy\n1.2.3\n" in t.commit_message([change()])
    with pytest.raises(ConfigError, match=r"templates\.commit_body, line 2 of the template: "
                                          r"'None' has no attribute 'upper'"):
        t.commit_message([change(tag=None)])
