"""The policy's ``verify`` block: keys read and parsed at load, every mistake located."""

from __future__ import annotations

import concurrent.futures
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from image_updater.config.policies import load_policies
from image_updater.errors import PolicyError

APP = """\
app: shop
image: registry.example.com/team/shop
git: {{url: https://git.example.com/org/deploys.git}}
defaults:
{defaults}
environments:
  dev: {{file: shop/dev.yaml{dev}}}
  prod:
    file: shop/prod.yaml
{prod}
"""


def _pem(private: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "ci.pub").write_bytes(_pem(ec.generate_private_key(ec.SECP256R1())))
    (keys / "release.pub").write_bytes(_pem(ed25519.Ed25519PrivateKey.generate()))
    (keys / "junk.pub").write_bytes(b"-----BEGIN PUBLIC KEY-----\nnot a key\n"
                                    b"-----END PUBLIC KEY-----\n")
    return tmp_path


def _write(where: Path, *, defaults: str = "  strategy: digest", dev: str = "",
           prod: str = "") -> Path:
    file = where / "shop.yaml"
    file.write_text(APP.format(defaults=defaults, dev=dev, prod=prod))
    return file


def _problems(file: Path) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load_policies([file])
    return [str(p) for p in info.value.problems]


def test_keys_are_read_relative_to_the_policy_file_per_environment(policy_dir: Path) -> None:
    file = _write(policy_dir, prod="    verify:\n      cosign:\n        keys: [keys/ci.pub, "
                                   "keys/release.pub]\n")
    (app,) = load_policies([file])
    assert app.env("dev").verify is None
    spec = app.env("prod").verify
    assert spec is not None
    assert [k.name for k in spec.keys] == ["keys/ci.pub", "keys/release.pub"]
    assert spec.identity(app.image) == "registry.example.com/team/shop"
    assert all(k.fingerprint.startswith("sha256:") for k in spec.keys)


def test_defaults_apply_to_every_environment_and_false_turns_them_off(policy_dir: Path
                                                                      ) -> None:
    defaults = ("  verify:\n    cosign:\n      keys: keys/ci.pub\n      identity: "
                "{docker_reference: registry.example.com/signed/shop}")
    file = _write(policy_dir, defaults=defaults, dev=", verify: false")
    (app,) = load_policies([file])
    assert app.env("dev").verify is None
    prod = app.env("prod").verify
    assert prod is not None and [k.name for k in prod.keys] == ["keys/ci.pub"]
    assert prod.identity(app.image) == "registry.example.com/signed/shop"


def test_an_absolute_key_path_is_taken_as_it_is(policy_dir: Path, tmp_path: Path) -> None:
    key = policy_dir / "keys" / "ci.pub"
    file = _write(policy_dir, prod=f"    verify: {{cosign: {{keys: ['{key}']}}}}\n")
    (app,) = load_policies([file])
    assert app.env("prod").verify is not None


BAD = [
    ("    verify: {cosign: {keys: [keys/missing.pub]}}", 10,
     "cannot read the public key", "relative to this policy file"),
    ("    verify: {cosign: {keys: [keys/junk.pub]}}", 10, "keys/junk.pub", "PEM public key"),
    ("    verify: {cosign: {keys: []}}", 10, "must be a non-empty list", "e.g. keys:"),
    ("    verify: {cosign: {keys: [keys/ci.pub], idenity: {}}}", 10, "unknown key 'idenity'",
     "did you mean 'identity'"),
    ("    verify: {cosgin: {keys: [keys/ci.pub]}}", 10, "must be a mapping with 'cosign'", ""),
    ("    verify: {cosign: {keys: [keys/ci.pub], identity: {docker_refrence: r.io/a}}}", 10,
     "unknown key 'docker_refrence'", "did you mean 'docker_reference'"),
    ("    verify: yes-please", 10, "must be a mapping with 'cosign'", "e.g. verify:"),
    ("    verify: {cosign: {keys: [keys/ci.pub], identity: {docker_reference: 'r.io/a:v1'}}}",
     10, "carries a tag or digest", "name the repository only"),
]


@pytest.mark.parametrize(("prod", "line", "message", "hint"), BAD)
def test_a_bad_verify_block_is_a_located_problem(policy_dir: Path, prod: str, line: int,
                                                 message: str, hint: str) -> None:
    problems = _problems(_write(policy_dir, prod=prod + "\n"))
    located = [p for p in problems if p.startswith(f"{policy_dir / 'shop.yaml'}:{line}:")
               and "environments.prod.verify" in p and message in p and hint in p]
    assert located, problems


def _located(policy_dir: Path, key: str) -> list[str]:
    problems = _problems(_write(policy_dir, prod=f"    verify: {{cosign: {{keys: [{key}]}}}}\n"))
    return [p for p in problems if ":10:" in p and "verify.cosign.keys" in p and key in p]


def test_a_fifo_or_a_directory_named_as_a_key_is_a_problem_not_a_hang(policy_dir: Path
                                                                      ) -> None:
    os.mkfifo(policy_dir / "keys" / "fifo.pub")  # reading it would wait for a writer
    (policy_dir / "keys" / "dir.pub").mkdir()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        found = pool.submit(_located, policy_dir, "keys/fifo.pub").result(timeout=10)
    assert found and "not a regular file" in found[0], found
    found = _located(policy_dir, "keys/dir.pub")
    assert found and "not a regular file" in found[0], found


def test_a_key_file_with_two_keys_is_refused_rather_than_half_read(policy_dir: Path) -> None:
    keys = policy_dir / "keys"
    (keys / "two.pub").write_bytes((keys / "ci.pub").read_bytes()
                                   + (keys / "release.pub").read_bytes())
    found = _located(policy_dir, "keys/two.pub")
    assert found and "holds 2 PEM blocks" in found[0], found


def test_a_broken_key_in_defaults_is_reported_even_when_every_env_turns_it_off(
        policy_dir: Path) -> None:
    defaults = "  verify: {cosign: {keys: [keys/missing.pub]}}"
    problems = _problems(_write(policy_dir, defaults=defaults, dev=", verify: false",
                                prod="    verify: false\n"))
    assert any(":5:" in p and "defaults.verify.cosign.keys" in p and "missing.pub" in p
               for p in problems), problems


def test_validate_exits_1_and_names_the_key(policy_dir: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from image_updater.cli import main

    file = _write(policy_dir, prod="    verify: {cosign: {keys: [keys/junk.pub]}}\n")
    assert main(["validate", str(file)]) == 1
    assert "keys/junk.pub" in capsys.readouterr().out


def test_a_gate_on_an_ecr_image_is_refused_at_load_where_verify_is_written(
        policy_dir: Path) -> None:
    ecr = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/shop"
    text = _write(policy_dir, defaults="  verify: {cosign: {keys: [keys/ci.pub]}}",
                  dev=", verify: false").read_text()
    file = policy_dir / "shop.yaml"
    file.write_text(text.replace("registry.example.com/team/shop", ecr))
    problems = _problems(file)
    assert len(problems) == 1, problems  # prod inherits the defaults' verify; dev turns it off
    assert problems[0].startswith(f"{file}:5:") and "defaults.verify" in problems[0]
    assert "not read from ECR" in problems[0] and ecr in problems[0]
    # without a gate, the same image loads
    file.write_text(text.replace("registry.example.com/team/shop", ecr).replace(
        "  verify: {cosign: {keys: [keys/ci.pub]}}", "  strategy: digest"))
    assert load_policies([file])[0].image == ecr
