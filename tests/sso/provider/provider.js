// A real OpenID Connect provider for tests/sso: oidc-provider (a certified implementation) with
// its development login and consent pages, one confidential test client that must use PKCE, and
// the users of a JSON state file that the tests rewrite between steps.
//
//   PORT=... REDIRECT_URIS=http://127.0.0.1:8000/sso/callback STATE_FILE=/tmp/idp.json node provider.js
//
// The state file: {"users": {"<login>": {claims}}, "mischief": null | "tamper" | "wrong_nonce" |
// "wrong_aud" | "expired"}. Users and mischief are read at every request, so a test can move a user
// out of a group, or make the token endpoint answer a bad ID token, without a restart. Every start
// makes a new signing key with a new `kid`: restarting on the same port rotates the keys.
import { readFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';

import Provider from 'oidc-provider';
import { exportJWK, generateKeyPair, importJWK, SignJWT, decodeJwt } from 'jose';

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const redirectUris = (process.env.REDIRECT_URIS || '').split(',').filter(Boolean);
const stateFile = process.env.STATE_FILE;

const state = () => JSON.parse(readFileSync(stateFile, 'utf8'));

const { privateKey } = await generateKeyPair('RS256', { extractable: true });
const signingJwk = { ...(await exportJWK(privateKey)), kid: randomUUID(), alg: 'RS256', use: 'sig' };

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'switchboard',
    client_secret: 'switchboard-test-secret',
    redirect_uris: redirectUris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
  }],
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  // Scope claims in the ID token itself (not only at userinfo): Switchboard reads the ID token.
  conformIdTokenClaims: false,
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'groups'],
  },
  jwks: { keys: [signingJwk] },
  cookies: { keys: ['switchboard-test-cookie-key'] },
  async findAccount(_ctx, id) {
    const user = state().users[id];
    if (!user) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...state().users[id] }; } };
  },
});

// A provider that misbehaves on purpose: the token endpoint's ID token is replaced by one that
// must be refused (a changed payload under the old signature, or validly signed wrong claims).
provider.use(async (ctx, next) => {
  await next();
  const mischief = state().mischief;
  if (!mischief || ctx.path !== '/token' || !ctx.body || !ctx.body.id_token) return;
  const token = ctx.body.id_token;
  if (mischief === 'tamper') {
    const [header, , signature] = token.split('.');
    const claims = { ...decodeJwt(token), email: 'mallory@acme.test' };
    ctx.body.id_token = [header, Buffer.from(JSON.stringify(claims)).toString('base64url'), signature].join('.');
    return;
  }
  const claims = decodeJwt(token);
  const now = Math.floor(Date.now() / 1000);
  if (mischief === 'wrong_nonce') claims.nonce = 'not-the-nonce-you-sent';
  if (mischief === 'wrong_aud') { claims.aud = 'another-client'; if (claims.azp) claims.azp = 'another-client'; }
  if (mischief === 'expired') { claims.iat = now - 7200; claims.exp = now - 3600; }
  const key = await importJWK(signingJwk, 'RS256');
  ctx.body.id_token = await new SignJWT(claims)
    .setProtectedHeader({ alg: 'RS256', kid: signingJwk.kid, typ: 'JWT' })
    .sign(key);
});

provider.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening ${issuer} kid=${signingJwk.kid}\n`);
});
