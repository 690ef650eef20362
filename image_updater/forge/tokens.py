"""Where a forge token comes from: an environment variable or a file, read fresh each time."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from image_updater.errors import ConfigError
from image_updater.forge.base import ForgeOptions
from image_updater.secrets import SecretRegistry, read_secret_env, read_secret_file


class TokenSource(Protocol):
    def token(self) -> str:
        """The current token; read fresh so rotated secrets are picked up."""
        ...

    def describe(self) -> str:
        """Where the token comes from, for messages (never the token itself)."""
        ...


def check_token(value: str, where: str) -> str:
    """``value`` if it can go into a header; ConfigError naming ``where`` (never the value).

    Files and variables are read (and their trailing line endings stripped) by
    ``image_updater.secrets``; a space or line break left inside is a mistake in the secret.
    """
    if not value:
        raise ConfigError(f"the forge token from {where} is empty; put an access token there.")
    if not re.fullmatch(r"[\x21-\x7e]+", value):
        raise ConfigError(
            f"the forge token from {where} contains spaces, line breaks or non-ASCII "
            "characters; store only the token itself."
        )
    return value


@dataclass(frozen=True)
class EnvToken:
    name: str
    secrets: SecretRegistry = field(compare=False, repr=False)
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    setting: str = "token_env"

    def token(self) -> str:
        value = read_secret_env(self.name, setting=self.setting, secrets=self.secrets,
                                environ=self.environ)
        return check_token(value, self.describe())

    def describe(self) -> str:
        return f"environment variable {self.name}"


@dataclass(frozen=True)
class FileToken:
    path: str
    secrets: SecretRegistry = field(compare=False, repr=False)
    setting: str = "token_file"

    def token(self) -> str:
        value = read_secret_file(self.path, setting=self.setting, secrets=self.secrets)
        return check_token(value, self.describe())

    def describe(self) -> str:
        return f"file {self.path}"


def token_source(
    options: ForgeOptions, *, secrets: SecretRegistry, environ: Mapping[str, str] | None = None
) -> TokenSource:
    """The env-var or file token source that ``options`` names; tokens read are added to
    ``secrets``."""
    setting = f"forges[{options.repository}]"
    if options.token_env is not None:
        return EnvToken(options.token_env, secrets, os.environ if environ is None else environ,
                        setting=f"{setting}.token_env")
    if options.token_file is not None:
        return FileToken(options.token_file, secrets, setting=f"{setting}.token_file")
    raise ConfigError(
        f"forge settings for {options.repository} name no token_env or token_file; set one."
    )
