"""Who calls the daemon's HTTP API, and what they may promote: an adapter layer.

- :mod:`.principal`: the verified caller and its grants (pure);
- :mod:`.tokens`: static bearer tokens from files, hashed in memory, compared in constant time;
- :mod:`.oidc`: Kubernetes service-account tokens verified as OIDC JWTs (PyJWT), their
  issuers' keys fetched with httpx (discovery + JWKS) or read from a file, and cached;
- :mod:`.authenticator`: one ``Authorization`` header in, a :class:`Principal` out, or a
  typed error: ``UnauthenticatedError`` (401), ``PermissionDeniedError`` (403),
  ``IdentityUnavailableError`` (503, temporary).

Use::

    auth = Authenticator(settings.api, secrets=secrets)   # reads token files now
    principal = await auth.authenticate(request.headers.get("authorization"))
    principal.require(app, env)          # PermissionDeniedError unless granted
"""

from image_updater.identity.authenticator import Authenticator, check_identities
from image_updater.identity.principal import Principal

__all__ = ["Authenticator", "Principal", "check_identities"]
