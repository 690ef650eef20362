"""Cosign key pairs and simple-signing signatures, written from the published formats.

Shared by the demo (its "CI" signs what it pushes) and the tests (tests/fixtures/cosign.py
re-exports these and adds sigstore bundles, skopeo and a referrers proxy). Nothing here
imports the code under test: signatures the verifier accepts must come from the formats'
specifications, not from the verifier's own idea of them.

- keys: ``cosign.pub`` is a PEM SubjectPublicKeyInfo; ``cosign.key`` is cosign's encrypted
  private key: PEM ``ENCRYPTED SIGSTORE PRIVATE KEY`` around JSON ``{kdf: scrypt (N=32768,
  r=8, p=1, 32-byte salt), cipher: nacl/secretbox (24-byte nonce), ciphertext}`` (all bytes
  base64) whose plaintext is the PKCS#8 DER private key (go-securesystemslib ``encrypted``).
- simple signing (cosign SIGNATURE_SPEC): the tag ``sha256-<hex>.sig`` holds an OCI manifest
  whose layers are payloads of media type ``application/vnd.dev.cosign.simplesigning.v1+json``
  with the base64 signature in the ``dev.cosignproject.cosign/signature`` annotation.

API: ``make_key_pair(dir, kind=...)`` → :class:`KeyPair`; ``sign_image(registry_url,
repository, tag_or_digest, key)`` (what ``cosign sign --key`` did before cosign 3);
``attach_simple_signature(...)`` for hand-made claims.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import nacl.secret
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from tests.fixtures.registry import OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, put_manifest, upload_blob

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIGNATURE_TYPE = "cosign container image signature"
SCRYPT = {"N": 32768, "r": 8, "p": 1}

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class KeyPair:
    """A signing key and its files: ``private_path`` in cosign's encrypted format (with
    ``password_path``), ``public_path`` as ``cosign.pub``."""

    kind: str
    private: PrivateKey
    private_path: Path
    public_path: Path
    password_path: Path

    @property
    def public_pem(self) -> bytes:
        return self.public_path.read_bytes()

    def sign(self, message: bytes) -> bytes:
        """As sigstore's signers do: ECDSA with the curve's hash (DER), Ed25519, RSA PKCS#1."""
        key = self.private
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(message)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            algorithm = hashes.SHA384() if key.curve.name == "secp384r1" else hashes.SHA256()
            return key.sign(message, ec.ECDSA(algorithm))
        return key.sign(message, padding.PKCS1v15(), hashes.SHA256())

    def sign_sha256(self, sha256: bytes) -> bytes:
        """A signature over a message given by its SHA-256 (a bundle's messageSignature)."""
        key = self.private
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(sha256, ec.ECDSA(Prehashed(hashes.SHA256())))
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(sha256, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        raise ValueError("Ed25519 cannot sign a prehashed message")


def make_key_pair(directory: Path, *, kind: str = "ecdsa-p256", name: str = "cosign",
                  password: bytes = b"test-only-password") -> KeyPair:
    """A fresh key pair written as ``<name>.key`` (encrypted), ``<name>.pub``, ``<name>.pass``."""
    directory.mkdir(parents=True, exist_ok=True)
    private = _generate(kind)
    public = private.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    paths = [directory / f"{name}.{ext}" for ext in ("key", "pub", "pass")]
    paths[0].write_bytes(encrypt_private_key(private, password))
    paths[1].write_bytes(public)
    paths[2].write_bytes(password)
    return KeyPair(kind, private, *paths)


def _generate(kind: str) -> PrivateKey:
    if kind == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ecdsa-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind.startswith("rsa-"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[4:]))
    raise ValueError(f"unknown key kind {kind}")


def encrypt_private_key(private: PrivateKey, password: bytes) -> bytes:
    """cosign's ``cosign.key``: scrypt-derived key, NaCl secretbox over PKCS#8 DER."""
    der = private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    salt, nonce = os.urandom(32), os.urandom(nacl.secret.SecretBox.NONCE_SIZE)
    box = nacl.secret.SecretBox(_scrypt(password, salt))
    document = {
        "kdf": {"name": "scrypt", "params": SCRYPT, "salt": _b64(salt)},
        "cipher": {"name": "nacl/secretbox", "nonce": _b64(nonce)},
        "ciphertext": _b64(box.encrypt(der, nonce).ciphertext),
    }
    body = base64.encodebytes(json.dumps(document).encode()).decode()
    return (f"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n{body}"
            "-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n").encode()


