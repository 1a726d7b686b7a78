"""Access tokens: JWTs (joserfc, HS256 with the secret key), short-lived."""

from __future__ import annotations

import time
from dataclasses import dataclass

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

ALGORITHM = "HS256"


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: int
    workspace_id: int
    role: str
    # The sign-in (refresh-token family) the token was issued for: live connections re-check it.
    session_id: str | None = None
    expires_at: int | None = None  # set by verify(): the token's `exp`


class TokenError(Exception):
    pass


class TokenCodec:
    def __init__(self, secret: str, ttl_s: int) -> None:
        self._key = OctKey.import_key(secret.encode())
        self.ttl_s = ttl_s
        self._registry = jwt.JWTClaimsRegistry(
            exp={"essential": True}, sub={"essential": True}, typ={"essential": True, "value": "access"}
        )

    def issue(self, claims: AccessClaims, *, now: float | None = None) -> str:
        iat = int(time.time() if now is None else now)
        payload = {
            "sub": str(claims.user_id),
            "ws": claims.workspace_id,
            "role": claims.role,
            "typ": "access",
            "iat": iat,
            "exp": iat + self.ttl_s,
        }
        if claims.session_id is not None:
            payload["sid"] = claims.session_id
        return jwt.encode({"alg": ALGORITHM}, payload, self._key)

    def verify(self, token: str) -> AccessClaims:
        try:
            decoded = jwt.decode(token, self._key, algorithms=[ALGORITHM])
            self._registry.validate(decoded.claims)
            c = decoded.claims
            sid = c.get("sid")
            return AccessClaims(
                user_id=int(c["sub"]),
                workspace_id=int(c["ws"]),
                role=str(c["role"]),
                session_id=str(sid) if sid is not None else None,
                expires_at=int(c["exp"]),
            )
        except (JoseError, ValueError, KeyError, TypeError) as exc:
            raise TokenError(str(exc) or exc.__class__.__name__) from None
