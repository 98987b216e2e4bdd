// The signed-in operator: a bearer token kept in sessionStorage (gone when the tab closes), and
// what its payload says about roles and tenant. The payload is decoded for display only — the
// console hides what the API would refuse, but the API is the authority and checks every call.

const KEY = 'tenant-console.token';

/** A `#token=…` link (printed by scripts/dev) signs in once; the token leaves the URL at once. */
export function takeTokenFromUrl() {
  const match = location.hash.match(/^#token=([^&]+)/);
  if (!match) return;
  sessionStorage.setItem(KEY, decodeURIComponent(match[1]));
  history.replaceState(null, '', `${location.pathname}${location.search}#/tenants`);
}

export function signIn(token) {
  sessionStorage.setItem(KEY, token.trim());
}

export function signOut() {
  sessionStorage.removeItem(KEY);
}

export function token() {
  return sessionStorage.getItem(KEY);
}

/** The JWT's claims, or null when it is not a JWT. */
export function decode(jwt) {
  const parts = (jwt || '').split('.');
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(b64.padEnd(b64.length + ((4 - (b64.length % 4)) % 4), '=')), (c) =>
      c.charCodeAt(0),
    );
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === 'object' ? claims : null;
  } catch {
    return null;
  }
}

/** The current session, or null when signed out or the token has expired. */
export function session() {
  const jwt = token();
  const claims = decode(jwt);
  if (!claims) return null;
  if (typeof claims.exp === 'number' && claims.exp * 1000 <= Date.now()) return null;
  const roles = Array.isArray(claims.roles) ? claims.roles : [];
  const platform = roles.includes('platform_admin');
  return {
    token: jwt,
    subject: String(claims.sub ?? ''),
    tenantId: claims.tenant_id ?? null,
    roles,
    platform,
    tenantAdmin: !platform && roles.includes('tenant_admin'),
    expires: typeof claims.exp === 'number' ? new Date(claims.exp * 1000) : null,
  };
}

// What each console action needs, mirroring the API's gate (api/src/http/access.rs):
// platform-wide moves are for platform admins; a tenant admin may change its own tenant's plan
// and read its audit log; members only read.
const NEEDS = {
  'tenant.create': 'platform',
  'tenant.suspend': 'platform',
  'tenant.reactivate': 'platform',
  'tenant.delete': 'platform',
  'tenant.restore': 'platform',
  'service.view': 'platform',
  'plan.change': 'admin',
  'audit.read': 'admin',
};

/** Whether the session may do `action` (on its own tenant, for tenant users). */
export function can(s, action) {
  if (!s) return false;
  const need = NEEDS[action];
  if (!need) return true;
  if (s.platform) return true;
  return need === 'admin' && s.tenantAdmin;
}