def decrypt_private_key(pem: bytes, password: bytes) -> bytes:
    """The PKCS#8 DER inside a ``cosign.key`` (to prove the format round-trips)."""
    lines = pem.decode().strip().splitlines()
    document = json.loads(base64.b64decode("".join(lines[1:-1])))
    box = nacl.secret.SecretBox(_scrypt(password, base64.b64decode(document["kdf"]["salt"])))
    return box.decrypt(base64.b64decode(document["ciphertext"]),
                       base64.b64decode(document["cipher"]["nonce"]))


def _scrypt(password: bytes, salt: bytes) -> bytes:
    return hashlib.scrypt(password, salt=salt, n=SCRYPT["N"], r=SCRYPT["r"], p=SCRYPT["p"],
                          dklen=32, maxmem=64 * 1024 * 1024)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- simple signing -------------------------------------------------------------------------


def simple_signing_payload(docker_reference: str, digest: str, *,
                           kind: str = SIGNATURE_TYPE) -> bytes:
    return json.dumps({"critical": {"identity": {"docker-reference": docker_reference},
                                    "image": {"docker-manifest-digest": digest},
                                    "type": kind},
                       "optional": None}).encode()


def resolve(registry_url: str, repository: str, reference: str) -> str:
    """The digest behind a tag (or the digest itself)."""
    if reference.startswith("sha256:"):
        return reference
    response = httpx.head(f"{registry_url}/v2/{repository}/manifests/{reference}",
                          headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"})
    response.raise_for_status()
    return response.headers["Docker-Content-Digest"]


def sign_image(registry_url: str, repository: str, reference: str, key: KeyPair, *,
               docker_reference: str | None = None) -> str:
    """Sign ``repository:reference`` as ``cosign sign --key`` did before cosign 3 (the claim
    names ``host/repository``); returns the signed digest."""
    digest = resolve(registry_url, repository, reference)
    host = urlsplit(registry_url).netloc
    attach_simple_signature(registry_url, repository, digest, key,
                            payload=simple_signing_payload(
                                docker_reference or f"{host}/{repository}", digest))
    return digest


def attach_simple_signature(registry_url: str, repository: str, digest: str, key: KeyPair | None,
                            *, payload: bytes, signature: str | None = None) -> str:
    """Add one layer to ``sha256-<hex>.sig`` (creating it); ``signature`` overrides the key's
    (for malformed cases). Returns the new signature manifest's digest."""
    with httpx.Client(timeout=10) as client:
        sig_tag = digest.replace(":", "-", 1) + ".sig"
        layers = _existing_layers(client, registry_url, repository, sig_tag)
        blob = upload_blob(client, registry_url, repository, payload)
        annotation = signature if signature is not None else _b64(key.sign(payload))  # type: ignore[union-attr]
        layers.append({"mediaType": SIMPLE_SIGNING, "digest": blob, "size": len(payload),
                       "annotations": {SIGNATURE_ANNOTATION: annotation}})
        return put_signature_manifest(client, registry_url, repository, sig_tag, layers)


def put_signature_manifest(client: httpx.Client, registry_url: str, repository: str,
                           tag: str, layers: list[dict[str, object]]) -> str:
    config = json.dumps({"architecture": "", "os": "", "config": {},
                         "rootfs": {"type": "layers",
                                    "diff_ids": [x["digest"] for x in layers]}}).encode()
    config_digest = upload_blob(client, registry_url, repository, config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": OCI_CONFIG, "digest": config_digest,
                                      "size": len(config)},
                           "layers": layers}).encode()
    return put_manifest(client, registry_url, repository, tag, manifest, OCI_MANIFEST)


def _existing_layers(client: httpx.Client, registry_url: str, repository: str,
                     tag: str) -> list[dict[str, object]]:
    response = client.get(f"{registry_url}/v2/{repository}/manifests/{tag}",
                          headers={"Accept": OCI_MANIFEST})
    return list(response.json()["layers"]) if response.status_code == 200 else []
