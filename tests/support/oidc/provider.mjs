// A real OpenID provider for the dashboard's SSO tests: node-oidc-provider (certified), in memory.
//
//   OIDC_PROVIDER_MODULE  the installed package's entry (scripts/dev installs it into .cache/oidc-provider)
//   OIDC_PORT             the port to listen on, on 127.0.0.1 (the issuer is http://127.0.0.1:<port>)
//   OIDC_REDIRECT_URIS    the gateway's callback URL(s), comma-separated (registered exactly)
//   OIDC_CLIENT_SECRET    the confidential client's secret
//   OIDC_GROUPS_IN_ID_TOKEN  "1": every claim the scopes grant goes into the ID token (conformIdTokenClaims
//                         off); otherwise, as the spec has it, they come from the userinfo endpoint only
//
// Clients: "gateway" (confidential, client_secret_basic or _post) and "gateway-public" (no secret: PKCE alone).
// Accounts: any login name works (devInteractions' forms); alice is in gateway-admins, bob in gateway-viewers,
// carol in no group. Prints one JSON line {"issuer": ...} on stdout once listening.
import { createServer } from 'node:http';
import { pathToFileURL } from 'node:url';

const moduleUrl = process.env.OIDC_PROVIDER_MODULE ? pathToFileURL(process.env.OIDC_PROVIDER_MODULE).href : 'oidc-provider';
const { default: Provider } = await import(moduleUrl);

const port = Number(process.env.OIDC_PORT ?? '0');
const redirectUris = (process.env.OIDC_REDIRECT_URIS ?? '').split(',').filter(Boolean);
const secret = process.env.OIDC_CLIENT_SECRET ?? 'test-secret-0123456789abcdef0123456789';

const GROUPS = {
  alice: ['gateway-admins', 'engineering'],
  bob: ['gateway-viewers'],
  carol: [],
};

const configuration = {
  clients: [
    {
      client_id: 'gateway',
      client_secret: secret,
      redirect_uris: redirectUris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    {
      client_id: 'gateway-post',
      client_secret: secret,
      redirect_uris: redirectUris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_post',
    },
    {
      client_id: 'gateway-public',
      redirect_uris: redirectUris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    },
  ],
  pkce: { required: () => true },
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  conformIdTokenClaims: process.env.OIDC_GROUPS_IN_ID_TOKEN !== '1',
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['test-cookie-key-not-a-secret'] },
  async findAccount(ctx, id) {
    const name = String(id).toLowerCase();
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          name: name.charAt(0).toUpperCase() + name.slice(1),
          preferred_username: name,
          email: `${name}@example.com`,
          email_verified: true,
          groups: GROUPS[name] ?? [],
        };
      },
    };
  },
};

const server = createServer();
server.listen(port, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, configuration);
  // devInteractions and the missing adapter warn on every start: expected here.
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  server.on('request', provider.callback());
  console.log(JSON.stringify({ issuer }));
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
