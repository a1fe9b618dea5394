/**
 * A TokenCredential (the @azure/core-auth interface, implemented structurally)
 * for Microsoft Entra ID's OAuth 2.0 client-credentials flow:
 *
 * - a client secret (an app registration's secret), or
 * - a client assertion read from a file on every token request (AKS workload
 *   identity projects a federated token at AZURE_FEDERATED_TOKEN_FILE and
 *   rotates it; reading it each time picks up the rotation).
 *
 * The tenant comes from the Key Vault challenge when it names one (a
 * customer's vault lives in the customer's tenant, where the platform's
 * multi-tenant app was consented) and is allowed; otherwise the configured
 * tenant. Tokens are cached per tenant and scope until five minutes before
 * they expire, and concurrent requests share one token request.
 *
 * Failures are `EntraTokenError`s classed "unavailable" (no answer, 5xx,
 * 429) or "permission-denied" (the identity platform refused us).
 */
import { readFile } from "node:fs/promises";
import type { Agent } from "node:https";
import { request } from "node:https";

/** The @azure/core-auth AccessToken shape. */
export interface EntraAccessToken {
  token: string;
  expiresOnTimestamp: number;
  refreshAfterTimestamp?: number;
  tokenType?: "Bearer" | "pop";
}

/** The @azure/core-auth GetTokenOptions fields this credential reads. */
export interface EntraGetTokenOptions {
  tenantId?: string;
}

export interface EntraCredentialOptions {
  /** The app's home tenant (a GUID or domain). */
  readonly tenantId: string;
  readonly clientId: string;
  /** Exactly one of clientSecret and federatedTokenFile. */
  readonly clientSecret?: string;
  readonly federatedTokenFile?: string;
  /** Default https://login.microsoftonline.com (sovereign clouds have their own). */
  readonly authorityHost?: string;
  /**
   * Tenants a challenge may send us to besides our own (BYOK: customers'
   * tenants that consented to the app); "*" allows any. Default none.
   */
  readonly additionallyAllowedTenants?: readonly string[];
  /** Node-only: the HTTPS agent (tests use one that trusts a local CA). */
  readonly agent?: Agent;
  /** Per token request. Default 10 s. */
  readonly timeoutMs?: number;
  readonly now?: () => number;
}

export class EntraTokenError extends Error {
  override readonly name = "EntraTokenError";
  constructor(
    readonly failure: "unavailable" | "permission-denied",
    message: string,
    options: { readonly cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
  }
}

export interface EntraCredential {
  getToken(scopes: string | string[], options?: EntraGetTokenOptions): Promise<EntraAccessToken | null>;
}

const REFRESH_MARGIN_MS = 5 * 60 * 1000;
const CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

export function createEntraCredential(options: EntraCredentialOptions): EntraCredential {
  if ((options.clientSecret === undefined) === (options.federatedTokenFile === undefined)) {
    throw new TypeError("Entra credential: set exactly one of clientSecret and federatedTokenFile");
  }
  const authority = new URL(options.authorityHost ?? "https://login.microsoftonline.com");
  if (authority.protocol !== "https:") throw new TypeError("Entra credential: the authority host must be an https:// URL");
  const now = options.now ?? Date.now;
  const cache = new Map<string, EntraAccessToken>();
  const inFlight = new Map<string, Promise<EntraAccessToken>>();

  function tenantFor(requested: string | undefined): string {
    if (requested === undefined || requested === "" || requested === options.tenantId) return options.tenantId;
    const allowed = options.additionallyAllowedTenants ?? [];
    if (allowed.includes("*") || allowed.includes(requested)) return requested;
    throw new EntraTokenError(
      "permission-denied",
      `the key's vault is in tenant ${requested}, which is not among the tenants this credential may use (add it to additionallyAllowedTenants)`,
    );
  }

  async function fetchToken(tenant: string, scope: string): Promise<EntraAccessToken> {
    const form = new URLSearchParams({ client_id: options.clientId, scope, grant_type: "client_credentials" });
    if (options.clientSecret !== undefined) {
      form.set("client_secret", options.clientSecret);
    } else {
      let assertion: string;
      try {
        assertion = (await readFile(options.federatedTokenFile as string, "utf8")).trim();
      } catch (error) {
        throw new EntraTokenError("permission-denied", `the federated token file ${options.federatedTokenFile} cannot be read`, { cause: error });
      }
      form.set("client_assertion_type", CLIENT_ASSERTION_TYPE);
      form.set("client_assertion", assertion);
    }
    const url = new URL(`${encodeURIComponent(tenant)}/oauth2/v2.0/token`, authority.href.endsWith("/") ? authority.href : `${authority.href}/`);
    const { status, body } = await post(url, form.toString(), options.agent, options.timeoutMs ?? 10_000);
    let parsed: Record<string, unknown> = {};
    try {
      parsed = JSON.parse(body) as Record<string, unknown>;
    } catch {
      // A non-JSON answer (a proxy's error page); the status decides.
    }
    if (status === 200 && typeof parsed["access_token"] === "string" && typeof parsed["expires_in"] !== "undefined") {
      const expiresIn = Number(parsed["expires_in"]);
      const expiresOnTimestamp = now() + (Number.isFinite(expiresIn) ? expiresIn : 0) * 1000;
      return {
        token: parsed["access_token"],
        expiresOnTimestamp,
        refreshAfterTimestamp: expiresOnTimestamp - REFRESH_MARGIN_MS,
        tokenType: "Bearer",
      };
    }
    // The error code and description name the problem (AADSTS numbers), never the secret.
    const detail = `${String(parsed["error"] ?? `HTTP ${status}`)}${typeof parsed["error_description"] === "string" ? `: ${parsed["error_description"].split("\n")[0]}` : ""}`;
    if (status === 429 || status >= 500) throw new EntraTokenError("unavailable", `Entra ID token request for tenant ${tenant} failed: ${detail}`);
    throw new EntraTokenError("permission-denied", `Entra ID refused a token for client ${options.clientId} in tenant ${tenant}: ${detail}`);
  }

  return {
    async getToken(scopes: string | string[], getTokenOptions: EntraGetTokenOptions = {}): Promise<EntraAccessToken | null> {
      const scope = (Array.isArray(scopes) ? scopes : [scopes]).join(" ");
      const tenant = tenantFor(getTokenOptions.tenantId);
      const cacheKey = `${tenant}\u0000${scope}`;
      const cached = cache.get(cacheKey);
      if (cached !== undefined && now() < (cached.refreshAfterTimestamp ?? cached.expiresOnTimestamp)) return cached;
      let pending = inFlight.get(cacheKey);
      if (pending === undefined) {
        pending = fetchToken(tenant, scope).finally(() => inFlight.delete(cacheKey));
        inFlight.set(cacheKey, pending);
      }
      const token = await pending;
      cache.set(cacheKey, token);
      return token;
    },
  };
}

function post(url: URL, body: string, agent: Agent | undefined, timeoutMs: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded", "content-length": Buffer.byteLength(body), accept: "application/json" },
        ...(agent === undefined ? {} : { agent }),
        timeout: timeoutMs,
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("end", () => resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
        response.on("error", (error) => reject(new EntraTokenError("unavailable", `Entra ID token response from ${url.host} broke off`, { cause: error })));
      },
    );
    req.on("timeout", () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on("error", (error) => reject(new EntraTokenError("unavailable", `Entra ID at ${url.host} could not be reached: ${error.message}`, { cause: error })));
    req.end(body);
  });
}
