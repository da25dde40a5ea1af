"""Verifying bearer tokens from an external OIDC issuer (Azure AD B2C, Entra External ID …).

Discovery and JWKS are fetched with httpx and cached; a token signed with a key we
have not seen triggers one JWKS refetch (at most every MIN_REFETCH seconds, so a
stream of forged kids cannot turn us into a JWKS hammer).

Claim shapes handled:
- Azure AD B2C (ver 1.0): `oid` (also in `sub`), `emails` (a list), `tfp` or `acr`
  naming the user flow / policy, `iss` = https://<tenant>.b2clogin.com/<tenant id>/v2.0/
- Entra External ID / Entra ID (ver 2.0): `oid`, `tid`, `email` (configure it as an
  optional claim; `preferred_username` is not trusted for access decisions)
- plain OIDC (Keycloak …): `sub`, `email`
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from alai.server.settings import Settings, comma_list

JWKS_TTL = 3600.0
# A kid we have not seen triggers one refetch, at most this often, and a kid that was
# still unknown after a refetch is not asked about again for UNKNOWN_KID_TTL.
MIN_REFETCH = 1.0
UNKNOWN_KID_TTL = 300.0
LEEWAY_SECONDS = 60


class ExternalTokenInvalid(Exception):
    """The token is not valid for us (401)."""


class ExternalSignInRefused(Exception):
    """A valid token of someone who may not sign in (403)."""


class ExternalIssuerUnavailable(Exception):
    """Discovery or JWKS could not be fetched (503)."""


@dataclass(frozen=True)
class ExternalIdentity:
    issuer: str
    subject: str
    email: str | None
    name: str | None
    admin: bool


class ExternalVerifier:
    def __init__(self, settings: Settings, *, http: httpx.AsyncClient | None = None) -> None:
        assert settings.oidc_authority
        self.settings = settings
        self.discovery_url = settings.oidc_authority.rstrip("/") + "/.well-known/openid-configuration"
        self.algorithms = [alg.strip() for alg in settings.oidc_algorithms.split(",") if alg.strip()]
        if any(alg.lower() == "none" or alg.upper().startswith("HS") for alg in self.algorithms):
            raise ValueError("ALAI_OIDC_ALGORITHMS may list only asymmetric algorithms (RS256, ES256, PS256 …)")
        self.allowed_emails = set(comma_list(settings.oidc_allowed_emails))
        self.allowed_domains = {d.lstrip("@") for d in comma_list(settings.oidc_allowed_domains)}
        self.admin_emails = set(comma_list(settings.oidc_admin_emails))
        self._http = http or httpx.AsyncClient(timeout=10.0)
        self._discovery: dict[str, Any] | None = None
        self._keys: dict[str, Any] = {}
        self._keys_fetched_at = 0.0
        self._unknown_kids: dict[str, float] = {}
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        await self._http.aclose()

    @property
    def expected_issuer(self) -> str | None:
        if self.settings.oidc_issuer:
            return self.settings.oidc_issuer
        return self._discovery.get("issuer") if self._discovery else None

    async def discovery(self) -> dict[str, Any]:
        if self._discovery is None:
            self._discovery = await self._get_json(self.discovery_url, "discovery document")
        return self._discovery

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            response = await self._http.get(url)
            response.raise_for_status()
            data = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise ExternalIssuerUnavailable(f"could not fetch the identity provider's {what} from {url}: {error}") from None
        if not isinstance(data, dict):
            raise ExternalIssuerUnavailable(f"the identity provider's {what} at {url} is not a JSON object")
        return data

    async def _refresh_keys(self) -> None:
        document = await self.discovery()
        jwks = await self._get_json(document["jwks_uri"], "JWKS")
        keys = {}
        for jwk in jwks.get("keys", []):
            kid = jwk.get("kid")
            if not kid:
                continue
            try:
                keys[kid] = jwt.PyJWK.from_dict(jwk)
            except (jwt.PyJWKError, jwt.InvalidKeyError):
                continue  # a key type we cannot use; the others still work
        self._keys = keys
        self._keys_fetched_at = time.monotonic()

    async def _key_for(self, kid: str) -> Any:
        now = time.monotonic()
        if kid in self._keys and now - self._keys_fetched_at < JWKS_TTL:
            return self._keys[kid]
        async with self._lock:
            age = time.monotonic() - self._keys_fetched_at
            known_bad = time.monotonic() - self._unknown_kids.get(kid, -UNKNOWN_KID_TTL) < UNKNOWN_KID_TTL
            if age >= JWKS_TTL or (kid not in self._keys and age >= MIN_REFETCH and not known_bad):
                await self._refresh_keys()
                if kid not in self._keys:
                    if len(self._unknown_kids) > 1000:
                        self._unknown_kids.clear()
                    self._unknown_kids[kid] = time.monotonic()
        if kid not in self._keys:
            raise ExternalTokenInvalid("token signed with an unknown key")
        return self._keys[kid]

    async def verify(self, token: str) -> ExternalIdentity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as error:
            raise ExternalTokenInvalid(f"malformed token: {error}") from None
        if header.get("alg") not in self.algorithms:
            raise ExternalTokenInvalid(f"token algorithm {header.get('alg')!r} is not accepted")
        await self.discovery()
        key = await self._key_for(str(header.get("kid") or ""))
        try:
            claims = jwt.decode(
                token, key, algorithms=self.algorithms, audience=self.settings.oidc_audience,
                issuer=self.expected_issuer, leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.InvalidTokenError as error:
            raise ExternalTokenInvalid(str(error)) from None
        policy = self.settings.oidc_b2c_policy
        if policy:
            presented = claims.get("tfp") or claims.get("acr")
            if not isinstance(presented, str) or presented.lower() != policy.lower():
                raise ExternalTokenInvalid(f"token is not from the user flow {policy}")
        subject = claims.get("oid") or claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise ExternalTokenInvalid("token names no subject (oid/sub)")
        email = _email_of(claims)
        self._check_allowed(email)
        return ExternalIdentity(
            issuer=str(claims["iss"]), subject=subject, email=email,
            name=claims.get("name") if isinstance(claims.get("name"), str) else None,
            admin=email is not None and email in self.admin_emails,
        )

    def _check_allowed(self, email: str | None) -> None:
        if not self.allowed_emails and not self.allowed_domains:
            raise ExternalSignInRefused(
                "sign-in through the external identity provider is not open to anyone yet: the operator must set "
                "ALAI_OIDC_ALLOWED_EMAILS or ALAI_OIDC_ALLOWED_DOMAINS"
            )
        if email is None:
            raise ExternalSignInRefused("the identity provider sent no email address, so access cannot be checked")
        domain = email.rpartition("@")[2]
        if email not in self.allowed_emails and domain not in self.allowed_domains:
            raise ExternalSignInRefused(f"{email} is not allowed to use this control plane; ask its operator")


def _email_of(claims: dict[str, Any]) -> str | None:
    emails = claims.get("emails")
    if isinstance(emails, list) and emails and isinstance(emails[0], str):
        return emails[0].lower()
    # Only claims that carry an address the provider vouches for: preferred_username
    # and upn can be set to anything in some tenants, so they never decide access.
    value = claims.get("email")
    if isinstance(value, str) and "@" in value:
        return value.lower()
    return None
