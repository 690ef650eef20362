"""The verdict for one digest: any valid signature by a listed key with the right claims
makes it eligible; otherwise the most specific reason found explains the refusal."""

from __future__ import annotations

from collections.abc import Sequence

from image_updater.signatures.bundle import check_bundle
from image_updater.signatures.keys import PublicKey
from image_updater.signatures.model import (
    Finding,
    Reason,
    SignatureArtifacts,
    SignatureVerdict,
)
from image_updater.signatures.simple import check_simple

#: Most specific first: a signature by our key that claims something else says more than an
#: unreadable artefact, which says more than a stranger's signature, which says more than none.
_SPECIFICITY = (Reason.WRONG_DIGEST, Reason.WRONG_IDENTITY, Reason.TAMPERED, Reason.MALFORMED,
                Reason.WRONG_KEY, Reason.UNSIGNED)

_ADVICE = {
    Reason.UNSIGNED: "sign it with 'cosign sign --key' before it can reach this environment",
    Reason.WRONG_KEY: "sign it with one of the listed keys, or list the signer's public key if "
                      "it is trusted",
    Reason.WRONG_DIGEST: "the signature belongs to another image: sign this digest itself",
    Reason.WRONG_IDENTITY: "sign the image under the repository the policy expects, or set the "
                           "expected docker reference if it is promoted from another repository",
    Reason.TAMPERED: "the registry's content changed after it was written: do not deploy this "
                     "digest, find out who altered it, then re-sign",
    Reason.MALFORMED: "re-sign the image with cosign or skopeo; a hand-made or truncated "
                      "signature cannot be checked",
}


def verify_signatures(artifacts: SignatureArtifacts, *, digest: str, docker_reference: str,
                      keys: Sequence[PublicKey]) -> SignatureVerdict:
    """Pure: ``ok`` if any of ``keys`` made a valid signature over exactly ``digest`` whose
    claims name ``docker_reference`` (compared by repository: tags are ignored)."""
    if artifacts.digest and artifacts.digest != digest:
        # A programming error, not a verdict: artefacts of one digest never vouch for another.
        raise ValueError(f"signature artefacts of {artifacts.digest} given to verify {digest}")
    findings = _findings(artifacts, digest, docker_reference, keys)
    accepted = next((f for f in findings if f.reason is None), None)
    image = f"{artifacts.image}@{digest}"
    if accepted is not None:
        return SignatureVerdict(ok=True, key=accepted.key, format=accepted.format, reason=None,
                                message=f"Image {image} {accepted.detail}.")
    if not findings:
        return SignatureVerdict(
            ok=False, key=None, format=None, reason=Reason.UNSIGNED,
            message=f"Image {image} has no cosign signature (no {artifacts.image}:"
                    f"{_sig_tag(digest)} and no sigstore bundle referrer); "
                    f"{_ADVICE[Reason.UNSIGNED]}.")
    worst = min(findings, key=lambda f: _SPECIFICITY.index(f.reason))
    reason = worst.reason
    assert reason is not None
    others = f" ({len(findings)} signatures and artefacts checked)" if len(findings) > 1 else ""
    names = ", ".join(k.name for k in keys) or "none"
    return SignatureVerdict(
        ok=False, key=worst.key, format=worst.format, reason=reason,
        message=f"Image {image} {worst.detail}{others}; keys: {names}; {_ADVICE[reason]}.")


def _findings(artifacts: SignatureArtifacts, digest: str, docker_reference: str,
              keys: Sequence[PublicKey]) -> list[Finding]:
    found = [Finding(p.format, p.where, p.reason, f"has {p.message}") for p in artifacts.problems]
    found += [check_simple(s, digest=digest, docker_reference=docker_reference, keys=keys)
              for s in artifacts.simple_signing]
    found += [check_bundle(b, digest=digest, docker_reference=docker_reference, keys=keys)
              for b in artifacts.bundles]
    return found


def _sig_tag(digest: str) -> str:
    return digest.replace(":", "-", 1) + ".sig"
