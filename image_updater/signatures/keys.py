"""Public keys that signatures are checked against: loaded once, verified many times.

A key file is configuration: anything unreadable, malformed or of an unsupported kind is a
:class:`SignatureKeyError` (a :class:`~image_updater.errors.ConfigError`) that names the file.
Signatures come from a registry and are untrusted: :meth:`PublicKey.verify` answers a plain
``False`` for every bad signature, never raises.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from image_updater.errors import ConfigError

#: What cosign and containers/image sign with. RSA below 2048 bits is refused as too weak.
SUPPORTED = "ECDSA P-256/P-384, Ed25519 or RSA (2048 bits or more)"
#: The hashes an ECDSA signature may use, per curve: sigstore's default for P-384 is SHA-384,
#: while older cosign releases signed with SHA-256 whatever the curve.
_CURVE_HASHES: dict[str, tuple[type[hashes.HashAlgorithm], ...]] = {
    "secp256r1": (hashes.SHA256,), "secp384r1": (hashes.SHA384, hashes.SHA256),
}
_MIN_RSA_BITS = 2048

VerifyingKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey


class SignatureKeyError(ConfigError):
    """A configured public key cannot be used: unreadable, malformed or unsupported."""

    reason = "signature_key"


@dataclass(frozen=True)
class PublicKey:
    """One verification key. ``name`` is the path as configured (for messages);
    ``fingerprint`` is ``sha256:<hex>`` of the DER SubjectPublicKeyInfo, stable across PEM
    formatting, so results can be cached by key set."""

    name: str
    fingerprint: str
    kind: str  # "ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-3072", ...
    key: VerifyingKey = field(repr=False, compare=False)

    def verify(self, signature: bytes, message: bytes) -> bool:
        """True when ``signature`` is this key's signature over ``message``.

        ECDSA uses the curve's hash (SHA-256 for P-256, as cosign does); RSA is tried with
        PKCS#1 v1.5 and PSS, both of which sigstore's signers produce.
        """
        try:
            self._verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True

    def verify_prehashed(self, signature: bytes, sha256: bytes) -> bool:
        """True when ``signature`` signs a message whose SHA-256 is ``sha256``.

        Ed25519 signs whole messages, never hashes, so it cannot verify a bare digest.
        """
        if isinstance(self.key, ed25519.Ed25519PublicKey) or len(sha256) != 32:
            return False
        algorithm = Prehashed(hashes.SHA256())
        try:
            if isinstance(self.key, ec.EllipticCurvePublicKey):
                self.key.verify(signature, sha256, ec.ECDSA(algorithm))
            else:
                _verify_rsa(self.key, signature, sha256, algorithm)
        except (InvalidSignature, ValueError):
            return False
        return True

    def _verify(self, signature: bytes, message: bytes) -> None:
        if isinstance(self.key, ed25519.Ed25519PublicKey):
            self.key.verify(signature, message)
        elif isinstance(self.key, ec.EllipticCurvePublicKey):
            *first, last = _CURVE_HASHES[self.key.curve.name]
            for algorithm in first:
                try:
                    self.key.verify(signature, message, ec.ECDSA(algorithm()))
                    return
                except InvalidSignature:
                    continue
            self.key.verify(signature, message, ec.ECDSA(last()))
        else:
            _verify_rsa(self.key, signature, message, hashes.SHA256())


def _verify_rsa(key: rsa.RSAPublicKey, signature: bytes, message: bytes,
                algorithm: hashes.HashAlgorithm | Prehashed) -> None:
    try:
        key.verify(signature, message, padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
        key.verify(signature, message, pss, algorithm)


def load_public_key(data: bytes, *, name: str) -> PublicKey:
    """Parse one PEM public key (``-----BEGIN PUBLIC KEY-----``, as ``cosign generate-key-pair``
    writes ``cosign.pub``); ``name`` is the configured path, quoted in every error."""
    if b"PRIVATE KEY" in data:
        raise SignatureKeyError(
            f"Key file {name} holds a private key; list the public key (cosign.pub) instead "
            "and keep the private key out of the configuration.")
    if b"-----BEGIN CERTIFICATE" in data:
        raise SignatureKeyError(
            f"Key file {name} holds a certificate, not a public key (certificate identities "
            "are not verified); list the signer's public key, e.g. the output of 'openssl "
            "x509 -pubkey -noout' if that key is the one that signs.")
    if (blocks := data.count(b"-----BEGIN ")) > 1:
        # load_pem_public_key reads the first block and ignores the rest without a word
        raise SignatureKeyError(
            f"Key file {name} holds {blocks} PEM blocks; put each public key in a file of "
            "its own and list every file under keys.")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise SignatureKeyError(
            f"Key file {name} is not a PEM public key ('-----BEGIN PUBLIC KEY-----'); "
            f"export it with 'cosign public-key' or 'openssl pkey -pubout'.") from exc
    kind = _kind(key, name)
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return PublicKey(name=name, fingerprint="sha256:" + hashlib.sha256(der).hexdigest(),
                     kind=kind, key=key)  # type: ignore[arg-type]  # narrowed by _kind


def _kind(key: object, name: str) -> str:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _CURVE_HASHES:
        return "ecdsa-p" + key.curve.name[4:7]
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= _MIN_RSA_BITS:
        return f"rsa-{key.key_size}"
    described = (f"an EC key on curve {key.curve.name}"
                 if isinstance(key, ec.EllipticCurvePublicKey)
                 else f"a {key.key_size}-bit RSA key" if isinstance(key, rsa.RSAPublicKey)
                 else f"a key of type {type(key).__name__.removeprefix('_')}")
    raise SignatureKeyError(f"Key file {name} holds {described}; signature keys must be "
                            f"{SUPPORTED}. Generate one with 'cosign generate-key-pair'.")
