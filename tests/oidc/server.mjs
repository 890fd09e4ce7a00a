// A real OpenID Connect provider (node-oidc-provider) for Portcullis end-to-end tests.
//
// Issues JWT access tokens through the client_credentials grant, the way a CI system or a
// service principal gets a token for the gateway:
//   client `ci-job` / `ci-secret`   -> aud = $AUDIENCE (default api://portcullis),
//                                      groups ["ci","deployers"], repository claim
//   client `other-aud` / `secret`   -> aud = api://other (a token the gateway must refuse)
//
// Env: PORT (required), AUDIENCE (optional). Issuer: http://127.0.0.1:$PORT
// Started and stopped by tests/scripts/oidc.sh.
import { generateKeyPairSync, randomUUID } from 'node:crypto';

import Provider, { errors } from 'oidc-provider';

const port = Number(process.env.PORT);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('PORT must be set to a TCP port');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
const audience = process.env.AUDIENCE || 'api://portcullis';
const otherAudience = 'api://other';

// A fresh signing key per run: tests must fetch it through discovery + JWKS.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingJwk = {
  ...privateKey.export({ format: 'jwk' }),
  kid: `test-${randomUUID()}`,
  alg: 'RS256',
  use: 'sig',
};

// Which audience each client may ask for; anything else is an invalid_target error.
const audienceOf = { 'ci-job': audience, 'other-aud': otherAudience };

const provider = new Provider(issuer, {
  jwks: { keys: [signingJwk] },
  ttl: { ClientCredentials: 600 },
  clients: [
    {
      client_id: 'ci-job',
      client_secret: 'ci-secret',
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
    },
    {
      client_id: 'other-aud',
      client_secret: 'secret',
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
    },
  ],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // A client that names no resource gets its own audience.
      defaultResource: async (_ctx, client, oneOf) => oneOf || audienceOf[client?.clientId],
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resource, client) => {
        if (audienceOf[client?.clientId] !== resource) {
          throw new errors.InvalidTarget();
        }
        return {
          audience: resource,
          scope: '',
          accessTokenTTL: 600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  extraTokenClaims: async (_ctx, token) => {
    if (token.clientId === 'ci-job') {
      return { groups: ['ci', 'deployers'], repository: 'portcullis-gateway/portcullis' };
    }
    return undefined;
  },
});

provider.on('server_error', (_ctx, err) => console.error('server_error', err));

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc provider listening, issuer ${issuer}, audience ${audience}`);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => server.close(() => process.exit(0)));
}
