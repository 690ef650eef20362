"""The policy's ``verify`` block: which cosign keys must have signed a digest, per environment.

::

    verify:
      cosign:
        keys: [keys/ci.pub, keys/release.pub]   # PEM public keys
        identity: {docker_reference: registry.example.com/team/app}  # default: the image

``verify: false`` on an environment turns off a ``verify`` given in ``defaults``. Key paths
are relative to the directory of the policy file that names them (absolute paths are taken as
they are: the deploy kit mounts keys at ``/etc/image-updater/keys``). Every key is read and
parsed here, with the parser the gate uses: a missing, unreadable or malformed key is a
located policy problem at load and in ``validate``, never a refusal at night.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap

from image_updater.config.fields import _check_keys, _Ctx, _Layer
from image_updater.errors import ConfigError, ImageUpdaterError
from image_updater.model import CosignVerify, Environment
from image_updater.signatures import PublicKey, load_public_key

VERIFY_KEYS = ("cosign",)
COSIGN_KEYS = ("keys", "identity")
IDENTITY_KEYS = ("docker_reference",)
#: a PEM public key is well under 4 KiB (RSA 4096: 800 bytes); anything bigger is not one
MAX_KEY_BYTES = 64 * 1024
_EXAMPLE = "e.g. verify: {cosign: {keys: [keys/ci.pub]}}"


def verify_block(ctx: _Ctx, layer: _Layer) -> CosignVerify | None:
    """The environment's (or the defaults') ``verify``, or None when it requires nothing."""
    raw, parent, fld = layer.get("verify")
    if raw is None or raw is False:
        return None
    if not isinstance(raw, CommentedMap) or "cosign" not in raw:
        ctx.add(parent, "verify", fld, "must be a mapping with 'cosign' (or false to "
                "require no signature)", _EXAMPLE)
        if isinstance(raw, CommentedMap):
            _check_keys(ctx, raw, VERIFY_KEYS, fld)
        return None
    _check_keys(ctx, raw, VERIFY_KEYS, fld)
    cosign = raw["cosign"]
    where = f"{fld}.cosign"
    if not isinstance(cosign, CommentedMap):
        ctx.add(raw, "cosign", where, "must be a mapping with 'keys'", _EXAMPLE)
        return None
    _check_keys(ctx, cosign, COSIGN_KEYS, where)
    keys = _keys(ctx, cosign, where)
    reference = _identity(ctx, cosign, where)
    if not keys:
        return None
    return CosignVerify(keys=keys, docker_reference=reference)


def _keys(ctx: _Ctx, cosign: CommentedMap, where: str) -> tuple[PublicKey, ...]:
    raw = cosign.get("keys")
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw or not all(isinstance(k, str) and k for k in raw):
        ctx.add(cosign, "keys" if "keys" in cosign else None, f"{where}.keys",
                "must be a non-empty list of public key files",
                "e.g. keys: [keys/ci.pub]; paths are relative to this policy file")
        return ()
    keys = []
    for index, path in enumerate(raw):
        key = _key(ctx, path)
        if isinstance(key, str):
            ctx.add(raw, index, f"{where}.keys", key,
                    "give a PEM public key file (ECDSA P-256/P-384, Ed25519 or RSA), relative "
                    "to this policy file or absolute, e.g. /etc/image-updater/keys/ci.pub")
        else:
            keys.append(key)
    return tuple(keys) if len(keys) == len(raw) else ()


def _key(ctx: _Ctx, path: str) -> PublicKey | str:
    """The key at ``path`` (relative to the policy file), or what is wrong with it; each file
    is read once per load, however many environments name it."""
    file = (Path(ctx.file).parent / path) if not Path(path).is_absolute() else Path(path)
    cached = ctx.keys.get(str(file))
    if cached is not None:
        return cached
    found: PublicKey | str
    try:
        found = read_public_key(file, name=path)
    except ImageUpdaterError as exc:
        found = str(exc)
    ctx.keys[str(file)] = found
    return found


def read_public_key(file: Path, *, name: str) -> PublicKey:
    """The PEM public key in ``file``; ConfigError (SignatureKeyError) when it cannot be
    read or is no key the gate can verify with."""
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever
        descriptor = os.open(file, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise ConfigError(f"cannot read the public key {file}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise ConfigError(f"the public key {file} is not a regular file (a directory, "
                          "device or pipe); give the path of a PEM file")
    with os.fdopen(descriptor, "rb") as stream:
        try:
            data = stream.read(MAX_KEY_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"cannot read the public key {file}: "
                              f"{exc.strerror or exc}") from exc
    if len(data) > MAX_KEY_BYTES:
        raise ConfigError(f"{file} is larger than {MAX_KEY_BYTES} bytes, so it is no public key")
    return load_public_key(data, name=name)


def _identity(ctx: _Ctx, cosign: CommentedMap, where: str) -> str | None:
    raw: Any = cosign.get("identity")
    if raw is None:
        return None
    fld = f"{where}.identity"
    if isinstance(raw, CommentedMap):  # first, so a misspelt key gets its "did you mean"
        _check_keys(ctx, raw, IDENTITY_KEYS, fld)
    if not isinstance(raw, CommentedMap) or not isinstance(raw.get("docker_reference"), str):
        ctx.add(cosign, "identity", fld, "must be a mapping with 'docker_reference'",
                "e.g. identity: {docker_reference: registry.example.com/team/app}")
        return None
    reference = str(raw["docker_reference"])
    from image_updater.registry.reference import parse_reference

    try:
        ref = parse_reference(reference)
    except ImageUpdaterError as exc:
        ctx.add(raw, "docker_reference", f"{fld}.docker_reference", str(exc),
                "write the repository the signatures name: host/path/name")
        return None
    if ref.digest or ref.tag:
        ctx.add(raw, "docker_reference", f"{fld}.docker_reference",
                f"'{reference}' carries a tag or digest",
                "name the repository only; the digest is checked on its own")
        return None
    return reference


def refuse_unreadable_registry(ctx: _Ctx, doc: CommentedMap, image: str | None,
                               envs: list[Environment]) -> None:
    """A gate on an ECR image would refuse every digest, every cycle: the signatures cannot
    be read through the ECR API yet (docs/signatures.md). Say so at load, at the ``verify``
    that asks for it."""
    from image_updater.registry.ecr_host import parse_ecr_host
    from image_updater.registry.reference import parse_reference

    gated = [env for env in envs if env.verify is not None]
    try:
        host = parse_reference(image).registry if image and gated else ""
    except ImageUpdaterError:  # already reported against 'image'
        return
    if parse_ecr_host(host) is None:
        return
    for env in gated:
        node, fld = _verify_node(doc, env.name)
        ctx.add(node, "verify", fld,
                f"signatures cannot be verified for {image}: cosign signatures are not read "
                "from ECR yet, so every digest would be refused",
                "remove 'verify' for this app (or 'verify: false' on the environment), or "
                "keep signed images in an OCI registry whose signatures can be read")


def _verify_node(doc: CommentedMap, env: str) -> tuple[CommentedMap, str]:
    """Where ``env``'s ``verify`` is written: on the environment, or in ``defaults``."""
    node = doc.get("environments", {}).get(env)
    if isinstance(node, CommentedMap) and "verify" in node:
        return node, f"environments.{env}.verify"
    return doc.get("defaults"), "defaults.verify"
